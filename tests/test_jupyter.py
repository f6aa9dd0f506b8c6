"""A real Jupyter Server subprocess logging users in with KerberosIdentityProvider.

Servers are started once each (a start costs seconds): ``server`` over plain HTTP for the
realm's user alone, ``tls_server`` over HTTPS (JupyterLab, debug log) shared by the whole
realm (``*@KRBTEST.COM``); the cookie's re-checks start one server and restart it; and
some servers must refuse to start (they exit during initialisation).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import email.utils
import hashlib
import hmac
import http.server
import json
import os
import pathlib
import re
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import gssapi
import pytest
import requests
import tornado.httpclient
import tornado.web
import tornado.websocket

from tests.conftest import TLS, User
from tests.firefox import run_firefox

pytest.importorskip("jupyter_server")
requests_gssapi = pytest.importorskip("requests_gssapi")

DEADLINE = 30.0
XSRF = "deadbeef"
PROVIDER = "tornado_kerb.jupyter.KerberosIdentityProvider"
ONLY_USER = "--KerberosIdentityProvider.allowed_principals=user@KRBTEST.COM"
KEYTAB_OPTION = "--KerberosIdentityProvider.keytab="
NO_EXTENSIONS = dict.fromkeys(
    ["jupyterlab", "jupyter_lsp", "jupyter_server_terminals", "notebook_shim"], False
)


class Server:
    def __init__(self, url: str, tmp: pathlib.Path, verify: str | bool, port: int) -> None:
        self.url = url
        self.runtime_dir = tmp / "runtime"
        self.config_dir = tmp / "config"
        self.log = tmp / "server.log"
        self.verify = verify
        self.port = port

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_text(self, start: int = 0) -> str:
        return self.log.read_text(errors="replace")[start:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(
    realm: Any,
    tmp: pathlib.Path,
    options: tuple[str, ...],
    *,
    tls: TLS | None,
    port: int,
    provider: str | None,
    lab: bool = False,
) -> subprocess.Popen[bytes]:
    """A jupyter server subprocess with the provider (the class ``provider``, or the one
    the config directory's jupyter_server_config.py names), its output in ``server.log``;
    without ``lab``, no server extensions (JupyterLab's take a second to load)."""
    (tmp / "root").mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    env.pop("JUPYTER_TOKEN", None)
    cmd = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--ServerApp.kernel_manager_class=tornado_kerb.jupyter.KerberosKernelManager",
        "--KerberosIdentityProvider.hostname=localhost",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--no-browser",
        f"--ServerApp.root_dir={tmp / 'root'}",
    ]
    if not lab:
        cmd.append(f"--ServerApp.jpserver_extensions={NO_EXTENSIONS!r}")
    if provider is not None:
        cmd.append(f"--ServerApp.identity_provider_class={provider}")
    if not any(option.startswith(KEYTAB_OPTION) for option in options):
        cmd.append(f"{KEYTAB_OPTION}{realm.keytab}")
    cmd += options
    if tls is not None:
        cmd += [f"--ServerApp.certfile={tls.cert}", f"--ServerApp.keyfile={tls.key}"]
    if os.geteuid() == 0:  # containers
        cmd.append("--allow-root")
    with open(tmp / "server.log", "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _answers(url: str, verify: str | bool) -> bool:
    try:
        # /api is public (the version): up once it answers.
        return requests.get(f"{url}/api", timeout=2, verify=verify).status_code == 200
    except requests.ConnectionError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _jupyter(
    realm: Any,
    tmp: pathlib.Path,
    *options: str,
    tls: TLS | None = None,
    port: int | None = None,
    provider: str | None = PROVIDER,
    lab: bool = False,
) -> Iterator[Server]:
    """A running jupyter server (over HTTPS with ``tls``), stopped whatever happens."""
    port = port or _free_port()
    server = Server(
        f"{'https' if tls else 'http'}://localhost:{port}", tmp, tls.ca if tls else True, port
    )
    proc = _spawn(realm, tmp, options, tls=tls, port=port, provider=provider, lab=lab)
    try:
        deadline = time.monotonic() + DEADLINE
        while not _answers(server.url, server.verify):
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited:\n{server.log_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter server not ready:\n{server.log_text()}")
            time.sleep(0.1)
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def server(realm: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Plain HTTP, for the realm's user alone."""
    with _jupyter(realm, tmp_path_factory.mktemp("jupyter"), ONLY_USER) as started:
        yield started


@pytest.fixture(scope="module")
def tls_server(realm: Any, tls: TLS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Over HTTPS, shared by the whole realm, with JupyterLab (and its custom/ directory
    served) and debug logs (each request's status and user)."""
    pytest.importorskip("jupyterlab")
    tmp = tmp_path_factory.mktemp("jupyter-tls")
    options = (
        "--log-level=DEBUG",
        "--LabApp.custom_css=True",
        "--KerberosIdentityProvider.allowed_principals=*@KRBTEST.COM",
    )
    with _jupyter(realm, tmp, *options, tls=tls, lab=True) as started:
        yield started


@pytest.fixture(scope="module")
def people(realm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """More users of the realm, each with a forwardable ticket in a cache of its own
    (principal without realm → cache path): ``brief``'s ticket lasts one hour; ``col/x``
    and ``col_x`` differ only in a character that file names cannot hold."""
    tmp = tmp_path_factory.mktemp("people")
    caches = {}
    for index, (name, flags) in enumerate(
        [("nodeleg", []), ("brief", ["-l", "1h"]), ("col/x", []), ("col_x", [])]
    ):
        principal = f"{name}@{realm.k5.realm}"
        password = realm.k5.password(f"person{index}")
        realm.k5.addprinc(principal, password)
        caches[name] = str(tmp / f"ccache{index}")
        realm.k5.kinit(principal, password, flags=["-f", "-c", caches[name], *flags])
    return caches


def _auth(realm: Any, ccache: str | None = None, **kwargs: Any) -> Any:
    return realm.plugin.requests_auth(ccache=ccache, **kwargs)


def _login(
    server: Server, realm: Any, *, ccache: str | None = None, delegate: bool = False
) -> requests.Session:
    """A session holding only Jupyter's login cookie, after one Kerberos login."""
    r = requests.get(
        f"{server.url}/api/me",
        auth=_auth(realm, ccache, delegate=delegate),
        verify=server.verify,
        timeout=DEADLINE,
    )
    assert r.status_code == 200, r.text
    assert r.cookies, "no login cookie"
    session = requests.Session()
    # Not the environment's CA bundle (REQUESTS_CA_BUNDLE would win over session.verify).
    session.trust_env = False
    session.verify = server.verify
    session.cookies.update(r.cookies)
    return session


def _set_cookie(r: requests.Response) -> tuple[str, str, dict[str, str]]:
    """The one Set-Cookie of ``r``: name, value and attributes (lower-case names). Parsed
    by hand: http.cookies stops at the "=" and "/" of a signed value."""
    (header,) = r.raw.headers.getlist("Set-Cookie")
    pair, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = pair.partition("=")
    attrs = {}
    for attribute in attributes:
        key, _, val = attribute.partition("=")
        attrs[key.lower()] = val
    return name, value, attrs


def _cookie_secret(server: Server) -> bytes:
    """The key Jupyter signs cookies with: an HMAC of the runtime directory's secret file
    and the (empty) password, as ServerApp derives it."""
    key = (server.runtime_dir / "jupyter_cookie_secret").read_bytes()
    return hmac.new(key, b"", hashlib.sha256).digest()


def _klist(path: pathlib.Path) -> str:
    out = subprocess.run(["klist", "-c", str(path)], capture_output=True, text=True, check=True)
    return out.stdout


# -- plain HTTP ------------------------------------------------------------------------


def test_unauthenticated_gets_negotiate_challenge(server: Server) -> None:
    r = requests.get(f"{server.url}/api/me", allow_redirects=False, timeout=10)
    assert r.status_code == 401
    assert "Negotiate" in r.headers["WWW-Authenticate"]
    assert "Basic" not in r.headers["WWW-Authenticate"]  # plain HTTP: no password
    page = requests.get(f"{server.url}/tree", allow_redirects=False, timeout=10)
    assert page.status_code == 401  # a page too: no redirect to a login or token page


def test_negotiate_login_shows_user_and_sets_no_cookie_over_http(
    server: Server, realm: Any
) -> None:
    r = requests.get(f"{server.url}/api/me", auth=_auth(realm), timeout=10)
    assert r.status_code == 200, r.text
    identity = r.json()["identity"]
    assert identity["username"] == "user"
    assert identity["name"] == "user@KRBTEST.COM"
    # Over plain HTTP a login cookie could be copied off the wire and replayed.
    assert "Set-Cookie" not in r.headers
    assert not r.cookies
    assert "Plain HTTP: no login cookie is set" in server.log_text()  # said at start-up


@pytest.mark.parametrize(
    ("path", "accept", "content_type"),
    [
        ("/api/me", None, "application/json"),
        ("/api/me", "*/*", "application/json"),
        ("/api/me", "text/html", "application/json"),  # Jupyter labels API answers JSON
        ("/tree", None, "text/plain"),
        ("/tree", "text/html", "text/html"),
    ],
)
def test_401_body_is_what_its_content_type_says(
    server: Server, path: str, accept: str | None, content_type: str
) -> None:
    r = requests.get(
        f"{server.url}{path}", headers={"Accept": accept}, allow_redirects=False, timeout=10
    )
    assert r.status_code == 401
    assert r.headers["Content-Type"].partition(";")[0] == content_type
    if content_type == "application/json":
        body = r.json()
        assert body["error"] == "unauthorized"
        assert body["reason"] == "no-credentials"
        assert "Kerberos ticket" in body["message"]
    elif content_type == "text/plain":
        assert r.text.startswith("401 Unauthorized: Your browser sent no Kerberos ticket")
    else:
        assert r.text.startswith("<!doctype html>")


def test_disallowed_principal_gets_403_and_the_guard_logs_it(
    server: Server, realm: Any, alice: User
) -> None:
    start = server.log_size()
    r = requests.get(f"{server.url}/api/me", auth=_auth(realm, alice.ccache), timeout=10)
    assert r.status_code == 403
    assert "Set-Cookie" not in r.headers
    # The guard's own line, in Jupyter's log and format, under its logger's name.
    line = r"\[I [^\]]* tornado_kerb\.guard\] Kerberos login forbidden \(forbidden\) for alice@"
    assert re.search(line, server.log_text(start)), server.log_text(start)


def test_basic_refused_over_http(server: Server, realm: Any) -> None:
    r = requests.get(f"{server.url}/api/me", auth=("user", realm.password), timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Negotiate"  # the password is not even tried
    assert "Set-Cookie" not in r.headers


# -- start-up ----------------------------------------------------------------------------

# Servers that must refuse to start: their options, and what their one critical line says
# ({missing}: a keytab path that does not exist).
REFUSALS: dict[str, tuple[tuple[str, ...], str]] = {
    "open": ((), "KerberosIdentityProvider.allowed_principals is not set: "),
    "misspellings": (
        (
            "--KerberosIdentityProvider.allowed_principal=user@KRBTEST.COM",
            "--KerberosIdentityProvder.basic=False",
        ),
        "unknown option KerberosIdentityProvider.allowed_principal (did you mean "
        "allowed_principals?); unknown section KerberosIdentityProvder (did you mean "
        "KerberosIdentityProvider?)",
    ),
    "misspelled-kernel-manager-option": (
        (ONLY_USER, "--KerberosKernelManager.cull_idel_timeout=600"),
        "unknown option KerberosKernelManager.cull_idel_timeout (did you mean cull_idle_timeout?)",
    ),
    "broken-keytab": (
        (ONLY_USER, f"{KEYTAB_OPTION}{{missing}}"),
        "tornado_kerb: keytab {missing}: ",
    ),
}


@pytest.fixture(scope="module")
def refused_starts(
    realm: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[int | None, str, str]]:
    """Every server of REFUSALS, started side by side (each should exit while it
    initialises): its exit status (None: it started serving instead), output, and the
    missing keytab's path."""
    running = {}
    try:
        for name, (options, _) in REFUSALS.items():
            tmp = tmp_path_factory.mktemp(f"refused-{name}")
            missing = str(tmp / "missing.keytab")
            port = _free_port()
            formatted = tuple(option.format(missing=missing) for option in options)
            proc = _spawn(realm, tmp, formatted, tls=None, port=port, provider=PROVIDER)
            running[name] = (proc, tmp, port, missing)
        deadline = time.monotonic() + DEADLINE
        waiting = set(running)
        while waiting and time.monotonic() < deadline:
            for name in list(waiting):
                proc, _, port, _ = running[name]
                if proc.poll() is not None or _answers(f"http://localhost:{port}", True):
                    waiting.discard(name)
            time.sleep(0.1)
    finally:
        statuses = {}
        for name, (proc, _, _, _) in running.items():
            statuses[name] = proc.poll()
            if statuses[name] is None:
                _stop(proc)
    return {
        name: (statuses[name], (tmp / "server.log").read_text(errors="replace"), missing)
        for name, (_, tmp, _, missing) in running.items()
    }


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refuses_to_start_with_one_line(
    refused_starts: dict[str, tuple[int | None, str, str]], name: str
) -> None:
    status, output, missing = refused_starts[name]
    assert status == 1, output
    critical = [line for line in output.splitlines() if line.startswith("[C ")]
    assert len(critical) == 1, output
    assert REFUSALS[name][1].format(missing=missing) in critical[0], output
    assert "Traceback" not in output


def test_sharing_a_server_is_warned_about(server: Server, tls_server: Server) -> None:
    warning = re.search(
        r"\[W [^\]]*\] KerberosIdentityProvider\.allowed_principals lets more than one user "
        r"in \(\*@KRBTEST\.COM\): they share this server\. Every kernel runs as its OS "
        r"account \([^)]+\), so each of them can read the others' files and Kerberos ticket "
        r"caches and act as them\.",
        tls_server.log_text(),
    )
    assert warning, tls_server.log_text()
    assert "more than one user" not in server.log_text()  # one user: nothing to warn about
    assert "Plain HTTP" not in tls_server.log_text()


# -- the login cookie ------------------------------------------------------------------

DENYING_CONFIG = """
import pathlib

from tornado_kerb.jupyter import KerberosIdentityProvider

DENIED = pathlib.Path({denied!r})


class DenyListed(KerberosIdentityProvider):
    async def authorize(self, user, handler):
        return user.principal not in DENIED.read_text().split()


c.ServerApp.identity_provider_class = DenyListed
"""


def test_login_cookie_is_checked_again_on_every_request(
    realm: Any, alice: User, tmp_path: pathlib.Path
) -> None:
    denied = tmp_path / "denied"
    denied.write_text("")
    (tmp_path / "config").mkdir()
    config = DENYING_CONFIG.format(denied=str(denied))
    (tmp_path / "config" / "jupyter_server_config.py").write_text(config)
    both = '--KerberosIdentityProvider.allowed_principals=["user@KRBTEST.COM", "alice@KRBTEST.COM"]'
    http_cookie = "--KerberosIdentityProvider.login_cookie_http=True"
    port = _free_port()  # the cookie's name holds it: the restart keeps it
    with _jupyter(realm, tmp_path, both, http_cookie, port=port, provider=None) as first:
        r = requests.get(f"{first.url}/api/me", auth=_auth(realm, alice.ccache), timeout=10)
        attrs = _set_cookie(r)[2]
        assert "secure" not in attrs  # plain HTTP, allowed by login_cookie_http
        assert {"httponly", "samesite"} <= set(attrs)
        alices = _login(first, realm, ccache=alice.ccache)
        users = _login(first, realm)
        assert alices.get(f"{first.url}/api/me").status_code == 200
        denied.write_text("alice@KRBTEST.COM\n")  # authorize() now says no
        start = first.log_size()
        assert alices.get(f"{first.url}/api/me").status_code == 403
        assert "Kerberos login forbidden (forbidden) for alice@KRBTEST.COM" in first.log_text(start)
        denied.write_text("")
        assert alices.get(f"{first.url}/api/me").status_code == 200
    # Restarted without alice: same runtime directory (cookie secret), same port.
    with _jupyter(realm, tmp_path, ONLY_USER, http_cookie, port=port, provider=None) as second:
        start = second.log_size()
        r = alices.get(f"{second.url}/api/me")
        assert r.status_code == 401, r.text
        assert "Login cookie of alice@KRBTEST.COM no longer valid (forbidden)" in second.log_text(
            start
        )
        # The secret survived the restart: alice's cookie was refused for who she is.
        assert users.get(f"{second.url}/api/me").json()["identity"]["name"] == "user@KRBTEST.COM"


def test_login_cookie_over_tls_lives_no_longer_than_the_ticket(
    tls_server: Server, realm: Any, people: dict[str, str]
) -> None:
    secret = _cookie_secret(tls_server)
    # The realm's user (a long ticket: the cookie's own limit applies) and brief (one hour).
    for ccache in (realm.plugin.ccache, people["brief"]):
        # MIT holds a context valid up to its clock-skew allowance past the ticket's end.
        ticket = gssapi.Credentials(usage="initiate", store={"ccache": ccache}).lifetime
        if ccache == people["brief"]:
            assert ticket <= 3600  # so the ticket, not session_max_age, is the limit
        longest = min(10 * 3600, ticket + 300)
        r = requests.get(
            f"{tls_server.url}/api/me",
            auth=_auth(realm, ccache),
            verify=tls_server.verify,
            timeout=10,
        )
        assert r.status_code == 200, r.text
        name, value, attrs = _set_cookie(r)
        assert "secure" in attrs
        assert "httponly" in attrs
        assert attrs["samesite"] == "Lax"
        max_age = int(attrs["max-age"])
        assert min(10 * 3600, ticket) - 60 <= max_age <= longest + 2, (max_age, ticket)
        expires = email.utils.parsedate_to_datetime(attrs["expires"]).timestamp()
        assert abs(expires - (time.time() + max_age)) < 5
        # The same expiry is inside the signed value: the server checks it itself.
        signed = tornado.web.decode_signed_value(secret, name, value)
        assert signed is not None
        assert abs(json.loads(signed)["tornado_kerb"][0] - expires) <= 1


def test_login_cookie_expiry_and_realm_are_checked_by_the_server(
    tls_server: Server, realm: Any
) -> None:
    r = requests.get(
        f"{tls_server.url}/api/me", auth=_auth(realm), verify=tls_server.verify, timeout=10
    )
    name, value, _ = _set_cookie(r)
    secret = _cookie_secret(tls_server)
    signed = tornado.web.decode_signed_value(secret, name, value)
    assert signed is not None
    data = json.loads(signed)

    def status(**changes: Any) -> int:
        forged = json.dumps({**data, **changes})
        cookie = tornado.web.create_signed_value(secret, name, forged, version=2).decode()
        return requests.get(
            f"{tls_server.url}/api/me",
            cookies={name: cookie},
            verify=tls_server.verify,
            timeout=10,
        ).status_code

    assert status() == 200  # signed as the server signs: the forgery itself is sound
    assert status(tornado_kerb=[int(time.time()) - 1, "negotiate"]) == 401  # expired
    assert status(name="user@ELSEWHERE.ORG") == 401  # a realm not allowed (any more)
    assert status(tornado_kerb=None, tornado_kerb_at=int(time.time())) == 401  # old format


def test_login_cookie_alone_works(tls_server: Server, realm: Any) -> None:
    with _login(tls_server, realm) as session:
        assert "Authorization" not in session.headers
        r = session.get(f"{tls_server.url}/api/contents")
        assert r.status_code == 200, r.text
        assert r.json()["type"] == "directory"


# -- kernels and their tickets ---------------------------------------------------------


def _execute(server: Server, session: requests.Session, kernel_id: str, code: str) -> str:
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    ws_url = server.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
    ca = server.verify if isinstance(server.verify, str) else None

    async def run() -> str:
        request = tornado.httpclient.HTTPRequest(ws_url, headers={"Cookie": cookie}, ca_certs=ca)
        conn = await asyncio.wait_for(tornado.websocket.websocket_connect(request), 10)
        msg_id = uuid.uuid4().hex
        conn.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "user",
                        "session": uuid.uuid4().hex,
                        "date": "",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": code, "silent": False, "store_history": False},
                    "channel": "shell",
                }
            )
        )
        out = []
        while True:
            raw = await asyncio.wait_for(conn.read_message(), 15)
            assert raw is not None, "websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                raise AssertionError(msg["content"])
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                conn.close()
                return "".join(out)

    return asyncio.run(run())


KLIST_CODE = (
    "import os, subprocess\n"
    "print(os.environ.get('KRB5CCNAME'))\n"
    "print(subprocess.run(['klist'], capture_output=True, text=True).stdout)\n"
)


def _in_kernel(server: Server, session: requests.Session, code: str) -> str:
    """Start a kernel as the session's user, run ``code`` there, return its output."""
    session.cookies.set("_xsrf", XSRF)
    headers = {"X-XSRFToken": XSRF}
    r = session.post(f"{server.url}/api/kernels", json={"name": "python3"}, headers=headers)
    assert r.status_code == 201, r.text
    kernel_id = r.json()["id"]
    try:
        return _execute(server, session, kernel_id, code)
    finally:
        session.delete(f"{server.url}/api/kernels/{kernel_id}", headers=headers)


@pytest.mark.parametrize("delegate", [False, True], ids=["plain", "delegated"])
def test_kernel_gets_delegated_ccache(
    tls_server: Server, realm: Any, people: dict[str, str], delegate: bool
) -> None:
    # A user who never delegates to this server, and the realm's user who does.
    ccache = realm.plugin.ccache if delegate else people["nodeleg"]
    with _login(tls_server, realm, ccache=ccache, delegate=delegate) as session:
        output = _in_kernel(tls_server, session, KLIST_CODE)
    ccache_file = tls_server.runtime_dir / "tornado_kerb" / "krb5cc_user@KRBTEST.COM"
    first_line = output.splitlines()[0]
    if delegate:
        assert first_line == f"FILE:{ccache_file}"
        assert stat.S_IMODE(ccache_file.stat().st_mode) == 0o600
        assert "Default principal: user@KRBTEST.COM" in output  # the delegated ticket
        assert "krbtgt/KRBTEST.COM@KRBTEST.COM" in output
    else:
        # No delegation: the server's own environment.
        assert first_line == os.environ.get("KRB5CCNAME", "None")


def test_principals_differing_in_unsafe_characters_get_their_own_ccache(
    tls_server: Server, realm: Any, people: dict[str, str]
) -> None:
    # col/x logs in first, col_x second: with one file for both, col/x's kernel would
    # run with col_x's ticket.
    slash = _login(tls_server, realm, ccache=people["col/x"], delegate=True)
    _login(tls_server, realm, ccache=people["col_x"], delegate=True).close()
    directory = tls_server.runtime_dir / "tornado_kerb"
    names = sorted(p.name for p in directory.glob("krb5cc_col*"))
    # Every byte outside [A-Za-z0-9.@-] percent-encoded: "/" and "_" alike.
    assert names == ["krb5cc_col%2Fx@KRBTEST.COM", "krb5cc_col%5Fx@KRBTEST.COM"]
    with slash:
        output = _in_kernel(tls_server, slash, KLIST_CODE)
    assert output.splitlines()[0] == f"FILE:{directory / 'krb5cc_col%2Fx@KRBTEST.COM'}"
    assert "Default principal: col/x@KRBTEST.COM" in output, output


def test_concurrent_delegated_logins_of_one_user(tls_server: Server, realm: Any) -> None:
    logins = 60
    # Tokens made beforehand (each a fresh one, delegating), so the requests reach the
    # server together; the barrier releases them at once.
    headers = [realm.plugin.negotiate_header(delegate=True) for _ in range(logins)]
    barrier = threading.Barrier(logins)

    def login(header: str) -> int:
        barrier.wait(DEADLINE)
        r = requests.get(
            f"{tls_server.url}/api/me",
            headers={"Authorization": header},
            verify=tls_server.verify,
            timeout=DEADLINE,
        )
        return r.status_code

    start = tls_server.log_size()
    with concurrent.futures.ThreadPoolExecutor(logins) as pool:
        statuses = list(pool.map(login, headers))
    assert [s for s in statuses if s >= 500] == []
    assert statuses == [200] * logins, sorted(statuses)
    # Each login stored its credentials (a failed store would only be a warning).
    log = tls_server.log_text(start)
    stored = log.count("Stored delegated credentials of user@KRBTEST.COM")
    assert stored == logins, [line for line in log.splitlines() if "credentials" in line]
    directory = tls_server.runtime_dir / "tornado_kerb"
    assert not list(directory.glob(".krb5cc-*")), "temporary files left behind"
    assert "Default principal: user@KRBTEST.COM" in _klist(directory / "krb5cc_user@KRBTEST.COM")


def test_ccache_file_never_follows_a_symlink(
    tls_server: Server, realm: Any, people: dict[str, str], tmp_path: pathlib.Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    directory = tls_server.runtime_dir / "tornado_kerb"
    directory.mkdir(mode=0o700, exist_ok=True)
    link = directory / "krb5cc_brief@KRBTEST.COM"
    link.symlink_to(victim)
    _login(tls_server, realm, ccache=people["brief"], delegate=True).close()
    assert victim.read_text() == "untouched"
    assert not link.is_symlink()  # the link itself was replaced
    assert "Default principal: brief@KRBTEST.COM" in _klist(link)


def test_basic_over_https(tls_server: Server, realm: Any, tls: TLS) -> None:
    r = requests.get(
        f"{tls_server.url}/api/me", auth=("user", realm.password), verify=tls.ca, timeout=10
    )
    assert r.status_code == 200, r.text
    assert r.json()["identity"]["name"] == "user@KRBTEST.COM"
    wrong = requests.get(
        f"{tls_server.url}/api/me", auth=("user", "wrong"), verify=tls.ca, timeout=10
    )
    assert wrong.status_code == 401
    challenge = requests.get(f"{tls_server.url}/api/me", verify=tls.ca, timeout=10)
    assert "Basic" in challenge.headers["WWW-Authenticate"]  # offered over TLS


# -- a browser --------------------------------------------------------------------------

# A 1x1 transparent PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@contextlib.contextmanager
def _held_image(tls: TLS, ready: Callable[[], bool], settle: float) -> Iterator[str]:
    """The HTTPS URL of an image answered only once ``ready()`` (then ``settle`` s more, at
    most DEADLINE s in all). On a page it holds back the load event, which Firefox's
    --screenshot waits for: JupyterLab renders in JavaScript after its page has loaded."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            deadline = time.monotonic() + DEADLINE
            while not ready() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(settle)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PIXEL)))
            self.end_headers()
            self.wfile.write(PIXEL)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = tls.server_context().wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{httpd.server_address[1]}/held.png"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_firefox_opens_jupyterlab(tls_server: Server, tls: TLS, tmp_path: pathlib.Path) -> None:
    env = {name: os.environ[name] for name in ("KRB5_CONFIG", "KRB5CCNAME")}  # the realm's
    start = tls_server.log.stat().st_size  # from here on: this browser's requests

    def page_asked_who() -> bool:
        # JupyterLab's page fetches /api/me once it runs: the user's menu is drawn then.
        return "200 GET /api/me?" in tls_server.log.read_text(errors="replace")[start:]

    screenshot = tmp_path / "jupyterlab.png"
    with _held_image(tls, page_asked_who, settle=3.0) as held:
        # JupyterLab starts on its page's load event, so it is framed by a page of the
        # same origin (Jupyter's custom/ directory) whose own load waits for the image.
        custom = tls_server.config_dir / "custom"
        custom.mkdir(exist_ok=True)
        (custom / "lab.html").write_text(
            '<!doctype html><body style="margin:0">'
            '<iframe src="../lab" style="border:0;width:100vw;height:100vh;display:block">'
            f'</iframe><img src="{held}" style="position:fixed;left:0;top:0"></body>\n'
        )
        run_firefox(
            f"{tls_server.url}/custom/lab.html",
            tmp_path / "profile",
            tls.ca,
            env,
            screenshot,
            window_size=(1100, 700),
        )
    log = tls_server.log.read_text(errors="replace")[start:]
    # The server's record: an anonymous request challenged, then Kerberos (the browser
    # delegates: only a GSSAPI login carries credentials), then the page's own API calls.
    assert "401 GET /lab (@127.0.0.1)" in log
    assert "Stored delegated credentials of user@KRBTEST.COM" in log
    assert re.search(r"200 GET /api/me\?\d+ \(user@127\.0\.0\.1\)", log), log
    assert re.search(r"200 GET /static/lab/main\.\w+\.js\S* \(user@127\.0\.0\.1\)", log)
    assert screenshot.stat().st_size > 10_000
    shot = os.environ.get("TORNADO_KERB_SCREENSHOTS")  # docs/: the README's picture
    if shot:
        (pathlib.Path(shot) / screenshot.name).write_bytes(screenshot.read_bytes())


# -- without a server --------------------------------------------------------------------


def test_ccache_file_names_cannot_collide() -> None:
    from tornado_kerb.jupyter import _ccache_file_name

    principals = [
        "col/x@R",
        "col_x@R",
        "col%2Fx@R",
        "col%5Fx@R",
        "cöl@R",
        "c%C3%B6l@R",
        "a/../b@R",
        "x" * 300 + "@R",
        "x" * 301 + "@R",
    ]
    names = [_ccache_file_name(p) for p in principals]
    assert len(set(names)) == len(principals)
    assert all("/" not in name and len(name) <= 255 for name in names)
    assert _ccache_file_name("user@KRBTEST.COM") == "krb5cc_user@KRBTEST.COM"


def test_a_provider_built_by_hand_raises_instead_of_exiting() -> None:
    from traitlets.config import Config

    from tornado_kerb import ConfigurationError
    from tornado_kerb.jupyter import KerberosIdentityProvider

    config = Config({"KerberosIdentityProvider": {"allowed_principal": "alice@EXAMPLE.COM"}})
    with pytest.raises(ConfigurationError, match=r"did you mean allowed_principals\?"):
        KerberosIdentityProvider(config=config)
    provider = KerberosIdentityProvider()
    with pytest.raises(ConfigurationError, match="allowed_principals is not set"):
        provider.validate_security(type("App", (), {"ip": "127.0.0.1"})())


def test_gssproxy_keeps_the_keytab_from_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    # The reason for GSS-Proxy: kernels run as the server's account. The trait reaches
    # the guard, which holds no keytab then, and refuses to start without the environment.
    from tornado_kerb import ConfigurationError
    from tornado_kerb.gssproxy import NO_KEYTAB
    from tornado_kerb.jupyter import KerberosIdentityProvider

    provider = KerberosIdentityProvider(gssproxy=True, hostname="localhost")
    monkeypatch.delenv("GSS_USE_PROXY", raising=False)
    with pytest.raises(ConfigurationError, match="GSS_USE_PROXY=yes"):
        provider.guard  # noqa: B018 - built on first use
    monkeypatch.setenv("GSS_USE_PROXY", "yes")
    monkeypatch.setenv("GSSPROXY_SOCKET", "/run/gssproxy-test.sock")
    guard = KerberosIdentityProvider(gssproxy="/run/gssproxy-test.sock", hostname="h").guard
    assert guard.acceptor.proxy is not None
    assert guard.acceptor.proxy.socket == "/run/gssproxy-test.sock"
    assert guard.acceptor.keytab == NO_KEYTAB


def test_the_core_package_never_imports_jupyter() -> None:
    code = (
        "import sys, tornado_kerb, tornado_kerb.testing; "
        "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('jupyter')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("trusted", "secure_cookie"), [("127.0.0.1", True), ("10.0.0.1", False)])
def test_behind_a_proxy_the_login_cookie_follows_trusted_proxies(
    realm: Any, tmp_path: pathlib.Path, trusted: str, secure_cookie: bool
) -> None:
    # Plain HTTP from 127.0.0.1, saying X-Forwarded-Proto: https, as nginx in front of a
    # TLS listener would: believed only from a trusted proxy, whatever trust_xheaders says.
    options = (
        "--ServerApp.trust_xheaders=True",
        f"--KerberosIdentityProvider.trusted_proxies={trusted}",
    )
    with _jupyter(realm, tmp_path, ONLY_USER, *options) as proxied:
        headers = {"X-Forwarded-Proto": "https"}
        r = requests.get(f"{proxied.url}/api/me", auth=_auth(realm), headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        if secure_cookie:
            assert "secure" in _set_cookie(r)[2]
        else:
            assert "Set-Cookie" not in r.headers  # plain HTTP, as far as it can tell
