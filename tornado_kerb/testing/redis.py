"""A private Redis for tests: ``redis-server`` in the foreground, on 127.0.0.1.

Never the system service, no configuration file from ``/etc``: everything is on its command
line, nothing is saved (``--save ""``, no append-only file), its log and working directory
are a temporary directory, removed at the end. The port stays the same across
:meth:`PrivateRedis.stop` and :meth:`PrivateRedis.start`, so a test can take Redis away
and bring it back under the same URL::

    with PrivateRedis() as server:
        store = RedisStore(server.url, LoginLimitOptions(), keep_for=3600)
        server.stop()   # Redis is down...
        server.start()  # ...and back, empty

Needs Debian's ``redis-server`` (any Redis >= 6.2) and redis-py (the ``[redis]`` extra).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

__all__ = ["REDIS_SERVER", "PrivateRedis", "redis_available"]

REDIS_SERVER = "/usr/bin/redis-server"

# Ports tried: below Linux's ephemeral range (32768-60999), where outgoing connections
# would take them from under a restart.
_PORTS = (20000, 32000)
_TRIES = 20
_IN_USE = "Address already in use"


def redis_available() -> str | None:
    """``None`` when redis-server and redis-py are installed, else what is missing."""
    if not (os.access(REDIS_SERVER, os.X_OK) or shutil.which("redis-server")):
        return "redis-server is not installed (Debian: redis-server)"
    if importlib.util.find_spec("redis") is None:
        return "redis-py is not installed (pip install tornado_kerb[redis])"
    return None


class PrivateRedis:
    """``redis-server`` on ``host`` and a random free port, in its own process group;
    with ``password``, clients must give it (``requirepass``)."""

    def __init__(
        self, *, host: str = "127.0.0.1", password: str | None = None, timeout: float = 10.0
    ) -> None:
        self.dir = tempfile.mkdtemp(prefix="tornado-kerb-redis-")
        self.host = host
        self.password = password
        self.timeout = timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            for _ in range(_TRIES):
                self.port = _PORTS[0] + secrets.randbelow(_PORTS[1] - _PORTS[0])
                if self._launch():
                    return
            raise RuntimeError(f"redis-server found no free port in {_TRIES} tries")
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port/0``."""
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A (synchronous) redis-py client of this server, answers decoded."""
        import redis

        options: dict[str, Any] = {"decode_responses": True, "socket_timeout": 5, **kwargs}
        return redis.Redis(host=self.host, port=self.port, password=self.password, **options)

    def start(self) -> None:
        """Start it again (after :meth:`stop`), on the same port: empty."""
        if self.running:
            return
        if not self._launch():
            raise RuntimeError(f"redis-server: port {self.port} was taken while it was stopped")

    def _launch(self) -> bool:
        """Run redis-server on ``self.port``: ``True`` once it answers, ``False`` if the
        port was taken."""
        logfile = os.path.join(self.dir, "redis.log")
        with open(logfile, "w"):  # this start's messages alone
            pass
        command = [
            shutil.which("redis-server") or REDIS_SERVER,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--daemonize", "no",
            "--logfile", logfile,
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        with open(logfile, "ab") as output:  # what it says before it opens its log
            self._proc = subprocess.Popen(  # noqa: S603 - no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                cwd=self.dir,
                start_new_session=True,  # its own process group: a ^C is for pytest
            )
        try:
            return self._wait(self._proc)
        except BaseException:
            self.stop()
            raise

    def _wait(self, proc: subprocess.Popen[bytes]) -> bool:
        import redis

        deadline = time.monotonic() + self.timeout
        client = self.client(socket_timeout=1, socket_connect_timeout=1, retry=None)
        try:
            while True:
                if proc.poll() is not None:
                    log = self.log()
                    if _IN_USE in log:
                        self._proc = None
                        return False
                    raise RuntimeError(f"redis-server exited at start: {log}")
                try:
                    # PING, and that the answer comes from ours, not another on that port.
                    if int(client.info("server")["process_id"]) == proc.pid:
                        return True
                except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer: {self.log()}")
                time.sleep(0.02)  # polling with a deadline, not synchronisation by sleep
        finally:
            client.close()

    def pause(self) -> None:
        """Freeze redis-server (SIGSTOP): it accepts connections and answers nothing,
        as a Redis that hangs does. :meth:`resume` thaws it."""
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGCONT)

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log")) as log:
                return log.read()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop redis-server (SIGTERM to its process group, then SIGKILL); clients see
        their connections closed. :meth:`start` brings it back."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                os.killpg(proc.pid, signal.SIGCONT)  # if paused, so that it can stop
            except ProcessLookupError:
                pass
            try:
                proc.wait(10)
                return
            except subprocess.TimeoutExpired:
                continue

    def close(self) -> None:
        """Stop it and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
