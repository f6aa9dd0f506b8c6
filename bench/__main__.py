"""Benchmark tornado_kerb's guarded handler against a bare-Tornado Negotiate floor.

Run it with ``make bench`` (``make bench ARGS="--rounds 9"``) or ``python -m bench``;
``python -m bench --help`` lists the options.

What it does: starts a throwaway MIT realm (k5test) with an ``HTTP/localhost`` keytab, then
two Tornado servers as subprocesses pinned to the first CPU:

* **floor** — a plain ``RequestHandler`` that accepts the Negotiate token inline with no
  checks at all;
* **kerb** — a ``KerberosAuthMixin`` handler guarded by ``@authenticated``.

The load generator (this process) runs on the second CPU. After a warm-up round per server
it runs ``--rounds`` rounds alternating floor/kerb, each of ``--requests`` requests, and
every request carries a fresh SPNEGO token generated before the round's clock starts (a
token cannot be used twice: the acceptor's replay cache refuses it). It prints the median
req/s of each server (with min and max) and the ratio kerb/floor; the target is >= 0.95.
Any answer other than ``200`` with the user's principal fails the run: the numbers would
be lies. ``--profile DIR`` runs both servers under cProfile and writes ``DIR/floor.prof``
and ``DIR/kerb.prof`` (read them with ``python -m pstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from types import FrameType

import gssapi

from tornado_kerb.testing import start_realm

from .load import BenchFailure, RoundResult, build_requests, run_round

TARGET = 0.95
SATURATED = 0.9  # server CPU share below which a round did not measure the server
LABELS = {
    "floor": "floor (bare Tornado, inline accept):",
    "kerb": "tornado_kerb (guarded handler):",
}
_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--requests", type=int, default=3000, help="requests per round (3000)")
    parser.add_argument("--rounds", type=int, default=9, help="measured rounds per server (9)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (8)")
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 if the ratio is below {TARGET}"
    )
    parser.add_argument("--profile", metavar="DIR", help="write cProfile stats of both servers")
    args = parser.parse_args(argv)
    if min(args.requests, args.rounds, args.connections) < 1:
        parser.error("--requests, --rounds and --connections must be at least 1")
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
    """A running benchmark server subprocess."""

    kind: str
    proc: subprocess.Popen[str]
    port: int


def start_server(kind: str, keytab: str, cpu: int | None, profile_dir: str | None) -> Server:
    """Start ``python -m bench.server`` and wait until it says which port it listens on."""
    env = dict(os.environ)  # holds the realm's KRB5_CONFIG, KRB5RCACHEDIR, …
    if profile_dir:
        os.makedirs(profile_dir, exist_ok=True)
        env["BENCH_PROFILE"] = os.path.join(os.path.abspath(profile_dir), f"{kind}.prof")
    command = [sys.executable, "-m", "bench.server", kind, keytab, "-" if cpu is None else str(cpu)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=_ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        stop_server(proc)
        raise BenchFailure(f"{kind} server did not start (exit code {proc.returncode})")
    return Server(kind, proc, int(line))


def stop_server(proc: subprocess.Popen[str]) -> None:
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


async def measure(
    servers: list[Server], args: argparse.Namespace, principal: bytes
) -> dict[str, list[RoundResult]]:
    """A warm-up round per server, then ``args.rounds`` alternating rounds."""
    results: dict[str, list[RoundResult]] = {server.kind: [] for server in servers}
    print("  (cpu: busy share of the server's core / of the load generator's core)")
    for number in range(args.rounds + 1):
        line = f"  {f'round {number}' if number else 'warm-up':8}"
        for server in servers:
            requests = build_requests(server.port, make_tokens(args.requests))
            result = await run_round(
                server.port, server.proc.pid, requests, args.connections, principal
            )
            if number:
                results[server.kind].append(result)
            line += (
                f"  {server.kind:5} {result.rate:5.0f} req/s"
                f" cpu {result.server_busy:4.0%}/{result.load_busy:4.0%}"
            )
        print(line, flush=True)
    return results


def report(results: dict[str, list[RoundResult]]) -> float:
    """Print median, min and max req/s per server; return the ratio of the medians."""
    width = max(len(label) for label in LABELS.values())
    medians = {}
    for kind, rounds in results.items():
        rates = [r.rate for r in rounds]
        medians[kind] = statistics.median(rates)
        print(
            f"{LABELS[kind]:{width}} {medians[kind]:6.0f} req/s"
            f"  (min {min(rates):.0f}, max {max(rates):.0f})"
        )
    ratio = medians["kerb"] / medians["floor"]
    print(f"ratio: {ratio:.3f} (target >= {TARGET})")
    if any(r.server_busy < SATURATED for rounds in results.values() for r in rounds):
        print(
            f"note: the server's core was under {SATURATED:.0%} busy in some rounds; "
            "the load generator may be the limit, not the server"
        )
    return ratio


def _terminated(signum: int, frame: FrameType | None) -> None:
    # Unwind through the finally blocks so the KDC and the servers are stopped.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    realm = start_realm()
    servers: list[Server] = []
    try:
        os.environ.update(realm.env)
        keytab = os.path.join(realm.tmpdir, "http.keytab")
        realm.addprinc("HTTP/localhost")
        realm.extract_keytab("HTTP/localhost", keytab)
        if load_cpu is not None:
            os.sched_setaffinity(0, {load_cpu})
        for kind in LABELS:
            servers.append(start_server(kind, keytab, server_cpu, args.profile))
        pinning = (
            f"server on CPU {server_cpu}, load on CPU {load_cpu}"
            if load_cpu is not None
            else "NO CPU pinning (only one CPU available)"
        )
        print(
            f"tornado_kerb benchmark: N={args.requests} requests x {args.rounds} rounds, "
            f"{args.connections} connections, {pinning}",
            flush=True,
        )
        results = asyncio.run(measure(servers, args, realm.user_princ.encode()))
    except BenchFailure as err:
        print(f"bench FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for server in servers:
            stop_server(server.proc)
        realm.stop()
    ratio = report(results)
    if args.profile:
        print(
            f"cProfile stats in {args.profile}/{{floor,kerb}}.prof; rates under cProfile are skewed"
        )
    return 1 if args.check and ratio < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
