"""The guard fails closed at its edges (issue 15), against the real realm over HTTP(S).

A session cookie counts only for a mechanism the guard offers and only for the application
whose secret verified it; ``__Host-``/``__Secure-`` cookie names keep their rules; a
streamed body never reaches a handler before the login; ``check_application`` finds the
handlers a mistake left open; the log never holds a Basic name the KDC did not confirm; and
a refused password reads the same whether the user exists or not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import requests
import tornado.httputil
import tornado.routing
import tornado.web

from tests.clients import negotiate_header
from tests.conftest import TLS, Realm, ServeFn, Server
from tests.test_session import set_cookies
from tornado_kerb import (
    ConfigurationError,
    KerberosAuthMixin,
    KerberosGuard,
    KerberosSettings,
    KerberosUser,
    authenticated,
)

SECRET = "edges-cookie-secret-" + "e" * 40
OTHER_SECRET = "edges-other-secret-" + "o" * 40
COOKIE = "tornado_kerb_session"
BODY = 20 * 1024 * 1024  # the streamed PUT
CHUNK = 64 * 1024


def settings(realm: Realm, **extra: Any) -> dict[str, Any]:
    return {"keytab": realm.keytab, "hostname": "localhost", "realm": realm.k5.realm, **extra}


def negotiate() -> dict[str, str]:
    return {"Authorization": negotiate_header()}


def get(server: Server, tls: TLS, path: str = "/", **kwargs: Any) -> requests.Response:
    return requests.get(server.url(path), verify=tls.ca, timeout=30, **kwargs)


class Me(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        user: KerberosUser = self.current_user
        self.write(
            {
                "principal": user.principal,
                "mechanism": user.mechanism,
                "from_session": user.from_session,
            }
        )


@pytest.fixture
def guard(realm: Realm) -> Iterator[KerberosGuard]:
    """A guard of the test's own (its KDC threads stopped afterwards)."""
    made = KerberosGuard(settings(realm))
    yield made
    made.close()


# -- 1. a cookie counts only for a mechanism the guard offers ------------------------------


def test_a_basic_cookie_is_no_login_where_basic_is_off(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    with_basic = serve(
        [(r"/", Me)], settings(realm, session=True), https=True, cookie_secret=SECRET
    )
    without = serve(
        [(r"/", Me)],
        settings(realm, session=True, basic=False),
        https=True,
        cookie_secret=SECRET,  # the same secret: the signature alone would verify
    )
    by_password = get(with_basic, tls, auth=("user", realm.password))
    assert by_password.json()["mechanism"] == "basic"
    (basic_cookie,) = set_cookies(by_password)
    assert get(with_basic, tls, cookies={COOKIE: basic_cookie.value}).status_code == 200

    refused = get(without, tls, cookies={COOKIE: basic_cookie.value})
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Negotiate"  # no Basic offered here
    (cleared,) = set_cookies(refused)
    assert (cleared.key, cleared.value) == (COOKIE, "")
    assert cleared["expires"]  # in the past: the browser drops it

    (ticket_cookie,) = set_cookies(get(with_basic, tls, headers=negotiate()))
    accepted = get(without, tls, cookies={COOKIE: ticket_cookie.value})
    assert accepted.status_code == 200
    assert accepted.json() == {
        "principal": realm.user,
        "mechanism": "negotiate",
        "from_session": True,
    }


# -- 2. a verified cookie counts only for the application that verified it ----------------


def test_one_guard_two_secrets_a_cached_cookie_stays_with_its_application(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    shared = KerberosGuard(settings(realm, session=True))
    try:
        # The same handler class on both: only the application tells them apart.
        first = serve([(r"/", Me)], shared, https=True, cookie_secret=SECRET)
        second = serve([(r"/", Me)], shared, https=True, cookie_secret=OTHER_SECRET)
        (cookie,) = set_cookies(get(first, tls, headers=negotiate()))
        jar = {COOKIE: cookie.value}
        used = get(first, tls, cookies=jar)  # verified once: now in the guard's cache
        assert (used.status_code, used.json()["from_session"]) == (200, True)

        elsewhere = get(second, tls, cookies=jar)
        assert elsewhere.status_code == 401
        (cleared,) = set_cookies(elsewhere)
        assert cleared.value == ""

        again = get(first, tls, cookies=jar)
        assert (again.status_code, again.json()["principal"]) == (200, realm.user)
    finally:
        shared.close()


# -- 3. __Host- and __Secure- cookie names ---------------------------------------------------


@pytest.mark.parametrize("name", ["__Host-tk", "__Secure-tk"])
def test_prefixed_cookie_names_work_end_to_end(
    serve: ServeFn, realm: Realm, tls: TLS, name: str
) -> None:
    server = serve(
        [(r"/", Me)],
        settings(realm, session={"name": name}),
        https=True,
        cookie_secret=SECRET,
    )
    login = get(server, tls, headers=negotiate())
    assert login.status_code == 200
    (cookie,) = set_cookies(login)
    assert cookie.key == name
    # What browsers demand of the prefixes: Secure, and for __Host- path / and no Domain.
    assert cookie["secure"] and cookie["httponly"]
    assert (cookie["path"], cookie["samesite"], cookie["domain"]) == ("/", "Lax", "")
    again = get(server, tls, cookies={name: cookie.value})
    assert again.status_code == 200
    assert (again.json()["principal"], again.json()["from_session"]) == (realm.user, True)
    assert set_cookies(again) == []

    # A bad one is cleared by a Secure Set-Cookie: browsers ignore any other for a prefix.
    junk = get(server, tls, headers={"Cookie": f"{name}=not-a-signed-value"})
    assert junk.status_code == 401
    (cleared,) = set_cookies(junk)
    assert (cleared.key, cleared.value) == (name, "")
    assert cleared["secure"]


def test_prefixed_cookie_names_are_held_to_their_rules() -> None:
    KerberosSettings(session={"name": "__Secure-tk", "path": "/app"})  # only __Host- needs /
    with pytest.raises(ConfigurationError, match="a __Host- cookie needs path '/'"):
        KerberosSettings(session={"name": "__Host-tk", "path": "/app"})
    for name in ("__Host-tk", "__Secure-tk"):
        with pytest.raises(ConfigurationError, match="never sent over plain HTTP"):
            KerberosSettings(session={"name": name, "http": True})
    for name in ("my session", "tk;Path=/", "tk=1", ""):
        with pytest.raises(ConfigurationError, match="bad cookie name"):
            KerberosSettings(session={"name": name})


# -- 4. streamed bodies: the login comes before the first byte ------------------------------


class _Counting(KerberosAuthMixin, tornado.web.RequestHandler):
    #: Sizes of the chunks data_received() saw, per class (reset by the test).
    chunks: ClassVar[list[int]]

    def data_received(self, chunk: bytes) -> None:
        type(self).chunks.append(len(chunk))

    def answer(self) -> None:
        self.write({"principal": self.current_user.principal, "bytes": sum(self.chunks)})


@tornado.web.stream_request_body
class StreamRequired(_Counting):
    kerberos_required = True
    chunks: ClassVar[list[int]] = []

    def put(self) -> None:
        self.answer()


@tornado.web.stream_request_body
class StreamDecorated(_Counting):
    chunks: ClassVar[list[int]] = []

    @authenticated
    def put(self) -> None:
        self.answer()


@tornado.web.stream_request_body
class PlainStream(tornado.web.RequestHandler):
    """No mixin: @authenticated, when the class is made, has prepare() log in first."""

    chunks: ClassVar[list[int]] = []

    @authenticated
    def put(self) -> None:
        self.write({"principal": self.current_user.principal, "bytes": sum(self.chunks)})

    def data_received(self, chunk: bytes) -> None:
        type(self).chunks.append(len(chunk))


class _PlainBase(tornado.web.RequestHandler):
    @authenticated
    def put(self) -> None:
        self.write("stored")


@tornado.web.stream_request_body
class PlainStreamSubclass(_PlainBase):
    """A plain subclass that defines its own prepare(): nothing made it log in first."""

    def prepare(self) -> None:
        pass

    def data_received(self, chunk: bytes) -> None:
        pass


def _body(sent: list[int]) -> Iterator[bytes]:
    # A generator: requests streams it (chunked), as a client uploading a big file does.
    chunk = b"x" * CHUNK
    for _ in range(BODY // CHUNK):
        sent[0] += CHUNK
        yield chunk


@pytest.mark.parametrize(
    "handler", [StreamRequired, StreamDecorated, PlainStream], ids=lambda c: c.__name__
)
def test_a_streamed_body_waits_for_the_login(
    serve: ServeFn, realm: Realm, handler: type[_Counting]
) -> None:
    server = serve([(r"/up", handler)], settings(realm))
    handler.chunks = []
    sent = [0]
    anonymous = requests.put(server.url("/up"), data=_body(sent), timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Negotiate"
    assert handler.chunks == []  # not one byte of a stranger's upload reached the handler

    sent = [0]
    logged_in = requests.put(server.url("/up"), data=_body(sent), headers=negotiate(), timeout=60)
    assert logged_in.status_code == 200
    assert logged_in.json() == {"principal": realm.user, "bytes": BODY}
    assert sent[0] == BODY and sum(handler.chunks) == BODY and len(handler.chunks) > 1


@pytest.mark.parametrize(
    "handler", [StreamRequired, StreamDecorated, PlainStream], ids=lambda c: c.__name__
)
@pytest.mark.parametrize("method", ["POST", "OPTIONS"])
def test_a_method_the_streaming_handler_lacks_takes_no_body(
    serve: ServeFn, realm: Realm, handler: type[_Counting], method: str
) -> None:
    # A POST to a handler with only put(), or a CORS preflight (it has no options()):
    # Tornado would answer 405 only after taking the body.
    server = serve([(r"/up", handler)], settings(realm))
    handler.chunks = []
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"}
    answer = requests.request(
        method, server.url("/up"), data=_body([0]), headers=headers, timeout=30
    )
    assert answer.status_code in (401, 405)
    assert handler.chunks == []


def test_a_plain_streaming_subclass_with_its_own_prepare_is_refused(
    guard: KerberosGuard, realm: Realm
) -> None:
    app = tornado.web.Application([(r"/up", PlainStreamSubclass)], kerberos=settings(realm))
    with pytest.raises(ConfigurationError) as info:
        guard.check_application(app)
    message = str(info.value)
    assert "tests.test_edges.PlainStreamSubclass streams its request body" in message
    assert "inherit KerberosAuthMixin" in message
    # Those that log in before the body are fine: the mixin's, and a plain class whose
    # own decorator saw it made.
    guard.check_application(
        tornado.web.Application(
            [(r"/a", StreamRequired), (r"/b", StreamDecorated), (r"/c", PlainStream)],
            kerberos=settings(realm),
        )
    )


# -- 5. check_application: handlers left open by a mistake ---------------------------------


class PlainRequired(tornado.web.RequestHandler):
    """Sets what only the mixin reads: every method is open."""

    kerberos_required = True

    def get(self) -> None:
        self.write("open to anyone")


class PlainTypo(tornado.web.RequestHandler):
    kerberos_requried = True

    def get(self) -> None:
        self.write("open to anyone")


class PlainWithHooks(tornado.web.RequestHandler):
    """A plain handler that logs in through the guard and brings the hooks it asks for."""

    async def prepare(self) -> None:
        await KerberosGuard.for_application(self.application).authenticate(self)

    def kerberos_authorize(self, user: KerberosUser) -> bool:
        return False

    def write_kerberos_answer(self, status: int, reason: str, **kwargs: Any) -> None:
        self.write(f"hooked {status} {reason} {kwargs.get('principal')}")

    def get(self) -> None:
        self.write("never")


class Who(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


def _direct(kerberos: Any) -> tornado.web.Application:
    return tornado.web.Application([(r"/", Who), (r"/open", PlainRequired)], kerberos=kerberos)


def _nested_list(kerberos: Any) -> tornado.web.Application:
    # A list as a rule's target becomes a nested router of the application.
    nested = [(r"/deep/open", PlainRequired)]
    return tornado.web.Application(
        [(r"/", Who), (tornado.routing.PathMatches(r"/deep/.*"), nested)], kerberos=kerberos
    )


def _rule_router(kerberos: Any) -> tornado.web.Application:
    inner = tornado.web.Application([(r"/mounted/open", PlainRequired)])
    router = tornado.routing.RuleRouter(
        [tornado.routing.Rule(tornado.routing.PathMatches(r"/mounted/.*"), inner)]
    )
    return tornado.web.Application(
        [(r"/", Who), (tornado.routing.PathMatches(r"/mounted/.*"), router)], kerberos=kerberos
    )


def _host_rule(kerberos: Any) -> tornado.web.Application:
    app = tornado.web.Application([(r"/", Who)], kerberos=kerberos)
    app.add_handlers(r"other\.example", [(r"/", PlainRequired)])
    return app


@pytest.mark.parametrize("build", [_direct, _nested_list, _rule_router, _host_rule])
def test_a_plain_handler_with_a_mixin_attribute_is_found_wherever_it_is_routed(
    guard: KerberosGuard, realm: Realm, build: Any
) -> None:
    with pytest.raises(ConfigurationError) as info:
        guard.check_application(build(settings(realm)))
    message = str(info.value)
    assert "tests.test_edges.PlainRequired sets kerberos_required" in message
    assert "add KerberosAuthMixin to its bases" in message
    # The mixin handler next to it is not named.
    assert "test_edges.Who" not in message


def test_a_near_miss_on_a_plain_handler_is_refused(guard: KerberosGuard, realm: Realm) -> None:
    app = tornado.web.Application([(r"/", PlainTypo)], kerberos=settings(realm))
    with pytest.raises(ConfigurationError, match="did you mean 'kerberos_required'") as info:
        guard.check_application(app)
    assert "PlainTypo.kerberos_requried" in str(info.value)


def test_the_hooks_the_guard_asks_any_handler_for_are_fine_on_a_plain_one(
    serve: ServeFn, realm: Realm, guard: KerberosGuard
) -> None:
    server = serve([(r"/", PlainWithHooks)], guard)
    guard.check_application(server.app)  # no error: the guard does read them
    refused = requests.get(server.url("/"), headers=negotiate(), timeout=30)
    assert (refused.status_code, refused.text) == (403, f"hooked 403 forbidden {realm.user}")


def test_sessions_without_a_cookie_secret_fail_at_start_up(realm: Realm) -> None:
    guard = KerberosGuard(settings(realm, session=True))
    try:
        app = tornado.web.Application([(r"/", Who)], kerberos=guard)
        with pytest.raises(ConfigurationError, match="setting 'cookie_secret'"):
            guard.check(app)  # at start-up: no request has been made
        guard.check(tornado.web.Application([(r"/", Who)], kerberos=guard, cookie_secret=SECRET))
    finally:
        guard.close()


def test_a_typo_in_the_applications_kerberos_dict_is_refused(
    guard: KerberosGuard, realm: Realm
) -> None:
    # The guard serves an application whose own setting it was not built from.
    app = tornado.web.Application(
        [(r"/", Who)], kerberos={**settings(realm), "allowed_principal": ["alice@KRBTEST.COM"]}
    )
    with pytest.raises(ConfigurationError, match="did you mean 'allowed_principals'"):
        guard.check_application(app)


def test_an_app_with_an_open_handler_answers_500_at_the_first_guarded_request(
    serve: ServeFn, realm: Realm, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigurationError, match="PlainRequired"):
        KerberosGuard.for_application(_direct(settings(realm)))
    server = serve([(r"/", Who), (r"/open", PlainRequired)], settings(realm))
    for _ in range(2):  # every time, not only the first
        response = requests.get(server.url("/"), headers=negotiate(), timeout=30)
        assert response.status_code == 500
        assert realm.user not in response.text
    errors = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ConfigurationError]
    assert len(errors) == 2
    assert "PlainRequired sets kerberos_required" in str(errors[0].exc_info[1])


class LateRequired(KerberosAuthMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(f"ran for {self.current_user.principal}")


LateRequired.kerberos_required = True  # after the class was made: nothing wrapped get()


def test_kerberos_required_set_after_the_class_was_made_fails_closed(
    serve: ServeFn, realm: Realm, guard: KerberosGuard
) -> None:
    with pytest.raises(ConfigurationError, match=r"LateRequired\.get is not guarded"):
        guard.check_application(tornado.web.Application([(r"/", LateRequired)]))
    # Unchecked (no check at start-up, an explicit guard), the request still logs in.
    server = serve([(r"/", LateRequired)], guard)
    # Pretend the check had passed (or was never asked): the runtime must hold by itself.
    server.app._tornado_kerb_checked = len(server.app.default_router.rules)
    assert requests.get(server.url("/"), timeout=30).status_code == 401
    response = requests.get(server.url("/"), headers=negotiate(), timeout=30)
    assert response.status_code == 200
    assert response.text == f"ran for {realm.user}"


def test_a_broken_application_builds_no_guard_per_request(realm: Realm) -> None:
    built = []

    class Counted(KerberosGuard):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(self)
            super().__init__(*args, **kwargs)

    app = _direct(settings(realm, s4u2proxy=True))  # a guard would fetch a TGT at once
    for _ in range(3):
        with pytest.raises(ConfigurationError, match="PlainRequired"):
            Counted.for_application(app)
    assert built == []


def test_handlers_added_after_the_first_request_are_checked(
    serve: ServeFn, realm: Realm, guard: KerberosGuard
) -> None:
    for kerberos in (settings(realm), guard):  # a dict, and an explicit guard
        server = serve([(r"/", Who)], kerberos)
        assert requests.get(server.url("/"), headers=negotiate(), timeout=30).status_code == 200
        server.app.add_handlers(r".*", [(r"/open", PlainRequired)])
        assert requests.get(server.url("/"), headers=negotiate(), timeout=30).status_code == 500


class _Opaque(tornado.routing.Router):
    def __init__(self, app: tornado.web.Application) -> None:
        self.app = app

    def find_handler(
        self, request: tornado.httputil.HTTPServerRequest, **kwargs: Any
    ) -> tornado.httputil.HTTPMessageDelegate | None:
        return self.app.find_handler(request)


def test_a_router_that_hides_its_rules_is_named_in_a_warning(
    guard: KerberosGuard, realm: Realm, caplog: pytest.LogCaptureFixture
) -> None:
    inner = tornado.web.Application([(r"/x/open", PlainRequired)])
    app = tornado.web.Application(
        [(r"/", Who), (tornado.routing.PathMatches(r"/x/.*"), _Opaque(inner))]
    )
    guard.check_application(app)  # cannot raise for what it cannot see...
    (line,) = [r for r in caplog.records if "cannot see the handlers behind" in r.getMessage()]
    assert line.levelno == logging.WARNING  # ...but says so


# -- 6. Tornado's own @authenticated --------------------------------------------------------


class TornadoDecorated(KerberosAuthMixin, tornado.web.RequestHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.write("never without a login page")


class TornadoDecoratedRequired(KerberosAuthMixin, tornado.web.RequestHandler):
    kerberos_required = True  # ours wraps Tornado's: the user is in before it looks

    @tornado.web.authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


def test_tornados_authenticated_without_a_login_page_names_ours(
    serve: ServeFn, realm: Realm, guard: KerberosGuard, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve([(r"/", TornadoDecorated)], settings(realm))
    with pytest.raises(ConfigurationError) as info:
        guard.check_application(server.app)
    message = str(info.value)
    assert "TornadoDecorated.get uses tornado.web.authenticated" in message
    assert "use tornado_kerb.authenticated" in message

    response = requests.get(server.url("/"), headers=negotiate(), timeout=30)
    assert response.status_code == 500
    (error,) = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ConfigurationError]
    said = str(error.exc_info[1])
    assert "TornadoDecorated: @tornado.web.authenticated needs a login page" in said
    assert "@tornado_kerb.authenticated" in said


def test_tornados_authenticated_under_kerberos_required_works(
    serve: ServeFn, realm: Realm, guard: KerberosGuard
) -> None:
    server = serve([(r"/", TornadoDecoratedRequired)], settings(realm))
    guard.check_application(server.app)
    response = requests.get(server.url("/"), headers=negotiate(), timeout=30)
    assert (response.status_code, response.text) == (200, realm.user)
    anonymous = requests.get(server.url("/"), timeout=30)
    assert anonymous.status_code == 401  # our challenge, not Tornado's 403 or a 500
    assert anonymous.headers["WWW-Authenticate"] == "Negotiate"


# -- 7. the log never holds what may be a password -------------------------------------------


@pytest.fixture
def basic_server(serve: ServeFn, realm: Realm) -> Server:
    return serve([(r"/", Who)], settings(realm), https=True)


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    # Messages, their arguments and any traceback: everything a handler could write out.
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
    return "\n".join(parts)


@pytest.mark.parametrize("typed", ["Hunter2-secret!", "Tr0ub4dor-pw@SECRET.REALM"])
def test_a_name_the_kdc_did_not_confirm_is_never_logged(
    basic_server: Server, realm: Realm, tls: TLS, caplog: pytest.LogCaptureFixture, typed: str
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="tornado_kerb")
    response = get(basic_server, tls, auth=(typed, "any-password-at-all"))
    assert response.status_code == 401
    logged = _logged(caplog)
    assert "Kerberos login refused (" in logged  # the refusal is logged, without the name
    local = typed.partition("@")[0]
    assert local not in logged
    assert "SECRET.REALM" not in logged
    assert "not found in Kerberos database" not in logged  # MIT's text quotes the name
    assert "any-password-at-all" not in logged


def test_an_unknown_user_is_looked_up_at_the_kdc_yet_not_logged(
    basic_server: Server, realm: Realm, tls: TLS, caplog: pytest.LogCaptureFixture
) -> None:
    # The same as above, and proof that the name did go to the KDC (where MIT's message
    # quoting it comes from): the guard did not just refuse it early.
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="tornado_kerb")
    before = realm.proxy.exchanges
    assert get(basic_server, tls, auth=("Hunter2-secret!", "x")).status_code == 401
    assert realm.proxy.exchanges > before
    assert "(unknown-user)" in caplog.text
    assert "Hunter2" not in _logged(caplog)


def test_a_wrong_password_may_name_the_user_never_the_password(
    basic_server: Server, realm: Realm, tls: TLS, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="tornado_kerb")
    wrong = "Wr0ng-Passw0rd-" + realm.password[::-1]
    assert get(basic_server, tls, auth=("user", wrong)).status_code == 401
    logged = _logged(caplog)
    assert f"Kerberos login refused (bad-password) for {realm.user}" in logged
    assert wrong not in logged and realm.password not in logged


# -- 8. one answer for every refused password -----------------------------------------------


@pytest.mark.parametrize("accept", ["application/json", "text/html"])
def test_a_refused_password_reads_the_same_for_unknown_users(
    basic_server: Server, realm: Realm, tls: TLS, accept: str
) -> None:
    headers = {"Accept": accept}
    wrong = get(basic_server, tls, auth=("user", "not-the-password"), headers=headers)
    unknown = get(basic_server, tls, auth=("nosuchuser", "not-the-password"), headers=headers)
    assert wrong.status_code == unknown.status_code == 401
    assert "The user name or password was wrong." in wrong.text
    if accept == "application/json":
        assert wrong.json()["reason"] == "bad-password"
    assert unknown.text == wrong.text  # no telling which user names exist
    assert wrong.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"]
