"""A private GSS-Proxy daemon holding a keytab, for tests.

``gssproxy -i`` (the foreground) with a configuration, a socket and logs in a temporary
directory, never the system service::

    with PrivateGSSProxy(keytab, env=realm.env, euid=65534) as proxy:
        app_env = {**realm.env, **proxy.client_env()}  # GSS_USE_PROXY, GSSPROXY_SOCKET

Needs Debian's ``gssproxy`` (which also installs the interposer plug-in libgssapi loads
from ``/etc/gss/mech.d``) and root: the daemon refuses to serve uids it does not know, and
a test proves anything only with the app running as another user than the keytab's owner.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from types import TracebackType

__all__ = ["GSSPROXY", "PrivateGSSProxy", "gssproxy_available"]

GSSPROXY = "/usr/sbin/gssproxy"
_INTERPOSER = "/etc/gss/mech.d"
_READY_TIMEOUT = 15.0


def gssproxy_available() -> str | None:
    """``None`` when a private GSS-Proxy can run here, else what is missing."""
    if not os.access(GSSPROXY, os.X_OK):
        return "gssproxy is not installed (Debian: gssproxy)"
    if not any("proxymech" in name for name in _listdir(_INTERPOSER)):
        return f"GSS-Proxy's interposer plug-in is not configured in {_INTERPOSER}"
    if os.geteuid() != 0:
        return "GSS-Proxy tests run as root (the app runs as another user)"
    return None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


class PrivateGSSProxy:
    """A GSS-Proxy that serves ``service`` (``HTTP``) to processes of uid ``euid`` from
    ``keytab``. ``env``: the realm's environment (``KRB5_CONFIG``…) for the daemon."""

    def __init__(
        self,
        keytab: str,
        *,
        env: Mapping[str, str],
        euid: int = 65534,
        service: str = "HTTP",
    ) -> None:
        self.keytab = keytab
        self.euid = euid
        self._env = dict(env)
        self.dir = tempfile.mkdtemp(prefix="tk-gssproxy-")
        os.chmod(self.dir, 0o755)  # noqa: S103 - the app, another user, reaches the socket
        #: The daemon's unix socket.
        self.socket = os.path.join(self.dir, "gp.sock")
        self.config = os.path.join(self.dir, "gssproxy.conf")
        self.log_path = os.path.join(self.dir, "gssproxy.log")
        with open(self.config, "w") as f:
            f.write(
                "[gssproxy]\n"
                f"[service/{service}]\n"
                "  mechs = krb5\n"
                f"  cred_store = keytab:{keytab}\n"
                "  cred_store = ccache:MEMORY:gssproxy\n"
                f"  euid = {euid}\n"
            )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The daemon's process id while it runs."""
        return None if self._process is None else self._process.pid

    def client_env(self) -> dict[str, str]:
        """What the app's environment needs to accept through this daemon."""
        return {"GSS_USE_PROXY": "yes", "GSSPROXY_SOCKET": self.socket}

    def start(self) -> None:
        """Start the daemon and wait until it answers on its socket."""
        if self._process is not None:
            return
        if os.path.exists(self.socket):
            os.unlink(self.socket)  # a stopped daemon's: connecting to it proves nothing
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - no shell
                [GSSPROXY, "-i", "--debug-level=2", "-c", self.config, "-s", self.socket],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + _READY_TIMEOUT
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gssproxy did not start; its log:\n{self.log()}")
            time.sleep(0.02)  # polling a socket that is not there yet

    def stop(self) -> None:
        """Stop the daemon (its socket stays behind, as after a crash)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(self.socket)
            except OSError:
                return False
        return True

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateGSSProxy:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
