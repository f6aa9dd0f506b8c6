"""Behind a reverse proxy (issue 18): forwarded headers count only from trusted_proxies.

The test process plays the proxy: it reaches the server from 127.0.0.1 over plain HTTP
and says ``X-Forwarded-Proto: https``, as nginx in front of a TLS listener would.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import tornado.web

from tests.clients import basic_header
from tests.conftest import Realm, ServeFn, Server, add_user
from tornado_kerb import ConfigurationError, KerberosAuthMixin, KerberosGuard, authenticated

SECRET = "proxies-test-cookie-secret-" + "p" * 20
FORWARDED = {"X-Forwarded-Proto": "https", "X-Real-IP": "203.0.113.7"}


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


def start(serve: ServeFn, realm: Realm, **extra: Any) -> Server:
    settings = {"keytab": realm.keytab, "hostname": "localhost", "session": True, **extra}
    return serve([("/", Whoami)], settings, xheaders=True, cookie_secret=SECRET)


def basic(server: Server, realm: Realm, **headers: str) -> requests.Response:
    auth = {"Authorization": basic_header("user", realm.password)}
    return requests.get(server.url("/"), headers={**auth, **headers}, timeout=30)


def test_without_trusted_proxies_a_forwarded_https_is_not_believed(
    serve: ServeFn, realm: Realm
) -> None:
    # xheaders=True alone used to make Tornado's request.protocol "https" here.
    server = start(serve, realm)
    answer = basic(server, realm, **FORWARDED)
    assert answer.status_code == 401
    assert "Basic" not in answer.headers["WWW-Authenticate"]  # no password over plain HTTP


def test_a_trusted_proxy_s_https_lets_basic_in_and_makes_the_cookie_secure(
    serve: ServeFn, realm: Realm
) -> None:
    server = start(serve, realm, trusted_proxies=["127.0.0.1"])
    answer = basic(server, realm, **FORWARDED)
    assert answer.status_code == 200, answer.text
    assert "Secure" in answer.headers["Set-Cookie"]
    # The proxy's word only: without the header the connection's own scheme counts.
    assert basic(server, realm).status_code == 401


def test_a_peer_outside_the_trusted_networks_is_not_believed(serve: ServeFn, realm: Realm) -> None:
    server = start(serve, realm, trusted_proxies=["10.0.0.0/8", "192.0.2.1"])
    assert basic(server, realm, **FORWARDED).status_code == 401


def test_the_guessing_limits_count_the_address_a_trusted_proxy_gives(
    serve: ServeFn, realm: Realm
) -> None:
    limits = {"per_principal": 10**6, "per_address": 2}
    server = start(serve, realm, trusted_proxies=["127.0.0.1"], login_limits=limits)
    add_user(realm, "proxied")

    def guess(client: str) -> int:
        headers = {**FORWARDED, "X-Real-IP": client}
        headers["Authorization"] = basic_header("proxied", "guess")
        return requests.get(server.url("/"), headers=headers, timeout=30).status_code

    assert [guess("203.0.113.7"), guess("203.0.113.7"), guess("203.0.113.7")] == [401, 401, 429]
    assert guess("203.0.113.8") == 401  # another client behind the same proxy


def test_bad_trusted_proxies_are_a_configuration_error(realm: Realm) -> None:
    with pytest.raises(ConfigurationError, match="trusted_proxies"):
        KerberosGuard({"keytab": realm.keytab, "trusted_proxies": ["nginx.local"]})
