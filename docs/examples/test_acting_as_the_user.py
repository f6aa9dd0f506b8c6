"""The acting-as-the-user guide: ``run_as_user`` with a forwarded ticket, a Basic login's
ticket and a session, towards a second service of the realm and a real PostgreSQL.

Run with ``pytest docs/examples/test_acting_as_the_user.py``: the ``kerberos_realm`` fixture
(tornado_kerb's pytest plugin) is a throwaway MIT realm; ``ThrowawayPostgres`` is a
PostgreSQL that takes only Kerberos logins from it (Debian's ``postgresql`` server
programs, and psycopg on the system libpq).
"""

from __future__ import annotations

import json
import secrets
from typing import ClassVar

import pytest
import tornado.testing

# --- downstream
import base64

import gssapi
import tornado.web

from tornado_kerb import (
    DelegationRefused,
    KerberosAuthMixin,
    NoCredentials,
    authenticated,
)


def service_token(service):
    """Runs in run_as_user's worker thread, whose default Kerberos credentials are the
    user's: any GSSAPI client here (libpq, requests-gssapi, ldap3...) acts as the user."""
    name = gssapi.Name(service, gssapi.NameType.hostbased_service)
    context = gssapi.SecurityContext(name=name, usage="initiate", mech=gssapi.MechType.kerberos)
    return context.step()  # what a client sends the service: a ticket in the user's name


class Downstream(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    async def get(self):
        service = "postgres@localhost"
        try:
            token = await self.run_as_user(service_token, service, delegate_to=service)
        except DelegationRefused as err:  # the KDC will not let us act as them there
            self.set_status(502)
            return self.write(str(err))
        except NoCredentials:  # the browser did not delegate
            self.set_status(409)
            return self.write("Enable delegation for this site, or log in with a password.")
        self.write(
            {
                "kind": self.current_user.credential_kind,  # "forwarded", "password"...
                "token": base64.b64encode(token).decode(),
            }
        )


# --- end downstream

# --- database
import psycopg


def db_user(conninfo):
    # libpq builds the service principal from host: postgres/<host>
    with psycopg.connect(**conninfo) as conn:
        return conn.execute("SELECT current_user").fetchone()[0]


class Report(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    async def get(self):
        conninfo = {**self.settings["database"], "user": self.current_user.username}
        try:
            who = await self.run_as_user(db_user, conninfo)
        except NoCredentials:
            if self.current_user.from_session:
                self.kerberos_challenge()  # 401 now: the browser logs in afresh
            self.set_status(409)
            return self.write("Enable delegation for this site, or log in with a password.")
        self.write(f"the database says you are {who}")


# --- end database

from tornado_kerb import KerberosGuard
from tornado_kerb.testing.postgres import ThrowawayPostgres


@pytest.fixture(scope="module")
def database(kerberos_realm):
    """A PostgreSQL that takes only Kerberos logins from the realm, with a role for its
    user ("user", the principal without the realm); its connection settings."""
    with ThrowawayPostgres(kerberos_realm.k5, [kerberos_realm.user.partition("@")[0]]) as pg:
        conninfo = pg.conninfo("nobody")
        del conninfo["user"]  # the handler logs in as the web user
        yield conninfo


def accepted_by(keytab, token):
    """Accept ``token`` as the second service would: who does its ticket name?"""
    creds = gssapi.Credentials(usage="accept", store={"keytab": keytab})
    context = gssapi.SecurityContext(creds=creds, usage="accept")
    context.step(token)
    return str(context.initiator_name)


class Server:
    """What both test cases share: the realm, the database and the application."""

    kerberos: ClassVar[dict] = {}  # more settings for the guard

    @pytest.fixture(autouse=True)
    def _realm(self, kerberos_realm, database):
        self.realm = kerberos_realm
        self.database = database

    def get_app(self):
        kerberos = {"keytab": self.realm.keytab, "hostname": "localhost", **self.kerberos}
        return tornado.web.Application(
            [(r"/downstream", Downstream), (r"/report", Report)],
            kerberos=kerberos,
            cookie_secret=secrets.token_hex(32),
            database=self.database,
        )

    def tearDown(self):
        KerberosGuard.for_application(self._app).close()
        super().tearDown()

    def negotiate(self, delegate=True, **headers):
        return {"Authorization": self.realm.negotiate_header(delegate=delegate), **headers}


class TestForwardedTickets(Server, tornado.testing.AsyncHTTPTestCase):
    # Session cookies on plain HTTP only because this test runs without TLS.
    kerberos: ClassVar[dict] = {"session": {"http": True}}

    def test_a_forwarded_ticket_reaches_a_second_service_as_the_user(self):
        response = self.fetch("/downstream", headers=self.negotiate())
        assert response.code == 200, response.body
        answer = json.loads(response.body)
        assert answer["kind"] == "forwarded"
        # The second service (its own keytab) accepts the ticket: its client is the user.
        keytab = self.realm.add_service("postgres/localhost")
        assert accepted_by(keytab, base64.b64decode(answer["token"])) == self.realm.user

    def test_without_delegation_there_is_nothing_to_act_with(self):
        response = self.fetch("/downstream", headers=self.negotiate(delegate=False))
        assert response.code == 409

    def test_the_database_sees_the_web_user(self):
        response = self.fetch("/report", headers=self.negotiate())
        assert response.code == 200, response.body
        assert response.body.decode() == "the database says you are user"

    def test_a_session_request_is_asked_to_log_in_afresh(self):
        first = self.fetch("/report", headers=self.negotiate())
        assert first.code == 200
        cookie = first.headers["Set-Cookie"].partition(";")[0]
        # The cookie alone carries no credentials: 401 with the challenge.
        again = self.fetch("/report", headers={"Cookie": cookie})
        assert again.code == 401
        assert again.headers.get_list("WWW-Authenticate") == ["Negotiate"]
        # The browser's answer, a fresh delegated token, wins over the cookie.
        retried = self.fetch("/report", headers=self.negotiate(Cookie=cookie))
        assert retried.code == 200
        assert retried.body.decode() == "the database says you are user"


class TestBasicPassword(Server, tornado.testing.AsyncHTTPSTestCase):
    def test_a_basic_login_acts_with_the_ticket_the_password_got(self):
        login = {"auth_username": "user", "auth_password": self.realm.password}
        response = self.fetch("/report", validate_cert=False, **login)
        assert response.code == 200, response.body
        assert response.body.decode() == "the database says you are user"
        response = self.fetch("/downstream", validate_cert=False, **login)
        assert json.loads(response.body)["kind"] == "password"


class TestConstrainedOnDB2(Server, tornado.testing.AsyncHTTPTestCase):
    # MIT's default (DB2) back end cannot do S4U2Proxy: logins work, the use says why.
    kerberos: ClassVar[dict] = {"s4u2proxy": True}

    def test_delegate_to_names_the_refused_service(self):
        assert KerberosGuard.for_application(self._app).delegation_ready(10)
        response = self.fetch("/downstream", headers=self.negotiate(delegate=False))
        assert response.code == 502
        why = response.body.decode()
        assert why.startswith("cannot act as the user towards postgres@localhost")
        assert "DB2 back end cannot do constrained delegation" in why
