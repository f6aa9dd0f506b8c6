"""One benchmark server: ``python -m bench.server KIND KEYTAB CPU``.

Kinds: ``floor`` (inline raw accept, no checks), ``kerb`` (tornado_kerb, fresh Negotiate
tokens), ``plain`` (no authentication: writes the ``X-Remote-User`` request header, the
baseline, and the backend behind Apache), ``session`` (tornado_kerb with session cookies),
``basic`` (tornado_kerb, Basic with the result cache) and ``basic-fresh`` (Basic, every
request proven at the KDC). All but ``floor`` and ``kerb`` take ``X-Forwarded-Proto``
(xheaders), so the load generator can speak plain HTTP to a server that believes it is
behind TLS (Basic and Secure cookies need that).

Pins itself to ``CPU`` (``-`` for no pinning), listens on a free port of 127.0.0.1 with
plain HTTP, prints the port on stdout once it listens, and serves until SIGTERM. SIGINT is
ignored: a Ctrl-C reaches the parent too, which reports it and stops the servers.
The realm's environment (``KRB5_CONFIG``, ``KRB5RCACHEDIR``, …) comes from the parent.

With ``BENCH_PROFILE=path`` in the environment the whole serving time runs under cProfile
and the statistics are written to ``path`` on exit.
"""

from __future__ import annotations

import asyncio
import base64
import cProfile
import os
import signal
import ssl
import sys

import gssapi
import gssapi.raw
import tornado.httpserver
import tornado.netutil
import tornado.web

import tornado_kerb


class FloorHandler(tornado.web.RequestHandler):
    """The floor: accept the Negotiate token inline, with no checks and no error handling."""

    def initialize(self, creds: gssapi.Credentials) -> None:
        self.creds = creds

    def get(self) -> None:
        token = base64.b64decode(self.request.headers["Authorization"].split(" ", 1)[1])
        # The cheapest inline accept there is: one raw call (the high-level
        # SecurityContext costs ~25 us more per request in extra inquiries).
        result = gssapi.raw.accept_sec_context(token, acceptor_creds=self.creds)
        if result.token:
            self.add_header(
                "WWW-Authenticate", "Negotiate " + base64.b64encode(result.token).decode()
            )
        self.write(gssapi.raw.display_name(result.initiator_name).name)


class KerbHandler(tornado_kerb.KerberosAuthMixin, tornado.web.RequestHandler):
    """The library under test: a guarded handler writing the same body as the floor."""

    @tornado_kerb.authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


class PlainHandler(tornado.web.RequestHandler):
    """No authentication at all: the baseline (and Apache's backend, which gets the
    user in this header from the proxy)."""

    def get(self) -> None:
        self.write(self.request.headers.get("X-Remote-User", ""))


# A secret for the benchmark's own throwaway sessions, never a real one.
BENCH_COOKIE_SECRET = "bench-only-cookie-secret-" + "x" * 32

_KERB_SETTINGS: dict[str, dict[str, object]] = {
    "kerb": {"basic": False},
    # The same, accepting through GSS-Proxy (the environment names its socket).
    "kerb-gssproxy": {"basic": False, "gssproxy": True, "keytab": None},
    "session": {"basic": False, "session": True},
    "basic": {"basic_cache": True},
    # One user's 8 (slow-KDC row: 10) logins at once: the guessing limits would let
    # per_principal of them go at a time, by design (docs: sessions-and-sign-in, password guessing).
    "basic-fresh": {"login_limits": None},
}


def _quiet(handler: tornado.web.RequestHandler) -> None:
    """No access log: 401s (the slow-KDC row's unrelated requests) would flood stderr."""


def make_app(kind: str, keytab: str) -> tornado.web.Application:
    """The application for ``kind`` serving ``GET /``."""
    if kind == "floor":
        creds = gssapi.Credentials(usage="accept", store={"keytab": keytab})
        return tornado.web.Application([(r"/", FloorHandler, {"creds": creds})])
    if kind == "plain":
        return tornado.web.Application([(r"/", PlainHandler)], log_function=_quiet)
    if kind in _KERB_SETTINGS:
        settings = {
            "keytab": keytab,
            "hostname": "localhost",
            # The load generator is the "proxy" that says X-Forwarded-Proto: https (see
            # above): only a trusted proxy's word counts.
            "trusted_proxies": ["127.0.0.1"],
            **_KERB_SETTINGS[kind],
        }
        return tornado.web.Application(
            [(r"/", KerbHandler)],
            kerberos=settings,
            cookie_secret=BENCH_COOKIE_SECRET,
            log_function=_quiet,
        )
    raise SystemExit(f"unknown server kind {kind!r}")


async def serve(app: tornado.web.Application, xheaders: bool) -> None:
    """Listen, announce the port on stdout, and serve until told to stop.

    With ``BENCH_TLS_CERT`` and ``BENCH_TLS_KEY`` in the environment it serves HTTPS."""
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    tls = None
    if os.environ.get("BENCH_TLS_CERT"):
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(os.environ["BENCH_TLS_CERT"], os.environ["BENCH_TLS_KEY"])
    server = tornado.httpserver.HTTPServer(app, xheaders=xheaders, ssl_options=tls)
    server.add_sockets(sockets)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(sockets[0].getsockname()[1], flush=True)
    await stop.wait()
    server.stop()


def main(argv: list[str]) -> None:
    """Entry point: ``argv`` is ``[kind, keytab, cpu]``."""
    kind, keytab, cpu = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpu != "-":
        os.sched_setaffinity(0, {int(cpu)})
    app = make_app(kind, keytab)
    xheaders = kind not in {"floor", "kerb", "kerb-gssproxy"} and not os.environ.get(
        "BENCH_TLS_CERT"
    )
    profile_path = os.environ.get("BENCH_PROFILE")
    if not profile_path:
        asyncio.run(serve(app, xheaders))
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serve(app, xheaders))
    finally:
        profiler.disable()
        profiler.dump_stats(profile_path)


if __name__ == "__main__":
    main(sys.argv[1:])
