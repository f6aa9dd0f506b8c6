"""Constrained delegation (S4U2Proxy, S4U2Self) against a real LDAP-backed MIT KDC and a
real PostgreSQL: acting as users whose client delegated nothing.

MIT's default DB2 back end cannot do constrained delegation; its refusal is tested in
``test_postgres.py``, against the suite's main realm.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import tornado.web

from tests.clients import DELEGATE, MUTUAL, get_concurrently, negotiate_header, spnego_token
from tests.conftest import AUTH_TO_LOCAL, ServeFn, Server, require_ldap
from tests.test_postgres import db_identity
from tornado_kerb import (
    DelegationRefused,
    KerberosAuthMixin,
    KerberosGuard,
    KerberosUser,
    NoCredentials,
    authenticated,
)
from tornado_kerb.delegation import ConstrainedDelegation
from tornado_kerb.negotiate import Acceptor
from tornado_kerb.testing import realm_environment
from tornado_kerb.testing.ldap import LDAPRealm, start_ldap_realm
from tornado_kerb.testing.postgres import ThrowawayPostgres

require_ldap()

COOKIE_SECRET = "test-only-cookie-secret-" + "d" * 32


@dataclasses.dataclass
class Domain:
    """An LDAP-backed realm where HTTP/localhost may act as users towards PostgreSQL."""

    realm: LDAPRealm
    keytab: str
    postgres: ThrowawayPostgres
    alice_ccache: str

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "keytab": self.keytab,
            "hostname": "localhost",
            "realm": self.realm.realm,
            "s4u2proxy": True,
            **extra,
        }


@pytest.fixture(scope="module")
def domain() -> Iterator[Domain]:
    """One LDAP realm and one PostgreSQL for the module; their environment meanwhile."""
    conf = {
        "libdefaults": {"forwardable": "true"},
        "realms": {"$realm": {"auth_to_local": AUTH_TO_LOCAL}},
    }
    # The session realm's environment, if it started first, comes back afterwards.
    with start_ldap_realm(krb5_conf=conf) as realm, realm_environment(realm.k5.env):
        yield from _domain(realm)


def _domain(realm: LDAPRealm) -> Iterator[Domain]:
    postgres = None
    try:
        k5 = realm.k5
        keytab = os.path.join(k5.tmpdir, "http.keytab")
        k5.addprinc("HTTP/localhost")
        k5.extract_keytab("HTTP/localhost", keytab)
        k5.addprinc("ldap/localhost")  # a service we may NOT delegate to
        alice = f"alice@{realm.realm}"
        k5.addprinc(alice, k5.password("alice"))
        alice_ccache = os.path.join(k5.tmpdir, "ccache.alice")
        k5.kinit(alice, k5.password("alice"), flags=["-f", "-c", alice_ccache])
        postgres = ThrowawayPostgres(k5, ["user", "alice"])
        realm.allow_delegation("HTTP/localhost", ["postgres/localhost"])
        realm.allow_protocol_transition("HTTP/localhost")
        yield Domain(realm, keytab, postgres, alice_ccache)
    finally:
        if postgres is not None:
            postgres.stop()


class Database(KerberosAuthMixin, tornado.web.RequestHandler):
    """Connects as the user to ``target`` (a GSS service name) and says how it went."""

    def initialize(self, domain: Domain, target: str = "postgres@localhost") -> None:
        self.domain = domain
        self.target = target

    @authenticated
    async def get(self) -> None:
        user = self.current_user
        answer: dict[str, Any] = {
            "credential_kind": user.credential_kind,
            "from_session": user.from_session,
        }
        conninfo = self.domain.postgres.conninfo(user.username)
        try:
            answer.update(await self.run_as_user(db_identity, conninfo, delegate_to=self.target))
        except DelegationRefused as err:
            self.set_status(502)
            answer.update(refused=err.target, why=str(err))
        except NoCredentials as err:
            self.set_status(409)
            answer.update(error=str(err))
        self.write(answer)


Start = Callable[..., Server]


@pytest.fixture
def start(serve: ServeFn, domain: Domain) -> Iterator[Start]:
    """``start(target=..., https=..., **settings)``: a server whose guard already holds
    its own TGT (constrained delegation is fetched in the background otherwise)."""
    guards: list[KerberosGuard] = []

    def starter(target: str = "postgres@localhost", https: bool = False, **extra: Any) -> Server:
        guard = KerberosGuard(domain.settings(**extra))
        guards.append(guard)
        assert guard.delegation_ready(10) is guard.settings.s4u2proxy
        handler_args = {"domain": domain, "target": target}
        return serve(
            [(r"/db", Database, handler_args)], guard, https=https, cookie_secret=COOKIE_SECRET
        )

    yield starter
    for guard in guards:
        guard.close()


def no_delegation(ccache: str | None = None) -> dict[str, str]:
    """What a browser sends by default: a ticket to us, nothing forwarded."""
    return {"Authorization": negotiate_header(spnego_token(ccache=ccache, flags=MUTUAL))}


def test_a_client_that_did_not_delegate_reaches_postgres_as_itself(
    start: Start, domain: Domain
) -> None:
    server = start()
    response = requests.get(server.url("/db"), headers=no_delegation(), timeout=60)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "credential_kind": "constrained",
        "from_session": False,
        "db_user": "user",
        "principal": domain.realm.k5.user_princ,
        "encrypted": True,
    }


def test_a_client_that_delegated_says_so(start: Start, domain: Domain) -> None:
    server = start()
    header = {"Authorization": negotiate_header(spnego_token(flags=MUTUAL | DELEGATE))}
    response = requests.get(server.url("/db"), headers=header, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["credential_kind"] == "forwarded"
    assert response.json()["db_user"] == "user"


def test_a_basic_login_acts_with_the_password_s_own_ticket(
    start: Start, domain: Domain, tls: Any
) -> None:
    server = start(https=True)
    password = domain.realm.k5.password("user")
    response = requests.get(server.url("/db"), auth=("user", password), verify=tls.ca, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["credential_kind"] == "password"
    assert response.json()["db_user"] == "user"


def test_a_session_cookie_user_is_impersonated_by_protocol_transition(
    start: Start, domain: Domain
) -> None:
    server = start(session={"http": True})
    with requests.Session() as browser:
        first = browser.get(server.url("/db"), headers=no_delegation(), timeout=60)
        assert first.status_code == 200, first.text
        assert "tornado_kerb_session" in browser.cookies
        second = browser.get(server.url("/db"), timeout=60)  # the cookie alone
    assert second.status_code == 200, second.text
    assert second.json()["from_session"] is True
    assert second.json()["credential_kind"] == "none"  # nothing came with the request...
    assert second.json()["db_user"] == "user"  # ...and yet: S4U2Self, then S4U2Proxy


def test_a_target_outside_the_kdc_acl_fails_with_our_error_naming_it(
    start: Start, domain: Domain
) -> None:
    server = start(target="ldap@localhost")
    response = requests.get(server.url("/db"), headers=no_delegation(), timeout=60)
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["refused"] == "ldap@localhost"
    assert "KDC_ERR_BADOPTION" in body["why"]
    assert "krbAllowedToDelegateTo" in body["why"]
    assert "Traceback" not in body["why"]


def test_two_users_concurrently_stay_apart(start: Start, domain: Domain) -> None:
    server = start()
    user = domain.realm.k5.user_princ
    alice = f"alice@{domain.realm.realm}"
    who = [(user, None), (alice, domain.alice_ccache)] * 12
    headers = [no_delegation(ccache) for _, ccache in who]

    responses = get_concurrently(server.url("/db"), headers)
    for (principal, _), response in zip(who, responses, strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["principal"] == principal
        assert response.json()["db_user"] == principal.partition("@")[0]
        assert response.json()["credential_kind"] == "constrained"


def test_with_s4u2proxy_off_there_are_no_credentials(start: Start, domain: Domain) -> None:
    server = start(s4u2proxy=False)
    response = requests.get(server.url("/db"), headers=no_delegation(), timeout=60)
    assert response.status_code == 409, response.text
    assert response.json()["credential_kind"] == "none"
    assert "s4u2proxy" in response.json()["error"]


def test_nobody_is_impersonated_without_a_request_of_theirs_in_flight(
    start: Start, domain: Domain
) -> None:
    # An app that builds (or keeps) a user object cannot make the guard act as them.
    guard = KerberosGuard(domain.settings())
    try:
        assert guard.delegation_ready(10)
        stranger = KerberosUser(f"alice@{domain.realm.realm}", "negotiate")
        with pytest.raises(NoCredentials, match="no request of theirs is in flight"):
            asyncio.run(guard.run_as_user(stranger, db_identity, {}))
    finally:
        guard.close()


def test_logins_go_on_while_the_guard_has_no_tgt_of_its_own(domain: Domain) -> None:
    # Our own TGT comes from the keytab in the background; when it cannot be had (here:
    # the fetch reads a keytab that is not there), logins work all the same, without
    # constrained credentials, and nothing waits for the KDC.
    acceptor = Acceptor(domain.keytab, "HTTP", "localhost", s4u2proxy=True)
    acceptor.delegation = ConstrainedDelegation("/nonexistent.keytab", "HTTP", "localhost")
    assert not acceptor.delegation.ready(10)
    assert "does not exist" in acceptor.delegation.problem
    accepted = acceptor.accept(spnego_token(flags=MUTUAL))
    assert accepted.principal == domain.realm.k5.user_princ
    assert (accepted.credential_kind, accepted.delegated_credentials) == ("none", None)


def test_a_keytab_with_several_of_our_principals_turns_delegation_off(
    domain: Domain, tmp_path: Any
) -> None:
    # Delegation acts as one principal, and accepting with its credentials would lock
    # out the other one's users: without a hostname to choose, it stays off (logged).
    k5 = domain.realm.k5
    keytab = str(tmp_path / "two.keytab")
    k5.addprinc("HTTP/other.localhost")
    k5.extract_keytab("HTTP/localhost", keytab)
    k5.extract_keytab("HTTP/other.localhost", keytab)
    delegation = ConstrainedDelegation(keytab, "HTTP", None)
    assert not delegation.ready(10)
    assert "set 'hostname'" in delegation.problem
    assert ConstrainedDelegation(keytab, "HTTP", "localhost").ready(10)
