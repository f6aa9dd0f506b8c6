"""The testing guide: tornado_kerb's pytest plugin, with Tornado's test client and with
real Kerberos clients (requests-gssapi, httpx-gssapi, curl), as more than one user.

Run with ``pytest docs/examples/test_testing.py``: the plugin (an entry point of the
``test`` extra) gives the session-scoped ``kerberos_realm`` fixture, a throwaway MIT realm.
"""

# --- test
import pytest
import tornado.testing
import tornado.web

from tornado_kerb import KerberosAuthMixin, authenticated


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self):
        self.write(self.current_user.principal)


class TestWhoami(tornado.testing.AsyncHTTPTestCase):
    @pytest.fixture(autouse=True)
    def _realm(self, kerberos_realm):
        self.realm = kerberos_realm

    def get_app(self):
        kerberos = {"keytab": self.realm.keytab, "hostname": "localhost"}
        return tornado.web.Application([("/", Whoami)], kerberos=kerberos)

    def test_whoami(self):
        response = self.fetch("/", headers={"Authorization": self.realm.negotiate_header()})
        assert response.code == 200
        assert response.body.decode() == self.realm.user


# --- end test

# --- server
import asyncio
import threading

import tornado.httpserver
import tornado.netutil


@pytest.fixture(scope="module")
def url(kerberos_realm):
    """The app on a free port of localhost, served by an IOLoop in a thread of its own,
    so that blocking clients (requests, curl) can call it from the test."""
    kerberos = {"keytab": kerberos_realm.keytab, "hostname": "localhost"}
    app = tornado.web.Application([("/", Whoami)], kerberos=kerberos)
    sockets = tornado.netutil.bind_sockets(0, "localhost")  # listening from here on
    loop = asyncio.new_event_loop()

    def serve():
        asyncio.set_event_loop(loop)
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        loop.run_forever()
        server.stop()
        loop.run_until_complete(server.close_all_connections())
        loop.close()

    thread = threading.Thread(target=serve)
    thread.start()
    yield f"http://localhost:{sockets[0].getsockname()[1]}/"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


# --- end server

# --- clients
import subprocess

import httpx
import requests


def test_requests_gssapi(kerberos_realm, url):
    response = requests.get(url, auth=kerberos_realm.requests_auth(), timeout=30)
    assert response.status_code == 200
    assert response.text == kerberos_realm.user
    assert requests.get(url, timeout=30).status_code == 401  # no credentials


def test_httpx_gssapi_sync_and_async(kerberos_realm, url):
    response = httpx.get(url, auth=kerberos_realm.httpx_auth(), timeout=30)
    assert response.text == kerberos_realm.user

    async def fetch():
        async with httpx.AsyncClient(auth=kerberos_realm.httpx_auth(), timeout=30) as client:
            return await client.get(url)

    assert asyncio.run(fetch()).text == kerberos_realm.user


def test_curl(kerberos_realm, url):
    # curl finds the realm's krb5.conf and the user's ticket in the environment the
    # fixture set (KRB5_CONFIG, KRB5CCNAME).
    out = subprocess.run(
        ["curl", "--silent", "--fail", "--negotiate", "--user", ":", url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout == kerberos_realm.user


def test_more_users(kerberos_realm, url):
    bob = kerberos_realm.add_user("bob")  # a password, and a ticket in a cache of his own
    assert bob.principal == f"bob@{kerberos_realm.realm}"
    header = kerberos_realm.negotiate_header(ccache=bob.ccache)
    assert requests.get(url, headers={"Authorization": header}, timeout=30).text == bob.principal
    auth = kerberos_realm.requests_auth(ccache=bob.ccache)
    assert requests.get(url, auth=auth, timeout=30).text == bob.principal
    # The default cache is still the realm's own user's.
    assert requests.get(url, auth=kerberos_realm.requests_auth(), timeout=30).text == (
        kerberos_realm.user
    )


# --- end clients
