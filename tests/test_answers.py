"""Answers people can read (401/403/503 as HTML, JSON or text, overridable, challenges
kept), optional login, and the limits on what an Authorization header may be."""

from __future__ import annotations

import base64
import http.client
from typing import Any

import pytest
import requests
import tornado.web

from tests.clients import negotiate_header, spnego_token
from tests.conftest import TLS, Realm, ServeFn, Server
from tornado_kerb import (
    KerberosAuthMixin,
    KerberosGuard,
    authenticated,
    optional_login,
    public,
)
from tornado_kerb._header import MAX_CREDENTIALS, split_authorization
from tornado_kerb.errors import AuthenticationFailed

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # what browsers send
JSON = {"Accept": "application/json"}


class Who(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


class Maybe(KerberosAuthMixin, tornado.web.RequestHandler):
    @optional_login
    def get(self) -> None:
        self.write(self.current_user.principal if self.current_user else "anonymous")


class MaybeEverywhere(KerberosAuthMixin, tornado.web.RequestHandler):
    kerberos_optional = True

    def get(self) -> None:
        self.write(self.current_user.principal if self.current_user else "anonymous")


class Plain(tornado.web.RequestHandler):
    """Not a mixin: the guard's own default answers."""

    @optional_login
    def get(self) -> None:
        self.write(self.current_user.principal if self.current_user else "anonymous")


class Rude(KerberosAuthMixin, tornado.web.RequestHandler):
    """An app that renders its own answers, and tramples the headers doing so."""

    def write_kerberos_answer(self, status: int, reason: str, **kwargs: Any) -> None:
        self.clear_header("WWW-Authenticate")
        self.set_status(200)
        self.write({"mine": status, "reason": reason, **kwargs})

    @authenticated
    def get(self) -> None:
        self.write("in")


class OldStyle(KerberosAuthMixin, tornado.web.RequestHandler):
    """0.1's hook for the 401 body still wins for 401s."""

    def write_kerberos_unauthorized(self) -> None:
        self.write("old hook")

    @authenticated
    def get(self) -> None:
        self.write("in")


def start(serve: ServeFn, realm: Realm, https: bool = False, **extra: Any) -> Server:
    settings = {"keytab": realm.keytab, "hostname": "localhost", **extra}
    handlers = [
        (r"/who", Who),
        (r"/maybe", Maybe),
        (r"/everywhere", MaybeEverywhere),
        (r"/plain", Plain),
        (r"/rude", Rude),
        (r"/old", OldStyle),
    ]
    return serve(handlers, settings, https=https)


def get(server: Server, path: str, tls: TLS | None = None, **headers: str) -> requests.Response:
    verify: Any = tls.ca if tls else True
    return requests.get(server.url(path), headers=headers, verify=verify, timeout=30)


# -- readable answers ---------------------------------------------------------------------


def test_a_browser_gets_a_page_that_says_what_to_do(serve: ServeFn, realm: Realm, tls: TLS) -> None:
    response = get(start(serve, realm, https=True), "/who", tls, **HTML)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.raw.headers.getlist("WWW-Authenticate") == [
        "Negotiate",
        'Basic realm="KRBTEST.COM", charset="UTF-8"',
    ]
    page = response.text
    assert "<h1>401 Unauthorized</h1>" in page
    assert "sent no Kerberos ticket" in page and "kinit" in page
    assert "network.negotiate-auth.trusted-uris" in page and "AuthServerAllowlist" in page
    assert "your Kerberos password" in page  # Basic is on, and this is HTTPS


def test_plain_http_does_not_suggest_a_password(serve: ServeFn, realm: Realm) -> None:
    page = get(start(serve, realm), "/who", **HTML).text
    assert "sent no Kerberos ticket" in page
    assert "password" not in page


def test_json_and_text_for_clients_that_are_not_browsers(serve: ServeFn, realm: Realm) -> None:
    server = start(serve, realm)
    as_json = get(server, "/who", **JSON)
    assert as_json.status_code == 401
    assert as_json.json()["error"] == "unauthorized"
    assert as_json.json()["reason"] == "no-credentials"
    as_text = get(server, "/who")
    assert as_text.headers["Content-Type"].startswith("text/plain")
    assert as_text.text.startswith("401 Unauthorized: Your browser sent no Kerberos ticket.")


def test_no_gss_detail_reaches_a_body(serve: ServeFn, realm: Realm) -> None:
    token = bytearray(spnego_token())
    token[-20] ^= 0xFF  # a damaged token: GSSAPI has plenty to say about it
    bad = "Negotiate " + base64.b64encode(bytes(token)).decode()
    for accept in (HTML, JSON, {}):
        response = get(start(serve, realm), "/who", Authorization=bad, **accept)
        assert response.status_code == 401
        body = response.text.lower()
        for gss_word in ("major", "minor", "gss", "integrity", "decrypt", "krb5"):
            assert gss_word not in body, (gss_word, body)
    assert get(start(serve, realm), "/who", Authorization=bad, **JSON).json()["reason"] == (
        "rejected"
    )


def test_403_names_the_user_escaped(serve: ServeFn, realm: Realm) -> None:
    server = start(serve, realm, allowed_principals=["nobody@KRBTEST.COM"])
    response = get(server, "/who", Authorization=negotiate_header(), **HTML)
    assert response.status_code == 403
    assert f"logged in as {realm.user}, but not allowed here" in response.text
    assert "WWW-Authenticate: Negotiate\r" not in response.text


def test_503_says_when_to_come_back(serve: ServeFn, realm: Realm, tls: TLS, tmp_path: Any) -> None:
    # A keytab that does not exist: logins are impossible, fail closed with 503.
    server = start(serve, realm, https=True, keytab=str(tmp_path / "missing.keytab"))
    response = get(server, "/who", tls, **JSON)
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert response.json()["reason"] == "unavailable"  # not the keytab's path
    assert str(tmp_path) not in response.text


def test_an_app_renders_its_own_answers_and_the_challenges_survive(
    serve: ServeFn, realm: Realm
) -> None:
    response = get(start(serve, realm), "/rude")
    assert response.status_code == 401  # not the 200 it set
    assert response.headers.get("WWW-Authenticate") == "Negotiate"  # not the cleared one
    assert response.json() == {"mine": 401, "reason": "no-credentials"}


def test_an_app_render_gets_the_principal_of_a_403(serve: ServeFn, realm: Realm) -> None:
    server = start(serve, realm, allowed_principals=["nobody@KRBTEST.COM"])
    response = get(server, "/rude", Authorization=negotiate_header())
    assert response.status_code == 403
    assert response.json() == {"mine": 403, "reason": "forbidden", "principal": realm.user}


def test_the_01_hook_still_writes_the_401(serve: ServeFn, realm: Realm) -> None:
    response = get(start(serve, realm), "/old")
    assert (response.status_code, response.text) == (401, "old hook")
    assert response.headers["WWW-Authenticate"] == "Negotiate"


def test_a_guard_subclass_renders_for_plain_handlers(serve: ServeFn, realm: Realm) -> None:
    class Branded(KerberosGuard):
        def write_answer(
            self, handler: Any, status: int, reason: str, principal: Any = None
        ) -> None:
            handler.write(f"branded {status}")

    guard = Branded({"keytab": realm.keytab, "hostname": "localhost"})
    try:
        app_server = serve([(r"/plain", Plain)], guard)
        bad = negotiate_header(b"not a token")
        response = get(app_server, "/plain", Authorization=bad)
        assert (response.status_code, response.text) == (401, "branded 401")
    finally:
        guard.close()


# -- optional login ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/maybe", "/everywhere", "/plain"])
def test_optional_login_without_credentials_is_anonymous(
    serve: ServeFn, realm: Realm, path: str
) -> None:
    response = get(start(serve, realm), path)
    assert (response.status_code, response.text) == (200, "anonymous")


@pytest.mark.parametrize("path", ["/maybe", "/everywhere", "/plain"])
def test_optional_login_with_valid_credentials_is_the_user(
    serve: ServeFn, realm: Realm, path: str
) -> None:
    response = get(start(serve, realm), path, Authorization=negotiate_header())
    assert (response.status_code, response.text) == (200, realm.user)


@pytest.mark.parametrize("path", ["/maybe", "/everywhere", "/plain"])
def test_optional_login_with_bad_credentials_is_still_401(
    serve: ServeFn, realm: Realm, tls: TLS, path: str
) -> None:
    server = start(serve, realm, https=True)
    bad_password = get(
        server,
        path,
        tls,
        Authorization="Basic " + base64.b64encode(b"user:wrong-password").decode(),
    )
    assert bad_password.status_code == 401
    garbage = get(server, path, tls, Authorization="Negotiate " + "A" * 40)
    assert garbage.status_code == 401


def test_required_and_optional_together_is_a_mistake() -> None:
    with pytest.raises(TypeError, match="not both"):

        class Confused(KerberosAuthMixin, tornado.web.RequestHandler):
            kerberos_required = True
            kerberos_optional = True

            @public
            def get(self) -> None: ...


# -- limits on the header ----------------------------------------------------------------


def test_two_authorization_headers_are_malformed_not_first_wins(
    serve: ServeFn, realm: Realm, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(serve, realm)
    conn = http.client.HTTPConnection("localhost", server.port, timeout=30)
    try:
        conn.putrequest("GET", "/who")
        conn.putheader("Authorization", negotiate_header())  # valid on its own
        conn.putheader("Authorization", negotiate_header())
        conn.endheaders()
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 401
    assert "(malformed)" in caplog.text


def test_an_oversized_token_is_refused_before_decoding() -> None:
    # Tornado's own 64 KiB header limit usually answers first; ours holds when an app
    # raises that limit (max_header_size).
    with pytest.raises(AuthenticationFailed) as refused:
        split_authorization("Negotiate " + "A" * (MAX_CREDENTIALS + 1))
    assert refused.value.reason == "too-large"
    assert split_authorization("Negotiate " + "A" * MAX_CREDENTIALS)[0] == "negotiate"


@pytest.mark.parametrize("scheme", ["negotiate", "NEGOTIATE", "NeGoTiAtE"])
def test_the_scheme_is_case_insensitive(serve: ServeFn, realm: Realm, scheme: str) -> None:
    header = negotiate_header().replace("Negotiate", scheme, 1)
    response = get(start(serve, realm), "/who", Authorization=header)
    assert (response.status_code, response.text) == (200, realm.user)


def test_spaces_between_scheme_and_token_are_fine_a_tab_is_not(
    serve: ServeFn, realm: Realm
) -> None:
    server = start(serve, realm)
    token = negotiate_header().split(" ", 1)[1]
    assert get(server, "/who", Authorization=f"Negotiate    {token}").status_code == 200
    assert get(server, "/who", Authorization=f"Negotiate\t{token}").status_code == 401
