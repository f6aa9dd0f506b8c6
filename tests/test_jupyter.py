"""A real Jupyter Server subprocess logging users in with KerberosIdentityProvider."""

from __future__ import annotations

import asyncio
import base64
import contextlib
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

import pytest
import requests
import tornado.httpclient
import tornado.websocket

from tests.conftest import TLS
from tests.firefox import run_firefox

pytest.importorskip("jupyter_server")
requests_gssapi = pytest.importorskip("requests_gssapi")

DEADLINE = 30.0
XSRF = "deadbeef"


class Server:
    def __init__(self, url: str, tmp: pathlib.Path) -> None:
        self.url = url
        self.runtime_dir = tmp / "runtime"
        self.config_dir = tmp / "config"
        self.log = tmp / "server.log"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _jupyter(
    realm: Any, tmp: pathlib.Path, *options: str, tls: TLS | None = None
) -> Iterator[Server]:
    """A jupyter server subprocess with the provider (over HTTPS with ``tls``; its output in
    ``server.log``), stopped whatever happens."""
    root = tmp / "root"
    root.mkdir()
    runtime = tmp / "runtime"
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTER_PLATFORM_DIRS="1",
    )
    env.pop("JUPYTER_TOKEN", None)
    port = _free_port()
    log = tmp / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--ServerApp.identity_provider_class=tornado_kerb.jupyter.KerberosIdentityProvider",
        "--ServerApp.kernel_manager_class=tornado_kerb.jupyter.KerberosKernelManager",
        f"--KerberosIdentityProvider.keytab={realm.keytab}",
        "--KerberosIdentityProvider.hostname=localhost",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--no-browser",
        f"--ServerApp.root_dir={root}",
        *options,
    ]
    if tls is not None:
        cmd += [f"--ServerApp.certfile={tls.cert}", f"--ServerApp.keyfile={tls.key}"]
    if os.geteuid() == 0:  # containers
        cmd.append("--allow-root")
    url = f"{'https' if tls else 'http'}://localhost:{port}"
    verify: str | bool = tls.ca if tls else True
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited:\n{log.read_text()}")
            try:
                # /api is public (the version): up once it answers.
                if requests.get(f"{url}/api", timeout=2, verify=verify).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter server not ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield Server(url, tmp)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(realm: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with _jupyter(realm, tmp_path_factory.mktemp("jupyter")) as started:
        yield started


def _login(server: Server, *, delegate: bool = False) -> requests.Session:
    """A session holding only Jupyter's login cookie, after one Kerberos login."""
    with requests.Session() as first:
        r = first.get(
            f"{server.url}/api/me", auth=requests_gssapi.HTTPSPNEGOAuth(delegate=delegate)
        )
        assert r.status_code == 200, r.text
        cookies = first.cookies
    session = requests.Session()
    session.cookies.update(cookies)
    return session


def test_unauthenticated_gets_negotiate_challenge(server: Server) -> None:
    r = requests.get(f"{server.url}/api/me", allow_redirects=False, timeout=10)
    assert r.status_code == 401
    assert "Negotiate" in r.headers["WWW-Authenticate"]
    assert "Basic" not in r.headers["WWW-Authenticate"]  # plain HTTP: no password
    page = requests.get(f"{server.url}/tree", allow_redirects=False, timeout=10)
    assert page.status_code == 401  # a page too: no redirect to a login or token page


def test_negotiate_login_shows_user(server: Server) -> None:
    r = requests.get(f"{server.url}/api/me", auth=requests_gssapi.HTTPSPNEGOAuth(), timeout=10)
    assert r.status_code == 200, r.text
    identity = r.json()["identity"]
    assert identity["username"] == "user"
    assert identity["name"] == "user@KRBTEST.COM"


def test_login_cookie_alone_works(server: Server) -> None:
    with _login(server) as session:
        assert "Authorization" not in session.headers
        r = session.get(f"{server.url}/api/contents")
        assert r.status_code == 200, r.text
        assert r.json()["type"] == "directory"


def _execute(server: Server, session: requests.Session, kernel_id: str, code: str) -> str:
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    ws_url = server.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"

    async def run() -> str:
        request = tornado.httpclient.HTTPRequest(ws_url, headers={"Cookie": cookie})
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


@pytest.mark.parametrize("delegate", [False, True], ids=["plain", "delegated"])
def test_kernel_gets_delegated_ccache(server: Server, delegate: bool) -> None:
    with _login(server, delegate=delegate) as session:
        session.cookies.set("_xsrf", XSRF)
        headers = {"X-XSRFToken": XSRF}
        r = session.post(f"{server.url}/api/kernels", json={"name": "python3"}, headers=headers)
        assert r.status_code == 201, r.text
        kernel_id = r.json()["id"]
        try:
            code = (
                "import os, subprocess\n"
                "print(os.environ.get('KRB5CCNAME'))\n"
                "print(subprocess.run(['klist'], capture_output=True, text=True).stdout)\n"
            )
            output = _execute(server, session, kernel_id, code)
        finally:
            session.delete(f"{server.url}/api/kernels/{kernel_id}", headers=headers)
    ccache = server.runtime_dir / "tornado_kerb" / "krb5cc_user@KRBTEST.COM"
    first_line = output.splitlines()[0]
    if delegate:
        assert first_line == f"FILE:{ccache}"
        assert stat.S_IMODE(ccache.stat().st_mode) == 0o600
        assert "user@KRBTEST.COM" in output  # klist shows the delegated ticket
        assert "krbtgt/KRBTEST.COM@KRBTEST.COM" in output
    else:
        # No delegation (in this module so far): the server's own environment.
        assert first_line == os.environ.get("KRB5CCNAME", "None")


def test_disallowed_principal_gets_403(realm: Any, tmp_path: pathlib.Path) -> None:
    only = "--KerberosIdentityProvider.allowed_principals=someone@KRBTEST.COM"
    with _jupyter(realm, tmp_path, only) as other:
        r = requests.get(f"{other.url}/api/me", auth=requests_gssapi.HTTPSPNEGOAuth(), timeout=10)
        assert r.status_code == 403
        assert "Set-Cookie" not in r.headers


@pytest.fixture(scope="module")
def tls_server(realm: Any, tls: TLS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Over HTTPS, with JupyterLab (and its custom/ directory served) and debug logs (each
    request's status and user)."""
    pytest.importorskip("jupyterlab")
    tmp = tmp_path_factory.mktemp("jupyter-tls")
    options = ("--log-level=DEBUG", "--LabApp.custom_css=True")
    with _jupyter(realm, tmp, *options, tls=tls) as started:
        yield started


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


def test_basic_refused_over_http(server: Server, realm: Any) -> None:
    r = requests.get(f"{server.url}/api/me", auth=("user", realm.password), timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Negotiate"  # the password is not even tried
    assert "Set-Cookie" not in r.headers


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


def test_the_core_package_never_imports_jupyter() -> None:
    code = (
        "import sys, tornado_kerb, tornado_kerb.testing; "
        "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('jupyter')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
