"""The fresh-Basic baseline: ``python -m bench.proof KEYTAB PRINCIPAL CPU COUNT THREADS``.

Proves ``COUNT`` passwords the way any careful server must (a TGT from the password, a
ticket for our own service, accepted with our keytab: the same three GSSAPI calls as
tornado_kerb's Basic), on ``THREADS`` threads pinned to ``CPU``, with no HTTP and no
Tornado around them, and prints proofs per second. The password comes on stdin.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import time

import gssapi
import gssapi.raw


def prove(
    principal: str, password: bytes, service: gssapi.Name, acceptor: gssapi.Credentials
) -> None:
    """One kpass-style proof; raises on any failure."""
    name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
    creds = gssapi.raw.acquire_cred_with_password(
        name, password, usage="initiate", mechs=[gssapi.MechType.kerberos]
    ).creds
    token = gssapi.SecurityContext(
        name=service,
        creds=gssapi.Credentials(creds),
        usage="initiate",
        mech=gssapi.MechType.kerberos,
        flags=0,
    ).step()
    if not token:  # the baseline must do the whole proof, or it measures nothing
        raise RuntimeError("no AP-REQ for our service")
    gssapi.raw.accept_sec_context(token, acceptor_creds=acceptor)


def main(argv: list[str]) -> None:
    """Entry point."""
    keytab, principal, cpu, count, threads = argv
    if cpu != "-":
        os.sched_setaffinity(0, {int(cpu)})
    password = sys.stdin.readline().rstrip("\n").encode()
    service = gssapi.Name("HTTP/localhost", gssapi.NameType.kerberos_principal)
    acceptor = gssapi.Credentials(usage="accept", store={"keytab": keytab})
    with concurrent.futures.ThreadPoolExecutor(int(threads)) as pool:
        list(pool.map(lambda _: prove(principal, password, service, acceptor), range(8)))
        started = time.perf_counter()
        list(pool.map(lambda _: prove(principal, password, service, acceptor), range(int(count))))
        elapsed = time.perf_counter() - started
    print(f"{int(count) / elapsed:.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
