"""The fresh-Basic baseline's password proofs: ``python -m bench.proof KEYTAB PRINCIPAL CPU``.

Proves the password the way any careful server must (a TGT from the password, a ticket
for our own service, accepted with our keytab: the same three GSSAPI calls as
tornado_kerb's Basic), with no HTTP and no Tornado around it, pinned to ``CPU`` (``-`` for
no pinning): the server's core, where tornado_kerb's KDC threads prove passwords too.

The load generator drives it: it listens on a free port of 127.0.0.1, prints the port on
stdout once it listens, and gives each connection a thread of its own (blocked in
``recv`` until asked, like an idle KDC thread). Each byte received is one proof, answered
``1`` when proven; a failure answers ``0`` (the reason goes to stderr), and the bench
fails. The password comes on the first line of stdin. Serves until SIGTERM; SIGINT is
ignored, as by ``bench.server``.
"""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import sys

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


class ProofServer(socketserver.ThreadingTCPServer):
    """One thread per connection; each byte received is one proof."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, keytab: str, principal: str, password: bytes) -> None:
        super().__init__(("127.0.0.1", 0), ProofHandler)
        self.principal = principal
        self.password = password
        self.service = gssapi.Name("HTTP/localhost", gssapi.NameType.kerberos_principal)
        self.acceptor = gssapi.Credentials(usage="accept", store={"keytab": keytab})


class ProofHandler(socketserver.BaseRequestHandler):
    """Prove once per byte received, answer one byte each."""

    server: ProofServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = self.server
        while asked := sock.recv(64):
            for _ in asked:
                try:
                    prove(server.principal, server.password, server.service, server.acceptor)
                except Exception as err:  # any failure at all fails the bench
                    print(f"raw proof failed: {err}", file=sys.stderr, flush=True)
                    sock.sendall(b"0")
                else:
                    sock.sendall(b"1")


def main(argv: list[str]) -> None:
    """Entry point: ``argv`` is ``[keytab, principal, cpu]``."""
    keytab, principal, cpu = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpu != "-":
        # Before any thread starts: threads inherit the pinning.
        os.sched_setaffinity(0, {int(cpu)})
    password = sys.stdin.readline().rstrip("\n").encode()
    with ProofServer(keytab, principal, password) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
