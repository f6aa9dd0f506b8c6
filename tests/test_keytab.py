"""Keytab inspection against real keytabs made by a real KDC."""

from __future__ import annotations

import os
import pathlib

import pytest

from tests.conftest import Realm
from tornado_kerb import KeytabError
from tornado_kerb.keytab import inspect_keytab, keytab_path


def test_reports_principals_kvnos_and_enctypes(realm: Realm) -> None:
    report = inspect_keytab(realm.keytab)
    assert report.problem is None
    assert report.path == realm.keytab
    assert report.principals() == ["HTTP/localhost@KRBTEST.COM"]
    assert {entry.kvno for entry in report.entries} == {1}
    assert "aes256-cts-hmac-sha1-96" in {entry.enctype for entry in report.entries}
    assert report.check("HTTP", "localhost") == "HTTP/localhost@KRBTEST.COM"
    assert report.check("HTTP", None) == "HTTP/localhost@KRBTEST.COM"
    assert inspect_keytab(f"FILE:{realm.keytab}").principals() == report.principals()


def test_our_key_missing_names_what_is_there(realm: Realm) -> None:
    report = inspect_keytab(realm.keytab)
    with pytest.raises(KeytabError, match=r"no key for HTTP/www.example.com@.*HTTP/localhost@"):
        report.check("HTTP", "www.example.com")
    with pytest.raises(KeytabError, match="no key for host/"):
        report.check("host", None)


def test_problems_are_reported_not_raised(tmp_path: pathlib.Path) -> None:
    missing = inspect_keytab(str(tmp_path / "none.keytab"))
    assert missing.problem == "does not exist" and not missing.entries
    assert inspect_keytab(str(tmp_path)).problem == "is a directory, not a keytab file"
    garbage = tmp_path / "garbage.keytab"
    garbage.write_bytes(os.urandom(64))
    assert "not a usable keytab" in (inspect_keytab(str(garbage)).problem or "")
    empty = tmp_path / "empty.keytab"
    empty.write_bytes(b"\x05\x02")  # a keytab header and nothing else
    assert inspect_keytab(str(empty)).problem == "holds no keys"
    with pytest.raises(KeytabError, match="does not exist"):
        missing.check("HTTP", None)


def test_keytab_names() -> None:
    assert keytab_path("/etc/krb5.keytab") == "/etc/krb5.keytab"
    assert keytab_path("FILE:/etc/krb5.keytab") == "/etc/krb5.keytab"
    assert keytab_path("WRFILE:/etc/krb5.keytab") == "/etc/krb5.keytab"
    assert keytab_path("MEMORY:test") is None
