"""A TCP proxy in front of a KDC, for faults a real KDC cannot produce on demand.

Kerberos over TCP frames each message with a 4-byte length; the proxy relays one request
and one reply per exchange and can delay each exchange, drop connections (KDC down), or
send them to another KDC (a spoofed one). It counts exchanges and the most seen at once.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time


def _read_frame(sock: socket.socket) -> bytes | None:
    header = _read_exactly(sock, 4)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header)
    body = _read_exactly(sock, length)
    return None if body is None else header + body


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class KDCProxy:
    """Relay Kerberos TCP exchanges to ``upstream``; settable ``delay``, ``down``, ``upstream``,
    and :meth:`hold`/:meth:`release` to keep exchanges waiting until a test is ready."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.delay = 0.0
        self.down = False
        self.exchanges = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._cond = threading.Condition()
        self._gate = threading.Event()
        self._gate.set()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._relay(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _relay(self, client: socket.socket) -> None:
        if self.down:
            return  # accepted and closed at once: the client sees no KDC
        request = _read_frame(client)
        if request is None:
            return
        with self._cond:
            self.exchanges += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._cond.notify_all()
        try:
            self._gate.wait(timeout=60)
            if self.delay:
                time.sleep(self.delay)  # the fault under test: a slow KDC
            with socket.create_connection(self.upstream, timeout=10) as kdc:
                kdc.sendall(request)
                reply = _read_frame(kdc)
            if reply is not None:
                client.sendall(reply)
        finally:
            with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    def hold(self) -> None:
        """Keep every exchange waiting at the proxy until :meth:`release`."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def wait_for_in_flight(self, count: int, timeout: float = 30) -> bool:
        """Block until ``count`` exchanges are held at once (or ``timeout``)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.in_flight >= count, timeout)

    def reset(self, upstream_port: int | None = None) -> None:
        """Back to a plain relay (to ``upstream_port`` if given) with zeroed counters."""
        with self._cond:
            if upstream_port is not None:
                self.upstream = ("127.0.0.1", upstream_port)
            self.delay = 0.0
            self.down = False
            self._gate.set()
            self.exchanges = 0
            self.max_in_flight = 0

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
