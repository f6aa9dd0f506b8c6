"""State shared across processes (issue 18): two Tornado processes, one Redis.

The password-guessing limits count across both processes, a logout everywhere on one ends
the session on the other, and with Redis stopped password logins fail closed (503) while
Negotiate and sessions go on, until it is back (no restart). Run as a module, this file is
one of the processes: ``python -m tests.test_shared_store KEYTAB REDIS_URL CERT KEY`` reads
the cookie secret on stdin, prints its port once it listens on 127.0.0.1 (TLS), and serves
until SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import ssl
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

from tests import backends
from tests.clients import basic_header, negotiate_header, spnego_token
from tests.conftest import TLS, Realm, User, add_user, require
from tornado_kerb import KerberosAuthMixin, KerberosGuard, authenticated
from tornado_kerb.testing.redis import PrivateRedis, redis_available

SECRET = "shared-store-test-cookie-secret-of-both-processes-" + "s" * 16
PER_PRINCIPAL = 3


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        user = self.current_user
        self.write({"principal": user.principal, "session": user.from_session, "pid": os.getpid()})


class LogoutEverywhere(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    async def post(self) -> None:
        ended = self.kerberos_logout(everywhere=True)
        assert ended is not None
        self.write({"when": await ended})


class Known(tornado.web.RequestHandler):
    """Waits until this process has heard that ``principal``'s sessions ended at ``at``."""

    async def get(self) -> None:
        store = KerberosGuard.for_application(self.application).store
        principal, at = self.get_argument("principal"), float(self.get_argument("at"))
        wait_for = store.wait_for  # type: ignore[attr-defined]
        loop = tornado.ioloop.IOLoop.current()
        self.write({"known": await loop.run_in_executor(None, wait_for, principal, at, 10.0)})


async def serve(keytab: str, store: str, cert: str, key: str) -> None:
    backends.log_refusals()
    kerberos = {
        "keytab": keytab,
        "hostname": "localhost",
        "session": True,
        "store": store,
        "login_limits": {"per_principal": PER_PRINCIPAL, "per_address": 1000},
    }
    routes = [(r"/whoami", Whoami), (r"/logout", LogoutEverywhere), (r"/known", Known)]
    app = tornado.web.Application(routes, kerberos=kerberos, cookie_secret=sys.stdin.readline())
    KerberosGuard.for_application(app).check()  # waits for the store's ended sessions
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    await backends.serve_until_terminated(app, ssl_options=context)
    KerberosGuard.for_application(app).close()


@dataclasses.dataclass
class Process:
    port: int
    log: pathlib.Path  # its stderr
    ca: str

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(
            f"https://localhost:{self.port}{path}", verify=self.ca, timeout=30, **kwargs
        )

    def post(self, path: str, **kwargs: object) -> requests.Response:
        return requests.post(
            f"https://localhost:{self.port}{path}", verify=self.ca, timeout=30, **kwargs
        )


@dataclasses.dataclass
class Site:
    redis: PrivateRedis
    one: Process
    two: Process


@pytest.fixture(scope="module")
def site(realm: Realm, tls: TLS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require(redis_available(), "TORNADO_KERB_NO_REDIS")
    logs = tmp_path_factory.mktemp("shared-store")
    procs: list[subprocess.Popen[str]] = []
    with PrivateRedis() as redis_server:
        try:
            started = []
            for i in range(2):
                log = logs / f"process{i}.log"
                args = [realm.keytab, redis_server.url, tls.cert, tls.key]
                proc, port = backends.start(
                    "tests.test_shared_store", args, log=log, stdin=SECRET + "\n"
                )
                procs.append(proc)
                started.append(Process(port, log, tls.ca))
            yield Site(redis_server, started[0], started[1])
        finally:
            backends.stop(*procs)


def test_two_processes_share_one_guessing_limit(site: Site, realm: Realm) -> None:
    guessed = add_user(realm, "guessed")
    wrong = {"Authorization": basic_header("guessed", "not the password")}
    # Spread over both processes, as a load balancer would: they count together.
    for process in (site.one, site.two, site.one):
        assert process.get("/whoami", headers=wrong).status_code == 401
    right = {"Authorization": basic_header("guessed", guessed.password)}
    for process in (site.two, site.one):
        refused = process.get("/whoami", headers=right)
        assert refused.status_code == 429, refused.text  # the KDC is not asked any more
        assert int(refused.headers["Retry-After"]) > 0
    # Per process, each would have let the right password through after its own failures.
    assert "Kerberos login refused (bad-password)" in site.two.log.read_text()


def login(process: Process, user: User) -> requests.Session:
    client = requests.Session()
    client.verify = process.ca
    client.trust_env = False
    header = negotiate_header(spnego_token(ccache=user.ccache))
    answer = client.get(
        f"https://localhost:{process.port}/whoami", headers={"Authorization": header}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["principal"] == user.principal
    return client


def test_a_logout_everywhere_on_one_ends_the_session_on_the_other(site: Site, realm: Realm) -> None:
    roamer = add_user(realm, "roamer")
    laptop = login(site.one, roamer)
    phone = login(site.two, roamer)  # another device, another process
    for client, process in ((laptop, site.two), (phone, site.one)):
        seen = client.get(f"https://localhost:{process.port}/whoami")
        assert seen.json() == {
            "principal": roamer.principal,
            "session": True,
            "pid": seen.json()["pid"],
        }
    ended = laptop.post(f"https://localhost:{site.one.port}/logout")
    assert ended.status_code == 200, ended.text
    when = ended.json()["when"]
    known = site.two.get("/known", params={"principal": roamer.principal, "at": when})
    assert known.json() == {"known": True}
    # The phone's cookie is dead on both processes: a fresh login is asked for.
    for process in (site.two, site.one):
        gone = phone.get(f"https://localhost:{process.port}/whoami")
        assert gone.status_code == 401
        assert gone.headers["WWW-Authenticate"].startswith("Negotiate")
    assert "sessions of roamer@KRBTEST.COM ended everywhere" in site.one.log.read_text()


def test_redis_down_fails_password_logins_closed_and_comes_back(site: Site, realm: Realm) -> None:
    walker = add_user(realm, "walker")
    session = login(site.one, walker)
    password = {"Authorization": basic_header("walker", walker.password)}
    site.redis.stop()
    try:
        refused = site.two.get("/whoami", headers=password)
        negotiate = site.two.get(
            "/whoami",
            headers={"Authorization": negotiate_header(spnego_token(ccache=walker.ccache))},
        )
        remembered = session.get(f"https://localhost:{site.two.port}/whoami")
    finally:
        site.redis.start()
    assert refused.status_code == 503, refused.text  # never let through uncounted
    assert "Kerberos login impossible (store-unavailable)" in site.two.log.read_text()
    assert negotiate.status_code == 200  # needs no store
    assert remembered.status_code == 200 and remembered.json()["session"] is True
    # Back, without a restart: the password counts again.
    back = site.two.get("/whoami", headers=password)
    assert back.status_code == 200, back.text


if __name__ == "__main__":
    asyncio.run(serve(*sys.argv[1:5]))
