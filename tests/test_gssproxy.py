"""The app never holds the keytab (issue 18): a real GSS-Proxy accepts on its behalf.

A private ``gssproxy`` daemon (root) holds the realm's HTTP keytab; the app runs in another
process as ``nobody`` (uid 65534), which cannot open the keytab, with ``GSS_USE_PROXY=yes``
and ``GSSPROXY_SOCKET`` in its environment from the start. Run as a module, this file is
that app: ``python -m tests.test_gssproxy KEYTAB CERT KEY`` starts as root (the
interpreter may live where nobody can read it), imports what it needs, drops to uid 65534,
prints its port once it listens on 127.0.0.1 (TLS), and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import k5test
import pytest
import requests
import tornado.httpserver
import tornado.netutil
import tornado.web

from tests import backends
from tests.clients import DELEGATE, MUTUAL, basic_header, negotiate_header, spnego_token
from tests.conftest import ROOT, TLS, Realm, require
from tornado_kerb import (
    ConfigurationError,
    GSSProxyUnavailable,
    KerberosAuthMixin,
    KerberosSettings,
    NoCredentials,
    authenticated,
)
from tornado_kerb.gssproxy import DEFAULT_SOCKET, GSSProxy
from tornado_kerb.testing.gssproxy import PrivateGSSProxy, gssproxy_available

NOBODY = 65534


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        self.write({"principal": self.current_user.principal, "uid": os.geteuid()})


class Act(KerberosAuthMixin, tornado.web.RequestHandler):
    """Whether the user's credentials came along, and what acting as the user does."""

    @authenticated
    async def get(self) -> None:
        user = self.current_user
        try:
            await self.get_kerberos_guard().run_as_user(user, os.getpid)
            acted = "yes"
        except NoCredentials as err:
            acted = str(err)
        self.write({"delegated": user.delegated_credentials is not None, "acted": acted})


class Probe(tornado.web.RequestHandler):
    """Public: whom the app runs as, and whether it can read the keytab."""

    def get(self) -> None:
        keytab = self.application.settings["keytab_path"]
        try:
            with open(keytab, "rb"):
                readable = "yes"
        except OSError as err:
            readable = errno.errorcode.get(err.errno or 0, str(err))
        self.write({"uid": os.geteuid(), "keytab": readable})


def drop_privileges() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


async def app_process(keytab: str, cert: str, key: str) -> None:
    backends.log_refusals()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)  # read as root, like any server's private key
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    json.dumps({})  # imported now: nobody may not read the interpreter's library
    drop_privileges()
    kerberos = {"gssproxy": True, "hostname": "localhost", "login_limits": None}
    app = tornado.web.Application(
        [(r"/whoami", Whoami), (r"/probe", Probe), (r"/act", Act)],
        kerberos=kerberos,
        keytab_path=keytab,
    )
    await backends.serve_until_terminated(app, ssl_options=context, sockets=sockets)


@dataclasses.dataclass
class App:
    port: int
    log: pathlib.Path  # its stderr
    ccache: pathlib.Path  # its default credential cache (KRB5CCNAME)
    proxy: PrivateGSSProxy
    ca: str

    def get(self, path: str, **headers: str) -> requests.Response:
        return requests.get(
            f"https://localhost:{self.port}{path}", headers=headers, verify=self.ca, timeout=30
        )


@pytest.fixture(scope="module")
def app(realm: Realm, tls: TLS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    require(gssproxy_available(), "TORNADO_KERB_NO_GSSPROXY")
    # nobody reads the realm's krb5.conf (its directory is root's), never the keytab.
    tmpdir = pathlib.Path(realm.k5.tmpdir)
    conf = pathlib.Path(realm.k5.env["KRB5_CONFIG"])
    modes = {path: path.stat().st_mode & 0o777 for path in (tmpdir, conf)}
    os.chmod(tmpdir, 0o711)  # noqa: S103 - traversable, not readable
    os.chmod(conf, 0o644)
    os.chmod(realm.keytab, 0o600)
    log = tmp_path_factory.mktemp("gssproxy-app") / "app.log"
    # The daemon's keytab also holds another service's key (host/, as /etc/krb5.keytab
    # does): tickets for it must not log anybody in here.
    keytab = log.with_name("daemon.keytab")
    shutil.copyfile(realm.keytab, keytab)
    realm.k5.extract_keytab(realm.k5.host_princ, str(keytab))
    os.chmod(keytab, 0o600)
    proc: subprocess.Popen[str] | None = None
    home: pathlib.Path | None = None
    try:
        with PrivateGSSProxy(str(keytab), env=realm.k5.env, euid=NOBODY) as proxy:
            # The process's default cache: nobody's to write, and nothing may land there.
            home = pathlib.Path(tempfile.mkdtemp(prefix="tk-nobody-"))
            os.chown(home, NOBODY, NOBODY)
            env = {**os.environ, **proxy.client_env(), "KRB5CCNAME": f"FILE:{home}/ccache"}
            env.pop("KRB5_KTNAME", None)
            args = [str(keytab), tls.cert, tls.key]
            proc, port = backends.start("tests.test_gssproxy", args, log=log, env=env)
            yield App(port, log, home / "ccache", proxy, tls.ca)
    finally:
        if proc is not None:
            backends.stop(proc)
        for path, mode in modes.items():
            os.chmod(path, mode)
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)


def test_the_app_runs_as_nobody_and_cannot_read_the_keytab(app: App) -> None:
    probe = app.get("/probe").json()
    assert probe == {"uid": NOBODY, "keytab": "EACCES"}


def test_negotiate_through_gssproxy(app: App, realm: Realm) -> None:
    answer = app.get("/whoami", Authorization=negotiate_header())
    assert answer.status_code == 200, app.proxy.log()[-3000:]
    assert answer.json() == {"principal": realm.user, "uid": NOBODY}
    assert "acceptor credentials acquired through GSS-Proxy" in app.log.read_text()


def test_a_ticket_for_another_key_of_the_daemon_is_refused(app: App, realm: Realm) -> None:
    # GSS-Proxy accepts for any key in its keytab, whatever name we asked for: measured.
    host = realm.k5.host_princ.partition("/")[2].partition("@")[0]
    other = app.get("/whoami", Authorization=negotiate_header(spnego_token(f"host@{host}")))
    assert other.status_code == 401
    assert "Kerberos login refused (wrong-service)" in app.log.read_text()
    assert app.get("/whoami", Authorization=negotiate_header()).status_code == 200


def test_basic_through_gssproxy(app: App, realm: Realm) -> None:
    answer = app.get("/whoami", Authorization=basic_header("user", realm.password))
    assert answer.status_code == 200, answer.text
    assert answer.json()["principal"] == realm.user
    wrong = app.get("/whoami", Authorization=basic_header("user", "not the password"))
    assert wrong.status_code == 401
    stranger = app.get("/whoami", Authorization=basic_header("nosuchuser", "whatever"))
    assert stranger.status_code == 401
    # MIT's words survive GSS-Proxy's interposer (its minor codes do not): the log says why.
    log = app.log.read_text()
    assert f"Kerberos login refused (bad-password) for {realm.user}" in log
    assert "Kerberos login refused (unknown-user) from" in log
    # The password's credentials stayed private to the login (never the process's cache).
    assert not app.ccache.exists()


def test_no_acting_as_users_through_gssproxy(app: App, realm: Realm) -> None:
    # Measured: GSS-Proxy's handle for a forwarded TGT, stored in a thread's credential
    # cache, leaves libpq & co. acting as HTTP/localhost itself. So: none kept, and
    # run_as_user says why instead of connecting as the service.
    forwarded = negotiate_header(spnego_token(flags=MUTUAL | DELEGATE))
    for header in (forwarded, basic_header("user", realm.password)):
        answer = app.get("/act", Authorization=header)
        assert answer.status_code == 200, answer.text
        assert answer.json()["delegated"] is False
        assert "no acting as users with the gssproxy setting" in answer.json()["acted"]


def test_a_spoofed_kdc_still_gets_nobody_in(
    app: App, realm: Realm, spoofed_kdc: k5test.K5Realm
) -> None:
    # The spoofed KDC knows the password, not our key: its ticket fails GSS-Proxy's keytab.
    realm.proxy.reset(upstream_port=spoofed_kdc.portbase)
    try:
        answer = app.get("/whoami", Authorization=basic_header("user", realm.password))
    finally:
        realm.proxy.reset(upstream_port=realm.k5.portbase)
    assert answer.status_code == 401
    assert "Kerberos login refused (kdc-not-trusted)" in app.log.read_text()
    issued = pathlib.Path(spoofed_kdc.tmpdir, "kdc.log").read_text()
    assert "TGS_REQ" in issued and "for HTTP/localhost@KRBTEST.COM" in issued


def test_the_kdc_down_is_503(app: App, realm: Realm) -> None:
    realm.proxy.down = True
    answer = app.get("/whoami", Authorization=basic_header("user", realm.password))
    assert answer.status_code == 503
    # Negotiate needs no KDC: it goes on.
    assert app.get("/whoami", Authorization=negotiate_header()).status_code == 200


def test_gssproxy_gone_is_503_with_a_log_line_then_it_comes_back(app: App, realm: Realm) -> None:
    header = negotiate_header()  # from the client's cache: no daemon involved
    app.proxy.stop()
    try:
        gone = app.get("/whoami", Authorization=header)
        password = app.get("/whoami", Authorization=basic_header("user", realm.password))
        anonymous = app.get("/whoami")
    finally:
        app.proxy.start()
    assert gone.status_code == 503, gone.text
    assert password.status_code == 503
    assert anonymous.status_code == 503  # failing closed: no challenge to a useless login
    log = app.log.read_text()
    assert f"GSS-Proxy at {app.proxy.socket}: nothing listens on the socket" in log
    # Back without restarting the app.
    back = app.get("/whoami", Authorization=negotiate_header())
    assert back.status_code == 200, back.text
    assert "Kerberos logins work again" in app.log.read_text()


def doctor(app: App, realm: Realm, *args: str) -> subprocess.CompletedProcess[str]:
    """``tornado-kerb doctor ARGS`` as nobody, in the app's environment, with a TGT."""
    cache = app.ccache.with_name("doctor-ccache")
    env = {**os.environ, **app.proxy.client_env(), "KRB5CCNAME": f"FILE:{cache}"}
    env.pop("KRB5_KTNAME", None)
    password = realm.password.encode() + b"\n"
    subprocess.run(["kinit", realm.user], input=password, env=env, check=True, capture_output=True)
    os.chown(cache, NOBODY, NOBODY)
    try:
        return subprocess.run(
            [sys.executable, "-m", "tests.test_gssproxy", "doctor", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        cache.unlink()


def test_doctor_through_gssproxy(app: App, realm: Realm) -> None:
    result = doctor(app, realm, "--gssproxy", "--hostname", "localhost")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"held by GSS-Proxy, which answers at {app.proxy.socket}" in result.stdout
    accepted = "a fresh ticket for HTTP/localhost@KRBTEST.COM was accepted through GSS-Proxy"
    assert accepted in result.stdout
    app.proxy.stop()
    try:
        down = doctor(app, realm, "--gssproxy", "--hostname", "localhost")
    finally:
        app.proxy.start()
    assert down.returncode == 1
    assert "nothing listens on the socket" in down.stdout


def test_the_setting_needs_the_environment() -> None:
    with pytest.raises(ConfigurationError, match="GSS_USE_PROXY=yes"):
        GSSProxy(True, {})
    with pytest.raises(ConfigurationError, match="GSS_USE_PROXY=yes"):
        GSSProxy(True, {"GSS_USE_PROXY": "no"})
    with pytest.raises(ConfigurationError, match="GSSPROXY_BEHAVIOR=LOCAL_FIRST"):
        GSSProxy(True, {"GSS_USE_PROXY": "yes", "GSSPROXY_BEHAVIOR": "LOCAL_FIRST"})
    with pytest.raises(ConfigurationError, match=r"GSSPROXY_SOCKET=/run/a\.sock"):
        GSSProxy("/run/a.sock", {"GSS_USE_PROXY": "yes", "GSSPROXY_SOCKET": "/run/b.sock"})
    assert GSSProxy(True, {"GSS_USE_PROXY": "yes"}).socket == DEFAULT_SOCKET
    named = {"GSS_USE_PROXY": "1", "GSSPROXY_SOCKET": "/run/a.sock"}
    assert GSSProxy("/run/a.sock", named).socket == "/run/a.sock"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"gssproxy": True}, "needs 'hostname'"),
        ({"gssproxy": True, "hostname": "h", "keytab": "/k"}, "exclude each other"),
        ({"gssproxy": True, "hostname": "h", "s4u2proxy": True}, "exclude each other"),
        ({"gssproxy": "relative.sock", "hostname": "h"}, "absolute path"),
        ({"gssproxy": "yes", "hostname": "h"}, "absolute path"),
    ],
)
def test_settings_that_cannot_work_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        KerberosSettings.from_mapping(settings)


def test_probe_says_why(tmp_path: pathlib.Path) -> None:
    env = {"GSS_USE_PROXY": "yes", "GSSPROXY_SOCKET": str(tmp_path / "none.sock")}
    with pytest.raises(GSSProxyUnavailable, match="no socket there"):
        GSSProxy(True, env).probe()


def doctor_process(argv: list[str]) -> int:
    from tornado_kerb.__main__ import main

    drop_privileges()
    return main(argv)


if __name__ == "__main__":
    if sys.argv[1] == "doctor":
        sys.exit(doctor_process(sys.argv[1:]))
    asyncio.run(app_process(*sys.argv[1:4]))
