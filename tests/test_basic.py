"""Basic passwords: header parsing, and the kpass-style proof against a real (and a spoofed) KDC."""

from __future__ import annotations

import base64
import os

import gssapi
import k5test
import pytest

from tests.conftest import Realm
from tornado_kerb.basic import NameForms, default_realm, parse_basic, prove_password
from tornado_kerb.errors import AuthenticationFailed, KDCUnavailable
from tornado_kerb.negotiate import Acceptor


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"alice:pw", ("alice@EXAMPLE.COM", "pw")),
        (b"alice@EXAMPLE.COM:p:w", ("alice@EXAMPLE.COM", "p:w")),
        ("jürgen:pässword".encode(), ("jürgen@EXAMPLE.COM", "pässword")),
    ],
)
def test_parse_basic(raw: bytes, expected: tuple[str, str]) -> None:
    assert parse_basic(b64(raw), "EXAMPLE.COM") == expected


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [
        ("!!!", "malformed"),
        (b64(b"no-colon"), "malformed"),
        (b64(b":pw"), "malformed"),
        (b64(b"alice:"), "empty-password"),
        (b64(b"\xff\xfe:pw"), "malformed"),
        (b64(b"al\x00ice:pw"), "malformed"),
        (b64(b"alice:p\nw"), "malformed"),
        (b64(b"HTTP/localhost:pw"), "malformed"),
        (b64(b"alice\\@EXAMPLE.COM:pw"), "malformed"),
        (b64(b"@EXAMPLE.COM:pw"), "malformed"),
        (b64(b"a@b@EXAMPLE.COM:pw"), "malformed"),
        (b64(b"x" * 300 + b":pw"), "malformed"),
        (b64(b"bob@OTHER.ORG:pw"), "foreign-realm"),
        (b64(b"bob@example.com:pw"), "foreign-realm"),
    ],
)
def test_parse_basic_refuses(credentials: str, reason: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        parse_basic(credentials, "EXAMPLE.COM")
    assert info.value.reason == reason


AD = NameForms("CORP", frozenset({"corp.example.com"}))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Every form goes to the KDC as an enterprise name: it finds the account and
        # gives its canonical name (krb5 spells the name's own "@" as "\\@").
        (b"alice:pw", "alice\\@example.com@EXAMPLE.COM"),
        (b"Alice:pw", "Alice\\@example.com@EXAMPLE.COM"),
        (b"CORP\\alice:pw", "alice\\@example.com@EXAMPLE.COM"),
        (b"corp\\alice:pw", "alice\\@example.com@EXAMPLE.COM"),
        (b"alice@corp.example.com:pw", "alice\\@corp.example.com@EXAMPLE.COM"),
        (b"alice@CORP.example.com:pw", "alice\\@corp.example.com@EXAMPLE.COM"),
        (b"alice@EXAMPLE.COM:pw", "alice\\@example.com@EXAMPLE.COM"),
        (b"alice@example.com:pw", "alice\\@example.com@EXAMPLE.COM"),
    ],
)
def test_parse_basic_active_directory_forms(raw: bytes, expected: str) -> None:
    assert parse_basic(b64(raw), "EXAMPLE.COM", AD) == (expected, "pw")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"OTHER\\alice:pw", "foreign-realm"),
        (b"alice@other.org:pw", "foreign-realm"),
        (b"CORP\\alice@corp.example.com:pw", "malformed"),
        (b"CORP\\x\\alice:pw", "malformed"),
        (b"CORP\\:pw", "malformed"),
        (b"CORP\\HTTP/web:pw", "malformed"),
    ],
)
def test_parse_basic_active_directory_refuses(raw: bytes, reason: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        parse_basic(b64(raw), "EXAMPLE.COM", AD)
    assert info.value.reason == reason


def test_without_a_netbios_domain_the_backslash_form_stays_refused() -> None:
    with pytest.raises(AuthenticationFailed) as info:
        parse_basic(b64(b"CORP\\alice:pw"), "EXAMPLE.COM", NameForms(None, frozenset({"x.org"})))
    assert info.value.reason == "malformed"


def test_default_realm_comes_from_krb5_conf(realm: Realm) -> None:
    assert default_realm() == "KRBTEST.COM"


def test_right_password_gives_usable_credentials(realm: Realm) -> None:
    accepted = prove_password(realm.user, realm.password, Acceptor(realm.keytab))
    assert accepted.principal == realm.user
    creds = accepted.delegated_credentials
    assert creds is not None and str(creds.name) == realm.user
    # The credentials act as the user: they get a ticket for another service.
    ctx = gssapi.SecurityContext(
        name=gssapi.Name("host@localhost", gssapi.NameType.hostbased_service),
        creds=creds,
        usage="initiate",
    )
    assert ctx.step()


def test_password_proof_leaves_the_default_ccache_alone(realm: Realm) -> None:
    before = realm.run("klist")
    prove_password(realm.user, realm.password, Acceptor(realm.keytab))
    assert realm.run("klist") == before


@pytest.mark.parametrize(
    ("principal", "password", "reason"),
    [
        ("user@KRBTEST.COM", "wrong", "bad-password"),
        ("nobody@KRBTEST.COM", "whatever", "unknown-user"),
        ("user@NO.SUCH.REALM", "whatever", "unknown-realm"),
    ],
)
def test_refused_logins(realm: Realm, principal: str, password: str, reason: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        prove_password(principal, password, Acceptor(realm.keytab))
    assert info.value.reason == reason


def test_preauth_failure_is_a_bad_password(realm: Realm) -> None:
    realm.k5.addprinc("preauth@KRBTEST.COM", "right")
    realm.k5.run_kadminl(["modprinc", "+requires_preauth", "preauth@KRBTEST.COM"])
    acceptor = Acceptor(realm.keytab)
    with pytest.raises(AuthenticationFailed) as info:
        prove_password("preauth@KRBTEST.COM", "wrong", acceptor)
    assert info.value.reason == "bad-password"
    assert prove_password("preauth@KRBTEST.COM", "right", acceptor).principal


def test_kdc_down_is_our_problem(realm: Realm) -> None:
    realm.proxy.down = True
    with pytest.raises(KDCUnavailable):
        prove_password(realm.user, realm.password, Acceptor(realm.keytab))


def test_spoofed_kdc_gets_nobody_in(realm: Realm, spoofed_kdc: k5test.K5Realm) -> None:
    realm.proxy.reset(upstream_port=spoofed_kdc.portbase)
    with pytest.raises(AuthenticationFailed) as info:
        prove_password(realm.user, realm.password, Acceptor(realm.keytab))
    assert info.value.reason == "kdc-not-trusted"
    # The spoofed KDC did say yes: it issued the TGT and the service ticket.
    with open(os.path.join(spoofed_kdc.tmpdir, "kdc.log")) as f:
        issued = [line for line in f if "ISSUE" in line]
    assert any("AS_REQ" in line and realm.user in line for line in issued)
    assert any("TGS_REQ" in line and "for HTTP/localhost@KRBTEST.COM" in line for line in issued)
    # The same login through the real KDC gets in: the refusal was the keytab check.
    realm.proxy.reset(upstream_port=realm.k5.portbase)
    assert prove_password(realm.user, realm.password, Acceptor(realm.keytab)).principal
