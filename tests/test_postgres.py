"""Acting as the user down to a real PostgreSQL: GSS logins as each web user, concurrently."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import requests
import tornado.web

from tests.clients import DELEGATE, MUTUAL, get_concurrently, negotiate_header, spnego_token
from tests.conftest import Realm, ServeFn, User
from tornado_kerb import (
    DelegationRefused,
    KerberosAuthMixin,
    KerberosGuard,
    NoCredentials,
    authenticated,
)
from tornado_kerb.testing.postgres import ThrowawayPostgres


def db_identity(conninfo: dict[str, Any]) -> dict[str, Any]:
    """Runs in the run_as_user thread: connect with the thread's default credentials."""
    with psycopg.connect(**conninfo) as conn:
        row = conn.execute(
            "SELECT current_user, principal, encrypted FROM pg_stat_gssapi"
            " WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return {"db_user": row[0], "principal": row[1], "encrypted": row[2]}


class Database(KerberosAuthMixin, tornado.web.RequestHandler):
    def initialize(self, postgres: ThrowawayPostgres, delegate_to: tuple[str, ...] = ()) -> None:
        self.postgres = postgres
        self.delegate_to = delegate_to

    @authenticated
    async def get(self) -> None:
        conninfo = self.postgres.conninfo(self.current_user.username)
        try:
            self.write(await self.run_as_user(db_identity, conninfo, delegate_to=self.delegate_to))
        except DelegationRefused as err:
            self.set_status(502)
            self.write({"kind": self.current_user.credential_kind, "why": str(err)})
        except NoCredentials:
            self.set_status(409)
            self.write({"error": "no delegated credentials: log in with delegation"})


def start(serve: ServeFn, realm: Realm, postgres: ThrowawayPostgres, https: bool = False) -> Any:
    settings = {"keytab": realm.keytab, "hostname": "localhost", "realm": "KRBTEST.COM"}
    return serve([(r"/db", Database, {"postgres": postgres})], settings, https=https)


def delegated(ccache: str | None = None) -> dict[str, str]:
    token = spnego_token(ccache=ccache, flags=MUTUAL | DELEGATE)
    return {"Authorization": negotiate_header(token)}


def test_two_users_concurrently_each_reach_the_database_as_themselves(
    serve: ServeFn, realm: Realm, alice: User, postgres: ThrowawayPostgres
) -> None:
    server = start(serve, realm, postgres)
    # Interleaved: user, alice, user, alice… The process's KRB5CCNAME names user's cache
    # throughout, so an alice request that used it would log in as user and be refused
    # the role "alice".
    who = [(realm.user, None), (alice.principal, alice.ccache)] * 20
    headers = [delegated(ccache) for _, ccache in who]
    env_before = dict(os.environ)

    responses = get_concurrently(server.url("/db"), headers)
    for (principal, _), response in zip(who, responses, strict=True):
        assert response.status_code == 200, response.text
        assert response.json() == {
            "db_user": principal.partition("@")[0],
            "principal": principal,
            "encrypted": True,
        }
    assert dict(os.environ) == env_before


def test_basic_password_credentials_reach_the_database(
    serve: ServeFn, realm: Realm, postgres: ThrowawayPostgres, tls: Any
) -> None:
    server = start(serve, realm, postgres, https=True)
    response = requests.get(
        server.url("/db"), auth=("user", realm.password), verify=tls.ca, timeout=60
    )
    assert response.json()["db_user"] == "user"


def test_without_delegation_the_app_gets_our_exception(
    serve: ServeFn, realm: Realm, postgres: ThrowawayPostgres
) -> None:
    server = start(serve, realm, postgres)
    header = {"Authorization": negotiate_header(spnego_token(flags=MUTUAL))}
    response = requests.get(server.url("/db"), headers=header, timeout=60)
    assert response.status_code == 409


def test_constrained_delegation_on_a_db2_kdc_fails_at_use_saying_why(
    serve: ServeFn, realm: Realm, postgres: ThrowawayPostgres, tmp_path: Any
) -> None:
    # MIT's default back end cannot do S4U2Proxy: the login still works, the first use
    # says so (the LDAP-backed KDC that can is in test_delegation.py).
    guard = KerberosGuard({"keytab": realm.keytab, "hostname": "localhost", "s4u2proxy": True})
    try:
        assert guard.delegation_ready(10)  # a TGT of our own: DB2 gives that much
        handler_args = {"postgres": postgres, "delegate_to": ("postgres@localhost",)}
        server = serve([(r"/db", Database, handler_args)], guard)
        response = requests.get(server.url("/db"), headers=own_ticket(realm, tmp_path), timeout=60)
    finally:
        guard.close()
    assert response.status_code == 502, response.text
    assert response.json()["kind"] == "constrained"
    why = response.json()["why"]
    assert why.startswith("cannot act as the user towards postgres@localhost")
    assert "DB2 back end cannot do constrained delegation" in why


def own_ticket(realm: Realm, tmp_path: Any) -> dict[str, str]:
    """A Negotiate header from a ticket cache of its own.

    A ticket to us cached before another test rotated our key would be evidence the KDC
    cannot even decrypt (a different error)."""
    ccache = str(tmp_path / "ccache")
    realm.k5.kinit(realm.user, realm.password, flags=["-f", "-c", ccache])
    return {"Authorization": negotiate_header(spnego_token(ccache=ccache, flags=MUTUAL))}
