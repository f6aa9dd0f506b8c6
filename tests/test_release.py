"""The package people install (issue 19): an sdist and a wheel that ``twine check --strict``
passes, a wheel that holds the library and nothing else, and that, installed with the
``jupyter`` extra into a fresh virtual environment outside the checkout, serves a guarded
app and runs ``tornado-kerb``.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile

import pytest
import requests

import tornado_kerb
from tests import backends
from tests.clients import negotiate_header
from tests.conftest import ROOT, Realm

VERSION = tornado_kerb.__version__


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def wheel(dist: pathlib.Path) -> pathlib.Path:
    return dist / f"tornado_kerb-{VERSION}-py3-none-any.whl"


def test_twine_check_strict_passes(dist: pathlib.Path) -> None:
    files = [str(wheel(dist)), str(dist / f"tornado_kerb-{VERSION}.tar.gz")]
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def test_the_wheel_holds_the_library_and_nothing_else(dist: pathlib.Path) -> None:
    with zipfile.ZipFile(wheel(dist)) as whl:
        names = whl.namelist()
        metadata = whl.read(f"tornado_kerb-{VERSION}.dist-info/METADATA").decode()
        entry_points = whl.read(f"tornado_kerb-{VERSION}.dist-info/entry_points.txt").decode()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"tornado_kerb", f"tornado_kerb-{VERSION}.dist-info"}  # no tests, demo, bench
    assert "tornado_kerb/py.typed" in names
    assert f"tornado_kerb-{VERSION}.dist-info/licenses/LICENSE" in names
    assert "tornado-kerb = tornado_kerb.__main__:main" in entry_points
    assert "tornado_kerb.testing.plugin" in entry_points  # the pytest plugin
    for line in [
        "License-Expression: Apache-2.0",
        "Project-URL: Documentation, ",
        "Project-URL: Changelog, ",
        "Provides-Extra: jupyter",
        "Provides-Extra: redis",
        "Classifier: Typing :: Typed",
    ]:
        assert line in metadata, line


def test_the_sdist_holds_the_licence_and_the_changelog(dist: pathlib.Path) -> None:
    with tarfile.open(dist / f"tornado_kerb-{VERSION}.tar.gz") as sdist:
        names = {name.partition("/")[2] for name in sdist.getnames()}
    for name in ["LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "docs/index.md"]:
        assert name in names, name


@pytest.fixture(scope="module")
def installed(dist: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A fresh virtual environment outside the checkout, the wheel installed in it with
    the ``jupyter`` extra, as the install guide says."""
    env_dir = tmp_path_factory.mktemp("fresh-venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{wheel(dist)}[jupyter]"],
        cwd=env_dir,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return env_dir


APP = textwrap.dedent(
    """\
    import asyncio, sys

    import tornado.httpserver
    import tornado.netutil
    import tornado.web

    import tornado_kerb
    from tornado_kerb import KerberosAuthMixin, authenticated


    class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
        @authenticated
        def get(self):
            self.write({"principal": self.current_user.principal, "from": tornado_kerb.__file__})


    async def main():
        kerberos = {"keytab": sys.argv[1], "hostname": "localhost"}
        app = tornado.web.Application([(r"/", Whoami)], kerberos=kerberos)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        tornado.httpserver.HTTPServer(app).add_sockets(sockets)
        print(sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()  # until terminated


    asyncio.run(main())
    """
)


def test_the_installed_wheel_serves_a_guarded_app(
    installed: pathlib.Path, realm: Realm, tmp_path: pathlib.Path
) -> None:
    # Run from a folder that holds only the app: the checkout is nowhere on the path.
    (tmp_path / "app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{installed / 'bin'}{os.pathsep}{env['PATH']}"
    python = str(installed / "bin" / "python")
    proc, port = backends.start(
        "app",
        [],
        log=tmp_path / "app.log",
        env=env,
        command=[python, "app.py", realm.keytab],
        cwd=tmp_path,
    )
    try:
        answer = requests.get(
            f"http://127.0.0.1:{port}/",
            headers={"Authorization": negotiate_header()},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["principal"] == realm.user
        assert answer.json()["from"].startswith(str(installed))  # the wheel's, not ours
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 401
    finally:
        backends.stop(proc)


def test_the_installed_command_runs(installed: pathlib.Path, tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [str(installed / "bin" / "tornado-kerb"), "doctor", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--gssproxy" in result.stdout and "--keytab" in result.stdout
