"""Cross-site refusal (issue 15): a page elsewhere must not make the browser log in to us.

Negotiate needs no prompt and no cookie: a browser that holds a ticket answers the 401 of
a form POST that some other site's page sent, and the POST runs as the user (measured
with headless Chromium, NOTES.md). With ``cross_site="refuse"`` (the default) an unsafe
request that says it comes from elsewhere gets 403 ``cross-site`` before any challenge.

Two parts: plain HTTP requests that carry the headers, one per branch of the rule; and a
real headless Chromium, with the realm's ticket, on a page of another origin
(``http://127.0.0.1:<port>``, the attacker) and on the guarded site's own page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import tornado.escape
import tornado.httpclient
import tornado.web
import tornado.websocket

from tests.chromium import chromium_missing, page_json, run_chromium
from tests.clients import negotiate_header
from tests.conftest import TLS, Realm, Server
from tornado_kerb import KerberosAuthMixin, KerberosGuard
from tornado_kerb.reasons import Outcome

#: Where each guard's handler lives; the guards differ only in their cross-site settings.
PATHS = {"refuse": "/act", "trusted": "/trusted/act", "allow": "/allow/act"}
#: trusted_origins of the "trusted" guard (plus the attacker's origin, for the browser).
TRUSTED = "https://app.example.com"
UNSAFE = ("POST", "PUT", "DELETE", "PATCH")
SAFE = ("GET", "HEAD", "OPTIONS", "TRACE")


@dataclasses.dataclass(frozen=True)
class Effect:
    """What a guarded handler did: it ran, for this principal."""

    variant: str
    method: str
    principal: str
    did: str


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request as a server saw it (never a token: only the scheme's name)."""

    site: str  # "guarded" or "attacker"
    method: str
    uri: str
    status: int
    fetch_site: str | None
    fetch_mode: str | None
    origin: str | None
    auth: str | None  # "negotiate", "basic" or None
    challenges: tuple[str, ...]  # WWW-Authenticate values, first word only


class Journal:
    """Requests both servers finished (their log_function), with a way to wait for one."""

    def __init__(self) -> None:
        self.entries: list[Seen] = []
        self._changed = threading.Condition()

    def recorder(self, site: str) -> Callable[[tornado.web.RequestHandler], None]:
        def record(handler: tornado.web.RequestHandler) -> None:
            headers = handler.request.headers
            auth = headers.get("Authorization")
            seen = Seen(
                site,
                handler.request.method or "",
                handler.request.uri or "",
                handler.get_status(),
                headers.get("Sec-Fetch-Site"),
                headers.get("Sec-Fetch-Mode"),
                headers.get("Origin"),
                auth.split(None, 1)[0].lower() if auth else None,
                tuple(
                    value.split(None, 1)[0]
                    for value in handler._headers.get_list("WWW-Authenticate")
                ),
            )
            with self._changed:
                self.entries.append(seen)
                self._changed.notify_all()

        return record

    def since(self, mark: int) -> list[Seen]:
        with self._changed:
            return self.entries[mark:]

    def wait(
        self, mark: int, done: Callable[[list[Seen]], bool], timeout: float = 15
    ) -> list[Seen]:
        """The entries since ``mark`` once ``done(entries)`` holds: Tornado logs a request
        just after its response went out, so the browser may exit a moment before."""
        with self._changed:
            if not self._changed.wait_for(lambda: done(self.entries[mark:]), timeout):
                raise AssertionError(f"the servers never saw that; they saw {self.entries[mark:]}")
            return self.entries[mark:]


class Act(KerberosAuthMixin, tornado.web.RequestHandler):
    """A guarded handler with a side effect for every method, TRACE included."""

    kerberos_required = True
    SUPPORTED_METHODS = (*tornado.web.RequestHandler.SUPPORTED_METHODS, "TRACE")

    def initialize(self, variant: str) -> None:
        self.variant = variant

    def get_kerberos_guard(self) -> KerberosGuard:
        guard: KerberosGuard = self.settings["guards"][self.variant]
        return guard

    def write_kerberos_answer(self, status: int, reason: str, **kwargs: Any) -> None:
        self.settings["answers"].append((self.variant, self.request.method, status, reason))
        super().write_kerberos_answer(status, reason, **kwargs)

    def _act(self) -> None:
        method = self.request.method or ""
        did = self.get_argument("did", "")
        principal = self.current_user.principal
        self.settings["effects"].append(Effect(self.variant, method, principal, did))
        if method != "HEAD":
            self.write({"variant": self.variant, "method": method, "principal": principal})

    get = post = put = delete = patch = options = head = trace = _act


class SameOriginForm(tornado.web.RequestHandler):
    """The guarded site's own page: a form that posts to its guarded handler at once."""

    def get(self) -> None:
        self.write(_auto_post(PATHS["refuse"], "same-origin-form"))


class AttackerPost(tornado.web.RequestHandler):
    """Another origin's page that posts a form to the guarded site at once."""

    def initialize(self, target: dict[str, str]) -> None:
        self.target = target

    def get(self) -> None:
        variant = self.get_argument("to")
        self.write(_auto_post(self.target["base"] + PATHS[variant], "attack"))


class Socket(KerberosAuthMixin, tornado.websocket.WebSocketHandler):
    """A guarded WebSocket (the default guard) with Tornado's own origin check."""

    kerberos_required = True

    def get_kerberos_guard(self) -> KerberosGuard:
        guard: KerberosGuard = self.settings["guards"]["refuse"]
        return guard

    def open(self) -> None:
        principal = self.current_user.principal
        self.settings["effects"].append(Effect("refuse", "WEBSOCKET", principal, "open"))

    def on_message(self, message: str | bytes) -> None:
        self.write_message(self.current_user.principal)


class AttackerGet(tornado.web.RequestHandler):
    """Another origin's page that loads an image from the guarded site, then navigates
    there: safe methods only."""

    def initialize(self, target: dict[str, str]) -> None:
        self.target = target

    def get(self) -> None:
        url = self.target["base"] + PATHS["refuse"]
        img = tornado.escape.json_encode(f"{url}?did=img")
        nav = tornado.escape.json_encode(f"{url}?did=navigation")
        self.write(
            "<!doctype html><html><body><script>"
            f"const img = new Image(); img.onload = img.onerror = () => {{ location = {nav}; }};"
            f"img.src = {img};"
            "</script></body></html>"
        )


def _auto_post(action: str, did: str) -> str:
    return (
        "<!doctype html><html><body>"
        f'<form method="post" action="{tornado.escape.xhtml_escape(action)}">'
        f'<input type="hidden" name="did" value="{did}"></form>'
        "<script>document.forms[0].submit()</script></body></html>"
    )


def settings(realm: Realm, **extra: Any) -> dict[str, Any]:
    return {"keytab": realm.keytab, "hostname": "localhost", "realm": "KRBTEST.COM", **extra}


class Observed(KerberosGuard):
    """The default guard, counting outcomes as an application would."""

    def __init__(self, settings: dict[str, Any], outcomes: list[tuple[str, str | None]]) -> None:
        super().__init__(settings)
        self.outcomes = outcomes

    def on_outcome(
        self,
        handler: tornado.web.RequestHandler,
        outcome: Outcome,
        mechanism: str | None,
        principal: str | None,
    ) -> None:
        self.outcomes.append((outcome, principal))


@dataclasses.dataclass
class Site:
    """The guarded application on HTTPS and on HTTP, and the attacker's HTTP server."""

    https: Server
    http: Server
    attacker: Server
    app: tornado.web.Application
    journal: Journal
    ca: str

    @property
    def effects(self) -> list[Effect]:
        effects: list[Effect] = self.app.settings["effects"]
        return effects

    @property
    def answers(self) -> list[tuple[str, str, int, str]]:
        answers: list[tuple[str, str, int, str]] = self.app.settings["answers"]
        return answers

    @property
    def outcomes(self) -> list[tuple[str, str | None]]:
        outcomes: list[tuple[str, str | None]] = self.app.settings["outcomes"]
        return outcomes

    @property
    def attacker_origin(self) -> str:
        return f"http://127.0.0.1:{self.attacker.port}"


@pytest.fixture(scope="module")
def site(realm: Realm, tls: TLS) -> Iterator[Site]:
    journal = Journal()
    target: dict[str, str] = {}
    guards: dict[str, KerberosGuard] = {}
    app = tornado.web.Application(
        [
            *((path, Act, {"variant": variant}) for variant, path in PATHS.items()),
            (r"/form", SameOriginForm),
            (r"/ws", Socket),
        ],
        guards=guards,
        effects=[],
        answers=[],
        outcomes=[],
        log_function=journal.recorder("guarded"),
    )
    attacker_app = tornado.web.Application(
        [
            (r"/post", AttackerPost, {"target": target}),
            (r"/get", AttackerGet, {"target": target}),
        ],
        log_function=journal.recorder("attacker"),
    )
    servers: list[Server] = []
    try:
        https = Server(app, tls.server_context())
        servers.append(https)
        http = Server(app, None)
        servers.append(http)
        attacker = Server(attacker_app, None)
        servers.append(attacker)
        running = Site(https, http, attacker, app, journal, tls.ca)
        target["base"] = https.url("").rstrip("/")
        guards["refuse"] = Observed(settings(realm), outcomes=app.settings["outcomes"])
        yield running
    finally:
        for server in servers:
            server.stop()
        for guard in guards.values():
            guard.close()


@pytest.fixture(scope="module")
def variants(site: Site, realm: Realm) -> Iterator[None]:
    """The "trusted" and "allow" guards, beside the default one."""
    guards: dict[str, KerberosGuard] = site.app.settings["guards"]
    trusted = {"trusted_origins": [TRUSTED, site.attacker_origin]}
    try:
        guards["trusted"] = KerberosGuard(settings(realm, **trusted))
        guards["allow"] = KerberosGuard(settings(realm, cross_site="allow"))
        yield
    finally:
        for variant in ("trusted", "allow"):
            guard = guards.pop(variant, None)
            if guard is not None:
                guard.close()


# -- the rule, branch by branch, with plain HTTP requests ---------------------------------

EVIL = "https://evil.example"
REFUSED, ADMITTED = True, False


def case(
    name: str,
    refused: bool,
    *,
    fetch_site: str | None = None,
    origin: str | None = None,
    method: str = "POST",
    variant: str = "refuse",
) -> Any:
    """One branch of the rule. In ``origin``, ``{own}`` is the request's own origin (the
    plain HTTP server's) and ``{port}`` its port."""
    headers = {"Sec-Fetch-Site": fetch_site, "Origin": origin}
    sent = {name: value for name, value in headers.items() if value is not None}
    return pytest.param(variant, method, sent, refused, id=name)


CASES = [
    case("cross-site", REFUSED, fetch_site="cross-site", origin=EVIL),
    case("cross-site without Origin", REFUSED, fetch_site="cross-site"),
    *(case(f"cross-site {m}", REFUSED, fetch_site="cross-site", method=m) for m in UNSAFE[1:]),
    case("same-site", REFUSED, fetch_site="same-site", origin="http://a.localhost:{port}"),
    case("same-site without Origin", REFUSED, fetch_site="same-site"),
    case("same-origin", ADMITTED, fetch_site="same-origin", origin="{own}"),
    # Sec-Fetch-Site, where sent, is the browser's verdict: Origin is not asked then.
    case("same-origin, foreign Origin", ADMITTED, fetch_site="same-origin", origin=EVIL),
    case("none (typed, bookmarked)", ADMITTED, fetch_site="none"),
    case("neither header (curl, requests)", ADMITTED),
    *(case(f"neither header {m}", ADMITTED, method=m) for m in UNSAFE[1:]),
    # Without Sec-Fetch-Site (older browsers): Origin decides.
    case("Origin foreign", REFUSED, origin=EVIL),
    case("Origin null", REFUSED, origin="null"),
    case("Origin own", ADMITTED, origin="{own}"),
    case("Origin other port", REFUSED, origin="http://localhost:1{port}"),
    case("Origin other scheme", REFUSED, origin="https://localhost:{port}"),
    case("Origin same server by IP", REFUSED, origin="http://127.0.0.1:{port}"),
    case("Origin own host, no port", REFUSED, origin="http://localhost"),
    # The values are lower-case tokens; a client's capitals must not open the door.
    case("Cross-Site", REFUSED, fetch_site="Cross-Site"),
    case("CROSS-SITE", REFUSED, fetch_site="CROSS-SITE"),
    case("an unknown Sec-Fetch-Site value", REFUSED, fetch_site="elsewhere", origin="{own}"),
    case("Same-Site", REFUSED, fetch_site="Same-Site"),
    case("Same-Origin", ADMITTED, fetch_site="Same-Origin", origin="{own}"),
    # Safe methods are not this check's business.
    *(
        case(f"cross-site {m}", ADMITTED, fetch_site="cross-site", origin=EVIL, method=m)
        for m in SAFE
    ),
    *(case(f"Origin foreign {m}", ADMITTED, origin=EVIL, method=m) for m in SAFE),
    # A trusted origin is let through whatever Sec-Fetch-Site says; only that origin.
    *(
        case(f"trusted, {fs}", ADMITTED, fetch_site=fs, origin=TRUSTED, variant="trusted")
        for fs in ("cross-site", "same-site", None)
    ),
    *(
        case(f"trusted guard, {fs}, {o}", REFUSED, fetch_site=fs, origin=o, variant="trusted")
        for fs, o in [
            ("cross-site", EVIL),
            ("same-site", "https://other.example.com"),
            ("cross-site", None),
            ("cross-site", TRUSTED + ".evil.example"),  # a prefix is not the origin
            (None, TRUSTED.replace("https:", "http:")),
            (None, TRUSTED + ":8443"),
        ]
    ),
    # cross_site="allow": the check is off.
    case("allow, cross-site", ADMITTED, fetch_site="cross-site", origin=EVIL, variant="allow"),
    case("allow, Origin foreign", ADMITTED, origin=EVIL, variant="allow"),
]


def _send(
    site: Site, variant: str, method: str, headers: dict[str, str], *, token: bool
) -> requests.Response:
    server = site.http
    own = server.url("").rstrip("/")
    values = {k: v.format(own=own, port=server.port) for k, v in headers.items()}
    values["Accept"] = "application/json"
    if token:
        values["Authorization"] = negotiate_header()
    url = server.url(PATHS[variant]) + "?did=" + urllib.parse.quote(method)
    return requests.request(method, url, headers=values, timeout=30)


def assert_refused(response: requests.Response) -> None:
    assert response.status_code == 403, response.text
    # Before any challenge, and before any token was looked at: no Negotiate, not even
    # a mutual-authentication token.
    assert "WWW-Authenticate" not in response.headers
    body = response.json()
    assert body["reason"] == "cross-site"
    assert body["error"] == "forbidden"


@pytest.mark.parametrize(("variant", "method", "headers", "refused"), CASES)
def test_the_rule(
    site: Site,
    realm: Realm,
    request: pytest.FixtureRequest,
    variant: str,
    method: str,
    headers: dict[str, str],
    refused: bool,
) -> None:
    if variant != "refuse":
        request.getfixturevalue("variants")
    before = len(site.effects)
    bare = _send(site, variant, method, headers, token=False)
    with_token = _send(site, variant, method, headers, token=True)
    if refused:
        assert_refused(bare)
        # A valid ticket changes nothing: the handler never runs.
        assert_refused(with_token)
        assert site.effects[before:] == []
    else:
        assert bare.status_code == 401
        assert "Negotiate" in bare.headers.get("WWW-Authenticate", "")
        assert with_token.status_code == 200, with_token.text
        assert site.effects[before:] == [Effect(variant, method, realm.user, method)]


def test_the_refusal_is_the_same_over_https(site: Site, realm: Realm) -> None:
    # Over TLS the guard also offers Basic: the refusal offers neither.
    url = site.https.url(PATHS["refuse"])
    headers = {"Sec-Fetch-Site": "cross-site", "Accept": "application/json"}
    before = len(site.effects)
    for auth in ({}, {"Authorization": negotiate_header()}):
        response = requests.post(url, headers={**headers, **auth}, verify=site.ca, timeout=30)
        assert_refused(response)
    # Own origin over HTTPS is https://localhost:<port>: let through.
    own = {"Origin": site.https.url("").rstrip("/"), "Authorization": negotiate_header()}
    response = requests.post(
        url, headers={"Accept": "application/json", **own}, verify=site.ca, timeout=30
    )
    assert response.status_code == 200
    assert site.effects[before:] == [Effect("refuse", "POST", realm.user, "")]


async def _open_socket(site: Site, headers: dict[str, str]) -> str | bytes | None:
    url = site.http.url("/ws").replace("http://", "ws://", 1)
    request = tornado.httpclient.HTTPRequest(url, headers=headers)
    conn = await tornado.websocket.websocket_connect(request)
    try:
        await conn.write_message("hello")
        return await conn.read_message()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "fetch_site",
    # Chromium sends no Sec-Fetch-* on a WebSocket handshake, only Origin (measured).
    [None, "cross-site"],
)
def test_a_websocket_handshake_is_a_get(site: Site, realm: Realm, fetch_site: str | None) -> None:
    """The handshake is a GET: this check leaves it alone, and a foreign page's socket
    is refused by Tornado's own origin check (``check_origin``), after the login."""
    foreign = (
        {"Origin": EVIL} if fetch_site is None else {"Origin": EVIL, "Sec-Fetch-Site": fetch_site}
    )
    before = len(site.effects)
    with pytest.raises(tornado.httpclient.HTTPClientError) as bare:
        asyncio.run(_open_socket(site, foreign))
    assert bare.value.code == 401
    assert bare.value.response is not None
    assert bare.value.response.headers.get_list("WWW-Authenticate") == ["Negotiate"]
    with pytest.raises(tornado.httpclient.HTTPClientError) as logged_in:
        asyncio.run(_open_socket(site, {**foreign, "Authorization": negotiate_header()}))
    assert logged_in.value.code == 403
    assert logged_in.value.response is not None
    assert b"cross-site" not in logged_in.value.response.body  # Tornado's, not ours
    assert site.effects[before:] == []
    # From its own origin, the same socket opens as the user.
    own = {"Origin": site.http.url("").rstrip("/"), "Authorization": negotiate_header()}
    assert asyncio.run(_open_socket(site, own)) == realm.user
    assert site.effects[before:] == [Effect("refuse", "WEBSOCKET", realm.user, "open")]


# -- a real browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(
    realm: Realm, tls: TLS, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], str]:
    """``browser(url)``: the DOM headless Chromium ends on, with the realm's ticket. One
    profile for the module (a warm profile starts faster); runs are sequential."""
    reason = chromium_missing()
    if reason is not None:
        if os.environ.get("TORNADO_KERB_NO_BROWSER") == "1":
            pytest.skip(reason)
        pytest.fail(
            f"{reason} (scripts/install-system-deps.sh installs it; "
            "TORNADO_KERB_NO_BROWSER=1 skips this test)"
        )
    profile = tmp_path_factory.mktemp("chromium") / "profile"
    env = dict(realm.k5.env)
    return lambda url: run_chromium(url, profile, tls.ca, env)


def _guarded(seen: list[Seen], method: str) -> list[Seen]:
    return [s for s in seen if s.site == "guarded" and s.method == method]


def test_a_cross_site_form_post_is_refused_before_any_challenge(
    site: Site, browser: Callable[[str], str]
) -> None:
    mark, effects = len(site.journal.entries), len(site.effects)
    answers, outcomes = len(site.answers), len(site.outcomes)
    dom = browser(f"{site.attacker_origin}/post?to=refuse")
    seen = site.journal.wait(mark, lambda seen: bool(_guarded(seen, "POST")))
    # What the browser sent, and what it got: one POST, no token, no challenge.
    assert _guarded(seen, "POST") == [
        Seen(
            "guarded", "POST", "/act", 403, "cross-site", "navigate", site.attacker_origin, None, ()
        )
    ]
    assert site.answers[answers:] == [("refuse", "POST", 403, "cross-site")]
    assert site.outcomes[outcomes:] == [("request.cross-site", None)]
    assert site.effects[effects:] == []
    assert "403 Forbidden" in dom and "another site" in dom  # the page the user sees


def test_a_same_origin_form_post_runs_as_the_user(
    site: Site, realm: Realm, browser: Callable[[str], str]
) -> None:
    mark, effects = len(site.journal.entries), len(site.effects)
    dom = browser(site.https.url("/form"))
    seen = site.journal.wait(
        mark, lambda seen: any(s.status == 200 for s in _guarded(seen, "POST"))
    )
    own = site.https.url("").rstrip("/")
    posts = [(s.status, s.fetch_site, s.origin, s.auth) for s in _guarded(seen, "POST")]
    assert posts == [(401, "same-origin", own, None), (200, "same-origin", own, "negotiate")]
    assert _guarded(seen, "POST")[0].challenges == ("Negotiate", "Basic")
    assert page_json(dom)["principal"] == realm.user
    assert site.effects[effects:] == [Effect("refuse", "POST", realm.user, "same-origin-form")]


@pytest.mark.parametrize("variant", ["trusted", "allow"])
def test_a_cross_site_form_post_runs_where_allowed(
    site: Site, variants: None, realm: Realm, browser: Callable[[str], str], variant: str
) -> None:
    """trusted_origins lists the attacker's origin, or cross_site="allow": the hole the
    default closes is there (so the refusal above is the check's doing, not the browser's)."""
    mark, effects = len(site.journal.entries), len(site.effects)
    dom = browser(f"{site.attacker_origin}/post?to={variant}")
    seen = site.journal.wait(
        mark, lambda seen: any(s.status == 200 for s in _guarded(seen, "POST"))
    )
    posts = [(s.uri, s.status, s.fetch_site, s.origin, s.auth) for s in _guarded(seen, "POST")]
    origin = site.attacker_origin
    assert posts == [
        (PATHS[variant], 401, "cross-site", origin, None),
        (PATHS[variant], 200, "cross-site", origin, "negotiate"),
    ]
    assert page_json(dom)["principal"] == realm.user
    assert site.effects[effects:] == [Effect(variant, "POST", realm.user, "attack")]


def test_safe_methods_from_another_site_are_not_refused(
    site: Site, realm: Realm, browser: Callable[[str], str]
) -> None:
    mark, effects = len(site.journal.entries), len(site.effects)
    dom = browser(f"{site.attacker_origin}/get")
    done = "/act?did=navigation"
    seen = site.journal.wait(
        mark, lambda seen: any(s.uri == done and s.status == 200 for s in _guarded(seen, "GET"))
    )
    gets = _guarded(seen, "GET")
    assert all(s.status != 403 for s in gets), gets
    img = [s for s in gets if s.uri == "/act?did=img"]
    assert img and img[0].status == 401 and img[0].fetch_site == "cross-site"
    nav = [(s.status, s.fetch_site, s.fetch_mode, s.auth) for s in gets if s.uri == done]
    assert nav == [
        (401, "cross-site", "navigate", None),
        (200, "cross-site", "navigate", "negotiate"),
    ]
    assert page_json(dom)["principal"] == realm.user
    assert Effect("refuse", "GET", realm.user, "navigation") in site.effects[effects:]
