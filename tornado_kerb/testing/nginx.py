"""A private nginx terminating TLS in front of Tornado processes, for tests.

:func:`site_config` renders the part users deploy (the ``upstream`` and ``server`` blocks
the deployment guide shows); :class:`PrivateNginx` wraps it in a whole configuration whose
pid file, logs and temporary files live in a temporary directory, runs ``nginx -p DIR -c
nginx.conf -g 'daemon off;'`` (never the system service) and stops it::

    with PrivateNginx(["127.0.0.1:8001", "127.0.0.1:8002"], cert, key) as nginx:
        requests.get(f"https://localhost:{nginx.port}/", verify=ca)

Needs Debian's ``nginx-light`` (or any nginx with the SSL, proxy, upstream and map modules).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType

__all__ = ["NGINX", "PrivateNginx", "nginx_available", "site_config"]

NGINX = "/usr/sbin/nginx"


def nginx_available() -> str | None:
    """``None`` when nginx is installed, else what is missing."""
    if os.access(NGINX, os.X_OK) or shutil.which("nginx"):
        return None
    return "nginx is not installed (Debian: nginx-light)"


def site_config(
    backends: Sequence[str],
    *,
    listen: str = "443",
    server_name: str = "www.example.com",
    certificate: str = "/etc/ssl/certs/www.example.com.pem",
    key: str = "/etc/ssl/private/www.example.com.key",
) -> str:
    """The ``http``-level blocks for Tornado processes ``backends`` (``"host:port"``) behind
    nginx terminating TLS: what the deployment guide shows, and what the tests run."""
    servers = "".join(f"    server {backend};\n" for backend in backends)
    return f"""\
# WebSockets: pass the client's Upgrade on, and close plain requests' upstream connections.
map $http_upgrade $connection_upgrade {{
    default upgrade;
    ''      close;
}}

upstream tornado {{
{servers}}}

server {{
    listen {listen} ssl;
    server_name {server_name};
    ssl_certificate     {certificate};
    ssl_certificate_key {key};

    # Negotiate tokens with an Active Directory PAC run to 12 kB and more (base64):
    # nginx's default (4 buffers of 8k) answers 400 to them.
    large_client_header_buffers 4 64k;

    location / {{
        proxy_pass http://tornado;
        proxy_http_version 1.1;
        # The client's Host, port included: Tornado's WebSocket origin check compares it
        # with the browser's Origin ($host drops the port: 403 off port 443).
        proxy_set_header Host $http_host;
        # Tornado believes these only from its trusted_proxies (and with xheaders=True).
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_read_timeout 1h;  # idle WebSockets
    }}
}}
"""


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateNginx:
    """nginx from a temporary directory, listening with TLS on a free port of ``host``.

    ``source`` (an address of this host) is where nginx connects to the backends from
    (``proxy_bind``), so a test can tell nginx's connections from its own.
    """

    def __init__(
        self,
        backends: Sequence[str],
        certificate: str,
        key: str,
        *,
        host: str = "127.0.0.1",
        server_name: str = "localhost",
        source: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.dir = tempfile.mkdtemp(prefix="tornado-kerb-nginx-")
        self.host = host
        self.port = _free_port(host)
        self.site = site_config(
            backends,
            listen=f"{host}:{self.port}",
            server_name=server_name,
            certificate=certificate,
            key=key,
        )
        d = self.dir
        bind = f"    proxy_bind {source};\n" if source else ""
        body = "".join(
            "    " + line if line.strip() else line for line in self.site.splitlines(True)
        )
        self.config = (
            "worker_processes 1;\n"
            f"pid {d}/nginx.pid;\n"
            f"error_log {d}/error.log warn;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {d}/access.log;\n"
            f"    client_body_temp_path {d}/body;\n"
            f"    proxy_temp_path {d}/proxy;\n"
            f"    fastcgi_temp_path {d}/fastcgi;\n"
            f"    uwsgi_temp_path {d}/uwsgi;\n"
            f"    scgi_temp_path {d}/scgi;\n"
            f"{bind}"
            f"{body}"
            "}\n"
        )
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as out:
            out.write(self.config)
        command = [shutil.which("nginx") or NGINX, "-p", d, "-c", conf, "-e", f"{d}/error.log"]
        with open(os.path.join(d, "error.log"), "ab") as stderr:  # messages before -e's
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(  # noqa: S603 - no shell
                [*command, "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"nginx exited at start: {self.error_log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not listen: {self.error_log()}") from None
                time.sleep(0.02)  # polling with a deadline, not synchronisation by sleep

    def error_log(self) -> str:
        try:
            with open(os.path.join(self.dir, "error.log")) as log:
                return log.read()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL) and remove its directory."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateNginx:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
