"""The acceptor against a real KDC: tokens, keytab faults, rotation."""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil

import gssapi
import pytest

from tests.clients import DELEGATE, MUTUAL, spnego_token
from tests.conftest import Realm
from tornado_kerb.errors import AuthenticationFailed, KeytabError
from tornado_kerb.negotiate import Acceptor, parse_negotiate

NTLM_NEGOTIATE = base64.b64encode(
    b"NTLMSSP\x00\x01\x00\x00\x00\x97\x82\x08\xe2" + b"\x00" * 16
).decode()


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [("", "empty"), ("!!!", "malformed"), ("YII", "malformed"), (NTLM_NEGOTIATE, "ntlm")],
)
def test_parse_negotiate_refuses(credentials: str, reason: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        parse_negotiate(credentials)
    assert info.value.reason == reason


def test_accepts_a_token_and_answers_for_mutual_auth(realm: Realm) -> None:
    accepted = Acceptor(realm.keytab).accept(spnego_token(flags=MUTUAL))
    assert accepted.principal == realm.user
    assert accepted.output_token  # the AP-REP a mutual-auth client insists on
    assert accepted.delegated_credentials is None
    assert accepted.expires_at is not None


def test_hands_over_delegated_credentials_only_when_delegated(realm: Realm) -> None:
    acceptor = Acceptor(realm.keytab, hostname="localhost")
    delegated = acceptor.accept(spnego_token(flags=MUTUAL | DELEGATE)).delegated_credentials
    assert isinstance(delegated, gssapi.Credentials)
    assert str(delegated.name) == realm.user
    assert acceptor.accept(spnego_token(flags=MUTUAL)).delegated_credentials is None


def test_replayed_token_is_refused(realm: Realm) -> None:
    acceptor = Acceptor(realm.keytab)
    token = spnego_token()
    acceptor.accept(token)
    with pytest.raises(AuthenticationFailed) as info:
        acceptor.accept(token)
    assert info.value.reason == "replay"


def test_token_for_another_service_is_refused(realm: Realm) -> None:
    # The realm's host/ key is in the host keytab, not ours.
    with pytest.raises(AuthenticationFailed):
        Acceptor(realm.keytab).accept(spnego_token("host@localhost"))


def test_service_and_hostname_restrict_the_acceptor(
    realm: Realm, tmp_path: os.PathLike[str]
) -> None:
    both = os.path.join(tmp_path, "both.keytab")
    shutil.copy(realm.keytab, both)
    realm.k5.extract_keytab(realm.k5.host_princ, both)
    # Without a hostname any HTTP/ key serves, but not the host/ key next to it: a ticket
    # for another service on this machine must not log anyone in here.
    assert Acceptor(both).accept(spnego_token()).principal == realm.user
    with pytest.raises(AuthenticationFailed):
        Acceptor(both).accept(spnego_token("host@localhost"))
    assert Acceptor(both, service="host").accept(spnego_token("host@localhost")).principal
    assert Acceptor(both, hostname="localhost").accept(spnego_token()).principal
    with pytest.raises(AuthenticationFailed):
        Acceptor(both, hostname="localhost").accept(spnego_token("host@localhost"))


@pytest.mark.parametrize("cut", [10, 100, -20])
def test_truncated_token_is_refused(realm: Realm, cut: int) -> None:
    with pytest.raises(AuthenticationFailed):
        Acceptor(realm.keytab).accept(spnego_token()[:cut])


def test_garbage_token_is_refused(realm: Realm) -> None:
    for garbage in (b"\x00" * 64, os.urandom(200), b"\x60\x82\xff\xff" + os.urandom(40)):
        with pytest.raises(AuthenticationFailed):
            Acceptor(realm.keytab).accept(garbage)


def test_stale_token_is_refused(realm: Realm, tmp_path: os.PathLike[str]) -> None:
    """A token minted two hours ago, whose ticket ran out 110 minutes ago.

    MIT's client library will not use an expired ticket, so the token is made while the
    KDC's clock runs two hours behind (krb5kdc -T); MIT's acceptor reports such a token as
    clock skew (it checks the authenticator's time before the ticket's end time).
    """
    k5 = realm.k5
    stale = f"stale@{k5.realm}"
    k5.addprinc(stale, "stale-password")
    k5.run_kadminl(["modprinc", "-maxlife", "10 minutes", stale])
    ccache = os.path.join(tmp_path, "stale.cc")
    k5.stop_kdc()
    k5.start_kdc(["-T", "-7200"])
    try:
        k5.kinit(stale, "stale-password", flags=["-c", ccache])
        token = spnego_token(ccache=ccache)
    finally:
        k5.stop_kdc()
        k5.start_kdc()
    with pytest.raises(AuthenticationFailed) as info:
        Acceptor(realm.keytab).accept(token)
    assert info.value.reason in {"clock-skew", "expired"}


def test_credentials_are_acquired_once(realm: Realm, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tornado_kerb")
    acceptor = Acceptor(realm.keytab)
    for _ in range(5):
        acceptor.accept(spnego_token())
    acquired = [r for r in caplog.records if "acceptor credentials acquired" in r.getMessage()]
    assert len(acquired) == 1


def test_rotated_keytab_works_without_a_restart(realm: Realm, tmp_path: os.PathLike[str]) -> None:
    acceptor = Acceptor(realm.keytab)
    old_token = spnego_token()  # a ticket for the current kvno, from the shared ccache
    acceptor.accept(spnego_token())  # credentials acquired before the rotation
    kvno_before = _kvno(realm, os.path.join(tmp_path, "before.cc"))
    realm.k5.run_kadminl(["ktadd", "-k", realm.keytab, "HTTP/localhost"])  # new key, kvno+1
    fresh = os.path.join(tmp_path, "fresh.cc")
    assert _kvno(realm, fresh) == kvno_before + 1
    assert acceptor.accept(spnego_token(ccache=fresh)).principal == realm.user
    assert acceptor.accept(old_token).principal == realm.user  # old keys stay until removed


def _kvno(realm: Realm, ccache: str) -> int:
    realm.k5.kinit(realm.user, realm.password, flags=["-c", ccache])
    out = realm.run("kvno", "-c", ccache, "HTTP/localhost")
    match = re.search(r"kvno = (\d+)", out)
    assert match, out
    return int(match.group(1))


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda d: os.path.join(d, "missing.keytab"), "does not exist"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d, "text.keytab", b"not a keytab\n"), "not a usable keytab"),
        (lambda d: _write(d, "empty.keytab", b""), "not a usable keytab"),
    ],
)
def test_unusable_keytab_fails_closed(
    realm: Realm, tmp_path: os.PathLike[str], make: object, why: str
) -> None:
    path = make(str(tmp_path))  # type: ignore[operator]
    acceptor = Acceptor(path)
    with pytest.raises(KeytabError) as info:
        acceptor.accept(spnego_token())
    assert info.value.path.endswith(os.path.basename(path))
    assert why in str(info.value)


def test_keytab_without_our_service_fails_closed(realm: Realm) -> None:
    with pytest.raises(KeytabError) as info:
        Acceptor(realm.k5.keytab).accept(spnego_token())  # holds host/ keys only
    assert "holds no key for HTTP/" in str(info.value)
    assert realm.k5.host_princ in str(info.value)


def test_keytab_fixed_later_is_picked_up(realm: Realm, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "later.keytab")
    acceptor = Acceptor(path)
    with pytest.raises(KeytabError):
        acceptor.accept(spnego_token())
    shutil.copy(realm.keytab, path)
    assert acceptor.accept(spnego_token()).principal == realm.user


def test_keytab_removed_while_serving_fails_closed(
    realm: Realm, tmp_path: os.PathLike[str]
) -> None:
    path = os.path.join(tmp_path, "removed.keytab")
    shutil.copy(realm.keytab, path)
    acceptor = Acceptor(path)
    acceptor.accept(spnego_token())
    os.remove(path)
    with pytest.raises(KeytabError) as info:
        acceptor.accept(spnego_token())
    assert "does not exist" in str(info.value)


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path
