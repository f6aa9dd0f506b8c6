"""Basic passwords: header parsing, and the kpass-style proof against a real (and a spoofed) KDC."""

from __future__ import annotations

import base64
import os

import gssapi
import k5test
import pytest

from tests.conftest import Realm
from tornado_kerb.basic import default_realm, parse_basic, prove_password
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
