"""Load generator: HTTP/1.1 keep-alive (no pipelining) over raw asyncio streams.

Each of ``connections`` connections sends one request, reads the whole answer, then sends
the next; every request carries its own pre-built headers (a fresh Negotiate token, a
session cookie, a Basic header…). Parsing is the minimum
that frames a Tornado answer (status line, ``Content-Length``, body), so one client core
outruns one server core by a wide margin.

For the fresh-Basic baseline each connection is paired with one to the raw proof service
(``bench.proof``): before every request it asks for one password proof and waits for it,
so a "request" is a login done without tornado_kerb, the proof and then the HTTP request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
import time
from collections.abc import Iterator

_LENGTH = b"\r\ncontent-length:"
_TICK = os.sysconf("SC_CLK_TCK")

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class BenchFailure(Exception):
    """A response other than ``200`` with the expected body: the numbers would be lies."""


@dataclasses.dataclass(frozen=True)
class RoundResult:
    """Throughput of one round, and how busy each side was while the clock ran."""

    rate: float  #: requests per second
    server_busy: float  #: server CPU seconds per wall second (1.0 = one core saturated)
    load_busy: float  #: the same for this process, the load generator


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes ``pids`` (all their threads), from ``/proc``."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                # Fields after the ")" closing the command name; utime, stime are 14 and 15.
                fields = stat.read().rpartition(")")[2].split()
        except FileNotFoundError:  # a worker process that came and went
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchFailure(f"no VmRSS for pid {pid}")


def build_requests(port: int, headers: list[bytes]) -> list[bytes]:
    """One complete ``GET /`` request per entry of ``headers`` (raw header lines)."""
    head = f"GET / HTTP/1.1\r\nHost: localhost:{port}\r\n".encode()
    return [head + extra + b"\r\n" for extra in headers]


def negotiate_headers(tokens: list[bytes]) -> list[bytes]:
    """``Authorization: Negotiate`` lines, one per base64 token."""
    return [b"Authorization: Negotiate " + token + b"\r\n" for token in tokens]


async def _client(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    requests: Iterator[bytes],
    expected_body: bytes,
    failures: list[str],
    proof: Stream | None,
) -> None:
    # The iterator is shared by every connection: each request is sent exactly once.
    for request in requests:
        if proof is not None:
            # The baseline's login: one raw proof first (on the server's core), then the
            # request, one after the other, as tornado_kerb does them for a Basic login.
            proof[1].write(b"p")
            if await proof[0].readexactly(1) != b"1":
                failures.append("raw password proof failed (see bench.proof's stderr)")
                continue
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        at = head.lower().find(_LENGTH)
        if at < 0:
            raise BenchFailure(f"response without Content-Length: {head[:200]!r}")
        end = head.index(b"\r\n", at + len(_LENGTH))
        body = await reader.readexactly(int(head[at + len(_LENGTH) : end]))
        status = head[9:12]
        if status != b"200" or body != expected_body:
            failures.append(f"{status.decode(errors='replace')} {body[:120]!r}")


async def run_round(
    port: int,
    pids: list[int],
    requests: list[bytes],
    connections: int,
    expected: bytes,
    tls: ssl.SSLContext | None = None,
    proof_port: int | None = None,
) -> RoundResult:
    """Send every request over ``connections`` keep-alive connections to the server
    (processes ``pids``) listening on ``port``; with ``proof_port``, each one after a
    raw password proof asked of ``bench.proof`` there (its process among ``pids``).

    Connections are opened before the clock starts. Raises :class:`BenchFailure` if any
    answer is not ``200`` with body ``expected``, or any proof failed.
    """
    http: list[Stream] = []
    proofs: list[Stream] = []
    shared = iter(requests)
    failures: list[str] = []
    try:
        for _ in range(connections):
            http.append(
                await asyncio.open_connection(
                    "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
                )
            )
            if proof_port is not None:
                proofs.append(await asyncio.open_connection("127.0.0.1", proof_port))
        paired: list[Stream | None] = [*proofs] if proofs else [None] * connections
        server_cpu, load_cpu = cpu_seconds(pids), time.process_time()
        start = time.perf_counter()
        await asyncio.gather(
            *(_client(*h, shared, expected, failures, p) for h, p in zip(http, paired, strict=True))
        )
        elapsed = time.perf_counter() - start
        server_cpu = cpu_seconds(pids) - server_cpu
        load_cpu = time.process_time() - load_cpu
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
        raise BenchFailure(f"connection to port {port} failed: {err!r}") from None
    finally:
        writers = [writer for _, writer in http + proofs]
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    if failures:
        raise BenchFailure(
            f"{len(failures)} of {len(requests)} responses failed, first: {failures[0]}"
        )
    return RoundResult(len(requests) / elapsed, server_cpu / elapsed, load_cpu / elapsed)
