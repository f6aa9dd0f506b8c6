"""Session cookies, the Basic result cache and the KDC timeout, against the real realm."""

from __future__ import annotations

import http.cookies
import logging
import os
import threading
import time
from typing import Any

import pytest
import requests
import tornado.web

from tests.clients import DELEGATE, MUTUAL, negotiate_header, spnego_token
from tests.conftest import Realm, ServeFn, Server, User
from tornado_kerb import (
    ConfigurationError,
    KerberosAuthMixin,
    KerberosGuard,
    KerberosUser,
    NoCredentials,
    authenticated,
)
from tornado_kerb.session import BasicCache, BasicCacheOptions, decode_session, encode_session

SECRET = "a-long-random-cookie-secret-for-the-tests-0123456789"
COOKIE = "tornado_kerb_session"


def settings(realm: Realm, **extra: Any) -> dict[str, Any]:
    base = {"keytab": realm.keytab, "hostname": "localhost", "realm": "KRBTEST.COM"}
    return {**base, "session": True, **extra}


class Me(KerberosAuthMixin, tornado.web.RequestHandler):
    verdict = True

    def kerberos_authorize(self, user: KerberosUser) -> bool:
        return self.verdict

    @authenticated
    async def get(self) -> None:
        user: KerberosUser = self.current_user
        try:
            await self.run_as_user(lambda: None)
            acts = True
        except NoCredentials:
            acts = False
        self.write(
            {
                "principal": user.principal,
                "mechanism": user.mechanism,
                "from_session": user.from_session,
                "acts": acts,
            }
        )


class NeedsCredentials(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    async def get(self) -> None:
        try:
            who = await self.run_as_user(lambda: "acted")
        except NoCredentials:
            if self.current_user.from_session:
                self.kerberos_challenge()
            raise tornado.web.HTTPError(409) from None
        self.write(who)


class Logout(KerberosAuthMixin, tornado.web.RequestHandler):
    def post(self) -> None:
        self.kerberos_logout()
        self.write("bye")


def start(
    serve: ServeFn, realm: Realm, https: bool = True, secret: Any = SECRET, **extra: Any
) -> Server:
    app_settings: dict[str, Any] = {"cookie_secret": secret}
    if "key_version" in extra:
        app_settings["key_version"] = extra.pop("key_version")
    return serve(
        [(r"/", Me), (r"/logout", Logout), (r"/act", NeedsCredentials)],
        settings(realm, **extra),
        https=https,
        **app_settings,
    )


def negotiate(ccache: str | None = None, delegate: bool = False) -> dict[str, str]:
    flags = MUTUAL | DELEGATE if delegate else MUTUAL
    return {"Authorization": negotiate_header(spnego_token(ccache=ccache, flags=flags))}


def get(server: Server, ca: str, **kwargs: Any) -> requests.Response:
    return requests.get(server.url("/"), verify=ca, timeout=30, **kwargs)


def set_cookies(response: requests.Response) -> list[http.cookies.Morsel[str]]:
    morsels = []
    for header in response.raw.headers.getlist("Set-Cookie"):
        jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        jar.load(header)
        morsels.extend(jar.values())
    return morsels


def signed(server: Server, payload: str, secret: Any = SECRET, version: int | None = None) -> str:
    """A cookie value signed the way the server signs (so only its payload is wrong)."""
    return tornado.web.create_signed_value(
        secret, COOKIE, payload, version=2, key_version=version
    ).decode()


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tornado_kerb")


# -- sessions -----------------------------------------------------------------------------


def test_negotiate_login_sets_a_signed_expiring_cookie_that_skips_gssapi(
    serve: ServeFn, realm: Realm, tls: Any
) -> None:
    server = start(serve, realm)
    first = get(server, tls.ca, headers=negotiate(delegate=True))
    assert first.json() == {
        "principal": realm.user,
        "mechanism": "negotiate",
        "from_session": False,
        "acts": True,
    }
    (cookie,) = set_cookies(first)
    assert cookie.key == COOKIE
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert 3500 < int(cookie["max-age"]) <= 3600  # max_age, below the ticket's end
    again = get(server, tls.ca, cookies={COOKIE: cookie.value})
    # No token, no challenge, no mutual-auth answer: GSSAPI was not involved at all. The
    # session carries no credentials: acting as the user needs a fresh login.
    assert again.status_code == 200
    assert again.json() == {
        "principal": realm.user,
        "mechanism": "negotiate",
        "from_session": True,
        "acts": False,
    }
    assert "WWW-Authenticate" not in again.headers
    assert set_cookies(again) == []  # a session is not renewed by using it


def test_session_never_outlives_the_ticket(
    serve: ServeFn, realm: Realm, tls: Any, tmp_path: Any
) -> None:
    principal = f"shortlived@{realm.k5.realm}"
    realm.k5.addprinc(principal, "short-password")
    ccache = os.path.join(tmp_path, "short.ccache")
    realm.k5.kinit(principal, "short-password", flags=["-l", "2m", "-c", ccache])
    server = start(serve, realm, session={"max_age": 86400})
    (cookie,) = set_cookies(get(server, tls.ca, headers=negotiate(ccache)))
    # Two minutes of ticket (plus MIT's five minutes of clock-skew allowance), not a day.
    assert int(cookie["max-age"]) <= 2 * 60 + 5 * 60
    session = decode_session(
        tornado.web.decode_signed_value(SECRET, COOKIE, cookie.value) or b"", time.time()
    )
    assert session is not None and session.expires_at <= time.time() + 7 * 60


def test_an_authorization_header_wins_over_the_cookie(
    serve: ServeFn, realm: Realm, alice: User, tls: Any
) -> None:
    server = start(serve, realm)
    (cookie,) = set_cookies(get(server, tls.ca, headers=negotiate()))
    both = get(server, tls.ca, cookies={COOKIE: cookie.value}, headers=negotiate(alice.ccache))
    assert both.json()["principal"] == alice.principal
    assert both.json()["from_session"] is False


@pytest.mark.parametrize(
    "forge",
    [
        lambda s: signed(s, encode_session("user@KRBTEST.COM", "negotiate", time.time() - 1)),
        lambda s: (
            signed(s, encode_session("user@KRBTEST.COM", "negotiate", time.time() + 60))[:-2] + "00"
        ),
        lambda s: signed(s, "1|n|notanumber|user@KRBTEST.COM"),
        lambda s: signed(s, "2|n|99999999999|user@KRBTEST.COM"),
        lambda s: signed(s, encode_session("eve@OTHER.ORG", "negotiate", time.time() + 60)),
        lambda s: signed(s, encode_session("user@KRBTEST.COM", "basic", time.time() + 60), "x"),
        lambda s: "2|1:0|10:1700000000|20:tornado_kerb_session|4:eA==|" + "0" * 64,
        lambda s: "\u00e9\u00e9\u00e9",
        lambda s: "x" * 4000,
    ],
    ids=[
        "expired",
        "tampered",
        "malformed",
        "unknown-version",
        "foreign-realm",
        "other-secret",
        "bad-signature",
        "latin-1",
        "huge",
    ],
)
def test_bad_cookies_are_ignored_and_the_challenge_follows(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture, forge: Any
) -> None:
    server = start(serve, realm)
    value = forge(server)
    response = get(server, tls.ca, headers={"Cookie": f"{COOKIE}={value}".encode("latin-1")})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Negotiate")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert value not in caplog.text  # a cookie is a credential: never logged


def test_disallowed_principal_cookie_is_ignored(serve: ServeFn, realm: Realm, tls: Any) -> None:
    server = start(serve, realm, allowed_principals=["alice@KRBTEST.COM"])
    payload = encode_session(realm.user, "negotiate", time.time() + 60)
    response = get(server, tls.ca, cookies={COOKIE: signed(server, payload)})
    assert response.status_code == 401


def test_kerberos_authorize_applies_to_session_users(
    serve: ServeFn, realm: Realm, tls: Any
) -> None:
    server = start(serve, realm)
    (cookie,) = set_cookies(get(server, tls.ca, headers=negotiate()))
    Me.verdict = False
    try:
        assert get(server, tls.ca, cookies={COOKIE: cookie.value}).status_code == 403
    finally:
        Me.verdict = True


def test_plain_http_gets_a_cookie_only_when_allowed(serve: ServeFn, realm: Realm, tls: Any) -> None:
    refused = start(serve, realm, https=False)
    assert set_cookies(get(refused, tls.ca, headers=negotiate())) == []
    allowed = start(serve, realm, https=False, session={"http": True})
    (cookie,) = set_cookies(get(allowed, tls.ca, headers=negotiate()))
    assert cookie["httponly"] and not cookie["secure"]


def test_sessions_need_a_cookie_secret(serve: ServeFn, realm: Realm, tls: Any) -> None:
    app = tornado.web.Application([], kerberos=settings(realm))
    with pytest.raises(ConfigurationError, match="cookie_secret"):
        KerberosGuard.for_application(app)
    server = start(serve, realm, secret=None)
    assert get(server, tls.ca, headers=negotiate()).status_code == 500


def test_key_rotation_with_a_cookie_secret_dict(serve: ServeFn, realm: Realm, tls: Any) -> None:
    old, new = "old-secret-" + "o" * 40, "new-secret-" + "n" * 40
    before = start(serve, realm, secret={1: old}, key_version=1)
    (cookie,) = set_cookies(get(before, tls.ca, headers=negotiate()))
    rotated = start(serve, realm, secret={1: old, 2: new}, key_version=2)
    assert get(rotated, tls.ca, cookies={COOKIE: cookie.value}).status_code == 200
    (fresh,) = set_cookies(get(rotated, tls.ca, headers=negotiate()))
    retired = start(serve, realm, secret={2: new}, key_version=2)
    assert get(retired, tls.ca, cookies={COOKIE: cookie.value}).status_code == 401
    assert get(retired, tls.ca, cookies={COOKIE: fresh.value}).status_code == 200


def test_logout_clears_the_cookie(serve: ServeFn, realm: Realm, tls: Any) -> None:
    server = start(serve, realm)
    (cookie,) = set_cookies(get(server, tls.ca, headers=negotiate()))
    bye = requests.post(
        server.url("/logout"), cookies={COOKIE: cookie.value}, verify=tls.ca, timeout=30
    )
    (cleared,) = set_cookies(bye)
    assert cleared.key == COOKIE and cleared.value == ""
    assert cleared["expires"]  # in the past: the browser drops it


def test_a_session_user_is_challenged_for_credentials(
    serve: ServeFn, realm: Realm, tls: Any
) -> None:
    server = start(serve, realm)
    (cookie,) = set_cookies(get(server, tls.ca, headers=negotiate()))
    url = server.url("/act")
    challenged = requests.get(url, cookies={COOKIE: cookie.value}, verify=tls.ca, timeout=30)
    assert challenged.status_code == 401
    assert challenged.headers["WWW-Authenticate"].startswith("Negotiate")
    # The browser answers with a fresh, delegated token (and still sends the cookie).
    fresh = requests.get(
        url,
        cookies={COOKIE: cookie.value},
        headers=negotiate(delegate=True),
        verify=tls.ca,
        timeout=30,
    )
    assert (fresh.status_code, fresh.text) == (200, "acted")
    undelegated = requests.get(url, headers=negotiate(), verify=tls.ca, timeout=30)
    assert undelegated.status_code == 409  # no loop: a fresh login without credentials


def test_basic_login_starts_a_session_too(serve: ServeFn, realm: Realm, tls: Any) -> None:
    server = start(serve, realm)
    (cookie,) = set_cookies(get(server, tls.ca, auth=("user", realm.password)))
    again = get(server, tls.ca, cookies={COOKIE: cookie.value}).json()
    assert (again["mechanism"], again["from_session"]) == ("basic", True)


# -- the Basic result cache ---------------------------------------------------------------


def test_basic_cache_skips_the_kdc_for_a_proven_password(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(serve, realm, session=None, basic_cache=True)
    auth = ("user", realm.password)
    first = get(server, tls.ca, auth=auth)
    assert first.json()["acts"] is True  # a real KDC login: credentials from the password
    exchanges = realm.proxy.exchanges
    assert exchanges >= 2
    for _ in range(5):
        hit = get(server, tls.ca, auth=auth)
        assert hit.status_code == 200
        assert hit.json()["mechanism"] == "basic"
    assert realm.proxy.exchanges == exchanges  # no KDC round trip for the repeats
    assert realm.password not in caplog.text


def test_basic_cache_never_keeps_a_wrong_or_different_password(
    serve: ServeFn, realm: Realm, tls: Any
) -> None:
    server = start(serve, realm, session=None, basic_cache=True)
    assert get(server, tls.ca, auth=("user", realm.password)).status_code == 200
    for attempt in range(2):  # wrong twice: the KDC is asked both times
        before = realm.proxy.exchanges
        assert get(server, tls.ca, auth=("user", "wrong-password")).status_code == 401, attempt
        assert realm.proxy.exchanges > before


def test_basic_cache_hit_still_goes_through_authorization(
    serve: ServeFn, realm: Realm, tls: Any
) -> None:
    server = start(serve, realm, session=None, basic_cache=True)
    auth = ("user", realm.password)
    assert get(server, tls.ca, auth=auth).status_code == 200
    before = realm.proxy.exchanges
    Me.verdict = False
    try:
        assert get(server, tls.ca, auth=auth).status_code == 403
    finally:
        Me.verdict = True
    assert realm.proxy.exchanges == before


def test_basic_cache_bounds() -> None:
    cache = BasicCache(BasicCacheOptions(entries=2, ttl=300))

    def user(principal: str) -> KerberosUser:
        return KerberosUser(principal, "basic")

    cache.put("a@R", "pw-a", user("a@R"), None)
    cache.put("b@R", "pw-b", user("b@R"), time.time() - 1)  # ticket ended: never a hit
    assert cache.get("b@R", "pw-b") is None
    cache.put("c@R", "pw-c", user("carol@R"), None)
    cache.put("d@R", "pw-d", user("d@R"), None)  # over two entries: the oldest goes
    assert cache.get("a@R", "pw-a") is None
    assert cache.get("d@R", "pw-d") is not None
    assert cache.get("d@R", "other") is None
    proven = cache.get("c@R", "pw-c")
    assert proven is not None
    assert proven[0] == "carol@R"  # whom the keytab accepted, not the name as typed
    assert proven[1] <= time.time() + 300
    assert not any(b"pw-" in key for key in cache._entries)  # keyed hashes, no passwords


# -- the KDC timeout ----------------------------------------------------------------------


def test_kdc_timeout_answers_503_and_holds_the_thread_until_libkrb5_returns(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    guard = KerberosGuard(
        settings(realm, session=None, kdc_timeout=0.5, kdc_workers=1, kdc_queue=0)
    )
    server = serve([(r"/", Me)], guard, https=True)
    auth = ("user", realm.password)
    realm.proxy.hold()  # the KDC answers nothing until released
    try:
        late = get(server, tls.ca, auth=auth)
        assert late.status_code == 503
        assert late.headers["Retry-After"] == "30"
        assert "kdc-timeout" in caplog.text
        # The thread is still inside libkrb5: it is not free, so the next login is refused
        # at once instead of queueing behind it.
        started = time.monotonic()
        busy = get(server, tls.ca, auth=auth)
        assert busy.status_code == 503
        assert time.monotonic() - started < 0.4  # refused, not timed out again
        assert "kdc-busy" in caplog.text
        assert get(server, tls.ca, headers=negotiate()).status_code == 200  # no KDC needed
    finally:
        realm.proxy.release()
    freed = threading.Event()
    deadline = time.monotonic() + 30
    while guard.kdc.in_flight and time.monotonic() < deadline:
        freed.wait(0.01)  # polling a condition with a deadline, not sleeping for a guess
    assert guard.kdc.in_flight == 0
    assert get(server, tls.ca, auth=auth).status_code == 200
    guard.close()


def test_a_cookie_is_not_taken_on_plain_http_unless_allowed(
    serve: ServeFn, realm: Realm, tls: Any
) -> None:
    # Never set there, so never taken there: a cookie carried over plain HTTP is sniffable.
    secure = serve(
        [(r"/", Me)],
        settings(realm, session=True),
        https=True,
        cookie_secret=SECRET,
    )
    login = requests.get(
        secure.url("/"), headers={"Authorization": negotiate_header()}, verify=tls.ca, timeout=30
    )
    cookie = login.cookies["tornado_kerb_session"]
    plain = serve([(r"/", Me)], settings(realm, session=True), cookie_secret=SECRET)
    response = requests.get(
        plain.url("/"), headers={"Cookie": f"tornado_kerb_session={cookie}"}, timeout=30
    )
    assert response.status_code == 401
