"""The protecting-handlers guide's examples, each tested against a real realm.

Run with ``pytest docs/examples/test_protecting_handlers.py`` (the ``kerberos_realm``
fixture comes from tornado_kerb's pytest plugin).
"""

from __future__ import annotations

import collections
import json

import pytest
import tornado.template
import tornado.testing

# --- hierarchy
import tornado.web

from tornado_kerb import (
    ConfigurationError,
    KerberosAuthMixin,
    KerberosGuard,
    authenticated,
    public,
)


class Protected(KerberosAuthMixin, tornado.web.RequestHandler):
    kerberos_required = True


class Report(Protected):
    async def get(self):  # guarded
        self.write(f"report for {self.current_user.username}")

    @public
    def options(self):  # open (CORS preflight, say)
        self.set_status(204)


# --- end hierarchy


# --- guard
class Plain(tornado.web.RequestHandler):
    async def prepare(self):
        await GUARD.authenticate(self)  # answers 401/403/503 and finishes, or sets current_user

    def get(self):
        self.write(self.current_user.principal)


class Decorated(tornado.web.RequestHandler):
    @authenticated  # finds the application's guard
    def get(self):
        self.write(self.current_user.username)


def make_app(guard):
    app = tornado.web.Application([(r"/", Plain), (r"/d", Decorated)], kerberos=guard)
    guard.check(app)  # at start-up: ConfigurationError / KeytabError now, not at the first user
    return app


# ... at shutdown: guard.close() stops the KDC threads
# --- end guard

GUARD: KerberosGuard  # set by the test below, from the realm's keytab


# --- cross-site
class Transfer(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def post(self):
        self.application.transfers.append(self.current_user.principal)
        self.write("done")


# --- end cross-site


# --- answers
class Friendly(KerberosAuthMixin, tornado.web.RequestHandler):
    kerberos_required = True

    def get(self):
        self.write("hello")

    def write_kerberos_answer(self, status, reason, **kwargs):
        # Status, challenges and Retry-After are set already: write the body only.
        self.render("refused.html", status=status, reason=reason, **kwargs)


# --- end answers


# --- outcomes
class CountingGuard(KerberosGuard):
    def on_outcome(self, handler, outcome, mechanism, principal):
        OUTCOMES[outcome] += 1  # a Prometheus counter: LOGINS.labels(outcome).inc()


OUTCOMES = collections.Counter()
# --- end outcomes


class RealmTest(tornado.testing.AsyncHTTPTestCase):
    @pytest.fixture(autouse=True)
    def _realm(self, kerberos_realm):
        self.realm = kerberos_realm
        self.kerberos = {"keytab": kerberos_realm.keytab, "hostname": "localhost"}

    def negotiate(self):
        return {"Authorization": self.realm.negotiate_header()}

    def tearDown(self):
        KerberosGuard.for_application(self._app).close()
        super().tearDown()


class TestHierarchy(RealmTest):
    def get_app(self):
        return tornado.web.Application([(r"/report", Report)], kerberos=self.kerberos)

    def test_inherited_methods_are_guarded(self):
        assert self.fetch("/report").code == 401
        response = self.fetch("/report", headers=self.negotiate())
        assert response.code == 200
        assert response.body.decode() == "report for user"

    def test_public_methods_are_open(self):
        assert self.fetch("/report", method="OPTIONS").code == 204


class TestGuard(RealmTest):
    def get_app(self):
        global GUARD
        GUARD = KerberosGuard(self.kerberos)
        return make_app(GUARD)

    def test_plain_handlers_use_the_guard(self):
        assert self.fetch("/").code == 401
        assert self.fetch("/d").code == 401
        assert self.fetch("/", headers=self.negotiate()).body.decode() == self.realm.user
        assert self.fetch("/d", headers=self.negotiate()).body.decode() == "user"


def test_a_typo_in_our_names_is_refused_when_the_class_is_made():
    with pytest.raises(TypeError, match="kerberos_requried"):

        class Typo(KerberosAuthMixin, tornado.web.RequestHandler):
            kerberos_requried = True  # would leave every method open


def test_check_application_refuses_a_handler_that_would_be_open(kerberos_realm):
    # --- open-handler
    class Open(tornado.web.RequestHandler):  # forgot KerberosAuthMixin
        kerberos_required = True  # nothing reads this: every method would be open

        def get(self):
            self.write("secret")

    app = tornado.web.Application([(r"/", Open)], kerberos={"keytab": kerberos_realm.keytab})
    with pytest.raises(ConfigurationError, match="Open"):
        KerberosGuard.check_application(app)
    # --- end open-handler


class TestMissingSetting(RealmTest):
    def get_app(self):
        return tornado.web.Application([(r"/report", Report)], kerbros=self.kerberos)

    def tearDown(self):
        tornado.testing.AsyncHTTPTestCase.tearDown(self)  # no guard was ever built

    def test_a_misspelt_setting_answers_500_not_defaults(self):
        with self.assertLogs("tornado", "ERROR") as logs:
            response = self.fetch("/report", headers=self.negotiate())
        assert response.code == 500
        assert "did you mean 'kerberos', not 'kerbros'?" in "\n".join(logs.output)


class TestCrossSite(RealmTest):
    def get_app(self):
        app = tornado.web.Application([(r"/transfer", Transfer)], kerberos=self.kerberos)
        app.transfers = []
        return app

    def test_a_cross_site_post_is_refused_before_any_challenge(self):
        headers = {**self.negotiate(), "Sec-Fetch-Site": "cross-site", "Accept": "application/json"}
        response = self.fetch("/transfer", method="POST", body="", headers=headers)
        assert response.code == 403
        assert "WWW-Authenticate" not in response.headers  # no invitation to log in
        assert json.loads(response.body)["reason"] == "cross-site"
        assert self._app.transfers == []  # the handler never ran

    def test_a_post_from_another_origin_is_refused_too(self):
        headers = {**self.negotiate(), "Origin": "https://evil.example"}
        response = self.fetch("/transfer", method="POST", body="", headers=headers)
        assert response.code == 403
        assert self._app.transfers == []

    def test_same_origin_and_non_browser_posts_go_through(self):
        headers = {**self.negotiate(), "Sec-Fetch-Site": "same-origin"}
        assert self.fetch("/transfer", method="POST", body="", headers=headers).code == 200
        # curl, requests, httpx send neither header
        assert self.fetch("/transfer", method="POST", body="", headers=self.negotiate()).code == 200
        assert self._app.transfers == [self.realm.user] * 2


class TestAnswers(RealmTest):
    def get_app(self):
        loader = tornado.template.DictLoader(
            {"refused.html": "<h1>{{ status }}</h1><p>{{ reason }}</p>"}
        )
        return tornado.web.Application(
            [(r"/report", Report), (r"/friendly", Friendly)],
            kerberos=self.kerberos,
            template_loader=loader,
        )

    def test_the_default_answer_says_what_to_do(self):
        response = self.fetch("/report", headers={"Accept": "application/json"})
        assert response.code == 401
        body = json.loads(response.body)
        assert body["error"] == "unauthorized"
        assert body["reason"] == "no-credentials"
        assert "kinit" in body["message"]
        html = self.fetch("/report", headers={"Accept": "text/html"}).body.decode()
        assert "network.negotiate-auth.trusted-uris" in html

    def test_your_own_answer_keeps_the_challenge(self):
        response = self.fetch("/friendly")
        assert response.code == 401
        assert response.headers.get_list("WWW-Authenticate") == ["Negotiate"]
        assert response.body.decode() == "<h1>401</h1><p>no-credentials</p>"


class TestOutcomes(RealmTest):
    def get_app(self):
        guard = CountingGuard(self.kerberos)
        return tornado.web.Application([(r"/report", Report)], kerberos=guard)

    def test_every_login_ends_in_one_outcome(self):
        OUTCOMES.clear()
        self.fetch("/report")
        self.fetch("/report", headers=self.negotiate())
        self.fetch("/report", headers={"Authorization": "Negotiate AAAA"})
        assert OUTCOMES == {
            "request.no-credentials": 1,
            "negotiate.ok": 1,
            "negotiate.malformed": 1,
        }


# --- kdc
KDC_PROTECTION = {
    "keytab": "/etc/http.keytab",
    "kdc_workers": 16,  # threads that prove Basic passwords at the KDC
    "kdc_queue": 64,  # Basic logins that may wait for one; beyond that, 503 at once
    "kdc_timeout": 15.0,  # seconds a Basic login may take before it gets 503
    "retry_after": 30,  # the 503's Retry-After
}
# --- end kdc


def test_the_kdc_settings_are_the_defaults():
    from tornado_kerb import KerberosSettings

    settings = KerberosSettings.from_mapping(KDC_PROTECTION)
    defaults = KerberosSettings.from_mapping({"keytab": "/etc/http.keytab"})
    assert settings == defaults


# --- bindings
def bound_only(keytab, hostname, certificate):
    return {
        "keytab": keytab,
        "hostname": hostname,
        "tls_certificate": certificate,  # the server's own (PEM; the first in the file)
        "channel_binding": "require",
    }


# --- end bindings


class TestChannelBindings(tornado.testing.AsyncHTTPSTestCase):
    @pytest.fixture(autouse=True)
    def _realm(self, kerberos_realm):
        self.realm = kerberos_realm

    def get_app(self):
        kerberos = bound_only(self.realm.keytab, "localhost", self.get_ssl_options()["certfile"])
        return tornado.web.Application([(r"/report", Report)], kerberos=kerberos)

    def tearDown(self):
        KerberosGuard.for_application(self._app).close()
        super().tearDown()

    def test_require_refuses_unbound_tokens_and_turns_basic_off(self):
        response = self.fetch("/report", headers={"Authorization": self.realm.negotiate_header()})
        assert response.code == 401
        assert response.headers.get_list("WWW-Authenticate") == ["Negotiate"]  # no Basic
