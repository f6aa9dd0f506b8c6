"""The sessions-and-sign-in guide's examples, each tested over HTTPS against a real realm.

Run with ``pytest docs/examples/test_sessions.py`` (the ``kerberos_realm`` fixture comes
from tornado_kerb's pytest plugin; the server uses Tornado's own test certificate).
"""

from __future__ import annotations

import base64
import http.cookies
import json
import urllib.parse

import pytest
import tornado.testing
import tornado.web

from tornado_kerb import KerberosAuthMixin, KerberosGuard, authenticated, optional_login

COOKIE_SECRET = "docs-example-only-" + "s" * 32  # in production: from the environment


# --- session-app
class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self):
        user = self.current_user
        self.write(
            {
                "principal": user.principal,
                "mechanism": user.mechanism,
                "from_session": user.from_session,
                "credentials": user.credential_kind,
            }
        )


class Logout(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated  # the session cookie logs the user in; "everywhere" needs to know who
    async def post(self):
        if self.get_argument("everywhere", ""):
            await self.kerberos_logout(everywhere=True)  # every browser, every process
        else:
            self.kerberos_logout()  # this browser's cookie
        self.write("signed out")


def make_app(keytab):
    return tornado.web.Application(
        [(r"/whoami", Whoami), (r"/logout", Logout)],
        cookie_secret=COOKIE_SECRET,  # required: the guard refuses to start without
        kerberos={
            "keytab": keytab,
            "hostname": "localhost",
            "session": {"max_age": 3600},
            "basic_cache": {"entries": 1024, "ttl": 300},
        },
    )


# --- end session-app


# --- optional
class Home(KerberosAuthMixin, tornado.web.RequestHandler):
    @optional_login
    def get(self):
        who = self.current_user.principal if self.current_user else "stranger"
        self.write(f"hello {who}")


class Api(KerberosAuthMixin, tornado.web.RequestHandler):
    kerberos_required = True

    def get(self):
        self.write("data")

    def options(self):  # a CORS preflight reaches this with current_user None
        assert self.current_user is None
        self.set_header("Access-Control-Allow-Origin", "https://app.example.com")
        self.set_header("Access-Control-Allow-Credentials", "true")
        self.set_status(204)


# --- end optional


# --- form
def make_form_app(keytab):
    guard = KerberosGuard(
        {
            "keytab": keytab,
            "hostname": "localhost",
            "session": True,
            "login_form": True,
        }
    )
    return tornado.web.Application(
        [(r"/whoami", Whoami), *guard.login_routes("/login")],  # /login and /login/logout
        kerberos=guard,
        cookie_secret=COOKIE_SECRET,
        xsrf_cookie_kwargs={"secure": True, "samesite": "Strict"},
    )


# --- end form


def cookies(response):
    """The cookies a response sets: name -> Morsel."""
    jar = http.cookies.SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    return jar


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class HTTPSTest(tornado.testing.AsyncHTTPSTestCase):
    @pytest.fixture(autouse=True)
    def _realm(self, kerberos_realm):
        self.realm = kerberos_realm

    def negotiate(self):
        return {"Authorization": self.realm.negotiate_header()}

    def tearDown(self):
        KerberosGuard.for_application(self._app).close()
        super().tearDown()


class TestSession(HTTPSTest):
    def get_app(self):
        return make_app(self.realm.keytab)

    def test_the_cookie_lets_the_second_request_in_without_gssapi(self):
        first = self.fetch("/whoami", headers=self.negotiate())
        assert first.code == 200
        assert json.loads(first.body)["from_session"] is False
        session = cookies(first)["tornado_kerb_session"]
        assert session["httponly"] and session["secure"] and session["samesite"] == "Lax"

        cookie = f"tornado_kerb_session={session.value}"
        second = self.fetch("/whoami", headers={"Cookie": cookie})  # no Authorization
        assert second.code == 200
        assert json.loads(second.body) == {
            "principal": self.realm.user,
            "mechanism": "negotiate",
            "from_session": True,
            "credentials": "none",  # a session carries no credentials
        }

    def test_a_tampered_cookie_is_ignored_and_cleared(self):
        first = self.fetch("/whoami", headers=self.negotiate())
        value = cookies(first)["tornado_kerb_session"].value
        forged = value[:-1] + ("0" if value[-1] != "0" else "1")  # the signature's last digit
        response = self.fetch("/whoami", headers={"Cookie": f"tornado_kerb_session={forged}"})
        assert response.code == 401
        assert cookies(response)["tornado_kerb_session"].value == ""

    def test_logout_clears_the_cookie(self):
        first = self.fetch("/whoami", headers=self.negotiate())
        cookie = f"tornado_kerb_session={cookies(first)['tornado_kerb_session'].value}"
        response = self.fetch("/logout", method="POST", body="", headers={"Cookie": cookie})
        assert response.code == 200
        cleared = cookies(response)["tornado_kerb_session"]
        assert cleared.value == ""

    def test_logout_everywhere_ends_cookies_already_issued(self):
        first = self.fetch("/whoami", headers=self.negotiate())
        cookie = f"tornado_kerb_session={cookies(first)['tornado_kerb_session'].value}"
        # Another browser logged in earlier: its cookie ends too.
        out = self.fetch("/logout", method="POST", body="everywhere=1", headers={"Cookie": cookie})
        assert out.code == 200
        assert self.fetch("/whoami", headers={"Cookie": cookie}).code == 401

    def test_the_basic_cache_remembers_a_proven_password(self):
        auth = {"Authorization": basic("user", self.realm.password)}
        first = json.loads(self.fetch("/whoami", headers=auth).body)
        assert (first["mechanism"], first["credentials"]) == ("basic", "password")
        second = json.loads(self.fetch("/whoami", headers=auth).body)
        # A cache hit: no KDC round trip, so no credentials either.
        assert (second["mechanism"], second["credentials"]) == ("basic", "none")
        wrong = self.fetch("/whoami", headers={"Authorization": basic("user", "not-it")})
        assert wrong.code == 401


class TestOptionalLogin(HTTPSTest):
    def get_app(self):
        return tornado.web.Application(
            [(r"/", Home), (r"/api", Api)],
            kerberos={"keytab": self.realm.keytab, "hostname": "localhost"},
        )

    def test_anonymous_user_and_bad_credentials(self):
        assert self.fetch("/").body.decode() == "hello stranger"
        assert self.fetch("/", headers=self.negotiate()).body.decode() == f"hello {self.realm.user}"
        wrong = self.fetch("/", headers={"Authorization": basic("user", "not-it")})
        assert wrong.code == 401  # a wrong password does not become anonymous

    def test_a_cors_preflight_gets_the_handlers_answer(self):
        preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}
        response = self.fetch("/api", method="OPTIONS", headers=preflight)
        assert response.code == 204
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert self.fetch("/api", method="OPTIONS").code == 401  # not a preflight: guarded


class TestLoginForm(HTTPSTest):
    def get_app(self):
        return make_form_app(self.realm.keytab)

    def test_a_browser_gets_negotiate_and_the_form_an_api_client_basic(self):
        page = self.fetch("/whoami", headers={"Accept": "text/html"})
        assert page.code == 401
        assert page.headers.get_list("WWW-Authenticate") == ["Negotiate"]
        assert 'action="/login"' in page.body.decode()
        api = self.fetch("/whoami", headers={"Accept": "application/json"})
        assert api.headers.get_list("WWW-Authenticate") == [
            "Negotiate",
            f'Basic realm="{self.realm.realm}", charset="UTF-8"',
        ]

    def test_signing_in_with_the_form_sets_the_session(self):
        form = self.fetch("/login?next=/whoami")
        xsrf = cookies(form)["_xsrf"].value
        body = urllib.parse.urlencode(
            {"_xsrf": xsrf, "username": "user", "password": self.realm.password, "next": "/whoami"}
        )
        signed_in = self.fetch(
            "/login",
            method="POST",
            body=body,
            headers={"Cookie": f"_xsrf={xsrf}"},
            follow_redirects=False,
        )
        assert signed_in.code == 303
        assert signed_in.headers["Location"] == "/whoami"
        session = cookies(signed_in)["tornado_kerb_session"].value
        me = self.fetch("/whoami", headers={"Cookie": f"tornado_kerb_session={session}"})
        assert json.loads(me.body)["principal"] == self.realm.user

    def test_next_stays_on_this_site(self):
        form = self.fetch("/login?next=//evil.example/")
        xsrf = cookies(form)["_xsrf"].value
        body = urllib.parse.urlencode(
            {
                "_xsrf": xsrf,
                "username": "user",
                "password": self.realm.password,
                "next": "//evil.example/",
            }
        )
        response = self.fetch(
            "/login",
            method="POST",
            body=body,
            headers={"Cookie": f"_xsrf={xsrf}"},
            follow_redirects=False,
        )
        assert response.headers["Location"] == "/"


# --- limits
LIMITS = {
    "login_limits": {
        "per_principal": 5,  # failures per user name in the window
        "per_address": 50,  # failures per client address
        "window": 900,  # seconds
        "entries": 10_000,  # user names and addresses remembered, each
    },
}
# --- end limits


class TestPasswordLimits(HTTPSTest):
    def get_app(self):
        kerberos = {"keytab": self.realm.keytab, "hostname": "localhost", **LIMITS}
        return tornado.web.Application([(r"/whoami", Whoami)], kerberos=kerberos)

    def test_after_five_wrong_passwords_even_the_right_one_waits(self):
        self.realm.add_user("guessed")
        for _ in range(5):
            wrong = self.fetch("/whoami", headers={"Authorization": basic("guessed", "nope")})
            assert wrong.code == 401
        right = self.fetch("/whoami", headers={"Authorization": basic("guessed", "any")})
        assert right.code == 429
        assert 0 < int(right.headers["Retry-After"]) <= 900
        # Other users, and Negotiate, are not affected.
        assert self.fetch("/whoami", headers=self.negotiate()).code == 200
