"""End to end: the mixin and guards in a real Tornado server, real clients, a real KDC."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import http.client
import logging
import os
import shutil
import time
from typing import Any

import gssapi
import httpx
import httpx_gssapi
import k5test
import pytest
import requests
import requests_gssapi
import tornado.ioloop
import tornado.web

from tests.clients import DELEGATE, MUTUAL, basic_header, curl, negotiate_header, spnego_token
from tests.conftest import Realm, ServeFn, Server
from tornado_kerb import KerberosAuthMixin, KerberosUser, authenticated, public

BASIC_CHALLENGE = 'Basic realm="KRBTEST.COM", charset="UTF-8"'


def _service_ticket(creds: gssapi.Credentials) -> bool:
    """Act as the user: get a ticket for another service with their credentials."""
    target = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)
    return bool(gssapi.SecurityContext(name=target, creds=creds, usage="initiate").step())


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        user: KerberosUser = self.current_user
        self.write(
            {
                "principal": user.principal,
                "mechanism": user.mechanism,
                "delegated": user.delegated_credentials is not None,
            }
        )


class ActAsUser(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    async def get(self) -> None:
        creds = self.current_user.delegated_credentials
        loop = tornado.ioloop.IOLoop.current()
        ticket = creds is not None and await loop.run_in_executor(None, _service_ticket, creds)
        self.write({"as": str(creds.name) if creds else None, "ticket": ticket})


class Stream(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    async def get(self) -> None:
        self.write("first chunk\n")
        await self.flush()
        self.write("second chunk\n")


class LateGuard(KerberosAuthMixin, tornado.web.RequestHandler):
    async def get(self) -> None:
        self.write("already started\n")
        await self.flush()
        await self.kerberos_authenticate()


class Open(KerberosAuthMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("public")


class Protected(KerberosAuthMixin, tornado.web.RequestHandler):
    kerberos_required = True


class Page(Protected):
    async def prepare(self) -> None:
        pass  # overrides prepare without super(): the methods stay guarded

    def get(self) -> None:
        self.write(f"page for {self.current_user.principal}")

    async def post(self) -> None:
        self.write("posted")

    @public
    def options(self) -> None:
        self.write("open")


class GetFromAnotherBase:
    def get(self) -> None:
        self.write("inherited content")


class ViaMixin(GetFromAnotherBase, Protected):
    pass


class Files(Protected, tornado.web.StaticFileHandler):
    pass


class Propfind(Protected):
    SUPPORTED_METHODS = (*Protected.SUPPORTED_METHODS, "PROPFIND")

    def propfind(self) -> None:
        self.write("dav content")


class Failing(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        raise tornado.web.HTTPError(404)


class CookieUser(KerberosAuthMixin, tornado.web.RequestHandler):
    def get_current_user(self) -> str:
        return "someone-from-a-cookie"

    @authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


HANDLERS = [
    (r"/whoami", Whoami),
    (r"/act", ActAsUser),
    (r"/stream", Stream),
    (r"/late", LateGuard),
    (r"/open", Open),
    (r"/page", Page),
    (r"/via-mixin", ViaMixin),
    (r"/files/(.*)", Files, {"path": os.path.dirname(__file__)}),
    (r"/dav", Propfind),
    (r"/failing", Failing),
    (r"/cookie", CookieUser),
]


def start(serve: ServeFn, realm: Realm, *, https: bool = False, **settings: Any) -> Server:
    kerberos = {"keytab": realm.keytab, "hostname": "localhost", "realm": "KRBTEST.COM"}
    return serve(HANDLERS, {**kerberos, **settings}, https=https)


def challenges(response: requests.Response) -> list[str]:
    return list(response.raw.headers.getlist("WWW-Authenticate"))


def ours(caplog: pytest.LogCaptureFixture) -> str:
    """What tornado_kerb logged (requests-gssapi logs headers at debug; we must not)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tornado_kerb"))


def get(server: Server, path: str, ca: str, **kwargs: Any) -> requests.Response:
    return requests.get(server.url(path), verify=ca, timeout=30, **kwargs)


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tornado_kerb")


# -- challenges -----------------------------------------------------------------------


def test_plain_http_challenge_is_negotiate_only(serve: ServeFn, realm: Realm, tls: Any) -> None:
    response = get(start(serve, realm), "/whoami", tls.ca)
    assert response.status_code == 401
    assert challenges(response) == ["Negotiate"]


def test_tls_challenge_offers_negotiate_then_basic(serve: ServeFn, realm: Realm, tls: Any) -> None:
    response = get(start(serve, realm, https=True), "/whoami", tls.ca)
    assert response.status_code == 401
    assert challenges(response) == ["Negotiate", BASIC_CHALLENGE]


def test_basic_can_be_turned_off(serve: ServeFn, realm: Realm, tls: Any) -> None:
    server = start(serve, realm, https=True, basic=False)
    before = realm.proxy.exchanges
    response = get(server, "/whoami", tls.ca, auth=(realm.user, realm.password))
    assert response.status_code == 401
    assert challenges(response) == ["Negotiate"]
    assert realm.proxy.exchanges == before


# -- Negotiate with real clients --------------------------------------------------------


@pytest.mark.parametrize("https", [False, True])
def test_requests_gssapi_with_required_mutual_auth(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture, https: bool
) -> None:
    auth = requests_gssapi.HTTPSPNEGOAuth(mutual_authentication=requests_gssapi.REQUIRED)
    response = get(start(serve, realm, https=https), "/whoami", tls.ca, auth=auth)
    assert response.status_code == 200
    assert response.json() == {
        "principal": realm.user,
        "mechanism": "negotiate",
        "delegated": False,
    }
    (final,) = challenges(response)
    assert final.startswith("Negotiate ") and len(final) > len("Negotiate ")  # AP-REP
    sent = response.request.headers["Authorization"].split()[1]
    assert sent not in ours(caplog) and final.split()[1] not in ours(caplog)


def test_httpx_gssapi_sync_delegates(serve: ServeFn, realm: Realm, tls: Any) -> None:
    auth = httpx_gssapi.HTTPSPNEGOAuth(mutual_authentication=httpx_gssapi.REQUIRED, delegate=True)
    server = start(serve, realm, https=True)
    with httpx.Client(auth=auth, verify=tls.client_context()) as client:
        response = client.get(server.url("/act"))
    assert response.status_code == 200
    assert response.json() == {"as": realm.user, "ticket": True}


def test_httpx_gssapi_async_delegates(serve: ServeFn, realm: Realm, tls: Any) -> None:
    server = start(serve, realm, https=True)

    async def fetch() -> list[httpx.Response]:
        auth = httpx_gssapi.HTTPSPNEGOAuth(
            mutual_authentication=httpx_gssapi.REQUIRED, delegate=True
        )
        async with httpx.AsyncClient(auth=auth, verify=tls.client_context()) as client:
            return [
                await client.get(server.url("/act")),
                await client.get(server.url("/whoami")),
            ]

    act, whoami = asyncio.run(fetch())
    assert act.json() == {"as": realm.user, "ticket": True}
    assert whoami.json()["delegated"] is True


def test_no_delegation_no_credentials(serve: ServeFn, realm: Realm, tls: Any) -> None:
    auth = httpx_gssapi.HTTPSPNEGOAuth(mutual_authentication=httpx_gssapi.REQUIRED)
    with httpx.Client(auth=auth, verify=tls.client_context()) as client:
        response = client.get(start(serve, realm, https=True).url("/act"))
    assert response.json() == {"as": None, "ticket": False}


@pytest.mark.parametrize("https", [False, True])
def test_curl_negotiate(serve: ServeFn, realm: Realm, tls: Any, https: bool) -> None:
    server = start(serve, realm, https=https)
    status, headers, body = curl(server.url("/whoami"), "--negotiate", "-u", ":", ca=tls.ca)
    assert status == 200, body
    assert '"principal": "user@KRBTEST.COM"' in body
    assert headers["www-authenticate"][0].startswith("Negotiate ")


def test_curl_delegation(serve: ServeFn, realm: Realm, tls: Any) -> None:
    server = start(serve, realm, https=True)
    args = ("--negotiate", "-u", ":", "--delegation", "always")
    status, _, body = curl(server.url("/act"), *args, ca=tls.ca)
    assert status == 200
    assert '"ticket": true' in body


def test_replayed_header_is_refused(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(serve, realm)
    header = {"Authorization": negotiate_header()}
    assert get(server, "/whoami", tls.ca, headers=header).status_code == 200
    again = get(server, "/whoami", tls.ca, headers=header)
    assert again.status_code == 401
    assert challenges(again) == ["Negotiate"]
    assert "Kerberos login refused (replay)" in caplog.text


# -- Basic --------------------------------------------------------------------------


def test_basic_over_tls_logs_in_with_usable_credentials(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(serve, realm, https=True)
    response = get(server, "/whoami", tls.ca, auth=("user", realm.password))  # bare name
    assert response.json() == {"principal": realm.user, "mechanism": "basic", "delegated": True}
    act = get(server, "/act", tls.ca, auth=(realm.user, realm.password))
    assert act.json() == {"as": realm.user, "ticket": True}
    assert realm.password not in ours(caplog)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (basic_header("user", "wrong password"), "bad-password"),
        (basic_header("nobody", "whatever"), "unknown-user"),
        (basic_header("user", ""), "empty-password"),
        (basic_header("", "password"), "malformed"),
        (basic_header("user@ELSEWHERE.ORG", "password"), "foreign-realm"),
        ("Basic", "malformed"),
        ("Basic ****", "malformed"),
    ],
)
def test_basic_refusals_rechallenge(
    serve: ServeFn,
    realm: Realm,
    tls: Any,
    caplog: pytest.LogCaptureFixture,
    header: str,
    reason: str,
) -> None:
    server = start(serve, realm, https=True)
    response = get(server, "/whoami", tls.ca, headers={"Authorization": header})
    assert response.status_code == 401
    assert challenges(response) == ["Negotiate", BASIC_CHALLENGE]
    assert f"Kerberos login refused ({reason})" in ours(caplog)


def test_basic_over_plain_http_sends_the_password_nowhere(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    realm.k5.addprinc("plaintext@KRBTEST.COM", "sent-in-clear")
    before = realm.proxy.exchanges
    response = get(start(serve, realm), "/whoami", tls.ca, auth=("plaintext", "sent-in-clear"))
    assert response.status_code == 401
    assert challenges(response) == ["Negotiate"]
    assert realm.proxy.exchanges == before
    assert not [
        line for line in realm.kdc_log.splitlines() if "REQ" in line and "plaintext@" in line
    ]
    assert "(insecure-transport)" in caplog.text
    assert "sent-in-clear" not in ours(caplog)


def test_spoofed_kdc_gets_nobody_in_over_https(
    serve: ServeFn,
    realm: Realm,
    tls: Any,
    spoofed_kdc: k5test.K5Realm,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = start(serve, realm, https=True)
    realm.proxy.reset(upstream_port=spoofed_kdc.portbase)
    refused = get(server, "/whoami", tls.ca, auth=(realm.user, realm.password))
    assert refused.status_code == 401
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("(kdc-not-trusted)" in r.getMessage() for r in warnings)
    realm.proxy.reset(upstream_port=realm.k5.portbase)
    assert get(server, "/whoami", tls.ca, auth=(realm.user, realm.password)).status_code == 200


def test_kdc_down_basic_is_503_negotiate_still_works(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(serve, realm, https=True)
    header = negotiate_header()  # the service ticket is in the ccache before the KDC goes
    realm.proxy.down = True
    response = get(server, "/whoami", tls.ca, auth=(realm.user, realm.password))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("kdc-unreachable" in message for message in errors)
    ok = get(server, "/whoami", tls.ca, headers={"Authorization": header})
    assert ok.status_code == 200


def test_slow_kdc_runs_logins_concurrently_off_the_ioloop(
    serve: ServeFn, realm: Realm, tls: Any
) -> None:
    # One user's ten logins at once: the guessing limits would let five go at a time.
    server = start(serve, realm, https=True, login_limits=None)
    get(server, "/open", tls.ca)  # warm the server up before anything is measured
    realm.proxy.delay = 0.3  # every KDC exchange takes 300 ms
    realm.proxy.hold()  # ...and waits until all ten logins are there (no timing games)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        logins = [
            pool.submit(get, server, "/whoami", tls.ca, auth=(realm.user, realm.password))
            for _ in range(10)
        ]
        try:
            # All ten are at the KDC at once: they run concurrently, not one by one.
            assert realm.proxy.wait_for_in_flight(10)
            started = time.monotonic()
            unrelated = get(server, "/open", tls.ca)
            latency = time.monotonic() - started
            pending = sum(not login.done() for login in logins)
        finally:
            realm.proxy.release()
        statuses = [login.result().status_code for login in logins]
    assert unrelated.status_code == 200
    # The unrelated request finished while every login was still waiting on the KDC.
    assert pending == 10
    # "A few tens of milliseconds" at most (about 3 ms measured here).
    assert latency < 0.05, f"unrelated request took {latency * 1000:.0f} ms"
    assert statuses == [200] * 10
    assert realm.proxy.max_in_flight >= 10


# -- keytab faults --------------------------------------------------------------------


def test_missing_keytab_fails_closed_then_recovers(
    serve: ServeFn,
    realm: Realm,
    tls: Any,
    tmp_path: os.PathLike[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    keytab = os.path.join(tmp_path, "http.keytab")
    server = start(serve, realm, https=True, keytab=keytab)
    for headers in ({}, {"Authorization": negotiate_header()}):
        response = get(server, "/whoami", tls.ca, headers=headers)
        assert response.status_code == 503
    basic = get(server, "/whoami", tls.ca, auth=(realm.user, realm.password))
    assert basic.status_code == 503
    records = [r for r in caplog.records if r.name.startswith("tornado_kerb")]
    # Said as an error once (the state changed), not once per request.
    errors = [r for r in records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert all(f"keytab {keytab}: does not exist" in r.getMessage() for r in records)
    shutil.copy(realm.keytab, keytab)  # fixed without a restart
    response = get(server, "/whoami", tls.ca, headers={"Authorization": negotiate_header()})
    assert response.status_code == 200
    assert any("work again (keytab)" in r.getMessage() for r in caplog.records)


# -- the guard ------------------------------------------------------------------------


def test_guarded_stream_never_starts_a_200(serve: ServeFn, realm: Realm, tls: Any) -> None:
    server = start(serve, realm)
    refused = get(server, "/stream", tls.ca)
    assert refused.status_code == 401
    assert "chunk" not in refused.text
    ok = get(server, "/stream", tls.ca, headers={"Authorization": negotiate_header()})
    assert ok.text == "first chunk\nsecond chunk\n"


def test_guard_after_flush_raises_a_clear_error(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(serve, realm)
    with pytest.raises(requests.RequestException):
        get(server, "/late", tls.ca).raise_for_status()
    assert "authentication ran after the response headers were flushed" in caplog.text


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("GET", "/via-mixin", "inherited content"),
        ("GET", "/files/test_web.py", "class Files(Protected"),
        ("HEAD", "/files/test_web.py", ""),
        ("PROPFIND", "/dav", "dav content"),
    ],
)
def test_required_base_guards_inherited_and_extra_methods(
    serve: ServeFn, realm: Realm, tls: Any, method: str, path: str, content: str
) -> None:
    server = start(serve, realm)
    refused = requests.request(method, server.url(path), timeout=30)
    assert refused.status_code == 401
    assert not content or content not in refused.text
    header = {"Authorization": negotiate_header()}
    allowed = requests.request(method, server.url(path), headers=header, timeout=30)
    assert allowed.status_code == 200
    assert content in allowed.text


def test_mutual_token_survives_an_error_page(serve: ServeFn, realm: Realm, tls: Any) -> None:
    auth = requests_gssapi.HTTPSPNEGOAuth(mutual_authentication=requests_gssapi.REQUIRED)
    response = get(start(serve, realm), "/failing", tls.ca, auth=auth)
    assert response.status_code == 404
    (final,) = challenges(response)
    assert final.startswith("Negotiate ") and len(final) > len("Negotiate ")


def test_another_truthy_user_does_not_pass_the_guard(
    serve: ServeFn, realm: Realm, tls: Any
) -> None:
    server = start(serve, realm)
    assert get(server, "/cookie", tls.ca).status_code == 401
    header = {"Authorization": negotiate_header()}
    assert get(server, "/cookie", tls.ca, headers=header).text == realm.user


def test_required_base_guards_subclass_methods(serve: ServeFn, realm: Realm, tls: Any) -> None:
    server = start(serve, realm)
    assert get(server, "/page", tls.ca).status_code == 401
    assert requests.post(server.url("/page"), timeout=30).status_code == 401
    opened = requests.options(server.url("/page"), timeout=30)
    assert (opened.status_code, opened.text) == (200, "open")
    header = {"Authorization": negotiate_header()}
    assert get(server, "/page", tls.ca, headers=header).text == f"page for {realm.user}"
    posted = requests.post(
        server.url("/page"), headers={"Authorization": negotiate_header()}, timeout=30
    )
    assert posted.text == "posted"
    assert get(server, "/open", tls.ca).text == "public"


# -- hostile input --------------------------------------------------------------------


def _hostile_headers() -> list[str]:
    token = spnego_token()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return [
        "",
        "Negotiate",
        "Negotiate ",
        "Negotiate !!!not-base64!!!",
        "Negotiate YII=",
        "Negotiate YII",
        "Negotiate " + b64(os.urandom(300)),
        "Negotiate " + b64(b"\x00" * 64),
        "Negotiate " + b64(token[: len(token) // 2]),
        "Negotiate " + b64(b"NTLMSSP\x00\x01\x00\x00\x00\x97\x82\x08\xe2" + b"\x00" * 24),
        "Negotiate " + b64(spnego_token("host@localhost")),
        "Negotiate " + "A" * 40000,
        "Negotiate " + b64(token) + " trailing",
        "NegotiateYIIB",
        "Basic",
        "Basic =",
        "Basic " + b64(b"\xff\xfe\xfd:x"),
        "Basic " + b64(b"user\x00:x"),
        "Basic " + b64(b"user:" + b"p" * 5000),
        "Bearer abc.def.ghi",
        'Digest username="user", realm="x", nonce="1", uri="/", response="0"',
        "Kerberos " + b64(token),
        "\u00e9\u00e9",
    ]


@pytest.mark.parametrize("https", [False, True])
def test_hostile_headers_get_401_and_the_server_keeps_serving(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture, https: bool
) -> None:
    server = start(serve, realm, https=https)
    expected = ["Negotiate", BASIC_CHALLENGE] if https else ["Negotiate"]
    for header in _hostile_headers():
        response = get(
            server, "/whoami", tls.ca, headers={"Authorization": header.encode("latin-1")}
        )
        assert response.status_code == 401, header[:40]
        assert challenges(response) == expected, header[:40]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text
    ok = get(server, "/whoami", tls.ca, headers={"Authorization": negotiate_header(spnego_token())})
    assert ok.status_code == 200


def test_delegated_flag_matches_client(serve: ServeFn, realm: Realm, tls: Any) -> None:
    server = start(serve, realm)
    for flags, delegated in ((MUTUAL, False), (MUTUAL | DELEGATE, True)):
        header = {"Authorization": negotiate_header(spnego_token(flags=flags))}
        assert get(server, "/whoami", tls.ca, headers=header).json()["delegated"] is delegated


def test_basic_logins_beyond_the_queue_get_503(serve: ServeFn, realm: Realm, tls: Any) -> None:
    server = start(serve, realm, https=True, kdc_workers=1, kdc_queue=0)
    realm.proxy.delay = 0.3
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(get, server, "/whoami", tls.ca, auth=(realm.user, realm.password))
        assert realm.proxy.wait_for_in_flight(1)
        second = get(server, "/whoami", tls.ca, auth=(realm.user, realm.password))
        assert not first.done()
        assert first.result().status_code == 200
    assert second.status_code == 503
    assert second.headers["Retry-After"] == "30"


class Misconfigured(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        self.write("never")


def test_settings_typo_is_a_clear_server_error(
    serve: ServeFn, tls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve([(r"/", Misconfigured)], {"keytba": "/etc/http.keytab"})
    assert get(server, "/", tls.ca).status_code == 500
    assert "unknown kerberos setting 'keytba' (did you mean 'keytab'?)" in caplog.text


def test_two_authorization_headers_are_refused(serve: ServeFn, realm: Realm) -> None:
    server = start(serve, realm)
    conn = http.client.HTTPConnection("localhost", server.port, timeout=30)
    conn.putrequest("GET", "/whoami")
    conn.putheader("Authorization", negotiate_header())
    conn.putheader("Authorization", negotiate_header())
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 401
    assert response.msg.get_all("WWW-Authenticate") == ["Negotiate"]
    conn.close()


def test_serving_leaves_the_process_environment_alone(
    serve: ServeFn, realm: Realm, tls: Any
) -> None:
    before = dict(os.environ)
    server = start(serve, realm, https=True)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        basic = [
            pool.submit(get, server, "/act", tls.ca, auth=(realm.user, realm.password))
            for _ in range(4)
        ]
        negotiate = get(server, "/act", tls.ca, headers={"Authorization": negotiate_header()})
        assert [b.result().json()["ticket"] for b in basic] == [True] * 4
    assert negotiate.status_code == 200
    assert dict(os.environ) == before
