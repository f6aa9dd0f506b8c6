"""Shared fixtures: one real MIT realm behind a KDC proxy, TLS certificates, Tornado servers.

The realm is started once per session on a random port base and always stopped. Its
environment (KRB5_CONFIG, KRB5CCNAME, ...) goes into os.environ here, at set-up, because
the in-process clients and servers read it; the library itself never touches os.environ.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import k5test
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from tests.kdc_proxy import KDCProxy
from tornado_kerb import KerberosGuard
from tornado_kerb.testing import start_realm
from tornado_kerb.testing.ldap import ldap_available
from tornado_kerb.testing.plugin import KerberosRealm, RealmUser, kerberos_realm_session
from tornado_kerb.testing.postgres import ThrowawayPostgres

ROOT = pathlib.Path(__file__).resolve().parent.parent


# krb5.conf mapping rules for local names ("$$" is k5test's escape for "$"): service
# principals svc/web@REALM map to svc_web, the rest of the realm by MIT's default rule.
AUTH_TO_LOCAL = ["RULE:[2:$$1_$$2@$$0](svc_.*@KRBTEST\\.COM)s/@.*//", "DEFAULT"]


def require_ldap() -> None:
    """At a test module's top: the KDC's LDAP back end (constrained delegation) is a core
    path, so a machine without it fails the run, unless ``TORNADO_KERB_NO_LDAP=1`` asks to
    skip the module."""
    require(ldap_available(), "TORNADO_KERB_NO_LDAP")


def require(reason: str | None, opt_out: str, module: bool = True) -> None:
    """Fail the run for ``reason`` (something missing, ``None`` when nothing is), unless
    the environment variable ``opt_out`` is ``1``: then skip (the module, or the test)."""
    if reason is None:
        return
    if os.environ.get(opt_out) != "1":
        raise RuntimeError(
            f"{reason} (scripts/install-system-deps.sh installs them; {opt_out}=1 skips "
            "these tests)"
        )
    pytest.skip(reason, allow_module_level=module)


def suite_conf(proxy: KDCProxy | None) -> dict[str, Any]:
    """krb5.conf settings of the suite's realms: TCP first, so every exchange can go
    through the proxy; forwardable, so clients can delegate; local-name rules."""
    conf: dict[str, Any] = {
        "libdefaults": {"forwardable": "true", "udp_preference_limit": "1"},
        "realms": {
            "$realm": {"auth_to_local": AUTH_TO_LOCAL, "auth_to_local_names": {"dave": "david"}}
        },
    }
    if proxy is not None:
        conf["realms"]["$realm"]["kdc"] = f"127.0.0.1:{proxy.port}"
    return conf


def make_realm(proxy: KDCProxy | None = None, **kwargs: Any) -> k5test.K5Realm:
    """A realm on a random port base; with ``proxy``, clients reach its KDC through it.

    With a proxy, pass ``get_creds=False``: the proxy learns the KDC's port only after
    the realm exists.
    """
    k5 = start_realm(krb5_conf=suite_conf(proxy), **kwargs)
    if proxy is not None:
        proxy.reset(upstream_port=k5.portbase)
    return k5


@dataclasses.dataclass
class Realm:
    k5: k5test.K5Realm
    proxy: KDCProxy
    keytab: str
    user: str
    password: str
    #: The plugin's realm object this one wraps (its add_user, negotiate_header...).
    plugin: KerberosRealm

    @property
    def kdc_log(self) -> str:
        return pathlib.Path(self.k5.tmpdir, "kdc.log").read_text()

    def run(self, *args: str) -> str:
        return self.k5.run(list(args)).decode()


@pytest.fixture(scope="session")
def realm() -> Iterator[Realm]:
    """The session's realm, from our own pytest plugin (what users get as
    ``kerberos_realm``), behind a KDC proxy that tests can slow down or cut."""
    proxy = KDCProxy(upstream_port=1)
    try:
        with kerberos_realm_session(
            krb5_conf=suite_conf(proxy),
            prepare=lambda k5: proxy.reset(upstream_port=k5.portbase),
        ) as ours:
            yield Realm(ours.k5, proxy, ours.keytab, ours.user, ours.password, ours)
    finally:
        proxy.close()


#: A second user of the realm, with a forwardable ticket in a cache of its own.
User = RealmUser


def add_user(realm: Realm, name: str) -> User:
    return realm.plugin.add_user(name)


@pytest.fixture(scope="session")
def alice(realm: Realm) -> User:
    return add_user(realm, "alice")


@pytest.fixture(scope="session")
def postgres(realm: Realm, alice: User) -> Iterator[ThrowawayPostgres]:
    """One GSS-only PostgreSQL for the session, with roles for both users."""
    server = ThrowawayPostgres(realm.k5, ["user", "alice"])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def spoofed_kdc(realm: Realm) -> Iterator[k5test.K5Realm]:
    """A second KDC for the same realm name that knows the user's password, not our key."""
    spoof = make_realm(get_creds=False, create_host=False)
    try:
        spoof.change_password(spoof.user_princ, realm.password)
        spoof.addprinc("HTTP/localhost")  # same name, a key of its own
        yield spoof
    finally:
        spoof.stop()


@pytest.fixture(autouse=True)
def _plain_proxy(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts and ends with the proxy relaying to the real KDC, no faults."""
    yield
    if "realm" in request.fixturenames:
        realm: Realm = request.getfixturevalue("realm")
        realm.proxy.reset(upstream_port=realm.k5.portbase)


@dataclasses.dataclass
class TLS:
    cert: str
    key: str
    ca: str

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLS:
    out = tmp_path_factory.mktemp("certs")
    subprocess.run([str(ROOT / "certs" / "make-dev-certs.sh"), str(out)], check=True)
    return TLS(str(out / "localhost.pem"), str(out / "localhost.key"), str(out / "ca.pem"))


class Server:
    """A Tornado server on its own IOLoop thread, so blocking clients can call it."""

    def __init__(
        self, app: tornado.web.Application, ssl_ctx: ssl.SSLContext | None, xheaders: bool = False
    ) -> None:
        self.scheme = "https" if ssl_ctx else "http"
        self._xheaders = xheaders
        self._ready = threading.Event()
        self.app = app
        self._ssl = ssl_ctx
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        sockets = tornado.netutil.bind_sockets(0, "localhost")
        server = tornado.httpserver.HTTPServer(
            self.app, ssl_options=self._ssl, xheaders=self._xheaders
        )
        server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopped.wait()
        server.stop()
        await server.close_all_connections()

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://localhost:{self.port}{path}"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)


ServeFn = Callable[..., Server]


@pytest.fixture
def serve(tls: TLS) -> Iterator[ServeFn]:
    """``serve(handlers, kerberos={...}, https=False, **app_settings)`` starts a server for
    one test."""
    servers: list[Server] = []

    def start(
        handlers: list[Any],
        kerberos: Any = None,
        *,
        https: bool = False,
        xheaders: bool = False,
        **app_settings: Any,
    ) -> Server:
        app = tornado.web.Application(handlers, kerberos=kerberos, **app_settings)
        server = Server(app, tls.server_context() if https else None, xheaders)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        # The guard an application built for itself owns KDC threads: stop them too.
        built = getattr(server.app, "_tornado_kerb_guard", None)
        if built is not None and isinstance(built[1], KerberosGuard):  # not a failed check
            built[1].close()


def require_samba() -> None:
    """At a test module's top: an Active Directory realm (a Samba DC) is a core path, so a
    machine without one fails the run, unless ``TORNADO_KERB_NO_AD=1`` asks to skip the
    module."""
    from tornado_kerb.testing.samba import samba_available

    require(samba_available(), "TORNADO_KERB_NO_AD")


@pytest.fixture(scope="session")
def samba() -> Iterator[Any]:
    """One Samba AD DC (a ``tornado_kerb.testing.samba.SambaRealm``) for the session,
    started when first asked for and always stopped. Its environment is *not* in
    os.environ, where the MIT realm's stays: a module puts it there for its tests with
    ``realm_environment(samba.env)``."""
    from tornado_kerb.testing.samba import start_samba_realm

    require_samba()
    with start_samba_realm() as realm:
        yield realm
