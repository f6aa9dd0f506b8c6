"""The demo as a newcomer runs it: a subprocess, its printed recipe, real clients, Ctrl-C."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, TLS, Realm
from tests.firefox import run_firefox
from tornado_kerb.testing.ldap import ldap_available

# Where slapd is installed (CI installs it) the demo's KDC can do constrained delegation:
# a client that delegates nothing still gets credentials to act with.
LDAP = ldap_available() is None

READY = "Ctrl-C stops the server"


class Demo:
    """``python -m demo`` started the way ``make demo`` starts it, with its recipe read."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        # The log goes to a file: a pipe nobody reads would fill up and stall the server.
        self._log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo", "--port=0", "--http_port=0", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        lines = _read_until(self.proc, READY, timeout=60)
        self.recipe = "".join(lines)
        assert READY in self.recipe, self.recipe + self.stop()
        self.https = re.search(r"https://localhost:\d+", self.recipe).group(0)  # type: ignore[union-attr]
        self.http = re.search(r"http://localhost:\d+", self.recipe).group(0)  # type: ignore[union-attr]
        self.exports = dict(re.findall(r"export (\w+)=(\S+)", self.recipe))
        self.commands = [line.strip() for line in lines if line.strip().startswith("curl ")]
        self.kdcs = _children(self.proc.pid, "krb5kdc")

    def env(self) -> dict[str, str]:
        """This process's environment plus the recipe's exports."""
        return {**os.environ, **self.exports}

    def stop(self, signum: int = signal.SIGINT) -> str:
        """Send ``signum``, wait for the exit; return what it printed after the recipe and
        its log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self._log.seek(0)
        return out + self._log.read()


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    """Lines of ``proc``'s output up to the one holding ``marker``, or all there were when
    ``timeout`` ran out (a reader thread, so a stalled demo cannot hang the suite)."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                break
        found.set()

    threading.Thread(target=read, daemon=True).start()
    found.wait(timeout)
    return list(lines)


def _children(pid: int, name: str) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid), "-x", name], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def demo() -> Iterator[Demo]:
    running = Demo()
    try:
        yield running
    finally:
        running.stop()


def _run(command: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [*shlex.split(command, comments=True), "-sS", "--fail"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout


def test_recipe_logs_in_with_curl_negotiate_delegation_and_basic(demo: Demo) -> None:
    assert set(demo.exports) == {"KRB5_CONFIG", "KRB5CCNAME"}
    assert demo.kdcs, "the throwaway realm runs its own KDC"
    negotiate, delegation, basic = demo.commands[:3]
    assert "--cacert" in negotiate and "--negotiate" in negotiate
    me = json.loads(_run(negotiate, demo.env()))
    assert me == {
        "principal": "alice@DEMO.TEST",
        "username": "alice",
        "mechanism": "negotiate",
        "credentials": "constrained" if LDAP else "none",
        "expires": me["expires"],
        "tls": True,
    }
    assert me["expires"]
    acted = json.loads(_run(delegation, demo.env()))
    assert acted["ok"] is True and acted["as"] == "alice@DEMO.TEST"
    assert acted["backend"] == "backend/localhost"
    # Basic needs no ticket at all: run it without the exports' ticket cache.
    with_basic = json.loads(_run(basic, {**demo.env(), "KRB5CCNAME": "MEMORY:empty"}))
    assert with_basic["mechanism"] == "basic" and with_basic["credentials"] == "password"


def test_db_page_logs_in_to_postgres_as_the_web_user(demo: Demo) -> None:
    (database,) = [command for command in demo.commands if "/db" in command]
    assert "--delegation always" in database
    seen = json.loads(_run(database, demo.env()))
    assert seen == {
        "principal": "alice@DEMO.TEST",
        "username": "alice",
        "ok": True,
        "credentials": "forwarded",
        "db_user": "alice",
        "gss": True,
        "db_principal": "alice@DEMO.TEST",
        "encrypted": True,
    }
    undelegated = database.replace("--delegation always", "")
    if LDAP:
        # As in an AD domain: the browser delegates nothing, the KDC lets us act as alice
        # towards PostgreSQL (S4U2Proxy), and the page says so.
        seen = json.loads(_run(undelegated, demo.env()))
        assert seen["ok"] is True and seen["db_user"] == "alice"
        assert seen["credentials"] == "constrained"
        html = _run(undelegated.replace("?format=json", ""), demo.env())
        assert "constrained delegation" in html
    else:
        # Without delegation the page says what to do instead of failing.
        html = _run(undelegated.replace("?format=json", ""), demo.env())
        assert "your client delegated no credentials" in html
        assert "network.negotiate-auth.delegation-uris" in html


def test_recipe_works_with_requests_gssapi(demo: Demo) -> None:
    ca = re.search(r"--cacert (\S+)", demo.commands[0]).group(1)  # type: ignore[union-attr]
    script = (
        "import sys, requests, requests_gssapi\n"
        "auth = requests_gssapi.HTTPSPNEGOAuth(mutual_authentication=requests_gssapi.REQUIRED)\n"
        "r = requests.get(sys.argv[1], auth=auth, verify=sys.argv[2], timeout=30)\n"
        "print(r.status_code, r.json()['principal'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, f"{demo.https}/api/whoami", ca],
        env=demo.env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert out.split() == ["200", "alice@DEMO.TEST"]


def test_plain_http_offers_negotiate_only(demo: Demo) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-u",
            "alice:alice-demo-password",
            f"{demo.http}/api/whoami",
        ],
        env=demo.env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("HTTP/1.1 401")
    assert re.findall(r"(?im)^www-authenticate: (.*?)\r?$", out) == ["Negotiate"]
    html = _run(f"curl --negotiate -u : {demo.http}/whoami", demo.env())
    assert "<h1>You are alice@DEMO.TEST</h1>" in html and "plain HTTP" in html


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_server_and_realm(signum: int) -> None:
    demo = Demo()
    kdcs = demo.kdcs
    realm_dir = os.path.dirname(demo.exports["KRB5_CONFIG"])
    assert kdcs and os.path.isdir(realm_dir)
    tail = demo.stop(signum)
    assert demo.proc.returncode == 0, tail
    assert "KDC stopped, realm removed" in tail
    assert not [pid for pid in kdcs if _alive(pid)]
    assert not os.path.exists(realm_dir)
    assert "throwaway-pg-" not in " ".join(os.listdir(tempfile.gettempdir()))


def test_real_realm_mode_starts_no_kdc(realm: Realm, tls: TLS) -> None:
    demo = Demo(
        f"--keytab={realm.keytab}",
        "--hostname=localhost",
        "--realm=KRBTEST.COM",
        f"--cert={tls.cert}",
        f"--key={tls.key}",
        env=dict(os.environ),
    )
    try:
        assert demo.kdcs == []
        assert "export KRB5" not in demo.recipe
        negotiate = demo.commands[0] + f" --cacert {tls.ca}"
        me = json.loads(_run(negotiate, dict(os.environ)))
        assert me["principal"] == realm.user
    finally:
        tail = demo.stop()
    assert "realm removed" not in tail


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--hostname=www.example.com"], "give them with --keytab"),
        (["--keytab=/etc/http.keytab", "--hostname=www.example.com"], "give --cert and --key"),
    ],
)
def test_options_that_cannot_work_are_refused(args: list[str], complaint: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "demo", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert complaint in out.stderr


def test_help_explains_each_option() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "demo", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    text = out.stdout + out.stderr
    for option in ("--keytab", "--hostname", "--realm", "--cert", "--key", "--port"):
        assert re.search(rf"(?m)^\s+{option}(=\S+)?\s+\S", text), option


def test_firefox_logs_in_via_negotiate(demo: Demo, tmp_path: pathlib.Path) -> None:
    """A real browser: Firefox ESR, headless, trusting localhost for Negotiate and the CA."""
    ca = re.search(r"--cacert (\S+)", demo.commands[0]).group(1)  # type: ignore[union-attr]
    screenshot = tmp_path / "whoami.png"
    run_firefox(
        f"{demo.https}/whoami",
        tmp_path / "profile",
        ca,
        demo.exports,
        screenshot,
        window_size=(900, 560),
    )
    # The browser delegates (delegation-uris): the server reaches PostgreSQL as alice.
    db_screenshot = tmp_path / "db.png"
    run_firefox(
        f"{demo.https}/db",
        tmp_path / "profile",
        ca,
        demo.exports,
        db_screenshot,
        window_size=(900, 620),
    )
    if LDAP:
        # A browser never told to delegate (the default): constrained delegation.
        run_firefox(
            f"{demo.https}/db",
            tmp_path / "plain-profile",
            ca,
            demo.exports,
            tmp_path / "db-undelegated.png",
            extra_prefs={"network.negotiate-auth.delegation-uris": ""},
        )
    log = demo.stop()
    # The server's own record: the page went to the demo user, via Negotiate.
    assert "served /whoami to alice@DEMO.TEST via negotiate" in log
    assert "as alice (encrypted: True, credentials: forwarded)" in log
    if LDAP:
        assert "as alice (encrypted: True, credentials: constrained)" in log
    assert screenshot.stat().st_size > 1000
    shot = os.environ.get("TORNADO_KERB_SCREENSHOTS")  # docs/: make the README's pictures
    if shot:
        for picture in (screenshot, db_screenshot):
            (pathlib.Path(shot) / picture.name).write_bytes(picture.read_bytes())
