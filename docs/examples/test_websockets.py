"""The WebSockets guide's examples, each tested against a real realm.

Run with ``pytest docs/examples/test_websockets.py`` (the ``kerberos_realm`` fixture comes
from tornado_kerb's pytest plugin).
"""

from __future__ import annotations

import asyncio
import http.cookies

import pytest
import tornado.httpclient
import tornado.testing
import tornado.web

# --- chat
import tornado.websocket

from tornado_kerb import KerberosAuthMixin, KerberosGuard, authenticated


class Chat(KerberosAuthMixin, tornado.websocket.WebSocketHandler):
    kerberos_required = True  # guards get(): the answer comes before the upgrade

    def on_message(self, message):
        self.write_message(f"{self.current_user.principal}: {message}")


# --- end chat


class Login(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self):
        self.write(self.current_user.principal)


class SocketTest(tornado.testing.AsyncHTTPSTestCase):
    @pytest.fixture(autouse=True)
    def _realm(self, kerberos_realm):
        self.realm = kerberos_realm

    def kerberos(self):
        return {"keytab": self.realm.keytab, "hostname": "localhost"}

    def get_app(self):
        return tornado.web.Application(
            [(r"/chat", Chat), (r"/login", Login)],
            kerberos=self.kerberos(),
            cookie_secret="docs-example-only-" + "w" * 32,
        )

    def tearDown(self):
        KerberosGuard.for_application(self._app).close()
        super().tearDown()

    # --- connect
    async def connect(self, **headers):
        request = tornado.httpclient.HTTPRequest(
            self.get_url("/chat").replace("https://", "wss://", 1),
            headers=headers,
            validate_cert=False,  # Tornado's own test certificate
        )
        return await tornado.websocket.websocket_connect(request)

    # --- end connect


class TestChat(SocketTest):
    @tornado.testing.gen_test
    async def test_a_ticket_opens_the_socket_as_the_user(self):
        conn = await self.connect(Authorization=self.realm.negotiate_header())
        await conn.write_message("hello")
        assert await conn.read_message() == f"{self.realm.user}: hello"
        conn.close()

    @tornado.testing.gen_test
    async def test_without_credentials_the_401_comes_before_any_upgrade(self):
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await self.connect()
        assert refused.value.code == 401  # not 101: no socket was opened
        challenges = refused.value.response.headers.get_list("WWW-Authenticate")
        assert challenges[0] == "Negotiate"

    @tornado.testing.gen_test
    async def test_a_foreign_origin_is_refused_even_with_a_ticket(self):
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await self.connect(
                Authorization=self.realm.negotiate_header(), Origin="https://evil.example"
            )
        assert refused.value.code == 403


# --- expiry
EXPIRY = {
    "session": {"max_age": 1},  # one second, to see it end; the default is an hour
    "websocket_expiry": True,  # the default: close the socket when the login ends
}
# --- end expiry


class TestExpiry(SocketTest):
    def kerberos(self):
        return {"keytab": self.realm.keytab, "hostname": "localhost", **EXPIRY}

    @tornado.testing.gen_test(timeout=10)
    async def test_the_socket_closes_with_1008_when_the_session_ends(self):
        login = await self.http_client.fetch(
            self.get_url("/login"),
            headers={"Authorization": self.realm.negotiate_header()},
            validate_cert=False,
        )
        jar = http.cookies.SimpleCookie(login.headers["Set-Cookie"])
        cookie = f"tornado_kerb_session={jar['tornado_kerb_session'].value}"
        conn = await self.connect(Cookie=cookie)  # the session cookie admits too
        await conn.write_message("still here?")
        assert await conn.read_message() == f"{self.realm.user}: still here?"
        # read_message() returns None once the server has closed the socket.
        assert await asyncio.wait_for(conn.read_message(), timeout=5) is None
        assert conn.close_code == 1008
