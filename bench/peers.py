"""Peers measured beside tornado_kerb: what a Tornado user would otherwise deploy.

* ``apache`` — Apache httpd (event MPM) with mod_auth_gssapi authenticating every request,
  reverse-proxying to a plain Tornado backend that trusts a header Apache sets;
* ``apache-session`` — the same with mod_auth_gssapi's own session cookie
  (``GssapiUseSessions`` + mod_session_cookie), measured with the cookie after one login;
* ``asgi-gssapi`` — the ``asgi-gssapi`` middleware (PyPI) on uvicorn, around a trivial ASGI
  app.

Every peer listens with plain HTTP on 127.0.0.1 and answers ``GET /`` with ``200`` and a body
that is exactly the authenticated principal (``user@REALM``), anything else otherwise.
``scripts/install-bench-peers.sh`` installs them; :func:`available` says why one cannot run::

    reason = available("apache")
    if reason is None:
        peer = start_peer("apache", keytab, realm.env, cpu=0,
                          backend_cmd=[sys.executable, "-m", "bench.server", "plain", keytab, "0"])
        try:
            ...  # send GET / to peer.port; CPU time of peer.pids is server time
        finally:
            peer.stop()
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import importlib.util
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO

KINDS = ("apache", "apache-session", "asgi-gssapi")
#: The header Apache sets from ``REMOTE_USER`` for the backend (a client's copy is removed).
REMOTE_USER_HEADER = "X-Remote-User"
#: mod_session's cookie name in the ``apache-session`` peer.
SESSION_COOKIE = "gssapi_session"

_APACHE = "/usr/sbin/apache2"
_MODULES = "/usr/lib/apache2/modules"
# Apache refuses to serve as root (Debian does not build it with -DBIG_SECURITY_HOLE): started
# as root, its children switch to this account, which must read the keytab and krb5.conf and
# write the replay cache.
_APACHE_USER = "www-data"
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0
_LOG_TAIL = 3000

# module name -> file, in load order; the MPM first.
_APACHE_MODULES = {
    "mpm_event_module": "mod_mpm_event.so",
    "authn_core_module": "mod_authn_core.so",  # AuthType, AuthName
    "authz_core_module": "mod_authz_core.so",  # Require
    "authz_user_module": "mod_authz_user.so",  # Require valid-user
    "headers_module": "mod_headers.so",
    "proxy_module": "mod_proxy.so",
    "proxy_http_module": "mod_proxy_http.so",
    "auth_gssapi_module": "mod_auth_gssapi.so",
}
_SESSION_MODULES = {
    "session_module": "mod_session.so",
    "session_cookie_module": "mod_session_cookie.so",
}

_ASGI_APP = '''\
"""The asgi-gssapi peer: the middleware around an app that writes the principal."""

from asgi_gssapi import SPNEGOAuthMiddleware


async def principal(scope, receive, send):
    # The middleware calls the app only once the context is complete; it puts
    # str(initiator_name), the full principal with its realm, in scope["gssapi"].
    body = (scope["gssapi"]["principal"] or "").encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
    })
    await send({"type": "http.response.body", "body": body})


# "HTTP@localhost" as a host-based name: the keytab's HTTP/localhost (the realm's krb5.conf
# turns DNS canonicalisation off). It reads the keytab from KRB5_KTNAME.
app = SPNEGOAuthMiddleware(principal, hostname="localhost")
'''


@dataclasses.dataclass
class Peer:
    """A running peer; :meth:`stop` it when done."""

    kind: str  #: one of :data:`KINDS`
    port: int  #: where ``GET /`` goes (plain HTTP on 127.0.0.1)
    pids: list[int]  #: every process serving it: their CPU time together is server time
    cookie: str | None = None  #: ``apache-session``: a ``Cookie`` header value for the user
    _procs: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list, repr=False)
    _children: list[int] = dataclasses.field(default_factory=list, repr=False)
    _tmpdir: str | None = dataclasses.field(default=None, repr=False)

    def stop(self) -> None:
        """Terminate every process (front first), reap them, remove the temporary files.

        Safe to call more than once.
        """
        for number, proc in enumerate(self._procs):
            # Apache (always first) stops its own children on SIGTERM.
            _terminate(proc, self._children if number == 0 else [])
        self._procs = []
        self._children = []
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def available(kind: str) -> str | None:
    """``None`` if peer ``kind`` can run on this machine, else why not (one short line)."""
    if kind in ("apache", "apache-session"):
        if not os.access(_APACHE, os.X_OK):
            return "apache2 not installed"
        modules = dict(_APACHE_MODULES)
        if kind == "apache-session":
            modules.update(_SESSION_MODULES)
        missing = [f for f in modules.values() if not os.path.exists(os.path.join(_MODULES, f))]
        if "mod_auth_gssapi.so" in missing:
            return "mod_auth_gssapi not installed (libapache2-mod-auth-gssapi)"
        if missing:
            return f"Apache modules missing: {', '.join(missing)}"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(_APACHE_USER)
            except KeyError:
                return f"no {_APACHE_USER} account for Apache's children"
        return None
    if kind == "asgi-gssapi":
        missing = [m for m in ("asgi_gssapi", "uvicorn") if importlib.util.find_spec(m) is None]
        if missing:
            names = ", ".join(m.replace("_", "-") for m in missing)
            return f"{names} not installed in {sys.prefix}"
        return None
    raise ValueError(f"unknown peer kind {kind!r} (one of {', '.join(KINDS)})")


def start_peer(
    kind: str,
    keytab: str,
    env: dict[str, str],
    cpu: int | None,
    backend_cmd: list[str] | None = None,
) -> Peer:
    """Start peer ``kind`` accepting with ``keytab``, pinned to ``cpu`` (``None``: no pinning).

    ``env`` (the realm's ``KRB5_CONFIG``, ``KRB5RCACHEDIR``, …) is laid over this process's
    environment for the peer's processes. The Apache peers need ``backend_cmd``: a command that
    serves plain HTTP on 127.0.0.1, prints its port on stdout once it listens, and answers
    ``GET /`` with the value of the :data:`REMOTE_USER_HEADER` request header.
    ``apache-session`` logs in once with a fresh token made in *this* process (its
    environment must hold the realm user's credentials) to fill :attr:`Peer.cookie`.

    Returns once the peer answers HTTP; raises :class:`RuntimeError` with the tail of its
    error log if it does not within 20 seconds.
    """
    reason = available(kind)
    if reason is not None:
        raise RuntimeError(f"peer {kind} unavailable: {reason}")
    deadline = time.monotonic() + _START_TIMEOUT
    tmpdir = tempfile.mkdtemp(prefix=f"bench-{kind}-")
    peer = Peer(kind, 0, [], _tmpdir=tmpdir)
    try:
        if kind == "asgi-gssapi":
            _start_asgi(peer, keytab, {**os.environ, **env}, cpu, deadline)
        else:
            if backend_cmd is None:
                raise ValueError(f"peer {kind} needs a backend_cmd")
            _start_apache(peer, keytab, {**os.environ, **env}, cpu, backend_cmd, deadline)
            if kind == "apache-session":
                peer.cookie = session_cookie(peer.port)
    except BaseException:
        peer.stop()
        raise
    return peer


def session_cookie(port: int, token: bytes | None = None) -> str:
    """Log in once to the ``apache-session`` peer on ``port``; return ``name=value`` for a
    ``Cookie`` header.

    ``token`` is a base64 Negotiate token; without one, a fresh one is made for
    ``HTTP@localhost`` with this process's default credentials.
    """
    if token is None:
        token = fresh_token()
    status, headers, body = http_get(port, {"Authorization": "Negotiate " + token.decode()})
    if status != 200:
        raise RuntimeError(f"session login answered {status}: {body[:200]!r}")
    for header in headers.get_all("Set-Cookie") or []:
        pair = header.split(";", 1)[0].strip()
        if pair.startswith(SESSION_COOKIE + "="):
            return pair
    raise RuntimeError(f"session login set no {SESSION_COOKIE} cookie")


def fresh_token() -> bytes:
    """A new base64 SPNEGO token for ``HTTP@localhost`` from the default credentials."""
    import gssapi  # the benchmark's own dependency; imported late so available() needs none

    target = gssapi.Name("HTTP@localhost", gssapi.NameType.hostbased_service)
    spnego = gssapi.Mechanism.from_sasl_name("SPNEGO")
    ctx = gssapi.SecurityContext(name=target, usage="initiate", mech=spnego)
    return base64.b64encode(ctx.step())


def http_get(
    port: int, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One ``GET /`` to 127.0.0.1:``port`` on a new connection: status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


# --- Apache ---------------------------------------------------------------------------


def apache_config(
    tmpdir: str,
    port: int,
    backend_port: int,
    keytab: str,
    *,
    session: bool,
    user: str | None,
    session_key: str = "",
) -> str:
    """The whole ``httpd.conf`` of an Apache peer (no Debian ``apache2.conf`` is read)."""
    modules = dict(_APACHE_MODULES)
    if session:
        modules.update(_SESSION_MODULES)
    loads = "\n".join(f"LoadModule {name} {_MODULES}/{file}" for name, file in modules.items())
    account = f"User {user}\nGroup {user}\n" if user else ""
    session_lines = (
        "    GssapiUseSessions On\n"
        "    Session On\n"
        f"    SessionCookieName {SESSION_COOKIE} path=/;httponly\n"
        f"    GssapiSessionKey key:{session_key}\n"
        if session
        else ""
    )
    return f"""\
# Written by bench/peers.py for one benchmark run; removed when the peer stops.
ServerRoot "{tmpdir}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile "{tmpdir}/httpd.pid"
DefaultRuntimeDir "{tmpdir}"
ErrorLog "{tmpdir}/error.log"
LogLevel warn
{account}
{loads}

# One child process with a pool of threads: a fixed set of PIDs to pin and to measure, and
# more threads than the load generator has connections. No access log, like the others.
StartServers 1
ServerLimit 1
ThreadLimit 32
ThreadsPerChild 32
MaxRequestWorkers 32
MinSpareThreads 1
MaxSpareThreads 32
MaxConnectionsPerChild 0
# The load generator keeps its connections for the whole round and never reconnects:
# Apache's default of 100 requests per connection would cut them.
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 60

# The backend trusts {REMOTE_USER_HEADER}: drop any copy the client sent before anything
# else runs, then set it from the authenticated user after authentication (fixups).
RequestHeader unset {REMOTE_USER_HEADER} early
RequestHeader set {REMOTE_USER_HEADER} "expr=%{{REMOTE_USER}}"

<Location "/">
    AuthType GSSAPI
    AuthName "bench"
    GssapiCredStore keytab:{keytab}
    GssapiAllowedMech krb5
    GssapiBasicAuth Off
{session_lines}    Require valid-user
</Location>

# mod_proxy_http reuses its backend connections (HTTP/1.1 keep-alive) by default.
ProxyPass "/" "http://127.0.0.1:{backend_port}/"
"""


def _start_apache(
    peer: Peer,
    keytab: str,
    env: dict[str, str],
    cpu: int | None,
    backend_cmd: list[str],
    deadline: float,
) -> None:
    """Start the backend, then Apache in front of it; fill in ``peer``."""
    assert peer._tmpdir is not None
    tmpdir = peer._tmpdir
    backend_log = os.path.join(tmpdir, "backend.log")
    with open(backend_log, "wb") as log:
        backend = _spawn(backend_cmd, cpu, env, subprocess.PIPE, log)
    peer._procs.append(backend)
    backend_port = _read_port(backend, deadline, backend_log)
    peer.pids.append(backend.pid)

    user, kenv, keytab = _apache_files(tmpdir, keytab, env)
    peer.port = _free_port()
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    conf = apache_config(
        tmpdir,
        peer.port,
        backend_port,
        keytab,
        session=peer.kind == "apache-session",
        user=user,
        session_key=key,
    )
    conf_path = os.path.join(tmpdir, "httpd.conf")
    with open(os.open(conf_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(conf)
    # -DFOREGROUND: the parent stays ours (no daemonising), its children are its own.
    command = [_APACHE, "-f", conf_path, "-DFOREGROUND"]
    logs = [os.path.join(tmpdir, "error.log"), os.path.join(tmpdir, "stderr.log")]
    with open(logs[1], "wb") as err:
        apache = _spawn(command, cpu, {**env, **kenv}, err, err)
    # Stop Apache before its backend.
    peer._procs.insert(0, apache)
    # The parent listens before its child serves: wait for an HTTP answer, not a connect.
    _wait_http(peer.port, {"apache2": apache, "backend": backend}, deadline, logs)
    children = _child_pids(apache.pid)
    if not children:
        raise RuntimeError("Apache answered but has no child process\n" + _tail(logs))
    peer._children = children
    peer.pids[:0] = [apache.pid, *children]


def _apache_files(
    tmpdir: str, keytab: str, env: dict[str, str]
) -> tuple[str | None, dict[str, str], str]:
    """Give Apache's children their own readable keytab and krb5.conf and a writable replay
    cache; return the account to run as, the environment to add, and the keytab path."""
    if os.geteuid() != 0:
        # Not root: Apache cannot switch accounts and runs as we do; the originals work.
        return None, {}, keytab
    account = pwd.getpwnam(_APACHE_USER)
    # The realm's files sit in a 0700 directory of root's: copy them where www-data can read,
    # in a directory only it (and root) can enter.
    private = os.path.join(tmpdir, "www")
    rcache = os.path.join(private, "rcache")
    os.makedirs(rcache, mode=0o700)
    os.chmod(tmpdir, 0o711)  # noqa: S103 - traverse only, to reach the 0700 directory
    copied_keytab = os.path.join(private, "http.keytab")
    shutil.copyfile(keytab, copied_keytab)
    configs = []
    for number, path in enumerate(p for p in env.get("KRB5_CONFIG", "").split(":") if p):
        copy = os.path.join(private, f"krb5-{number}.conf")
        shutil.copyfile(path, copy)
        configs.append(copy)
    for path in (private, rcache, copied_keytab, *configs):
        os.chown(path, account.pw_uid, account.pw_gid)
        os.chmod(path, 0o700 if os.path.isdir(path) else 0o600)
    added = {"KRB5RCACHEDIR": rcache, "KRB5_KTNAME": copied_keytab}
    if configs:
        added["KRB5_CONFIG"] = ":".join(configs)
    return _APACHE_USER, added, copied_keytab


def _child_pids(pid: int) -> list[int]:
    """PIDs of the direct children of ``pid``, from ``/proc``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The fourth field, after the command name in parentheses, is the parent.
                ppid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return sorted(found)


# --- asgi-gssapi ----------------------------------------------------------------------


def _start_asgi(
    peer: Peer, keytab: str, env: dict[str, str], cpu: int | None, deadline: float
) -> None:
    """Start uvicorn serving asgi-gssapi around a principal-writing app; fill in ``peer``."""
    assert peer._tmpdir is not None
    tmpdir = peer._tmpdir
    with open(os.path.join(tmpdir, "asgi_peer.py"), "w") as out:
        out.write(_ASGI_APP)
    peer.port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        tmpdir,
        "--host",
        "127.0.0.1",
        "--port",
        str(peer.port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--lifespan",
        "off",
        "asgi_peer:app",
    ]
    log = os.path.join(tmpdir, "uvicorn.log")
    with open(log, "wb") as err:
        # asgi-gssapi reads its keytab from KRB5_KTNAME only: set it for this process alone.
        proc = _spawn(command, cpu, {**env, "KRB5_KTNAME": keytab}, err, err)
    peer._procs.append(proc)
    _wait_http(peer.port, {"uvicorn": proc}, deadline, [log])
    peer.pids.append(proc.pid)


# --- shared helpers -------------------------------------------------------------------


def _spawn(
    command: list[str],
    cpu: int | None,
    env: dict[str, str],
    stdout: int | IO[bytes],
    stderr: int | IO[bytes],
) -> subprocess.Popen[bytes]:
    """Start ``command`` pinned to ``cpu`` (``None``: anywhere), in a session of its own."""
    if cpu is not None:
        # taskset execs the command, so the PID stays the server's, and every process and
        # thread it starts later inherits the mask (setting it afterwards misses threads).
        command = ["taskset", "-c", str(cpu), *command]
    # Its own session: a Ctrl-C at the terminal reaches only the benchmark, which reports
    # it and stops the peer (bench.server ignores SIGINT for the same reason).
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
        start_new_session=True,
    )


def _free_port() -> int:
    """A TCP port of 127.0.0.1 free right now (for servers that cannot report theirs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _read_port(proc: subprocess.Popen[bytes], deadline: float, log: str) -> int:
    """Read the port number a backend prints on its first line of stdout."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    while b"\n" not in line:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError("backend printed no port within 20 s\n" + _tail([log]))
        ready, _, _ = select.select([fd], [], [], left)
        # Unbuffered reads: a buffered readline could block past the deadline.
        chunk = os.read(fd, 64) if ready else b""
        if ready and not chunk:
            raise RuntimeError(
                f"backend exited (code {proc.wait()}) before printing its port\n" + _tail([log])
            )
        line += chunk
    text = line.split(b"\n", 1)[0].decode(errors="replace").strip()
    if not text.isdigit():
        raise RuntimeError(f"backend printed {text!r}, not a port\n" + _tail([log]))
    return int(text)


def _wait_http(
    port: int, procs: dict[str, subprocess.Popen[bytes]], deadline: float, logs: list[str]
) -> None:
    """Poll until ``GET /`` on ``port`` gets any HTTP answer; fail early if one of
    ``procs`` (by name) exits."""
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}\n" + _tail(logs))
        try:
            # Short tries: a port taken by someone else accepts but never answers, and the
            # processes must be checked again meanwhile.
            http_get(port, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return
        except (OSError, http.client.HTTPException):
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"no HTTP answer on port {port} within 20 s\n" + _tail(logs)
                ) from None
            time.sleep(0.02)


def _tail(logs: list[str]) -> str:
    """The last few kilobytes of each non-empty log, headed by its name."""
    parts = []
    for path in logs:
        try:
            with open(path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL))
                text = log.read().decode(errors="replace").strip()
        except OSError:
            continue
        if text:
            parts.append(f"--- {os.path.basename(path)} ---\n{text}")
    return "\n".join(parts) or "(no log output)"


def _terminate(proc: subprocess.Popen[bytes], children: list[int]) -> None:
    """SIGTERM ``proc`` and reap it; SIGKILL it and its ``children`` if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Children first, while the stuck parent still holds them: their PIDs cannot
            # have been reused by anyone else yet.
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
