"""The getting-started guide's minimal app, and the test that shows it works.

Run with ``pytest docs/examples/test_getting_started.py``: the ``kerberos_realm`` fixture
(tornado_kerb's pytest plugin) starts a throwaway MIT realm with an ``HTTP/localhost``
keytab and a user holding a ticket.
"""

from __future__ import annotations

import json

import pytest
import tornado.testing

# --- app
import tornado.web

from tornado_kerb import KerberosAuthMixin, KerberosGuard, authenticated


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self):
        user = self.current_user
        self.write({"principal": user.principal, "mechanism": user.mechanism})


def make_app(keytab, hostname):
    app = tornado.web.Application(
        [(r"/whoami", Whoami)],
        kerberos={"keytab": keytab, "hostname": hostname},
    )
    KerberosGuard.for_application(app).check(app)  # at start-up: settings, handlers, keytab
    return app


# --- end app


class TestWhoami(tornado.testing.AsyncHTTPTestCase):
    @pytest.fixture(autouse=True)
    def _realm(self, kerberos_realm):
        self.realm = kerberos_realm

    def get_app(self):
        return make_app(self.realm.keytab, "localhost")

    def tearDown(self):
        KerberosGuard.for_application(self._app).close()  # stops the KDC threads
        super().tearDown()

    # --- tests
    def test_a_ticket_logs_the_user_in(self):
        response = self.fetch("/whoami", headers={"Authorization": self.realm.negotiate_header()})
        assert response.code == 200
        assert json.loads(response.body) == {
            "principal": self.realm.user,  # user@KRBTEST.COM
            "mechanism": "negotiate",
        }
        # Mutual authentication: the server proves itself to the client.
        assert response.headers["WWW-Authenticate"].startswith("Negotiate ")

    def test_no_credentials_get_the_challenge(self):
        response = self.fetch("/whoami")
        assert response.code == 401
        # Plain HTTP: Negotiate only (Basic, a password, is offered on TLS only).
        assert response.headers.get_list("WWW-Authenticate") == ["Negotiate"]

    # --- end tests

    def test_a_broken_token_is_a_401_not_a_500(self):
        response = self.fetch("/whoami", headers={"Authorization": "Negotiate AAAA"})
        assert response.code == 401
        assert response.headers.get_list("WWW-Authenticate") == ["Negotiate"]


def test_a_missing_keytab_fails_at_start_up(tmp_path):
    from tornado_kerb import KeytabError

    with pytest.raises(KeytabError):
        make_app(str(tmp_path / "no.keytab"), "localhost")
