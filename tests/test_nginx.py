"""Behind a real nginx (issue 18), as users deploy: nginx terminates TLS in front of two
Tornado processes on one host that share a keytab, a cookie secret and a replay cache.

nginx connects to the backends from 127.0.0.2 (``proxy_bind``, test-only, outside the
README's snippet) and the backends trust only that address, so this test process, which
reaches them from 127.0.0.1, is a client that bypassed nginx. Run as a module, this file is
one backend: ``python -m tests.test_nginx KEYTAB TRUSTED`` reads the cookie secret on
stdin, prints its port once it listens on 127.0.0.1, and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import os
import pathlib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import requests_gssapi
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from tests import backends
from tests.clients import basic_header, negotiate_header
from tests.conftest import ROOT, TLS, Realm, require
from tornado_kerb import KerberosAuthMixin, authenticated
from tornado_kerb.testing.nginx import PrivateNginx, nginx_available, site_config

SECRET = "nginx-test-cookie-secret-shared-by-both-" + "n" * 24
NGINX_SOURCE = "127.0.0.2"  # where nginx connects to the backends from


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        user = self.current_user
        self.write(
            {
                "principal": user.principal,
                "from_session": user.from_session,
                "pid": os.getpid(),
                "bound": user.channel_bound,
            }
        )


class Echo(KerberosAuthMixin, tornado.websocket.WebSocketHandler):
    kerberos_required = True  # guards get(): the answer comes before the upgrade

    def on_message(self, message: str | bytes) -> None:
        self.write_message(f"{self.current_user.principal} via {os.getpid()}: {message!s}")


async def backend(keytab: str, trusted: str, certificate: str, secret: str) -> None:
    backends.log_refusals()
    kerberos = {
        "keytab": keytab,
        "hostname": "localhost",
        "session": True,
        "trusted_proxies": [trusted],
        # Behind a TLS-terminating proxy, tokens are bound to the proxy's TLS channel:
        # the bindings come from its certificate.
        "tls_certificate": certificate,
    }
    app = tornado.web.Application(
        [(r"/whoami", Whoami), (r"/ws", Echo)], kerberos=kerberos, cookie_secret=secret
    )
    await backends.serve_until_terminated(app, xheaders=True)


@dataclasses.dataclass
class Backend:
    port: int
    pid: int
    log: pathlib.Path  # its stderr

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@dataclasses.dataclass
class Site:
    nginx: PrivateNginx
    one: Backend
    two: Backend
    ca: str

    def url(self, path: str, scheme: str = "https") -> str:
        return f"{scheme}://localhost:{self.nginx.port}{path}"


@pytest.fixture(scope="module")
def site(realm: Realm, tls: TLS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """nginx in front of two backend processes with one shared KRB5RCACHEDIR."""
    require(nginx_available(), "TORNADO_KERB_NO_NGINX")
    rcache = str(tmp_path_factory.mktemp("rcache"))
    logs = tmp_path_factory.mktemp("backends")
    env = {**os.environ, "KRB5RCACHEDIR": rcache}
    procs: list[subprocess.Popen[str]] = []
    nginx: PrivateNginx | None = None
    try:
        started = []
        for i in range(2):
            log = logs / f"backend{i}.log"
            args = [realm.keytab, NGINX_SOURCE, tls.cert]
            proc, port = backends.start(
                "tests.test_nginx", args, log=log, env=env, stdin=SECRET + "\n"
            )
            procs.append(proc)
            started.append(Backend(port, proc.pid, log))
        nginx = PrivateNginx(
            [f"127.0.0.1:{b.port}" for b in started], tls.cert, tls.key, source=NGINX_SOURCE
        )
        yield Site(nginx, started[0], started[1], tls.ca)
    finally:
        if nginx is not None:
            nginx.stop()
        backends.stop(*procs)


def get(site: Site, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(site.url(path), verify=site.ca, timeout=30, **kwargs)


def test_negotiate_through_nginx(site: Site, realm: Realm) -> None:
    answer = get(site, "/whoami", headers={"Authorization": negotiate_header()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["principal"] == realm.user
    assert answer.json()["pid"] in (site.one.pid, site.two.pid)


def test_basic_through_nginx_takes_the_forwarded_https(site: Site, realm: Realm) -> None:
    answer = get(site, "/whoami", headers={"Authorization": basic_header("user", realm.password)})
    assert answer.status_code == 200, answer.text
    assert "Secure" in answer.headers["Set-Cookie"]  # the backend believed nginx's https


def test_a_large_negotiate_header_passes_nginx(site: Site) -> None:
    # An AD ticket with a PAC makes a header of 12 kB and more: with nginx's default
    # buffers this would be nginx's own 400, never reaching Tornado.
    big = negotiate_header(b"\x60" + b"\x00" * 15000)
    answer = get(site, "/whoami", headers={"Authorization": big})
    assert answer.status_code in (400, 401)
    assert "Negotiate" in answer.headers.get("WWW-Authenticate", "")  # Tornado's answer
    assert "nginx" not in answer.text  # not nginx's error page


def test_a_session_cookie_from_one_process_is_good_on_the_other(site: Site) -> None:
    client = requests.Session()
    client.verify = site.ca
    client.trust_env = False  # REQUESTS_CA_BUNDLE would override client.verify
    login = client.get(site.url("/whoami"), headers={"Authorization": negotiate_header()})
    assert login.status_code == 200
    assert "tornado_kerb_session" in client.cookies
    # nginx's round robin (one worker) alternates: four requests reach both processes.
    seen = [client.get(site.url("/whoami"), timeout=30).json() for _ in range(4)]
    assert {answer["pid"] for answer in seen} == {site.one.pid, site.two.pid}
    assert all(answer["from_session"] for answer in seen)


def test_a_token_replayed_to_the_other_process_is_refused(site: Site) -> None:
    header = {"Authorization": negotiate_header()}
    first = requests.get(site.one.url("/whoami"), headers=header, timeout=30)
    assert first.status_code == 200 and first.json()["pid"] == site.one.pid
    again = requests.get(site.two.url("/whoami"), headers=header, timeout=30)
    assert again.status_code == 401  # the shared KRB5RCACHEDIR saw it at the first
    assert "Kerberos login refused (replay)" in site.two.log.read_text()  # logged before the 401
    # ... and not because the second cannot take tokens at all:
    fresh_header = {"Authorization": negotiate_header()}
    fresh = requests.get(site.two.url("/whoami"), headers=fresh_header, timeout=30)
    assert fresh.status_code == 200 and fresh.json()["pid"] == site.two.pid


async def echo(site: Site, **headers: str) -> str | bytes | None:
    request = tornado.httpclient.HTTPRequest(
        site.url("/ws", "wss"),
        headers=headers,
        ssl_options=ssl.create_default_context(cafile=site.ca),
    )
    conn = await tornado.websocket.websocket_connect(request)
    try:
        await conn.write_message("hello")
        return await conn.read_message()
    finally:
        conn.close()


def test_a_websocket_through_nginx(site: Site, realm: Realm) -> None:
    # As a browser opens it: with the page's Origin (port included), which Tornado checks
    # against the Host that nginx passes on.
    origin = site.url("").rstrip("/")
    reply = asyncio.run(echo(site, Authorization=negotiate_header(), Origin=origin))
    assert isinstance(reply, str)
    assert reply.startswith(f"{realm.user} via ")
    assert reply.endswith(": hello")
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        asyncio.run(echo(site))
    assert refused.value.code == 401  # guarded: refused before the upgrade


def direct(backend: Backend, source: str, headers: dict[str, str]) -> tuple[int, str]:
    """GET /whoami straight at a backend, from ``source`` (an address of this host)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", backend.port, timeout=30, source_address=(source, 0)
    )
    try:
        conn.request("GET", "/whoami", headers=headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status, answer.getheader("WWW-Authenticate") or ""
    finally:
        conn.close()


def test_a_forged_https_straight_at_a_backend_gets_no_basic(site: Site, realm: Realm) -> None:
    forged = {
        "X-Forwarded-Proto": "https",
        "X-Real-IP": "203.0.113.9",
        "Authorization": basic_header("user", realm.password),
    }
    # From 127.0.0.1, not nginx's address: the forwarded https does not count.
    status, challenge = direct(site.one, "127.0.0.1", forged)
    assert status == 401
    assert "Negotiate" in challenge and "Basic" not in challenge
    # The same request from the trusted address gets in: the refusal was the peer's.
    assert direct(site.one, NGINX_SOURCE, forged)[0] == 200


if __name__ == "__main__":
    asyncio.run(backend(sys.argv[1], sys.argv[2], sys.argv[3], sys.stdin.readline().strip()))


def test_the_deployment_guide_shows_the_config_this_test_runs() -> None:
    guide = (ROOT / "docs" / "guides" / "deployment.md").read_text()
    assert site_config(["10.0.0.11:8000", "10.0.0.12:8000"]).rstrip("\n") in guide


def test_a_client_bound_to_nginx_s_tls_channel_is_bound_at_the_backend(site: Site) -> None:
    # requests-gssapi binds its token to the certificate of the TLS connection it made:
    # nginx's. The backend, given that certificate, sees the binding hold.
    bound = requests_gssapi.HTTPSPNEGOAuth(channel_bindings="tls-server-end-point")
    answer = get(site, "/whoami", auth=bound)
    assert answer.status_code == 200, answer.text
    assert answer.json()["bound"] is True
    unbound = get(site, "/whoami", headers={"Authorization": negotiate_header()})
    assert unbound.json()["bound"] is False
