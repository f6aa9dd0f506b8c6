"""Tornado servers in processes of their own, as deployments run them (behind nginx, as
another user, beside each other on one Redis).

A test module that is also such a server calls :func:`serve_until_terminated` from its
``__main__`` block; the test starts it with :func:`start` and stops it with :func:`stop`.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import select
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Mapping, Sequence

import tornado.httpserver
import tornado.netutil
import tornado.web

from tests.conftest import ROOT

_START_TIMEOUT = 30


def log_refusals() -> None:
    """tornado_kerb's log (refusals and their reasons) on stderr, which :func:`start`
    keeps in the log file tests read."""
    library = logging.getLogger("tornado_kerb")
    library.setLevel(logging.INFO)
    library.addHandler(logging.StreamHandler())


async def serve_until_terminated(
    app: tornado.web.Application,
    *,
    ssl_options: ssl.SSLContext | None = None,
    xheaders: bool = False,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve ``app`` on 127.0.0.1 (or ``sockets``), print the port once listening, and
    return at SIGTERM."""
    sockets = sockets or tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app, xheaders=xheaders, ssl_options=ssl_options)
    server.add_sockets(sockets)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(sockets[0].getsockname()[1], flush=True)
    await stop.wait()
    server.stop()


def start(
    module: str,
    args: Sequence[str],
    *,
    log: pathlib.Path,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    command: Sequence[str] | None = None,
    cwd: pathlib.Path = ROOT,
) -> tuple[subprocess.Popen[str], int]:
    """``python -m module args`` from the checkout (or ``command`` in ``cwd``), its
    stderr in ``log``, ``stdin`` written to it (a secret: never on the command line);
    the process and the port it prints."""
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args] if command is None else list(command),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        assert proc.stdout is not None
        # It prints its port once it listens (or exits): wait for that, with a deadline.
        ready = select.select([proc.stdout], [], [], _START_TIMEOUT)[0]
        assert ready, f"{module} did not start in {_START_TIMEOUT} s"
        port = proc.stdout.readline().strip()
        assert port.isdigit(), f"{module} did not start: {log.read_text()}"
    except BaseException:
        stop(proc)
        raise
    return proc, int(port)


def stop(*procs: subprocess.Popen[str]) -> None:
    """Terminate them all, then reap each (killed after 10 s)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
