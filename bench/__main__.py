"""Benchmark tornado_kerb against baselines measured in the same run.

Run it with ``make bench`` (``make bench ARGS="--only token,cookie"``) or ``python -m bench``;
``python -m bench --help`` lists the options.

A throwaway MIT realm (k5test) with an ``HTTP/localhost`` keytab, servers as subprocesses
pinned to the first CPU, the load generator (this process) on the second. Each row pairs
tornado_kerb with a baseline in alternating rounds and prints the median of the per-round ratios:

* ``token``: a fresh SPNEGO token per request, against a bare Tornado handler accepting it
  inline with one raw GSSAPI call and no checks (the floor); target >= 0.95.
* ``cookie``: tornado_kerb's session cookie, against a Tornado handler with no
  authentication at all; target >= 0.90.
* ``basic-cache``: a repeated Basic header with the result cache, against the same
  no-auth handler; target >= 0.85.
* ``basic``: a fresh Basic login per request (two KDC round trips and our keytab), against
  a raw loop of the same proof with no HTTP around it; target >= 0.90.
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
SCENARIOS = ("token", "cookie", "basic-cache", "basic", "slow-kdc", "soak", "peers")
FORWARDED = b"X-Forwarded-Proto: https\r\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--requests", type=int, default=3000, help="requests per round (3000)")
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds per server (15)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (8)")
    parser.add_argument("--soak", type=int, default=100_000, help="soak requests (100000)")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated rows ({','.join(SCENARIOS)})"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if any target is missed")
    parser.add_argument("--profile", metavar="DIR", help="write cProfile stats of the servers")
    args = parser.parse_args(argv)
    if min(args.requests, args.rounds, args.connections, args.soak) < 1:
        parser.error("--requests, --rounds, --connections and --soak must be at least 1")
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
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=_ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        stop_process(proc)
        raise BenchFailure(f"{kind} server did not start (exit code {proc.returncode})")
    return Server(kind, int(line), [proc.pid], lambda: stop_process(proc))


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

    async def round(
        self, server: Server, headers: list[bytes], tls: ssl.SSLContext | None = None
    ) -> RoundResult:
        requests = build_requests(server.port, headers)
        result = await run_round(
            server.port, server.pids, requests, self.args.connections, self.principal.encode(), tls
        )
        if result.server_busy < SATURATED:
            self.low_cpu = True
        return result

    async def alternate(
        self,
        pairs: list[tuple[Server, Callable[[], list[bytes]]]],
        rounds: int,
        label: str,
    ) -> list[list[float]]:
        """A warm-up round per server, then ``rounds`` rounds; req/s per server per round.

        Servers take turns within a round, in reverse order every other round (A B C,
        C B A, …): on a machine whose speed drifts, neighbours in time see the same
        machine, and no server is always first.
        """
        rates: list[list[float]] = [[] for _ in pairs]
        for number in range(rounds + 1):
            line = f"  {label:12} {f'round {number}' if number else 'warm-up':8}"
            order = list(enumerate(pairs))
            results: dict[int, RoundResult] = {}
            for i, (server, headers) in order if number % 2 == 0 else reversed(order):
                results[i] = await self.round(server, headers())
            for i, (server, _) in order:
                if number:
                    rates[i].append(results[i].rate)
                busy = results[i].server_busy
                line += f"  {server.kind:12} {results[i].rate:6.0f} req/s cpu {busy:4.0%}"
            print(line, flush=True)
        return rates

    def ratio_row(
        self, name: str, base: str, baseline: list[float], ours: list[float], target: float
    ) -> None:
        """The median of the per-round ratios (each round pairs measurements made back to
        back), with the median rates for reference."""
        ratio = statistics.median(o / b for o, b in zip(ours, baseline, strict=True))
        text = (
            f"{base} {statistics.median(baseline):7.0f} req/s, "
            f"tornado_kerb {statistics.median(ours):7.0f} req/s"
        )
        self.rows.append(Row(name, text, ratio, target))

    # -- the rows ----------------------------------------------------------------------

    async def token(self) -> None:
        floor, kerb = self.start("floor"), self.start("kerb")
        n = self.args.requests
        rates = await self.alternate(
            [
                (floor, lambda: negotiate_headers(make_tokens(n))),
                (kerb, lambda: negotiate_headers(make_tokens(n))),
            ],
            self.args.rounds,
            "token",
        )
        self.ratio_row("fresh Negotiate token", "floor (inline accept)", *rates, 0.95)

    async def cookie_and_cache(self, rows: list[str]) -> None:
        plain = self.start("plain")
        n = self.args.requests
        no_auth = [FORWARDED + b"X-Remote-User: " + self.principal.encode() + b"\r\n"] * n
        pairs: list[tuple[Server, Callable[[], list[bytes]]]] = [(plain, lambda: no_auth)]
        if "cookie" in rows:
            session = self.start("session")
            cookie = await self.session_cookie(session)
            pairs.append((session, lambda: [FORWARDED + cookie] * n))
        if "basic-cache" in rows:
            basic = self.start("basic")
            header = self.basic_header()
            pairs.append((basic, lambda: [FORWARDED + header] * n))
        rates = await self.alternate(pairs, self.args.rounds, "no-auth")
        for (server, _), ours in zip(pairs[1:], rates[1:], strict=True):
            if server.kind == "session":
                self.ratio_row("session cookie", "no auth", rates[0], ours, 0.90)
            else:
                self.ratio_row("repeat Basic (cache)", "no auth", rates[0], ours, 0.85)

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
        fresh = self.start("basic-fresh", {**os.environ, **self.tls_env()})
        n = max(50, self.args.requests // 10)  # two KDC round trips each: fewer requests
        proof_rates: list[float] = []
        ours: list[float] = []
        header = [self.basic_header()] * n
        for number in range(self.args.rounds + 1):
            # Back to back, in alternating order, like every other row.
            if number % 2:
                result = await self.round(fresh, header, self.client_tls())
                proof = await asyncio.to_thread(self.proof_loop, n)
            else:
                proof = await asyncio.to_thread(self.proof_loop, n)
                result = await self.round(fresh, header, self.client_tls())
            if number:
                proof_rates.append(proof)
                ours.append(result.rate)
            print(
                f"  {'basic':12} {f'round {number}' if number else 'warm-up':8}"
                f"  {'raw proof':12} {proof:6.0f} /s"
                f"  {'basic-fresh':12} {result.rate:6.0f} req/s cpu {result.server_busy:4.0%}",
                flush=True,
            )
        self.ratio_row("fresh Basic", "raw password proof", proof_rates, ours, 0.90)

    def proof_loop(self, count: int) -> float:
        """The raw proof loop as a subprocess on the server's core: proofs per second."""
        cpu = "-" if self.server_cpu is None else str(self.server_cpu)
        command = [
            sys.executable,
            "-m",
            "bench.proof",
            self.keytab,
            self.principal,
            cpu,
            str(count),
            str(self.args.connections),
        ]
        out = subprocess.run(
            command,
            input=self.password + "\n",
            capture_output=True,
            text=True,
            cwd=_ROOT,
            check=False,
        )
        if out.returncode != 0:
            raise BenchFailure(f"raw proof loop failed: {out.stderr.strip()[-300:]}")
        return float(out.stdout)

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

        cpu = self.server_cpu
        n = self.args.requests
        kerb = self.start("kerb")
        pairs: list[tuple[Server, Callable[[], list[bytes]]]] = [
            (kerb, lambda: negotiate_headers(make_tokens(n)))
        ]
        for kind in ("apache", "apache-session", "asgi-gssapi"):
            why = peers.available(kind)
            if why:
                print(f"  peer {kind}: not measured ({why})")
                continue
            cpu_arg = "-" if cpu is None else str(cpu)
            backend = [sys.executable, "-m", "bench.server", "plain", self.keytab, cpu_arg]
            peer = peers.start_peer(kind, self.keytab, dict(os.environ), cpu, backend)
            server = Server(kind, peer.port, peer.pids, peer.stop)
            self.servers.append(server)
            if peer.cookie:
                line = b"Cookie: " + peer.cookie.encode() + b"\r\n"
                pairs.append((server, lambda line=line: [line] * n))  # type: ignore[misc]
            else:
                pairs.append((server, lambda: negotiate_headers(make_tokens(n))))
        if len(pairs) == 1:
            return
        rates = await self.alternate(pairs, max(3, self.args.rounds // 2), "peers")
        ours = statistics.median(rates[0])
        for (server, _), theirs in zip(pairs[1:], rates[1:], strict=True):
            what = "its session cookie" if server.kind == "apache-session" else "fresh tokens"
            ratio = statistics.median(o / t for o, t in zip(rates[0], theirs, strict=True))
            median = statistics.median(theirs)
            text = f"{server.kind} {median:7.0f} req/s ({what}), tornado_kerb {ours:7.0f} (tokens)"
            self.rows.append(Row(f"vs {server.kind}", text, ratio, 0.0))


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
        ("cookie", lambda: bench.cookie_and_cache(only)),
        ("basic", bench.basic),
        ("slow-kdc", bench.slow_kdc),
        ("soak", bench.soak),
        ("peers", bench.peers),
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
            f"tornado_kerb benchmark: N={args.requests} requests x {args.rounds} rounds, "
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
