"""The sign-in form, password-guessing limits, where Negotiate is offered, CORS preflights
(issue 17), with the real realm and requests; browsers in test_login_browsers.py."""

from __future__ import annotations

import concurrent.futures
import functools
import re
import time
from typing import Any

import pytest
import requests
import tornado.web

from tests.clients import basic_header, negotiate_header
from tests.conftest import TLS, Realm, ServeFn, Server, add_user
from tornado_kerb import ConfigurationError, KerberosAuthMixin, KerberosGuard, authenticated
from tornado_kerb.limits import LoginLimitOptions, LoginLimits, principal_key
from tornado_kerb.login import safe_next

HTML = {"Accept": "text/html"}
SECRET = "login-test-cookie-secret-" + "x" * 20
NTLM = "Negotiate TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw=="


class Page(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        user = self.current_user
        self.write({"principal": user.principal, "from_session": user.from_session})

    @authenticated
    def options(self) -> None:
        # The app's CORS answer: a preflight reaches it as nobody.
        self.set_header("Access-Control-Allow-Origin", "https://app.example")
        self.set_header("Access-Control-Allow-Methods", "GET, POST")
        self.set_status(204)


def settings(realm: Realm, **extra: Any) -> dict[str, Any]:
    return {
        "keytab": realm.keytab,
        "hostname": "localhost",
        "session": True,
        "login_form": True,
        **extra,
    }


def start(serve: ServeFn, realm: Realm, **extra: Any) -> Server:
    guard = KerberosGuard(settings(realm, **extra))
    return serve(
        [("/", Page), ("/page", Page), *guard.login_routes("/login")],
        guard,
        https=True,
        cookie_secret=SECRET,
    )


def form_of(page: str) -> dict[str, str]:
    """The hidden fields and action of the sign-in form in ``page``."""
    action = re.search(r'<form method="post" action="([^"]*)"', page)
    xsrf = re.search(r'name="_xsrf" value="([^"]*)"', page)
    nxt = re.search(r'name="next" value="([^"]*)"', page)
    assert action and xsrf and nxt, page
    return {"action": action.group(1), "_xsrf": xsrf.group(1), "next": nxt.group(1)}


def sign_in(
    server: Server, tls: TLS, user: str, password: str, path: str = "/page", **fields: str
) -> tuple[requests.Session, requests.Response]:
    browser = requests.Session()
    browser.get = functools.partial(browser.get, verify=tls.ca)  # type: ignore[method-assign]
    browser.post = functools.partial(browser.post, verify=tls.ca)  # type: ignore[method-assign]
    first = browser.get(server.url(path), headers=HTML, timeout=30)
    assert first.status_code == 401
    form = form_of(first.text)
    data = {"username": user, "password": password, "_xsrf": form["_xsrf"], "next": form["next"]}
    data.update(fields)
    answer = browser.post(
        server.url(form["action"]), data=data, headers=HTML, allow_redirects=False, timeout=30
    )
    return browser, answer


def test_a_browser_s_401_offers_negotiate_and_the_form_not_basic(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    server = start(serve, realm)
    page = requests.get(server.url("/page?x=1"), headers=HTML, verify=tls.ca, timeout=30)
    assert page.status_code == 401
    assert page.headers["WWW-Authenticate"] == "Negotiate"  # no Basic: no browser box
    form = form_of(page.text)
    assert form["action"] == "/login" and form["next"] == "/page?x=1"
    assert 'autocomplete="username"' in page.text
    assert 'autocomplete="current-password"' in page.text
    assert '<label for="password">' in page.text and "<script" not in page.text
    # API clients keep the Basic challenge, and get no form.
    api = requests.get(server.url("/page"), verify=tls.ca, timeout=30)
    assert api.status_code == 401
    assert 'Basic realm="KRBTEST.COM"' in api.headers["WWW-Authenticate"]
    assert "<form" not in api.text


def test_sign_in_sets_the_session_and_goes_to_next(serve: ServeFn, realm: Realm, tls: TLS) -> None:
    server = start(serve, realm)
    browser, answer = sign_in(server, tls, "user", realm.password)
    assert answer.status_code == 303, answer.text
    assert answer.headers["Location"] == "/page"
    cookie = answer.headers["Set-Cookie"]
    assert "tornado_kerb_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    landed = browser.get(server.url("/page"), timeout=30)
    assert landed.json() == {"principal": realm.user, "from_session": True}


def test_a_wrong_password_shows_the_form_again_without_saying_why(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    server = start(serve, realm)
    messages = set()
    for user in ("user", "nosuchuser"):
        _, answer = sign_in(server, tls, user, "wrong-password")
        assert answer.status_code == 200
        assert "Set-Cookie" not in answer.headers or "session" not in answer.headers["Set-Cookie"]
        form_of(answer.text)  # the form again
        messages.add(re.search(r'<p role="status">([^<]*)</p>', answer.text).group(1))  # type: ignore[union-attr]
    assert messages == {"The user name or password was wrong. Check both and try again."}


def test_the_form_needs_the_xsrf_token(serve: ServeFn, realm: Realm, tls: TLS) -> None:
    server = start(serve, realm)
    data = {"username": "user", "password": realm.password, "next": "/"}
    answer = requests.post(server.url("/login"), data=data, verify=tls.ca, timeout=30)
    assert answer.status_code == 403
    assert "tornado_kerb_session" not in answer.headers.get("Set-Cookie", "")


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "javascript:alert(1)",
        "/\t/evil.example/",
        "/\r\nSet-Cookie: x=y",
        "",
    ],
)
def test_next_is_a_path_on_this_site_or_slash(
    serve: ServeFn, realm: Realm, tls: TLS, target: str
) -> None:
    assert safe_next(target) == "/"
    server = start(serve, realm)
    _, answer = sign_in(server, tls, "user", realm.password, next=target)
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/"


def test_logout_clears_the_cookie_and_says_a_ticket_signs_back_in(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    server = start(serve, realm)
    browser, _ = sign_in(server, tls, "user", realm.password)
    page = browser.get(server.url("/login/logout"), timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]*)"', page.text).group(1)  # type: ignore[union-attr]
    out = browser.post(server.url("/login/logout"), data={"_xsrf": xsrf}, timeout=30)
    assert out.status_code == 200
    assert "signs you straight back in" in out.text
    assert browser.get(server.url("/page"), timeout=30).status_code == 401


def test_login_form_needs_sessions(realm: Realm) -> None:
    with pytest.raises(ConfigurationError, match="needs 'session'"):
        KerberosGuard({"keytab": realm.keytab, "login_form": True})


def test_on_plain_http_no_form_is_shown(serve: ServeFn, realm: Realm) -> None:
    guard = KerberosGuard(settings(realm))
    server = serve([("/", Page)], guard, cookie_secret=SECRET)  # http
    page = requests.get(server.url("/"), headers=HTML, timeout=30)
    assert page.status_code == 401 and "<form" not in page.text


# -- password guessing ----------------------------------------------------------------------


def test_over_the_limit_429_and_the_kdc_is_not_asked(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    limits = {"per_principal": 3, "per_address": 100, "window": 600}
    server = start(serve, realm, login_limits=limits)
    victim = add_user(realm, "lockme")
    for _ in range(3):
        assert sign_in(server, tls, "lockme", "guess")[1].status_code == 200
    before = realm.proxy.exchanges
    _, answer = sign_in(server, tls, "lockme", victim.password)  # even the right one
    assert answer.status_code == 429
    assert 1 <= int(answer.headers["Retry-After"]) <= 600
    assert realm.proxy.exchanges == before, "the KDC was asked"
    # Basic counts against the same user: ALICE is alice.
    basic = requests.get(
        server.url("/page"),
        headers={"Authorization": basic_header("LOCKME", "guess")},
        verify=tls.ca,
        timeout=30,
    )
    assert basic.status_code == 429 and "Retry-After" in basic.headers
    assert realm.proxy.exchanges == before
    # Other users are not locked out by it.
    assert sign_in(server, tls, "user", realm.password)[1].status_code == 303


def test_basic_alone_is_limited_too(serve: ServeFn, realm: Realm, tls: TLS) -> None:
    server = serve(
        [("/", Page)],
        {"keytab": realm.keytab, "hostname": "localhost", "login_limits": {"per_principal": 2}},
        https=True,
    )
    add_user(realm, "basiclock")

    def attempt() -> int:
        header = basic_header("basiclock", "nope")
        return requests.get(
            server.url("/"), headers={"Authorization": header}, verify=tls.ca, timeout=30
        ).status_code

    assert [attempt(), attempt(), attempt()] == [401, 401, 429]


def attempt(
    limits: LoginLimits, principal: str, address: str, *, failed: bool = False, proven: bool = False
) -> int | None:
    """One password login as the guard makes it: begin(), and if let through, end() with
    what the KDC said. The wait begin() answered (``None``: let through)."""
    wait = limits.begin(principal, address)
    if wait is None:
        limits.end(principal, address, failed=failed, proven=proven)
    return wait


def fail(limits: LoginLimits, principal: str, address: str) -> None:
    assert attempt(limits, principal, address, failed=True) is None


def test_limits_are_a_sliding_window_with_bounded_memory() -> None:
    limits = LoginLimits(LoginLimitOptions(per_principal=2, per_address=3, window=1, entries=4))
    assert attempt(limits, "a", "1.1.1.1") is None
    fail(limits, "a", "1.1.1.1")
    attempt(limits, "a", "9.9.9.9", proven=True)  # a good password forgives the user...
    fail(limits, "a", "1.1.1.1")
    assert attempt(limits, "a", "9.9.9.9") is None  # ...so one failure since: not locked
    fail(limits, "a", "1.1.1.1")
    assert attempt(limits, "a", "9.9.9.9") == 1  # the user, from anywhere
    assert attempt(limits, "b", "1.1.1.1") == 1  # the address (3 failures), for anyone
    assert attempt(limits, "b", "8.8.8.8") is None
    # The window slides: a failure a window old no longer counts.
    deadline = time.monotonic() + 5
    while attempt(limits, "a", "3.3.3.3") is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a clock, not synchronising with anything
    assert attempt(limits, "a", "3.3.3.3") is None
    for n in range(50):
        fail(limits, f"u{n}", f"10.0.0.{n}")
    assert len(limits._principals) <= 4 and len(limits._addresses) <= 4
    # One count per account, whatever the form the name was typed in.
    assert principal_key("alice\\@corp.example@REALM") == principal_key("ALICE@REALM")


# -- where Negotiate is offered, and CORS ---------------------------------------------------


@pytest.mark.parametrize(("negotiate", "offered"), [("always", True), ("once", False)])
def test_once_stops_offering_negotiate_after_a_failed_attempt(
    serve: ServeFn, realm: Realm, tls: TLS, negotiate: str, offered: bool
) -> None:
    server = start(serve, realm, negotiate=negotiate)
    fresh = requests.get(server.url("/page"), headers=HTML, verify=tls.ca, timeout=30)
    assert fresh.headers["WWW-Authenticate"] == "Negotiate"  # the first try, always
    # A browser without a ticket answers with NTLM, over and over: "once" ends that.
    ntlm = requests.get(
        server.url("/page"), headers={**HTML, "Authorization": NTLM}, verify=tls.ca, timeout=30
    )
    assert ntlm.status_code == 401
    assert ("Negotiate" in ntlm.headers.get("WWW-Authenticate", "")) is offered
    assert "<form" in ntlm.text  # the form is there either way
    # A real ticket still works under "once".
    ok = requests.get(
        server.url("/page"),
        headers={"Authorization": negotiate_header()},
        verify=tls.ca,
        timeout=30,
    )
    assert ok.status_code == 200


def test_a_callable_decides_where_negotiate_is_offered(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    def in_domain(request: Any) -> bool:
        return "Windows" in request.headers.get("User-Agent", "")

    server = start(serve, realm, negotiate=in_domain)
    outside = requests.get(
        server.url("/page"), headers={**HTML, "User-Agent": "Mac"}, verify=tls.ca, timeout=30
    )
    assert "WWW-Authenticate" not in outside.headers and "<form" in outside.text
    inside = requests.get(
        server.url("/page"),
        headers={**HTML, "User-Agent": "Windows NT 10.0"},
        verify=tls.ca,
        timeout=30,
    )
    assert inside.headers["WWW-Authenticate"] == "Negotiate"


def test_a_cors_preflight_reaches_the_handler_not_a_401(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    server = start(serve, realm)
    preflight = requests.options(
        server.url("/page"),
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        verify=tls.ca,
        timeout=30,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    # An OPTIONS that is no preflight is guarded as any other method.
    plain = requests.options(server.url("/page"), verify=tls.ca, timeout=30)
    assert plain.status_code == 401


# -- what the attack review found -----------------------------------------------------------


def _basic(server: Server, tls: TLS, user: str, password: str) -> int:
    header = {"Authorization": basic_header(user, password)}
    return requests.get(server.url("/page"), headers=header, verify=tls.ca, timeout=30).status_code


def test_guesses_sent_at_once_do_not_slip_past_the_limit(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    server = start(serve, realm, login_limits={"per_principal": 3})
    add_user(realm, "racer")
    before = realm.proxy.exchanges
    realm.proxy.delay = 0.2  # a distant KDC: every guess is in flight at once
    try:
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(lambda _: _basic(server, tls, "racer", "guess"), range(20)))
    finally:
        realm.proxy.delay = 0.0
    assert statuses.count(401) == 3 and statuses.count(429) == 17, statuses
    assert realm.proxy.exchanges - before == 3, "more guesses reached the KDC than allowed"


def test_a_user_s_own_logins_in_parallel_all_pass(serve: ServeFn, realm: Realm, tls: TLS) -> None:
    server = start(serve, realm, login_limits={"per_principal": 3})
    racer = add_user(realm, "parallel")
    realm.proxy.delay = 0.1
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(lambda _: _basic(server, tls, "parallel", racer.password), range(8))
            )
    finally:
        realm.proxy.delay = 0.0
    assert statuses == [200] * 8


def test_a_cross_site_post_to_the_sign_in_route_is_refused_whatever_its_token(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    server = start(serve, realm)
    # The attacker planted a token of its own in the victim's cookie (another port, a
    # sibling host): double-submit alone would pass. The browser says where it came from.
    token = "2|00000000|" + "a" * 32 + "|1700000000"
    data = {"username": "user", "password": realm.password, "next": "/", "_xsrf": token}
    cross = requests.post(
        server.url("/login"),
        data=data,
        headers={"Sec-Fetch-Site": "cross-site", "Cookie": f"_xsrf={token}"},
        verify=tls.ca,
        allow_redirects=False,
        timeout=30,
    )
    assert cross.status_code == 403
    assert "tornado_kerb_session" not in cross.headers.get("Set-Cookie", "")
    out = requests.post(
        server.url("/login/logout"),
        data={"_xsrf": token},
        headers={"Origin": "https://evil.example", "Cookie": f"_xsrf={token}"},
        verify=tls.ca,
        timeout=30,
    )
    assert out.status_code == 403


def test_no_form_where_a_password_would_travel_in_clear(serve: ServeFn, realm: Realm) -> None:
    guard = KerberosGuard(settings(realm))
    server = serve([("/", Page), *guard.login_routes("/login")], guard, cookie_secret=SECRET)
    assert requests.get(server.url("/login"), timeout=30).status_code == 403


def test_a_password_is_taken_as_typed_spaces_and_all(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    add_user(realm, "spacey")
    realm.k5.run_kadminl('cpw -pw "  Spacey-1  " spacey')  # kadmin keeps quoted spaces
    server = start(serve, realm)
    assert sign_in(server, tls, "spacey", "  Spacey-1  ")[1].status_code == 303


def test_a_preflight_with_a_body_or_to_a_handler_without_options_is_guarded(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    class NoOptions(KerberosAuthMixin, tornado.web.RequestHandler):
        kerberos_required = True

        def get(self) -> None:
            self.write("x")

    guard = KerberosGuard(settings(realm))
    server = serve([("/page", Page), ("/none", NoOptions)], guard, https=True, cookie_secret=SECRET)
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with_body = requests.options(
        server.url("/page"), headers=preflight, data=b"x" * 1000, verify=tls.ca, timeout=30
    )
    assert with_body.status_code == 401
    none = requests.options(server.url("/none"), headers=preflight, verify=tls.ca, timeout=30)
    assert none.status_code == 401


def test_once_keeps_a_challenge_when_it_would_be_the_only_one(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    server = start(serve, realm, negotiate="once", basic=False)
    ntlm = requests.get(
        server.url("/page"),
        headers={"Authorization": NTLM, "Accept": "application/json"},
        verify=tls.ca,
        timeout=30,
    )
    assert ntlm.status_code == 401 and ntlm.headers["WWW-Authenticate"] == "Negotiate"


def test_an_async_negotiate_callable_is_refused(realm: Realm) -> None:
    async def later(request: Any) -> bool:
        return True

    with pytest.raises(ConfigurationError, match="coroutine"):
        KerberosGuard({"keytab": realm.keytab, "negotiate": later})


def test_a_flood_of_other_names_does_not_wipe_a_locked_user() -> None:
    limits = LoginLimits(LoginLimitOptions(per_principal=2, per_address=10**6, entries=50))
    fail(limits, "victim", "10.0.0.1")
    fail(limits, "victim", "10.0.0.1")
    for n in range(500):
        fail(limits, f"other{n}", f"10.1.{n // 250}.{n % 250}")
    assert attempt(limits, "victim", "10.9.9.9") is not None
    assert len(limits._principals) <= 51


def test_ipv6_clients_count_by_their_64() -> None:
    limits = LoginLimits(LoginLimitOptions(per_principal=10**6, per_address=2))
    fail(limits, "a", "2001:db8:1:2::1")
    fail(limits, "b", "2001:db8:1:2:ffff::9")
    assert attempt(limits, "c", "2001:db8:1:2::77") is not None
    assert attempt(limits, "c", "2001:db8:1:3::1") is None
    assert principal_key("ａｌｉｃｅ@R") == principal_key("alice@R")  # AD ignores width


def test_ipv4_mapped_addresses_count_as_the_ipv4_address() -> None:
    # From a dual-stack socket or proxy: their /64 (::/64) would be every IPv4 client.
    limits = LoginLimits(LoginLimitOptions(per_principal=10**6, per_address=2))
    fail(limits, "a", "::ffff:203.0.113.5")
    fail(limits, "b", "203.0.113.5")
    assert attempt(limits, "c", "::ffff:203.0.113.5") is not None  # one client, counted
    assert attempt(limits, "c", "::ffff:198.51.100.9") is None  # another, not locked out


def test_past_four_rounds_of_waiters_the_answer_is_429_at_once(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    server = start(serve, realm, login_limits={"per_principal": 1})
    add_user(realm, "herd")
    realm.proxy.hold()  # the one guess let through stays at the KDC
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            guesses = [pool.submit(_basic, server, tls, "herd", "guess") for _ in range(12)]
            assert realm.proxy.wait_for_in_flight(1)
            # One at the KDC, four waiting for it: the other seven are answered while
            # the KDC still holds the first, instead of being held themselves.
            early = []
            for done in concurrent.futures.as_completed(guesses, timeout=20):
                early.append(done.result())
                if len(early) == 7:
                    break
            assert early == [429] * 7
            realm.proxy.release()
            statuses = sorted(g.result() for g in guesses)
    finally:
        realm.proxy.release()
    assert statuses == [401] + [429] * 11
