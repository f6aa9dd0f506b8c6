"""``python -m tornado_kerb doctor`` against the session's real realm, run as operators run it.

Principals of our own (``HTTP/*.doctor``) for every key these tests change: other modules
depend on ``HTTP/localhost`` as it is.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import get_args

import krb5
import pytest

from tests.conftest import ROOT, Realm
from tornado_kerb import doctor

LINE = re.compile(r"^(OK|WARN|FAIL)\s+(\S+)\s+(.*)$")


def cli(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tornado_kerb", "doctor", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env if env is not None else dict(os.environ),
        timeout=60,
        check=False,
    )


def statuses(output: str) -> dict[str, str]:
    """``{check name: status}`` from the text report (the last of a name wins)."""
    found = {}
    for line in output.splitlines():
        match = LINE.match(line)
        if match:
            found[match[2]] = match[1]
    return found


def line_of(output: str, name: str) -> str:
    """The check's line and its advice line below it."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        match = LINE.match(line)
        if match and match[2] == name:
            advice = lines[i + 1] if i + 1 < len(lines) and not LINE.match(lines[i + 1]) else ""
            return f"{line}\n{advice}"
    raise AssertionError(f"no {name} check in:\n{output}")


def own_keytab(realm: Realm, principal: str, path: pathlib.Path) -> str:
    realm.k5.addprinc(principal)
    realm.k5.extract_keytab(principal, str(path))
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def good_keytab(realm: Realm, tmp_path: pathlib.Path) -> str:
    """A private copy of the shared HTTP/localhost keytab: tests may change its mode."""
    path = tmp_path / "http.keytab"
    shutil.copyfile(realm.keytab, path)
    path.chmod(0o600)
    return str(path)


def test_good_keytab_passes_everything(good_keytab: str) -> None:
    result = cli("--keytab", good_keytab, "--url", "http://localhost:8888/")
    assert result.returncode == 0, result.stdout + result.stderr
    found = statuses(result.stdout)
    assert set(found.values()) == {"OK"}, result.stdout
    assert list(found) == list(get_args(doctor.CheckName))  # every check, in order
    assert "HTTP/localhost@KRBTEST.COM kvno 1" in result.stdout
    assert "0 FAIL, 0 WARN, 11 OK" in result.stdout


def test_keytab_for_another_host_fails(realm: Realm, tmp_path: pathlib.Path) -> None:
    keytab = own_keytab(realm, "HTTP/elsewhere.doctor", tmp_path / "elsewhere.keytab")
    result = cli("--keytab", keytab, "--hostname", "localhost")
    assert result.returncode == 1
    spn = line_of(result.stdout, "spn")
    assert spn.startswith("FAIL")
    assert "no key for HTTP/localhost@" in spn and "HTTP/elsewhere.doctor@KRBTEST.COM" in spn
    # Nothing to send a ticket to: the end-to-end check is left out, not faked.
    assert "end-to-end" not in statuses(result.stdout)


def test_world_readable_keytab_warns_with_the_chmod(good_keytab: str) -> None:
    os.chmod(good_keytab, 0o644)
    result = cli("--keytab", good_keytab, "--hostname", "localhost")
    assert result.returncode == 0, result.stdout
    permissions = line_of(result.stdout, "permissions")
    assert permissions.startswith("WARN") and "0644" in permissions
    assert f"-> chmod 600 {good_keytab}" in permissions


def test_stale_kvno_fails_the_end_to_end_check(realm: Realm, tmp_path: pathlib.Path) -> None:
    keytab = own_keytab(realm, "HTTP/stale.doctor", tmp_path / "stale.keytab")
    fresh = {c.name: c.status for c in doctor.run(keytab, hostname="stale.doctor")}
    assert fresh["end-to-end"] == "OK"
    realm.k5.run_kadminl("cpw -randkey HTTP/stale.doctor")  # the KDC moves on to kvno 2
    result = cli("--keytab", keytab, "--hostname", "stale.doctor")
    assert result.returncode == 1
    found = statuses(result.stdout)
    assert found["spn"] == "OK"  # the keytab still looks right: only the KDC can tell
    assert found["end-to-end"] == "FAIL"
    end_to_end = line_of(result.stdout, "end-to-end")
    assert "kvno 2 not found in keytab" in end_to_end and "(keytab: kvno 1)" in end_to_end
    assert "key for HTTP/stale.doctor@KRBTEST.COM has moved on: extract it again" in end_to_end


def test_without_a_ticket_the_end_to_end_check_says_how(
    realm: Realm, good_keytab: str, tmp_path: pathlib.Path
) -> None:
    # A cache with a principal and no tickets, as after kdestroy and a failed kinit.
    ccache = f"FILE:{tmp_path / 'empty.ccache'}"
    ctx = krb5.init_context()
    client = krb5.parse_name_flags(ctx, realm.user.encode())
    krb5.cc_initialize(ctx, krb5.cc_resolve(ctx, ccache.encode()), client)
    result = cli("--keytab", good_keytab, env={**os.environ, "KRB5CCNAME": ccache})
    assert result.returncode == 0, result.stdout
    end_to_end = line_of(result.stdout, "end-to-end")
    assert end_to_end.startswith("WARN") and "no valid ticket-granting ticket" in end_to_end
    assert "run kinit as any user of KRBTEST.COM, then doctor again" in end_to_end
    assert "clock" not in statuses(result.stdout)


def test_json_carries_the_same_statuses(good_keytab: str) -> None:
    os.chmod(good_keytab, 0o640)
    result = cli("--keytab", good_keytab, "--hostname", "localhost", "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    got = [(c["name"], c["status"]) for c in report["checks"]]
    expected = [(c.name, c.status) for c in doctor.run(good_keytab, hostname="localhost")]
    assert got == expected
    assert ("permissions", "WARN") in got
    assert report["counts"] == {"FAIL": 0, "WARN": 1, "OK": len(got) - 1}
    assert report["exit_code"] == 0
    assert all(set(c) == {"status", "name", "detail", "advice"} for c in report["checks"])


def test_weak_enctypes_only_warn(realm: Realm, tmp_path: pathlib.Path) -> None:
    realm.k5.run_kadminl("addprinc -randkey -e arcfour-hmac:normal HTTP/weak.doctor")
    keytab = str(tmp_path / "weak.keytab")
    realm.k5.extract_keytab("HTTP/weak.doctor", keytab)
    checks = {c.name: c for c in doctor.run(keytab, hostname="weak.doctor")}
    assert checks["enctypes"].status == "WARN"
    assert "HTTP/weak.doctor@KRBTEST.COM has only weak keys (arcfour-hmac)" in (
        checks["enctypes"].detail
    )
    assert "aes256-cts-hmac-sha1-96" in checks["enctypes"].advice


def test_a_cname_browsers_follow_warns(good_keytab: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "canonical_name", lambda host: "web01.example.com")
    checks = {c.name: c for c in doctor.run(good_keytab, url="https://localhost/app")}
    url = checks["url"]
    assert url.status == "WARN"
    assert "ask for HTTP/web01.example.com" in url.detail
    assert "the keytab holds HTTP/localhost only" in url.detail
    assert "A record" in url.advice
    assert checks["end-to-end"].status == "OK"  # the key for the name typed still works


def test_missing_keytab_fails_and_says_how(tmp_path: pathlib.Path) -> None:
    checks = doctor.run(str(tmp_path / "none.keytab"))
    assert checks[0].status == "FAIL" and checks[0].detail.endswith("does not exist")
    assert "--keytab" in checks[0].advice
    assert doctor.exit_code(checks) == 1


def test_kdc_that_refuses_connections_fails() -> None:
    check = doctor._kdc_check("EXAMPLE.COM", ["127.0.0.1:1"])
    assert check.status == "FAIL" and "127.0.0.1:1" in check.detail


def test_kdc_lines_are_read_with_includes(tmp_path: pathlib.Path) -> None:
    extra = tmp_path / "conf.d"
    extra.mkdir()
    (extra / "realms.conf").write_text(
        "[realms]\n EXAMPLE.COM = {\n  kdc = tcp/[2001:db8::1]:750\n }\n"
    )
    main = tmp_path / "krb5.conf"
    main.write_text(
        f"includedir {extra}\n"
        "[realms]\n"
        "  OTHER.ORG = {\n    kdc = other.org\n  }\n"
        "  EXAMPLE.COM = {\n"
        "    auth_to_local_names = {\n      kdc = not-a-kdc\n    }\n"
        "    kdc = kdc1.example.com:88\n"
        "    kdc = https://proxy.example.com/KdcProxy\n"
        "  }\n"
    )
    kdcs = doctor._profile_kdcs([str(main)], "EXAMPLE.COM")
    assert kdcs == [
        "tcp/[2001:db8::1]:750",
        "kdc1.example.com:88",
        "https://proxy.example.com/KdcProxy",
    ]
    assert [doctor._kdc_endpoint(k) for k in kdcs] == [
        ("tcp", "2001:db8::1", 750),
        ("any", "kdc1.example.com", 88),
        ("https", "proxy.example.com", 443),
    ]


def test_clock_thresholds() -> None:
    assert doctor._clock(0, False).status == "OK"
    assert doctor._clock(-120, False).status == "WARN"
    assert "behind" in doctor._clock(-120, False).detail
    assert doctor._clock(400, False).status == "FAIL"
    assert doctor._clock(None, True).status == "FAIL"
    assert doctor._clock(None, False).status == "WARN"
