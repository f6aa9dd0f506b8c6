"""Benchmark tornado_kerb against baselines measured in the same run.

Run it with ``make bench`` (``make bench ARGS="--only token,cookie"``) or ``python -m bench``;
``python -m bench --help`` lists the options.

A throwaway MIT realm (k5test) with an ``HTTP/localhost`` keytab, servers as subprocesses
pinned to the first CPU, the load generator (this process) on the second. Each row pairs
tornado_kerb with a baseline in alternating rounds and prints the median of the per-round ratios:

* ``token``: a fresh SPNEGO token per request, against a bare Tornado handler accepting it
  inline with one raw GSSAPI call and no checks (the floor); target >= 0.95.
* ``gssproxy``: fresh tokens accepted through a private GSS-Proxy daemon (pinned to the
  server's core too), against tornado_kerb accepting with the keytab itself; what keeping
  the keytab out of the app costs per fresh login (target >= 0.25, a floor: the daemon's
  round trip per token is the price, paid once per login with sessions).
* ``cookie``: tornado_kerb's session cookie, against a Tornado handler with no
  authentication at all; target >= 0.93.
* ``basic-cache``: a repeated Basic header with the result cache, against the same
  no-auth handler; target >= 0.85.
* ``basic``: a fresh Basic login per request over TLS (two KDC round trips and our keytab),
  against what such a login costs without tornado_kerb: the same password proof, raw
  (``bench.proof``, on the server's core), then a request over TLS to the no-auth
  handler, one after the other; target >= 0.92.
* ``slow-kdc``: ten Basic logins held at a KDC delayed 300 ms, while unrelated requests are
  timed; target: the worst under 50 ms.
* ``soak``: 100,000 authenticated requests (cookies and fresh tokens); target: server RSS
  growth under 5 MB.
* ``peers``: Apache's mod_auth_gssapi in front of the same no-auth Tornado handler (with
  and without its session cookie) and asgi-gssapi, where they are installed
  (``scripts/install-bench-peers.sh``, which ``make bench`` runs).

Every request carries headers made before its round's clock starts; any answer other than
``200`` with the user's principal fails the run: the numbers would be lies.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import functools
import os
import signal
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import gssapi

from tornado_kerb.testing import start_realm
from tornado_kerb.testing.gssproxy import PrivateGSSProxy, gssproxy_available

from .load import (
    BenchFailure,
    RoundResult,
    build_requests,
    negotiate_headers,
    rss_bytes,
    run_round,
)

SATURATED = 0.9  # server CPU share below which a round did not measure the server
_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "token",
    "gssproxy",
    "cookie",
    "basic-cache",
    "basic",
    "slow-kdc",
    "soak",
    "peers",
    "noise",
)
DEFAULT = SCENARIOS[:-1]  # "noise" (the bench against itself) on request
FORWARDED = b"X-Forwarded-Proto: https\r\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--requests", type=int, default=400, help="requests per round (400)")
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds per block (10)")
    parser.add_argument(
        "--blocks", type=int, default=8, help="blocks, each with fresh server processes (8)"
    )
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (8)")
    parser.add_argument("--soak", type=int, default=100_000, help="soak requests (100000)")
    parser.add_argument(
        "--only", default=",".join(DEFAULT), help=f"comma-separated rows ({','.join(SCENARIOS)})"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if any target is missed")
    parser.add_argument("--profile", metavar="DIR", help="write cProfile stats of the servers")
    args = parser.parse_args(argv)
    if min(args.requests, args.rounds, args.blocks, args.connections, args.soak) < 1:
        parser.error("--requests, --rounds, --blocks, --connections, --soak: at least 1")
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown rows: {', '.join(unknown)}")
    return args


def make_tokens(count: int) -> list[bytes]:
    """``count`` fresh base64 SPNEGO tokens for ``HTTP@localhost``, as requests-gssapi
    makes them (mutual authentication, out-of-sequence detection, no delegation)."""
    target = gssapi.Name("HTTP@localhost", gssapi.NameType.hostbased_service)
    spnego = gssapi.Mechanism.from_sasl_name("SPNEGO")
    flags = (
        gssapi.RequirementFlag.mutual_authentication
        | gssapi.RequirementFlag.out_of_sequence_detection
    )
    return [
        base64.b64encode(
            gssapi.SecurityContext(name=target, usage="initiate", mech=spnego, flags=flags).step()
        )
        for _ in range(count)
    ]


@dataclasses.dataclass
class Server:
    """A running benchmark server: a subprocess, or a peer with several processes."""

    kind: str
    port: int
    pids: list[int]
    stop: Callable[[], None]
    #: A ``Cookie:`` line for the peers that log in once (Apache's session).
    cookie: bytes | None = None
    #: The client's TLS context, for a server that speaks HTTPS.
    tls: ssl.SSLContext | None = None
    #: The raw proof service (``bench.proof``) asked before each request: the Basic baseline.
    proof_port: int | None = None


def start_server(
    kind: str,
    keytab: str,
    cpu: int | None,
    profile_dir: str | None,
    env: dict[str, str] | None = None,
) -> Server:
    """Start ``python -m bench.server`` and wait until it says which port it listens on."""
    env = dict(env or os.environ)  # holds the realm's KRB5_CONFIG, KRB5RCACHEDIR, …
    if profile_dir:
        os.makedirs(profile_dir, exist_ok=True)
        env["BENCH_PROFILE"] = os.path.join(os.path.abspath(profile_dir), f"{kind}.prof")
    command = [sys.executable, "-m", "bench.server", kind, keytab, "-" if cpu is None else str(cpu)]
    proc, port = spawn(command, env, f"{kind} server")
    return Server(kind, port, [proc.pid], lambda: stop_process(proc))


def spawn(
    command: list[str], env: dict[str, str], what: str, stdin: str | None = None
) -> tuple[subprocess.Popen[str], int]:
    """Start a subprocess that prints the port it listens on; the process and the port.

    ``stdin`` is written to it first (a password: never on the command line)."""
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin is not None else None,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=_ROOT,
    )
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        stop_process(proc)
        raise BenchFailure(f"{what} did not start (exit code {proc.returncode})")
    return proc, int(line)


def stop_process(proc: subprocess.Popen[str]) -> None:
    """Terminate a server subprocess and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@dataclasses.dataclass
class Row:
    """One line of the result table."""

    name: str
    text: str
    value: float
    target: float
    higher_is_better: bool = True

    @property
    def ok(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value < self.target


class Bench:
    """The realm, the servers and the measurements of one run."""

    def __init__(self, args: argparse.Namespace, realm: Any, keytab: str, cpus: tuple[Any, Any]):
        self.args = args
        self.realm = realm
        self.keytab = keytab
        self.server_cpu, self.load_cpu = cpus
        self.principal = realm.user_princ
        self.password = realm.password("user")
        self.servers: list[Server] = []
        self.rows: list[Row] = []
        self.low_cpu = False

    def start(self, kind: str, env: dict[str, str] | None = None) -> Server:
        server = start_server(kind, self.keytab, self.server_cpu, self.args.profile, env)
        if env and env.get("BENCH_TLS_CERT"):
            server.tls = self.client_tls()
        self.servers.append(server)
        return server

    def start_login_baseline(self, env: dict[str, str]) -> Server:
        """The fresh-Basic baseline: the no-auth server (``env`` says TLS) and the raw
        proof service, both pinned to the server's core, measured as one server."""
        plain = start_server("plain", self.keytab, self.server_cpu, self.args.profile, env)
        try:
            cpu = "-" if self.server_cpu is None else str(self.server_cpu)
            command = [sys.executable, "-m", "bench.proof", self.keytab, self.principal, cpu]
            proof, port = spawn(command, env, "raw proof service", stdin=self.password + "\n")
        except BaseException:
            plain.stop()
            raise

        def stop() -> None:
            try:
                plain.stop()
            finally:
                stop_process(proof)

        server = Server(
            "proof+plain",
            plain.port,
            [*plain.pids, proof.pid],
            stop,
            tls=self.client_tls(),
            proof_port=port,
        )
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()

    # -- measuring ---------------------------------------------------------------------

    def tls_env(self) -> dict[str, str]:
        """Development certificates for a TLS server (made once per run)."""
        certs = os.path.join(self.realm.tmpdir, "certs")
        if not os.path.isdir(certs):
            script = _ROOT / "certs" / "make-dev-certs.sh"
            subprocess.run([str(script), certs], check=True, capture_output=True)
        return {
            "BENCH_TLS_CERT": os.path.join(certs, "localhost.pem"),
            "BENCH_TLS_KEY": os.path.join(certs, "localhost.key"),
        }

    def client_tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=os.path.join(self.realm.tmpdir, "certs", "ca.pem"))

    async def round(self, server: Server, headers: list[bytes]) -> RoundResult:
        requests = build_requests(server.port, headers)
        result = await run_round(
            server.port,
            server.pids,
            requests,
            self.args.connections,
            self.principal.encode(),
            server.tls,
            server.proof_port,
        )
        if result.server_busy < SATURATED:
            self.low_cpu = True
        return result

    async def alternate(
        self,
        starts: list[Callable[[], Server]],
        headers: list[Callable[[Server], list[bytes]]],
        label: str,
        blocks: int | None = None,
    ) -> list[list[float]]:
        """Req/s per server per round, in ``blocks`` blocks of ``--rounds`` short rounds.

        Each block starts fresh server processes (``starts``), warms each up with one
        round, then measures: on this machine two processes of the same server differ by
        a few percent (memory layout), and its speed drifts within seconds, so the
        ratios pool many short rounds over several processes. Servers take turns within
        a round, in reverse order every other round (A B, B A, …): neighbours in time see
        the same machine, and no server is always first.
        """
        rates: list[list[float]] = [[] for _ in starts]
        for block in range(blocks or self.args.blocks):
            servers = [start() for start in starts]
            try:
                for number in range(self.args.rounds + 1):
                    order = list(enumerate(servers))
                    results: dict[int, RoundResult] = {}
                    for i, server in order if number % 2 == 0 else reversed(order):
                        results[i] = await self.round(server, headers[i](server))
                    if number:
                        for i in results:
                            rates[i].append(results[i].rate)
                    if number in (0, self.args.rounds):
                        self.progress(label, block, number, servers, results)
            finally:
                for server in servers:
                    server.stop()
                    self.servers.remove(server)
        return rates

    def progress(
        self,
        label: str,
        block: int,
        number: int,
        servers: list[Server],
        results: dict[int, RoundResult],
    ) -> None:
        """One line per block's warm-up and last round: alive, saturated, how fast."""
        line = f"  {label:12} block {block + 1} {f'round {number}' if number else 'warm-up':8}"
        for i, server in enumerate(servers):
            busy = results[i].server_busy
            line += f"  {server.kind:12} {results[i].rate:6.0f} req/s cpu {busy:4.0%}"
        print(line, flush=True)

    def ratio_row(
        self,
        name: str,
        base: str,
        baseline: list[float],
        ours: list[float],
        target: float,
        ours_name: str = "tornado_kerb",
    ) -> None:
        """The median of the per-round ratios (each round pairs measurements made back to
        back), with the median rates for reference."""
        ratio = statistics.median(o / b for o, b in zip(ours, baseline, strict=True))
        text = (
            f"{base} {statistics.median(baseline):7.0f} req/s, "
            f"{ours_name} {statistics.median(ours):7.0f} req/s"
        )
        self.rows.append(Row(name, text, ratio, target))

    # -- the rows ----------------------------------------------------------------------

    def tokens(self, server: Server) -> list[bytes]:
        """A round's ``Authorization`` lines: fresh tokens, made before its clock starts."""
        return negotiate_headers(make_tokens(self.args.requests))

    async def token(self) -> None:
        starts = [lambda: self.start("floor"), lambda: self.start("kerb")]
        floor, ours = await self.alternate(starts, [self.tokens, self.tokens], "token")
        self.ratio_row("fresh Negotiate token", "floor (inline accept)", floor, ours, 0.95)

    async def gssproxy(self) -> None:
        why = gssproxy_available()
        if why is not None:
            print(f"  gssproxy     skipped: {why}", flush=True)
            return
        with PrivateGSSProxy(self.keytab, env=dict(os.environ), euid=os.geteuid()) as proxy:
            if self.server_cpu is not None and proxy.pid is not None:
                for thread in os.listdir(f"/proc/{proxy.pid}/task"):  # its workers too
                    os.sched_setaffinity(int(thread), {self.server_cpu})
            env = {**os.environ, **proxy.client_env()}

            def through() -> Server:
                # The daemon works for this server: its CPU counts as the server's.
                server = self.start("kerb-gssproxy", env)
                server.pids.append(proxy.pid or server.pids[0])
                return server

            starts = [lambda: self.start("kerb"), through]
            tokens = [self.tokens, self.tokens]
            direct, through = await self.alternate(starts, tokens, "gssproxy")
        self.ratio_row(
            "fresh token via GSS-Proxy",
            "keytab",
            direct,
            through,
            0.25,
            "GSS-Proxy",
        )

    async def noise(self) -> None:
        # The bench measuring itself: the same server against itself should come out 1.
        starts = [lambda: self.start("floor"), lambda: self.start("floor")]
        first, second = await self.alternate(starts, [self.tokens, self.tokens], "noise")
        self.ratio_row("noise (floor vs floor)", "floor", first, second, 0.0, "floor")

    async def cookie_and_cache(self, rows: list[str]) -> None:
        n = self.args.requests
        remote_user = FORWARDED + b"X-Remote-User: " + self.principal.encode() + b"\r\n"
        no_auth = [remote_user] * n
        starts: list[Callable[[], Server]] = [lambda: self.start("plain")]
        headers: list[Callable[[Server], list[bytes]]] = [lambda server: no_auth]
        kinds = []
        # Each of our requests also against the no-auth handler sent the same bytes (it
        # ignores them): Tornado's parsing of a Cookie or Authorization line is no guard's
        # work (callgrind: ~500 instructions a byte, ~10% of a cookie request), and this
        # comparison leaves it out. Printed beside the targets, not instead of them.
        same: list[tuple[str, list[bytes]]] = []
        if "cookie" in rows:
            # Every session server shares the bench's cookie_secret: one login will do.
            first = self.start("session")
            cookie_line = await self.session_cookie(first)
            cookie = [FORWARDED + cookie_line] * n
            first.stop()
            self.servers.remove(first)
            starts.append(lambda: self.start("session"))
            headers.append(lambda server: cookie)
            kinds.append("session")
            same.append(("session", [remote_user + cookie_line] * n))
        if "basic-cache" in rows:
            basic_line = self.basic_header()
            basic = [FORWARDED + basic_line] * n
            starts.append(lambda: self.start("basic"))
            headers.append(lambda server: basic)
            kinds.append("basic")
            same.append(("basic", [remote_user + basic_line] * n))
        for _kind, lines in same:
            starts.append(lambda: self.start("plain"))
            headers.append(lambda server, lines=lines: lines)  # type: ignore[misc]
        rates = await self.alternate(starts, headers, "no-auth")
        ours_rates = rates[1 : 1 + len(kinds)]
        same_rates = rates[1 + len(kinds) :]
        for kind, ours in zip(kinds, ours_rates, strict=True):
            if kind == "session":
                self.ratio_row("session cookie", "no auth", rates[0], ours, 0.93)
            else:
                self.ratio_row("repeat Basic (cache)", "no auth", rates[0], ours, 0.85)
        for (kind, _lines), ours, base in zip(same, ours_rates, same_rates, strict=True):
            ratio = statistics.median(o / b for o, b in zip(ours, base, strict=True))
            name = "cookie, same bytes" if kind == "session" else "Basic cache, same bytes"
            text = (
                f"no auth with the same header {statistics.median(base):7.0f} req/s, "
                f"tornado_kerb {statistics.median(ours):7.0f} req/s (the guard's own work)"
            )
            self.rows.append(Row(name, text, ratio, 0.0))

    async def session_cookie(self, server: Server) -> bytes:
        """Log in once with a fresh token; return the ``Cookie:`` line the server set."""
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            (request,) = build_requests(
                server.port, [FORWARDED + negotiate_headers(make_tokens(1))[0]]
            )
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"set-cookie:"):
                return b"Cookie: " + line.split(b":", 1)[1].split(b";", 1)[0].strip() + b"\r\n"
        raise BenchFailure("the session server set no cookie after a login")

    def basic_header(self) -> bytes:
        credentials = base64.b64encode(f"{self.principal}:{self.password}".encode())
        return b"Authorization: Basic " + credentials + b"\r\n"

    async def basic(self) -> None:
        # Real TLS here, not X-Forwarded-Proto: under the KDC threads' GIL traffic the
        # xheaders address check (a getaddrinfo that drops the GIL) cost more than TLS.
        # The baseline is a login without tornado_kerb: the raw proof (bench.proof, pinned
        # to the server's core like our KDC threads), then the request to the no-auth
        # handler over TLS. Its request carries the same Basic header, which that handler
        # ignores: Tornado parses the same bytes on both sides. Two KDC round trips a
        # login: fewer requests per round, and half the blocks.
        n = max(20, self.args.requests // 4)
        basic = self.basic_header()
        user = b"X-Remote-User: " + self.principal.encode() + b"\r\n"
        env = {**os.environ, **self.tls_env()}
        floor, ours = await self.alternate(
            [lambda: self.start_login_baseline(env), lambda: self.start("basic-fresh", env)],
            [lambda server: [basic + user] * n, lambda server: [basic] * n],
            "basic",
            blocks=max(1, self.args.blocks // 2),
        )
        self.ratio_row("fresh Basic", "proof + no-auth request", floor, ours, 0.92)

    async def slow_kdc(self) -> None:
        from tests.kdc_proxy import KDCProxy  # the suite's KDC proxy: delays, holds

        proxy = KDCProxy(upstream_port=self.realm.portbase)
        try:
            conf = {"realms": {"$realm": {"kdc": f"127.0.0.1:{proxy.port}"}}}
            env = {**os.environ, **self.realm.special_env("slow", False, krb5_conf=conf)}
            server = self.start("basic-fresh", env)
            proxy.delay = 0.3
            proxy.hold()
            header = FORWARDED + self.basic_header()
            (login,) = build_requests(server.port, [header])
            plain_request = build_requests(server.port, [FORWARDED])[0]  # no credentials: 401
            logins = [asyncio.create_task(_one(server.port, login)) for _ in range(10)]
            try:
                if not await asyncio.to_thread(proxy.wait_for_in_flight, 10):
                    raise BenchFailure("the ten logins never reached the KDC together")
                latencies = []
                for _ in range(20):
                    started = time.perf_counter()
                    status = await _one(server.port, plain_request)
                    latencies.append(time.perf_counter() - started)
                    if status != b"401":
                        raise BenchFailure(f"unrelated request answered {status!r}")
                pending = sum(not task.done() for task in logins)
            finally:
                proxy.release()
            statuses = await asyncio.gather(*logins)
            if statuses != [b"200"] * 10 or pending != 10:
                raise BenchFailure(f"slow-KDC logins: {statuses}, {pending} pending")
        finally:
            proxy.close()
        worst = max(latencies) * 1000
        text = f"10 Basic logins held at a 300 ms KDC; 20 unrelated requests, worst {worst:.1f} ms"
        self.rows.append(Row("slow KDC", text, worst, 50, higher_is_better=False))

    async def soak(self) -> None:
        server = self.start("session")
        cookie = await self.session_cookie(server)
        total = self.args.soak
        fresh = total // 5  # a fifth with fresh tokens: the GSSAPI path must not leak either
        await self.round(server, [FORWARDED + cookie] * 2000)  # warm: caches, allocator
        before = rss_bytes(server.pids[0])
        done = 0
        while done < total:
            batch = min(10_000, total - done)
            tokens = min(batch // 5, max(0, fresh - done // 5))
            headers = negotiate_headers(make_tokens(tokens)) + [cookie] * (batch - tokens)
            await self.round(server, [FORWARDED + h for h in headers])
            done += batch
        growth = (rss_bytes(server.pids[0]) - before) / 2**20
        text = f"{total:,} requests ({fresh:,} fresh tokens): RSS growth {growth:.2f} MB"
        self.rows.append(Row("soak", text, growth, 5, higher_is_better=False))

    async def peers(self) -> None:
        from . import peers

        starts: list[Callable[[], Server]] = [lambda: self.start("kerb")]
        headers: list[Callable[[Server], list[bytes]]] = [self.tokens]
        kinds = []
        for kind in ("apache", "apache-session", "asgi-gssapi"):
            why = peers.available(kind)
            if why:
                print(f"  peer {kind}: not measured ({why})")
                continue
            starts.append(functools.partial(self.start_peer, kind))
            headers.append(self.peer_headers)
            kinds.append(kind)
        if not kinds:
            return
        rates = await self.alternate(starts, headers, "peers", blocks=max(1, self.args.blocks // 4))
        ours = statistics.median(rates[0])
        for kind, theirs in zip(kinds, rates[1:], strict=True):
            what = "its session cookie" if kind == "apache-session" else "fresh tokens"
            ratio = statistics.median(o / t for o, t in zip(rates[0], theirs, strict=True))
            median = statistics.median(theirs)
            text = f"{kind} {median:7.0f} req/s ({what}), tornado_kerb {ours:7.0f} (tokens)"
            self.rows.append(Row(f"vs {kind}", text, ratio, 0.0))

    def peer_headers(self, server: Server) -> list[bytes]:
        """Apache's session cookie where it logged in once, else fresh tokens."""
        return [server.cookie] * self.args.requests if server.cookie else self.tokens(server)

    def start_peer(self, kind: str) -> Server:
        """Start a peer (Apache, asgi-gssapi) with its plain Tornado backend."""
        from . import peers

        cpu_arg = "-" if self.server_cpu is None else str(self.server_cpu)
        backend = [sys.executable, "-m", "bench.server", "plain", self.keytab, cpu_arg]
        peer = peers.start_peer(kind, self.keytab, dict(os.environ), self.server_cpu, backend)
        cookie = b"Cookie: " + peer.cookie.encode() + b"\r\n" if peer.cookie else None
        server = Server(kind, peer.port, peer.pids, peer.stop, cookie)
        self.servers.append(server)
        return server


async def _one(port: int, request: bytes) -> bytes:
    """Send one request on a new connection; return the status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        return head[9:12]
    finally:
        writer.close()


def report(rows: list[Row]) -> bool:
    """Print the table; whether every target was met."""
    print()
    print(f"{'row':24} {'result':8} {'target':9} measured")
    for row in rows:
        if row.target == 0.0:  # a comparison, no target
            print(f"{row.name:24} {row.value:7.2f}x {'':9} {row.text}")
            continue
        sign = ">=" if row.higher_is_better else "<"
        mark = "ok" if row.ok else "MISSED"
        print(f"{row.name:24} {row.value:8.3f} {sign} {row.target:<5g} {row.text}  [{mark}]")
    return all(row.ok for row in rows if row.target)


def _terminated(signum: int, frame: FrameType | None) -> None:
    # Unwind through the finally blocks so the KDC and the servers are stopped.
    raise SystemExit(128 + signum)


async def run(bench: Bench) -> None:
    """Every selected row, each with its own servers."""
    only = bench.args.only
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("token", bench.token),
        ("gssproxy", bench.gssproxy),
        ("cookie", lambda: bench.cookie_and_cache(only)),
        ("basic", bench.basic),
        ("slow-kdc", bench.slow_kdc),
        ("soak", bench.soak),
        ("peers", bench.peers),
        ("noise", bench.noise),
    ]
    for name, step in steps:
        if name in only or (name == "cookie" and "basic-cache" in only):
            try:
                await step()
            finally:
                bench.stop_all()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    realm = start_realm()
    bench = None
    try:
        os.environ.update(realm.env)
        keytab = os.path.join(realm.tmpdir, "http.keytab")
        realm.addprinc("HTTP/localhost")
        realm.extract_keytab("HTTP/localhost", keytab)
        if load_cpu is not None:
            os.sched_setaffinity(0, {load_cpu})
        pinning = (
            f"server on CPU {server_cpu}, load on CPU {load_cpu}"
            if load_cpu is not None
            else "NO CPU pinning (only one CPU available)"
        )
        print(
            f"tornado_kerb benchmark: {args.blocks} blocks x {args.rounds} rounds x "
            f"{args.requests} requests, "
            f"{args.connections} connections, {pinning}; rows: {', '.join(args.only)}",
            flush=True,
        )
        bench = Bench(args, realm, keytab, (server_cpu, load_cpu))
        asyncio.run(run(bench))
    except BenchFailure as err:
        print(f"bench FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if bench is not None:
            bench.stop_all()
        realm.stop()
    met = report(bench.rows)
    if bench.low_cpu:
        print(
            f"note: the server's core was under {SATURATED:.0%} busy in some rounds; "
            "the load generator may be the limit, not the server"
        )
    if args.profile:
        print(f"cProfile stats in {args.profile}/<kind>.prof; rates under cProfile are skewed")
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
