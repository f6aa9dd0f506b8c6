"""The authorization guide's examples, each tested against a real realm.

Run with ``pytest docs/examples/test_authorization.py`` (the ``kerberos_realm`` fixture
comes from tornado_kerb's pytest plugin; ``add_user`` gives a second user a ticket).
"""

from __future__ import annotations

import json

import pytest
import tornado.testing
import tornado.web

from tornado_kerb import KerberosAuthMixin, KerberosGuard, authenticated


# --- authorize
class Admin(KerberosAuthMixin, tornado.web.RequestHandler):
    async def kerberos_authorize(self, user):
        return await self.application.db.is_admin(user.username)

    @authenticated
    def get(self):
        self.write(f"welcome, administrator {self.current_user.username}")


# --- end authorize


class AdminTable:
    """Stands in for the application's database."""

    def __init__(self, admins):
        self.admins = set(admins)

    async def is_admin(self, username):
        return username in self.admins


# --- sync-hook
class Reports(KerberosAuthMixin, tornado.web.RequestHandler):
    kerberos_required = True

    def kerberos_authorize(self, user):
        if user.username in ("user", "auditor"):
            return True
        # Falling off the end returns None: refused, like False.

    def get(self):
        self.write("reports")


# --- end sync-hook


# --- local-name
class Mapped(KerberosAuthMixin, tornado.web.RequestHandler):
    kerberos_required = True

    def kerberos_local_name(self, principal):
        name, _, realm = principal.rpartition("@")
        return f"{name}.{realm.lower()}"  # user@KRBTEST.COM -> user.krbtest.com

    def get(self):
        self.write(self.current_user.username)


# --- end local-name


class RealmTest(tornado.testing.AsyncHTTPTestCase):
    @pytest.fixture(autouse=True)
    def _realm(self, kerberos_realm):
        self.realm = kerberos_realm
        self.bob = kerberos_realm.add_user("bob")

    def as_user(self, **headers):
        return {"Authorization": self.realm.negotiate_header(), **headers}

    def as_bob(self, **headers):
        return {"Authorization": self.realm.negotiate_header(ccache=self.bob.ccache), **headers}

    def tearDown(self):
        KerberosGuard.for_application(self._app).close()
        super().tearDown()


class TestHooks(RealmTest):
    def get_app(self):
        app = tornado.web.Application(
            [(r"/admin", Admin), (r"/reports", Reports), (r"/mapped", Mapped)],
            kerberos={"keytab": self.realm.keytab, "hostname": "localhost"},
        )
        app.db = AdminTable(["user"])
        return app

    def test_an_async_hook_lets_admins_in(self):
        response = self.fetch("/admin", headers=self.as_user())
        assert response.code == 200
        assert response.body.decode() == "welcome, administrator user"

    def test_everybody_else_gets_403_without_a_challenge(self):
        response = self.fetch("/admin", headers=self.as_bob(Accept="application/json"))
        assert response.code == 403
        body = json.loads(response.body)
        assert body["reason"] == "forbidden"
        assert self.bob.principal in body["message"]  # "You are logged in as bob@…"
        # Only the mutual-authentication token, which proves the server: no new challenge.
        assert [
            c.startswith("Negotiate ") for c in response.headers.get_list("WWW-Authenticate")
        ] == [True]

    def test_none_from_a_sync_hook_is_a_refusal(self):
        assert self.fetch("/reports", headers=self.as_user()).code == 200
        assert self.fetch("/reports", headers=self.as_bob()).code == 403

    def test_your_own_local_names(self):
        response = self.fetch("/mapped", headers=self.as_user())
        assert response.body.decode() == "user.krbtest.com"


# --- allowed
WHO_MAY_IN = {
    "realms": ["KRBTEST.COM"],  # the default: the configured realm only
    "allowed_principals": ["user@KRBTEST.COM", "svc-*@KRBTEST.COM"],
}
# --- end allowed


class TestAllowedPrincipals(RealmTest):
    def get_app(self):
        kerberos = {"keytab": self.realm.keytab, "hostname": "localhost", **WHO_MAY_IN}
        return tornado.web.Application([(r"/reports", Reports)], kerberos=kerberos)

    def test_only_listed_principals_get_in(self):
        assert self.fetch("/reports", headers=self.as_user()).code == 200
        refused = self.fetch("/reports", headers=self.as_bob())  # bob@KRBTEST.COM: not listed
        assert refused.code == 403

    def test_patterns_match(self):
        svc = self.realm.add_user("svc-backup")
        header = self.realm.negotiate_header(ccache=svc.ccache)
        # svc-backup@KRBTEST.COM matches the pattern, then Reports' own hook refuses it:
        # both checks apply, in order.
        assert self.fetch("/reports", headers={"Authorization": header}).code == 403
        assert self.fetch("/reports", headers=self.as_user()).code == 200
