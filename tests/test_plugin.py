"""The pytest plugin (``tornado_kerb.testing.plugin``), run as a user runs it: in a pytest
of its own, loaded with ``-p``, on generated test files.

Each run is a subprocess: the plugin's realm puts its environment into ``os.environ`` for
its session, which must not meet this suite's own realm. Entry-point plugins are not
autoloaded there, so these tests need no installed entry point and cannot load it twice.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import typing

import tornado_kerb.testing
import tornado_kerb.testing.plugin

PLUGIN = "tornado_kerb.testing.plugin"
ROOT = pathlib.Path(__file__).resolve().parent.parent

# Written next to the generated tests: proves os.environ is put back and the realm stopped
# once the session (and its fixtures) ended.
CONFTEST = """
import json
import os

_before = {}


def pytest_sessionstart(session):
    _before.update(os.environ)


def pytest_sessionfinish(session):
    with open("session.json", "w") as out:
        json.dump({"environ_restored": dict(os.environ) == _before}, out)
"""

# Real clients against a real Tornado server on its own thread, with the plugin's realm.
HELPERS = """
import asyncio
import json
import os
import threading

import httpx
import pytest
import requests
import tornado.httpserver
import tornado.netutil
import tornado.web

from tornado_kerb import KerberosAuthMixin, authenticated
from tornado_kerb.testing import KerberosRealm, start_kerberos_realm


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self):
        user = self.current_user
        delegated = user.delegated_credentials is not None
        self.write({"principal": user.principal, "delegated": delegated})


class Server:
    def __init__(self, app):
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(app),))
        self._thread.start()
        assert self._ready.wait(10)

    async def _main(self, app):
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        sockets = tornado.netutil.bind_sockets(0, "localhost")
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        self.url = f"http://localhost:{sockets[0].getsockname()[1]}/"
        self._ready.set()
        await self._stop.wait()
        server.stop()
        await server.close_all_connections()

    def stop(self):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def serve():
    servers = []

    def start(keytab, hostname="localhost"):
        kerberos = {"keytab": keytab, "hostname": hostname}
        servers.append(Server(tornado.web.Application([("/", Whoami)], kerberos=kerberos)))
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()


def test_the_fixture_is_typed_and_its_environment_is_set(kerberos_realm):
    assert isinstance(kerberos_realm, KerberosRealm)
    assert kerberos_realm.user == f"user@{kerberos_realm.realm}"
    for name in ("KRB5_CONFIG", "KRB5CCNAME", "KRB5RCACHEDIR"):
        assert os.environ[name] == kerberos_realm.env[name]
    with open("realm.json", "w") as out:
        json.dump({"tmpdir": kerberos_realm.k5.tmpdir}, out)


def test_requests_auth(kerberos_realm, serve):
    url = serve(kerberos_realm.keytab)
    response = requests.get(url, auth=kerberos_realm.requests_auth(), timeout=30)
    assert response.status_code == 200
    assert response.json() == {"principal": kerberos_realm.user, "delegated": False}
    response = requests.get(url, auth=kerberos_realm.requests_auth(delegate=True), timeout=30)
    assert response.json() == {"principal": kerberos_realm.user, "delegated": True}
    assert requests.get(url, timeout=30).status_code == 401


def test_httpx_auth_sync_and_async(kerberos_realm, serve):
    url = serve(kerberos_realm.keytab)
    response = httpx.get(url, auth=kerberos_realm.httpx_auth(delegate=True), timeout=30)
    assert response.status_code == 200
    assert response.json() == {"principal": kerberos_realm.user, "delegated": True}

    async def fetch():
        async with httpx.AsyncClient(auth=kerberos_realm.httpx_auth(), timeout=30) as client:
            return await client.get(url)

    response = asyncio.run(fetch())
    assert response.status_code == 200
    assert response.json() == {"principal": kerberos_realm.user, "delegated": False}


def test_add_user_has_a_forwardable_ticket_of_its_own(kerberos_realm, serve):
    url = serve(kerberos_realm.keytab)
    alice = kerberos_realm.add_user("alice")
    assert alice.principal == f"alice@{kerberos_realm.realm}"
    assert os.path.isfile(alice.ccache)
    assert os.environ["KRB5CCNAME"] != alice.ccache  # the default cache stays the user's

    header = kerberos_realm.negotiate_header(delegate=True, ccache=alice.ccache)
    response = requests.get(url, headers={"Authorization": header}, timeout=30)
    assert response.json() == {"principal": alice.principal, "delegated": True}
    header = kerberos_realm.negotiate_header(url, ccache=alice.ccache)  # a URL: HTTP@its host
    response = requests.get(url, headers={"Authorization": header}, timeout=30)
    assert response.json() == {"principal": alice.principal, "delegated": False}
    auth = kerberos_realm.requests_auth(ccache=alice.ccache)
    assert requests.get(url, auth=auth, timeout=30).json()["principal"] == alice.principal


def test_each_added_user_logs_in_as_itself(kerberos_realm, serve):
    url = serve(kerberos_realm.keytab)
    alice = kerberos_realm.add_user("alice")
    bob = kerberos_realm.add_user("bob")
    for who in (bob, alice, bob):
        header = kerberos_realm.negotiate_header(ccache=who.ccache)
        response = requests.get(url, headers={"Authorization": header}, timeout=30)
        assert response.json()["principal"] == who.principal
    header = kerberos_realm.negotiate_header()  # no ccache: the realm's own user
    response = requests.get(url, headers={"Authorization": header}, timeout=30)
    assert response.json()["principal"] == kerberos_realm.user
    response = httpx.get(url, auth=kerberos_realm.httpx_auth(ccache=bob.ccache), timeout=30)
    assert response.json()["principal"] == bob.principal


def test_add_service_keytab_serves_another_name(kerberos_realm, serve):
    url = serve(kerberos_realm.add_service("HTTP/web.test"), hostname="web.test")
    header = kerberos_realm.negotiate_header("HTTP@web.test")
    response = requests.get(url, headers={"Authorization": header}, timeout=30)
    assert response.json()["principal"] == kerberos_realm.user
    # A ticket for HTTP/localhost is not for this server.
    header = kerberos_realm.negotiate_header()
    assert requests.get(url, headers={"Authorization": header}, timeout=30).status_code == 401


def test_a_second_realm_leaves_the_environment_alone_and_is_stopped(kerberos_realm):
    before = dict(os.environ)
    with start_kerberos_realm() as other:
        assert isinstance(other, KerberosRealm)
        assert other.k5.portbase != kerberos_realm.k5.portbase
        assert other.env["KRB5_CONFIG"] != os.environ["KRB5_CONFIG"]
        assert os.path.isfile(other.keytab)
    assert not os.path.exists(other.k5.tmpdir)
    other.stop()  # again: nothing left to do
    assert dict(os.environ) == before
"""

# A user without k5test: the plugin loads, a test that does not use the fixture passes.
NO_K5TEST_RUN = """
import sys

import pytest

sys.modules["k5test"] = None  # import k5test now raises ImportError
sys.exit(pytest.main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    # None of this suite's realm (KRB5_*), nor pytest's own state, reaches the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRB5", "KPROP", "PYTEST_"))}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _pytest(
    directory: pathlib.Path, *files: str, prelude: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = prelude or [sys.executable, "-m", "pytest"]
    args = ["-p", "no:cacheprovider", "-p", PLUGIN, "-q", "-rA", *files]
    return subprocess.run(
        [*cmd, *args],
        cwd=directory,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def docstring_example(doc: str | None, marker: str) -> str:
    """The literal block after ``marker`` in a docstring, as a user would copy it."""
    _, sep, rest = (doc or "").partition(marker + "::\n\n")
    assert sep, f"the docstring lost its example after {marker!r}"
    lines = []
    for line in rest.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


def readme_example() -> str:
    """The example test in the plugin's docstring."""
    return docstring_example(tornado_kerb.testing.plugin.__doc__, "A test")


def realm_example() -> str:
    """The example script in ``tornado_kerb.testing``'s docstring: a realm outside pytest."""
    return docstring_example(tornado_kerb.testing.__doc__, "A second user, bob, logging in")


def test_readme_example_passes(tmp_path: pathlib.Path) -> None:
    example = readme_example()
    assert "self.realm.negotiate_header()" in example
    assert '"hostname": "localhost"' in example
    (tmp_path / "test_readme.py").write_text(example)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    result = _pytest(tmp_path, "test_readme.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED test_readme.py::TestWhoami::test_whoami" in result.stdout
    assert json.loads((tmp_path / "session.json").read_text()) == {"environ_restored": True}


def test_helpers_against_a_real_server(tmp_path: pathlib.Path) -> None:
    (tmp_path / "test_helpers.py").write_text(HELPERS)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    result = _pytest(tmp_path, "test_helpers.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout, result.stdout
    # The session ended: os.environ exactly as before, the realm stopped and removed.
    assert json.loads((tmp_path / "session.json").read_text()) == {"environ_restored": True}
    tmpdir = json.loads((tmp_path / "realm.json").read_text())["tmpdir"]
    assert tmpdir and not os.path.exists(tmpdir)


def test_the_realm_example_logs_bob_in_and_stops_the_realm(tmp_path: pathlib.Path) -> None:
    # The script in tornado_kerb.testing's docstring, run word for word as a user runs it.
    example = realm_example()
    for step in (
        "realm = start_kerberos_realm()",
        'bob = realm.add_user("bob")',
        "realm.negotiate_header(ccache=bob.ccache)",
        "realm.stop()",
    ):
        assert step in example
    # What the docstring says it prints: bob, not the realm's own user.
    claimed = re.search(r"print\(response\.body\.decode\(\)\)  # (\S+)\n", example)
    assert claimed and claimed[1] == "bob@KRBTEST.COM"
    (tmp_path / "example.py").write_text(example)
    temp = tmp_path / "temp"  # where k5test makes the realm's directory
    temp.mkdir()
    env = {**_env(), "TMPDIR": str(temp)}
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == claimed[1] + "\n"
    # realm.stop() ran: the realm's directory (its KDC database, keytab, caches) is gone.
    assert list(temp.iterdir()) == []


def test_tornado_kerb_testing_exports_the_typed_realm_and_the_plugin_the_same() -> None:
    testing = tornado_kerb.testing
    for name in ("KerberosRealm", "RealmUser", "start_kerberos_realm", "start_realm"):
        assert name in testing.__all__
    for name in ("KerberosRealm", "RealmUser", "start_kerberos_realm", "kerberos_realm_session"):
        assert getattr(tornado_kerb.testing.plugin, name) is getattr(testing, name)
    hints = typing.get_type_hints(testing.start_kerberos_realm)
    assert hints["return"] is testing.KerberosRealm


def test_importing_tornado_kerb_testing_needs_no_pytest_nor_k5test() -> None:
    # Demos and benchmarks use tornado_kerb.testing outside pytest.
    code = (
        "import sys\n"
        "sys.modules['k5test'] = None\n"
        "sys.modules['pytest'] = None\n"
        "from tornado_kerb.testing import KerberosRealm, start_kerberos_realm\n"
        "try:\n"
        "    start_kerberos_realm()\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "needs k5test (pip install 'tornado_kerb[test]')" in result.stdout


def test_loading_the_plugin_imports_no_test_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['k5test'] = None\n"
        "import tornado_kerb.testing.plugin as plugin\n"
        "assert callable(plugin.kerberos_realm)\n"
        "loaded = {'k5test', 'requests_gssapi', 'httpx_gssapi', 'requests', 'httpx'}\n"
        "print(sorted(m for m in loaded if sys.modules.get(m) is not None))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_k5test_pytest_loads_the_plugin_and_the_fixture_says_why(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "run.py").write_text(NO_K5TEST_RUN)
    (tmp_path / "test_user.py").write_text(
        "def test_plain():\n    pass\n\n\ndef test_realm(kerberos_realm):\n    pass\n"
    )
    result = _pytest(tmp_path, "test_user.py", prelude=[sys.executable, "run.py"])
    assert "PASSED test_user.py::test_plain" in result.stdout, result.stdout + result.stderr
    assert "ERROR test_user.py::test_realm" in result.stdout
    assert "needs k5test (pip install 'tornado_kerb[test]')" in result.stdout
    assert result.returncode == 1  # a test error, not an internal or usage error


def test_the_testing_guide_shows_the_examples_that_run() -> None:
    # The guide shows its first example from this file, and the realm outside pytest
    # straight from the docstring realm_example() reads (literalinclude).
    shown = (ROOT / "docs" / "examples" / "test_testing.py").read_text()
    assert readme_example() in shown
    guide = (ROOT / "docs" / "guides" / "testing.md").read_text()
    assert "../../tornado_kerb/testing/__init__.py" in guide
    assert ':start-after: "A second user, bob, logging in::"' in guide
