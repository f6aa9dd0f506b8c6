"""WebSockets behind the guard: the 401 before the upgrade, session cookies, strict
origins, and sockets closed when the login that opened them ends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import requests
import tornado.httpclient
import tornado.web
import tornado.websocket

import tornado_kerb.websocket
from tests.clients import negotiate_header
from tests.conftest import Realm, ServeFn, Server
from tornado_kerb import KerberosAuthMixin, authenticated

COOKIE_SECRET = "test-only-cookie-secret-" + "w" * 32


class Echo(KerberosAuthMixin, tornado.websocket.WebSocketHandler):
    kerberos_required = True  # guards get(): the answer comes before the upgrade

    def on_message(self, message: str | bytes) -> None:
        self.write_message(f"{self.current_user.principal}: {message!s}")


class Login(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


class LogoutEverywhere(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    async def post(self) -> None:
        ended = self.kerberos_logout(everywhere=True)
        assert ended is not None
        await ended


def start(serve: ServeFn, realm: Realm, **extra: Any) -> Server:
    settings = {"keytab": realm.keytab, "hostname": "localhost", **extra}
    handlers = [(r"/ws", Echo), (r"/login", Login), (r"/logout", LogoutEverywhere)]
    return serve(handlers, settings, cookie_secret=COOKIE_SECRET)


def ws_url(server: Server) -> str:
    return server.url("/ws").replace("http://", "ws://", 1)


async def connect(server: Server, **headers: str) -> tornado.websocket.WebSocketClientConnection:
    request = tornado.httpclient.HTTPRequest(ws_url(server), headers=headers)
    return await tornado.websocket.websocket_connect(request)


async def echo(server: Server, **headers: str) -> str | bytes | None:
    conn = await connect(server, **headers)
    try:
        await conn.write_message("hello")
        return await conn.read_message()
    finally:
        conn.close()


def session_cookie(server: Server) -> str:
    response = requests.get(
        server.url("/login"), headers={"Authorization": negotiate_header()}, timeout=30
    )
    assert response.status_code == 200
    return f"tornado_kerb_session={response.cookies['tornado_kerb_session']}"


def test_a_negotiate_header_opens_the_socket_as_the_user(serve: ServeFn, realm: Realm) -> None:
    server = start(serve, realm)
    reply = asyncio.run(echo(server, Authorization=negotiate_header()))
    assert reply == f"{realm.user}: hello"


def test_without_credentials_the_answer_is_401_before_any_upgrade(
    serve: ServeFn, realm: Realm
) -> None:
    server = start(serve, realm)
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        asyncio.run(echo(server))
    assert refused.value.code == 401  # not 101: the socket never opened
    assert refused.value.response is not None
    assert refused.value.response.headers.get_list("WWW-Authenticate") == ["Negotiate"]


def test_a_session_cookie_opens_the_socket(serve: ServeFn, realm: Realm) -> None:
    server = start(serve, realm, session={"http": True})
    reply = asyncio.run(echo(server, Cookie=session_cookie(server)))
    assert reply == f"{realm.user}: hello"


def test_a_foreign_origin_is_refused_even_with_a_valid_login(serve: ServeFn, realm: Realm) -> None:
    # Browsers send Negotiate and cookies to any page's sockets: the origin check stays.
    server = start(serve, realm)
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        asyncio.run(echo(server, Authorization=negotiate_header(), Origin="https://evil.example"))
    assert refused.value.code == 403


def test_the_socket_is_closed_with_1008_when_the_session_ends(serve: ServeFn, realm: Realm) -> None:
    server = start(serve, realm, session={"http": True, "max_age": 2})
    cookie = session_cookie(server)

    async def until_closed() -> tuple[float, int | None]:
        conn = await connect(server, Cookie=cookie)
        opened = time.monotonic()
        # read_message() returns None once the server closes the socket.
        assert await asyncio.wait_for(conn.read_message(), timeout=15) is None
        return time.monotonic() - opened, conn.close_code

    lasted, code = asyncio.run(until_closed())
    assert code == 1008
    assert lasted < 3  # at the session's end (2 s from the login), not some time later


def test_a_logout_everywhere_closes_the_user_s_open_sockets(
    serve: ServeFn, realm: Realm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Sign out everywhere" must not leave a socket open on another tab or device.
    monkeypatch.setattr(tornado_kerb.websocket, "ENDED_CHECK", 0.1)
    server = start(serve, realm)

    async def scenario() -> tuple[int | None, str | bytes | None]:
        conn = await connect(server, Authorization=negotiate_header())
        await conn.write_message("before")
        assert await conn.read_message() == f"{realm.user}: before"
        ended = await tornado.httpclient.AsyncHTTPClient().fetch(
            server.url("/logout"),
            method="POST",
            body=b"",
            headers={"Authorization": negotiate_header()},
        )
        assert ended.code == 200
        assert await asyncio.wait_for(conn.read_message(), timeout=15) is None
        # A socket opened by a login after the logout stays open.
        return conn.close_code, await echo(server, Authorization=negotiate_header())

    code, later = asyncio.run(scenario())
    assert code == 1008
    assert later == f"{realm.user}: hello"
