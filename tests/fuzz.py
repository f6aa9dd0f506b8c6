"""Live fuzz: hostile ``Authorization`` and ``Cookie`` headers against a real tornado_kerb server.

One application (``@authenticated`` handler writing the principal; Basic, sessions and
the Basic cache on) is served over HTTP and HTTPS. Each request's headers come from a
seeded generator: real SPNEGO tokens bit-flipped, truncated, extended or base64-corrupted;
random bytes and latin-1 text; odd schemes, casing and spacing; Basic with odd names and
passwords, and the real password mutated; duplicated ``Authorization`` headers; forged,
truncated and re-signed session cookies; and valid logins. They go out over raw sockets,
byte for byte as generated. An oracle (Tornado's own header parser, the library's
parsers, and what was really sent: a fresh token, the real password, a cookie signed with
the application's secret) says what each request must get, and the run checks:

* no response >= 500; every response the oracle's: 200 or 401 (no 403: nobody is refused
  by authorization here), or Tornado's own 400 exactly where Tornado's parser refuses the
  headers (counted apart), or a closed connection for a header block over
  ``max_header_size``;
* 200 exactly where the credentials were real (a mutated real token may pass), always
  with the real principal, and the server still serving a valid request at the end;
* a log (every logger at DEBUG) without tracebacks and without any secret that was sent
  or answered: the real password, any token's base64 (24 characters of it are enough),
  any cookie value;
* Basic attempts that reach the KDC stay a small share of the requests.

The big run brings its own realm, certificates and servers::

    python -m tests.fuzz --count 10000 [--seed S]

``tests/test_fuzz.py`` runs it at CI size against the test session's realm.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import dataclasses
import logging
import os
import pathlib
import random
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import gssapi
import tornado.httpserver
import tornado.httputil
import tornado.netutil
import tornado.web

from tests.clients import DELEGATE, MUTUAL, spnego_token
from tornado_kerb import KerberosAuthMixin, KerberosGuard, authenticated
from tornado_kerb._header import MAX_CREDENTIALS, split_authorization
from tornado_kerb._localname import aname_to_localname
from tornado_kerb.basic import parse_basic
from tornado_kerb.errors import AuthenticationFailed, LocalNameError
from tornado_kerb.negotiate import parse_negotiate
from tornado_kerb.session import decode_session, encode_session

ROOT = pathlib.Path(__file__).resolve().parent.parent
PATH = "/whoami"
COOKIE = "tornado_kerb_session"
SESSION_AGE = 3600  # the session setting's default max_age
# Above the library's own limit, so that its "too-large" check is what answers long
# credentials (Tornado's default, 64 kB for the whole header block, would cut them first).
MAX_HEADER = 4 * MAX_CREDENTIALS
# At most this share of the requests may make the server ask the KDC (Basic logins that
# parse, over HTTPS, not in the Basic cache): the fuzz must not turn into a KDC benchmark.
KDC_SHARE = 0.05
TIMEOUT = 30.0
_WINDOW = 24  # a secret leaks if this many of its characters appear in the log
_HEADER_END = re.compile(rb"\r?\n\r?\n")  # where Tornado ends a header block
CLOSED = 0  # "status" of a request the server answered by closing the connection
HANG = -1  # "status" of a request the server did not answer within TIMEOUT


@dataclasses.dataclass(frozen=True)
class Target:
    """What the fuzz needs to know: the service keytab, the realm and its user, TLS files."""

    keytab: str
    realm: str
    user: str  # principal, user@REALM
    password: str
    cert: str
    key: str
    ca: str
    kdc_log: str | None = None  # k5test's kdc.log, to count what reached the KDC


# -- the server -----------------------------------------------------------------------


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


class FuzzServer:
    """One application and guard, served over HTTP and HTTPS from its own IOLoop thread."""

    def __init__(self, target: Target, cookie_secret: str) -> None:
        self.guard = KerberosGuard(
            {
                "keytab": target.keytab,
                "hostname": "localhost",
                "realm": target.realm,
                "basic": True,
                "session": True,
                "basic_cache": True,
                # Thousands of wrong passwords in two seconds: the fuzzer checks what each
                # one is answered, not the guessing limits (tests/test_login.py does).
                "login_limits": {"per_principal": 10**6, "per_address": 10**6},
            }
        )
        self.app = tornado.web.Application(
            [(PATH, Whoami)], kerberos=self.guard, cookie_secret=cookie_secret
        )
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(target.cert, target.key)
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fuzz server did not start")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        servers = []
        for scheme, ctx in (("http", None), ("https", self._tls)):
            sockets = tornado.netutil.bind_sockets(0, "localhost")
            server = tornado.httpserver.HTTPServer(
                self.app, ssl_options=ctx, max_header_size=MAX_HEADER
            )
            server.add_sockets(sockets)
            self.ports[scheme] = sockets[0].getsockname()[1]
            servers.append(server)
        self._ready.set()
        await self._stopped.wait()
        for server in servers:
            server.stop()
            await server.close_all_connections()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)
        self.guard.close()


# -- the client: raw bytes out, status and headers back ---------------------------------


@dataclasses.dataclass
class Response:
    status: int  # CLOSED when the server closed the connection without an answer
    headers: list[tuple[str, str]]
    body: bytes

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


class Hang(Exception):
    """The server did not answer within TIMEOUT seconds."""


class Connection:
    """A keep-alive HTTP/1.1 connection that sends requests exactly as given."""

    def __init__(self, port: int, tls: ssl.SSLContext | None) -> None:
        self.port = port
        self._tls = tls
        self._sock: socket.socket | None = None
        self._file: Any = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._file = None

    def _connect(self) -> None:
        sock = socket.create_connection(("localhost", self.port), timeout=TIMEOUT)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname="localhost")
        self._sock, self._file = sock, sock.makefile("rb")

    def exchange(self, head: bytes) -> Response:
        for _ in range(2):
            reused = self._sock is not None
            if not reused:
                self._connect()
            assert self._sock is not None
            try:
                self._sock.sendall(head)
                status_line = self._file.readline(65536)
            except TimeoutError:
                self.close()
                raise Hang() from None
            except (OSError, ssl.SSLError):
                status_line = b""
            if status_line:
                return self._read(status_line)
            self.close()
            if not reused:  # a fresh connection closed on us: that is the answer
                return Response(CLOSED, [], b"")
            # else: a kept-alive connection the server had already closed; once more
        return Response(CLOSED, [], b"")

    def _read(self, status_line: bytes) -> Response:
        try:
            status = int(status_line.split()[1])
            headers = []
            while True:
                line = self._file.readline(65536)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers.append((name.strip().lower(), value.strip()))
            lengths = [int(v) for k, v in headers if k == "content-length"]
            if lengths:
                body = self._file.read(lengths[0])
                if any(k == "connection" and v.lower() == "close" for k, v in headers):
                    self.close()
            else:  # Tornado's own 400: no length, the connection ends the body
                body = self._file.read()
                self.close()
        except TimeoutError:
            self.close()
            raise Hang() from None
        return Response(status, headers, body)


def request_head(port: int, lines: list[bytes], eol: bytes = b"\r\n") -> bytes:
    head = b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: localhost:%d\r\n" % port
    return head + b"".join(line + eol for line in lines) + b"\r\n"


# -- the log ------------------------------------------------------------------------------


class Capture(logging.Handler):
    """Every record, as (logger, level, message, traceback text or "")."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception as err:  # a bad format string is worth reporting, not raising
            message = f"<unformattable {record.msg!r}: {err}>"
        trace = ""
        if record.exc_info or record.exc_text:
            trace = record.exc_text or logging.Formatter().formatException(record.exc_info)
        if record.stack_info:
            trace += record.stack_info
        self.records.append((record.name, record.levelno, message, trace))


@contextlib.contextmanager
def captured_log() -> Iterator[Capture]:
    """Every logger at DEBUG into one Capture, and only there while the fuzz runs (the
    records of ten thousand requests are not for a test report); restored afterwards.
    Exceptions that end a thread are recorded too."""
    root = logging.getLogger()
    loggers = [
        logger for logger in root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.handlers[:]) for logger in loggers]
    saved_root = root.level, root.handlers[:], root.manager.disable
    capture = Capture()
    logging.disable(logging.NOTSET)
    root.setLevel(logging.DEBUG)
    root.handlers[:] = [capture]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)  # DEBUG, from the root
        if not logger.propagate:
            logger.handlers[:] = [capture]
    errors: list[str] = []
    old_hook = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        errors.append(f"thread {args.thread!r}: {args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = hook
    try:
        yield capture
    finally:
        threading.excepthook = old_hook
        for logger, level, handlers in saved:
            logger.setLevel(level)
            logger.handlers[:] = handlers
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        logging.disable(saved_root[2])
        capture.records.extend(("threading", logging.CRITICAL, e, "Traceback") for e in errors)


def find_leaks(records: list[tuple[str, int, str, str]], secrets: dict[str, str]) -> list[str]:
    """Secrets (value -> what it is) of which ``_WINDOW`` characters appear in the log."""
    texts = {m for _, _, m, _ in records} | {t for _, _, _, t in records if t}
    windows: set[str] = set()
    for text in texts:
        windows.update(text[i : i + _WINDOW] for i in range(len(text) - _WINDOW + 1))
    leaks = []
    for secret, what in secrets.items():
        if len(secret) < _WINDOW:
            if any(secret in text for text in texts):
                leaks.append(f"{what}: {secret!r}")
        elif any(secret[i : i + _WINDOW] in windows for i in range(len(secret) - _WINDOW + 1)):
            leaks.append(f"{what}: {secret[:60]!r}…")
    return leaks


def tracebacks(records: list[tuple[str, int, str, str]]) -> list[str]:
    return [
        f"{name} {logging.getLevelName(level)}: {message[:200]} {trace[-400:]}"
        for name, level, message, trace in records
        if trace or "Traceback" in message
    ]


# -- what was sent, and what it must get ---------------------------------------------------


@dataclasses.dataclass
class Case:
    """One request's headers (lines without line ends) and what went into them."""

    category: str
    lines: list[bytes]
    secrets: dict[str, str] = dataclasses.field(default_factory=dict)
    fresh: set[bytes] = dataclasses.field(default_factory=set)  # real tokens, untouched
    derived: bool = False  # carries a mutated real token: the acceptor may still take it
    eol: bytes = b"\r\n"


@dataclasses.dataclass(frozen=True)
class Expect:
    statuses: frozenset[int]
    principal: str | None = None  # the body of a 200
    kdc: bool = False  # the server will ask the KDC
    why: str = ""


BAD_REQUEST = Expect(frozenset({400}), why="Tornado refuses the headers")
REFUSED = Expect(frozenset({401}))
MUTATED = "a mutated real token"


class Oracle:
    """What each request must get, from Tornado's header parser, the library's parsers
    and the ground truth of what was sent; it follows the tokens the server has seen
    (replays) and the passwords in its Basic cache."""

    def __init__(self, target: Target, cookie_secret: str) -> None:
        self.target = target
        self.secret = cookie_secret
        self.seen: set[bytes] = set()
        self.proven_at: float | None = None  # the real password, in the Basic cache

    def expect(self, case: Case, head: bytes, https: bool) -> Expect:
        if len(head) > MAX_HEADER:
            return Expect(frozenset({CLOSED}), why="header block over max_header_size")
        # Tornado's own steps (HTTP1Connection._parse_headers).
        text = head.decode("latin-1").lstrip("\r\n")
        try:
            headers = tornado.httputil.HTTPHeaders.parse(text[text.find("\n") :])
        except tornado.httputil.HTTPInputError:
            return BAD_REQUEST
        try:
            scheme, credentials = split_authorization(headers.get("Authorization", ""))
            if scheme == "negotiate":
                token = parse_negotiate(credentials)
                return self._token(case, token)
            if scheme == "basic" and https:
                principal, password = parse_basic(credentials, self.target.realm)
                return self._password(principal, password)
            if not scheme and https:  # session "http" is off: never taken on plain HTTP
                return self._cookie(headers.get("Cookie"))
        except AuthenticationFailed:
            pass
        return REFUSED

    def _token(self, case: Case, token: bytes) -> Expect:
        replay = token in self.seen
        self.seen.add(token)
        if token in case.fresh and not replay:
            return Expect(frozenset({200}), self.target.user, why="a fresh real token")
        if case.derived and not replay:
            return Expect(frozenset({200, 401}), self.target.user, why=MUTATED)
        return REFUSED

    def _password(self, principal: str, password: str) -> Expect:
        if principal != self.target.user or password != self.target.password:
            return Expect(REFUSED.statuses, kdc=True, why="a password to try at the KDC")
        now = time.time()
        cached = self.proven_at is not None and now - self.proven_at < 240
        if not cached:
            self.proven_at = now
        return Expect(frozenset({200}), principal, kdc=not cached, why="the real password")

    def _cookie(self, header: str | None) -> Expect:
        if not header or COOKIE not in header:
            return REFUSED
        value = tornado.httputil.parse_cookie(header).get(COOKIE)
        if value is None:
            return REFUSED
        raw = tornado.web.decode_signed_value(
            self.secret, COOKIE, value, max_age_days=SESSION_AGE / 86400, min_version=2
        )
        session = decode_session(raw, time.time()) if raw else None
        if session is None or session.principal.rpartition("@")[2] != self.target.realm:
            return REFUSED
        try:  # a principal krb5 cannot parse or map: the cookie is ignored
            aname_to_localname(session.principal)
        except LocalNameError:
            return REFUSED
        why = f"a cookie signed by the server for {session.principal[:60]!r}"
        return Expect(frozenset({200}), session.principal, why=why)


# -- the generator ------------------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Printable, legal in a header value (tab, visible ASCII, latin-1's obs-text), not base64.
_JUNK = "!\"#$%&'()*,-.:;<>?@[\\]^_`{|}~\t \xa0\xe9\xff"
_LATIN1 = [chr(c) for c in (9, *range(0x20, 0x7F), *range(0xA0, 0x100))]
# Odd pieces of user names and passwords: scripts, invisible and direction characters, C0
# and C1 controls, Kerberos's own separators.
_ODD = [
    *"abcxyzABC019._-+=!$%&*~ éüßｕ",
    *("用户", "пароль", "😀"),
    *"\u200b\u202e\u2028\ufeff\u0301\xa0",  # invisible, direction, line break, combining
    *"\x00\x01\x1b\x7f\x85\t:@/\\",  # C0, DEL, C1; Kerberos's separators and escape
]


def _casing(rng: random.Random, word: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in word)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pick(rng: random.Random, n: int) -> int:
    """An index below ``n`` from exactly one draw, so that the seed's stream does not
    depend on ``n`` (tokens and cookies differ in length from run to run)."""
    return int(rng.random() * n)


def _odd_text(rng: random.Random, low: int, high: int) -> str:
    return "".join(rng.choice(_ODD) for _ in range(rng.randint(low, high)))


class Generator:
    """Seeded request headers; real tokens and cookies come from the realm and server."""

    def __init__(self, rng: random.Random, target: Target, cookie_secret: str) -> None:
        self.rng = rng
        self.target = target
        self.secret = cookie_secret
        self.name = target.user.rpartition("@")[0]
        self.cookies: list[str] = []  # real session cookies, as Set-Cookie gave them
        self.https = False
        weighted: list[tuple[Callable[[], Case], float]] = [
            (self.valid_token, 3),
            (self.valid_password, 1),
            (self.valid_cookie, 1),
            (self.token_mutation, 15),
            (self.base64_corruption, 6),
            (self.odd_scheme, 8),
            (self.random_bytes, 6),
            (self.random_text, 5),
            (self.odd_basic, 12),
            (self.password_mutation, 4),
            (self.duplicates, 6),
            (self.cookie, 12),
            (self.odd_header, 4),
            (self.too_large, 1),
        ]
        self._makers = [m for m, _ in weighted]
        self._weights = [w for _, w in weighted]

    def next(self) -> Case:
        return self.rng.choices(self._makers, self._weights)[0]()

    # -- ingredients --

    def token(self) -> bytes:
        """A fresh SPNEGO token (sometimes delegating), or now and then a raw krb5 one."""
        roll = self.rng.random()
        if roll < 0.05:
            ctx = gssapi.SecurityContext(
                name=gssapi.Name("HTTP@localhost", gssapi.NameType.hostbased_service),
                usage="initiate",
                mech=gssapi.MechType.kerberos,
            )
            return bytes(ctx.step())
        return spnego_token(flags=MUTUAL | DELEGATE if roll < 0.2 else MUTUAL)

    def token_text(self, case: Case) -> str:
        """A fresh token's base64, noted in ``case`` as a real token and a secret."""
        token = self.token()
        case.fresh.add(token)
        text = _b64(token)
        case.secrets[text] = "token"
        return text

    def negotiate(self, case: Case) -> str:
        return f"Negotiate {self.token_text(case)}"

    def basic(self, case: Case, user: str, password: str, scheme: str = "Basic") -> str:
        text = _b64(f"{user}:{password}".encode())
        self._basic_secrets(case, text, password)
        return f"{scheme} {text}"

    def _basic_secrets(self, case: Case, text: str, password: str) -> None:
        if len(text) > 20:
            case.secrets[text] = "Basic credentials"
        if password == self.target.password:
            case.secrets[password] = "the real password"
        elif len(password) >= _WINDOW:
            case.secrets[password] = "a password"

    def cookie_value(self) -> str:
        # The newest: picking among them would make the seed's stream depend on answers.
        return self.cookies[-1] if self.cookies else self.signed(self.payload())

    def signed(self, payload: str | bytes, secret: str | None = None, **kwargs: Any) -> str:
        value = tornado.web.create_signed_value(secret or self.secret, COOKIE, payload, **kwargs)
        return value.decode("ascii")

    def payload(self) -> str:
        return encode_session(self.target.user, "negotiate", time.time() + 600)

    @staticmethod
    def auth(value: str | bytes, name: bytes = b"Authorization") -> bytes:
        raw = value.encode("latin-1") if isinstance(value, str) else value
        return name + b": " + raw

    # -- valid logins --

    def valid_token(self) -> Case:
        case = Case("valid-token", [])
        case.lines.append(self.auth(self.negotiate(case)))
        return case

    def valid_password(self) -> Case:
        case = Case("valid-password", [])  # over plain HTTP: refused, sent nowhere
        user = self.rng.choice([self.name, self.target.user])
        case.lines.append(self.auth(self.basic(case, user, self.target.password)))
        return case

    def valid_cookie(self) -> Case:
        value = self.cookie_value()
        case = Case("valid-cookie", [b"Cookie: " + f"{COOKIE}={value}".encode()])
        case.secrets[value.strip('"')] = "cookie"
        return case

    # -- mutated tokens --

    def token_mutation(self) -> Case:
        rng = self.rng
        original = self.token()
        token = bytearray(original)
        kind = rng.choice(
            "bitflip bitflips truncate extend prepend byte zeros length splice ntlm repeat".split()
        )
        if kind == "bitflip":
            i = _pick(rng, len(token) * 8)
            token[i // 8] ^= 1 << (i % 8)
        elif kind == "bitflips":
            for _ in range(rng.randint(2, 16)):
                i = _pick(rng, len(token) * 8)
                token[i // 8] ^= 1 << (i % 8)
        elif kind == "truncate":
            del token[rng.choice([rng.randint(0, 16), _pick(rng, len(token))]) :]
        elif kind == "extend":
            token += rng.randbytes(rng.choice([1, 2, rng.randint(3, 64), rng.randint(65, 4000)]))
        elif kind == "prepend":
            token[:0] = rng.randbytes(rng.randint(1, 8))
        elif kind == "byte":
            token[_pick(rng, len(token))] = rng.randrange(256)
        elif kind == "zeros":
            start = _pick(rng, len(token))
            token[start : start + rng.randint(1, 64)] = b"\x00" * rng.randint(1, 64)
        elif kind == "length":  # the outer DER length, or one inside
            token[rng.choice([1, 2, 3, _pick(rng, len(token))])] = rng.choice(
                [0, 0x7F, 0x80, 0x84, 0xFF]
            )
        elif kind == "splice":
            other = self.token()
            token = token[: _pick(rng, len(token))] + other[_pick(rng, len(other)) :]
        elif kind == "ntlm":
            token[:0] = b"NTLMSSP\x00"
        else:
            token = token * rng.randint(2, 3)
        # A mutation that changed nothing (a byte set to its own value) is the real token.
        case = Case(f"token-{kind}", [], fresh={original}, derived=True)
        text = _b64(bytes(token))
        if len(text) > 20:
            case.secrets[text] = "mutated token"
        case.lines.append(self.auth(f"Negotiate {text}"))
        return case

    def base64_corruption(self) -> Case:
        rng = self.rng
        token = self.token()
        # A corruption the decoder forgives (bits after the last byte) gives the real token.
        case = Case("", [], fresh={token}, derived=True)
        text = _b64(token)
        kind = rng.choice(
            "junk delete unpadded padding urlsafe swapcase space tab comma cut double "
            "last-bits".split()
        )
        at = 1 + _pick(rng, len(text) - 5)
        if kind == "junk":
            text = text[:at] + rng.choice(_JUNK) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + rng.randint(1, 3) :]
        elif kind == "unpadded":
            text = text.rstrip("=")
        elif kind == "padding":
            text += "=" * rng.randint(1, 3)
        elif kind == "urlsafe":
            text = text.replace("+", "-").replace("/", "_")
        elif kind == "swapcase":
            text = text[:at] + text[at].swapcase() + text[at + 1 :]
        elif kind == "space":
            text = text[:at] + " " * rng.randint(1, 3) + text[at:]
        elif kind == "tab":
            text = text[:at] + "\t" + text[at:]
        elif kind == "comma":
            text = text[:at] + "," + text[at:]
        elif kind == "cut":
            text = text[: 1 + _pick(rng, len(text) - 1)]
        elif kind == "double":
            text = text + text
        else:  # the last character's low bits: past the last byte when there is padding
            body = text.rstrip("=")
            last = _B64[_B64.index(body[-1]) ^ rng.randint(1, 3)]
            text = body[:-1] + last + text[len(body) :]
        case.category = f"base64-{kind}"
        if len(text) > 20:
            case.secrets[text] = "corrupted token"
        case.lines.append(self.auth(f"Negotiate {text}"))
        return case

    # -- schemes, spacing, garbage --

    def odd_scheme(self) -> Case:
        rng = self.rng
        case = Case("odd-scheme", [])
        scheme = rng.choice(
            [_casing(rng, "Negotiate")] * 6
            + ["Negotiate:", "Negotiate=", "Nego", "Negotiated", "Kerberos", "SPNEGO", "NTLM"]
            + ["Bearer", "Basic", "N\xe9gotiate", "Negotiate\xa0", '"Negotiate"', "Negotiate,"]
        )
        token = self.token_text(case)
        sep = rng.choice([" ", " ", "  ", " " * rng.randint(3, 300), "\t", " \t", "\t ", ""])
        pre = rng.choice(["", "", " ", "\t", " " * rng.randint(2, 50), " \t "])
        post = rng.choice(["", "", " ", "\t", "  ", " ,", " x", ",", " " * rng.randint(2, 50)])
        case.lines.append(self.auth(pre + scheme + sep + token + post))
        return case

    def random_bytes(self) -> Case:
        rng = self.rng
        n = rng.choice([0, rng.randint(1, 16), rng.randint(17, 300), rng.randint(1000, 3000)])
        raw = bytes(b for b in rng.randbytes(n) if b not in b"\r\n")
        prefix = rng.choice([b"", b"", b"Negotiate ", b"Basic ", b"negotiate", b"NTLM "])
        return Case("random-bytes", [self.auth(prefix + raw)])

    def random_text(self) -> Case:
        rng = self.rng
        n = rng.choice([rng.randint(0, 16), rng.randint(17, 300), rng.randint(1000, 3000)])
        text = "".join(rng.choice(_LATIN1) for _ in range(n))
        prefix = rng.choice(["", "", "Negotiate ", "Basic ", "Digest ", "Bearer "])
        return Case("random-text", [self.auth(prefix + text)])

    # -- Basic --

    def odd_user(self) -> str:
        rng = self.rng
        realm, name = self.target.realm, self.name
        forms: list[Callable[[], str]] = [
            lambda: "",
            lambda: rng.choice(["\x00", "\x01", "\x1b", "\x7f", "\t", "\n"]).join([name, ""]),
            lambda: f"{name}\x00@{realm}",
            lambda: f"{name}@",
            lambda: f"@{realm}",
            lambda: f"{name}@{realm.lower()}",
            lambda: f"{name}@EVIL.EXAMPLE",
            lambda: f"{name}@{realm}@{realm}",
            lambda: f"a@b@{realm}",
            lambda: rng.choice(["user/admin", "HTTP/localhost", f"krbtgt/{realm}", f"a/b@{realm}"]),
            lambda: rng.choice(["DOM\\user", "user\\", f"{name}\\@{realm}"]),
            lambda: "u" * rng.choice([257, rng.randint(258, 5000)]),
            lambda: _odd_text(rng, 1, 40) + rng.choice(["\x00", "/", "@EVIL", "\x1b", "\\"]),
            lambda: f"{_odd_text(rng, 0, 10)}@{_odd_text(rng, 0, 10)}",
            # These parse and go to the KDC, which knows no such user: kept rare.
            lambda: _odd_text(rng, 1, 12) if rng.random() < 0.3 else "",
            lambda: (
                rng.choice([" ", "ü", "\u200b", "\x85"]) + f"{name}@{realm}"
                if rng.random() < 0.3
                else "@"
            ),
        ]
        return rng.choice(forms)()

    def odd_password(self) -> str:
        rng = self.rng
        forms: list[Callable[[], str]] = [
            lambda: "",
            lambda: _odd_text(rng, 1, 30),
            lambda: "a:b:c" + _odd_text(rng, 0, 5),
            lambda: "p" * rng.choice([1024, 1025, rng.randint(1026, 6000)]),
            lambda: " ",
            lambda: "\x00" * rng.randint(1, 4),
            lambda: self.target.password + "\x00",
        ]
        return rng.choice(forms)()

    def odd_basic(self) -> Case:
        rng = self.rng
        case = Case("odd-basic", [])
        user, password = self.odd_user(), self.odd_password()
        shape = rng.choice(["pair", "pair", "pair", "no-colon", "colons", "latin-1", "utf-16"])
        text = f"{user}:{password}"
        raw = text.encode()
        if shape == "no-colon":
            raw = user.encode() + password.encode()
        elif shape == "colons":
            raw = b":" * rng.randint(1, 3) + raw
        elif shape == "latin-1":
            raw = text.encode("latin-1", "replace")
        elif shape == "utf-16":
            raw = text.encode("utf-16")
        encoded = _b64(raw)
        if rng.random() < 0.1:
            encoded = encoded[: rng.randint(0, len(encoded))] + rng.choice(["", "!", "=", " x"])
        scheme = rng.choice(["Basic"] * 4 + [_casing(rng, "basic"), "Basic  ", "Basic\t"])
        self._basic_secrets(case, encoded, password)
        case.lines.append(self.auth(f"{scheme} {encoded}"))
        return case

    def password_mutation(self) -> Case:
        rng = self.rng
        pw, name, realm = self.target.password, self.name, self.target.realm
        user = rng.choice(
            [name] * 4
            + [self.target.user] * 2
            + [name.upper(), name.capitalize(), f"{name}@{realm.lower()}", f" {name}"]
            + [f"{name}/admin", f"{name}@OTHER.EXAMPLE", f"{name}\x00", f"{name}@{realm}."]
        )
        at = _pick(rng, len(pw))
        password = rng.choice(
            [
                pw + rng.choice(["x", "1", " ", "é", "\u200b"]),
                pw[:-1],
                pw[1:],
                pw[:at] + pw[at].swapcase() + pw[at + 1 :] if pw[at].isalpha() else pw + "!",
                pw[:at] + rng.choice(["\x00", "\x1b", "\x7f", "\t"]) + pw[at:],
                f" {pw}",
                f"{pw} ",
                pw.upper(),
                pw + pw,
                pw[: len(pw) // 2],
                f"{pw}:{pw}",
                pw.replace("e", "е"),  # Cyrillic е: looks the same, is not
                pw,  # the real one, with one of the users above
            ]
        )
        case = Case("password-mutation", [])
        case.lines.append(self.auth(self.basic(case, user, password)))
        case.secrets[pw] = "the real password"
        return case

    # -- headers twice, cookies, header names --

    def duplicates(self) -> Case:
        rng = self.rng
        case = Case("duplicate-authorization", [])
        names = [b"Authorization", b"authorization", b"AUTHORIZATION"]
        pieces: list[Callable[[], str]] = [
            lambda: self.negotiate(case),
            lambda: self.basic(case, self.name, self.target.password),
            lambda: "Negotiate YII=",
            lambda: "Negotiate",
            lambda: "Basic",
            lambda: "",
            lambda: "Bearer abc.def",
            lambda: "Basic " + _b64(rng.randbytes(rng.randint(1, 30))),
        ]
        for i in range(rng.choice([2, 2, 2, 3])):
            if i and rng.random() < 0.2:
                case.lines.append(b"X-Between: 1")
            case.lines.append(self.auth(rng.choice(pieces)(), rng.choice(names)))
        return case

    def cookie(self) -> Case:
        rng = self.rng
        real = self.cookie_value()  # as the browser sends it back (quoted, if it was)
        bare = real.strip('"')
        kind = rng.choice(
            "among-others quoted truncated flipped appended other-secret payload payload payload "
            "old future v1 other-name garbage empty twice name-case with-authorization huge "
            "payload-unmappable".split()
        )
        case = Case(f"cookie-{kind}", [])
        value, name, others = real, COOKIE, []
        if kind == "among-others":
            value = f"{real}; c=d"
            name = f"a=b; {COOKIE}"
        elif kind == "quoted":
            value = f'"{bare}"'
        elif kind == "truncated":
            value = bare[: _pick(rng, len(bare))]
        elif kind == "flipped":
            at = _pick(rng, len(bare))
            value = bare[:at] + rng.choice("0aZ|:=") + bare[at + 1 :]
        elif kind == "appended":
            value = bare + rng.choice(["0", "|", "|x", "==", "a" * 40])
        elif kind == "other-secret":
            value = self.signed(self.payload(), secret="another secret entirely, 0123456789")
        elif kind == "payload":  # signed by the server's own secret: only the payload is odd
            value = self.signed(self.odd_payload())
        elif kind == "payload-unmappable":
            # Found by this fuzz (it answered 503 "unusable" then): a cookie signed with
            # the application's secret whose principal libkrb5 cannot parse or map to a
            # local name (a NUL, an empty name, a second "@", a local name over 1023
            # bytes) is ignored like any other bad cookie. Only a holder of cookie_secret
            # can make one: the server never signs such a principal.
            name_part = rng.choice(["a\x00b", "", "a@b", "x" * 1100])
            principal = f"{name_part}@{self.target.realm}"
            value = self.signed(encode_session(principal, "negotiate", time.time() + 600))
        elif kind == "old":
            value = self.signed(self.payload(), clock=lambda: time.time() - 2 * SESSION_AGE)
        elif kind == "future":
            value = self.signed(self.payload(), clock=lambda: time.time() + 86400)
        elif kind == "v1":
            value = self.signed(self.payload(), version=1)
        elif kind == "other-name":
            value = tornado.web.create_signed_value(self.secret, "other", self.payload()).decode()
        elif kind == "garbage":
            value = "".join(rng.choice(_LATIN1[1:]) for _ in range(rng.randint(1, 200)))
        elif kind == "empty":
            value = ""
        elif kind == "twice":
            others.append(b"Cookie: " + rng.choice([b"x=1", f"{COOKIE}=junk".encode()]))
        elif kind == "name-case":
            name = COOKIE.upper()
        elif kind == "with-authorization":
            auth = rng.choice([self.negotiate, lambda _: "Negotiate YII=", lambda _: "Bogus x"])
            others.append(self.auth(auth(case)))
        else:
            value = self.signed(self.payload() + "x" * rng.randint(2000, 20000))
        line = b"Cookie: " + f"{name}={value}".encode("latin-1")
        case.lines = [line, *others] if rng.random() < 0.5 else [*others, line]
        if len(value) > 20:
            case.secrets[value.strip('"')] = "cookie"
        return case

    def odd_payload(self) -> str | bytes:
        rng = self.rng
        user, realm, now = self.target.user, self.target.realm, int(time.time())
        name = self.name
        # Without NUL, "@" and "\\", which libkrb5 refuses in a name (payload-unmappable).
        odd_name = "".join(c for c in _odd_text(rng, 1, 20) if c not in "\0@\\") or "x"
        return rng.choice(
            [
                f"1|n|{now + 600}|{user}",
                f"1|b|{now + 600}|{user}",
                f"1|n|{now + 600}|alice@{realm}",
                f"1|n|{now + 600}|{name}@EVIL.EXAMPLE",
                f"1|n|{now - 1}|{user}",
                f"2|n|{now + 600}|{user}",
                f"1|x|{now + 600}|{user}",
                f"1|n|{now + 600}",
                f"1|n|{now + 600}|",
                f"1|n|{now + 600}|a|b@{realm}",
                f"1|n|{now + 600}|ü用户@{realm}",
                f"1|n|x{now}|{user}",
                f"1|n| {now + 600}|{user}",
                f"1|n|{'9' * 30}|{user}",
                f"1|n|{'9' * 5000}|{user}",
                f"1|n|{now + 600}|{odd_name}@{realm}",
                "",
                "|||",
                rng.randbytes(rng.randint(1, 64)),
                b"1|n|\xff\xfe|" + user.encode(),
            ]
        )

    def odd_header(self) -> Case:
        rng = self.rng
        kind = rng.choice(
            "proxy lower upper space-before-colon no-colon empty folded lf-only bare-cr "
            "x-authorization nul-name no-space".split()
        )
        case = Case(f"header-{kind}", [])
        if kind == "proxy":
            case.lines.append(self.auth(self.negotiate(case), b"Proxy-Authorization"))
            case.fresh.clear()  # never reaches the acceptor
        elif kind in ("lower", "upper"):
            name = b"authorization" if kind == "lower" else b"AUTHORIZATION"
            case.lines.append(self.auth(self.negotiate(case), name))
        elif kind == "space-before-colon":
            case.lines.append(b"Authorization : Negotiate YIIB")
        elif kind == "no-colon":
            case.lines.append(b"Authorization Negotiate YIIB")
        elif kind == "empty":
            case.lines.append(
                rng.choice([b"Authorization:", b"Authorization: ", b"Authorization:\t"])
            )
        elif kind == "folded":
            case.lines += [b"Authorization: Negotiate", b" YIIBgarbage"]
        elif kind == "lf-only":  # Tornado 6.6 still reads bare LF line ends
            case.lines.append(self.auth(self.negotiate(case)))
            case.eol = b"\n"
        elif kind == "bare-cr":
            case.lines.append(b"Authorization: Negotiate YII\rB")
        elif kind == "x-authorization":
            case.lines.append(self.auth(self.negotiate(case), b"X-Authorization"))
            case.fresh.clear()
        elif kind == "nul-name":
            case.lines.append(b"Author\x00ization: Negotiate YIIB")
        else:
            case.lines.append(self.auth(self.negotiate(case)).replace(b": ", b":"))
        return case

    def too_large(self) -> Case:
        rng = self.rng
        longer = rng.randint(MAX_CREDENTIALS + 2, 3 * MAX_CREDENTIALS)
        n = rng.choice([MAX_CREDENTIALS - 3, MAX_CREDENTIALS, MAX_CREDENTIALS + 1, longer])
        n = MAX_HEADER + 100 if rng.random() < 0.1 else n  # the whole block: Tornado's limit
        scheme = rng.choice(["Negotiate", "Basic", "Bogus"])
        return Case("too-large", [self.auth(f"{scheme} " + "A" * n)])


# -- the run ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    seed: int
    statuses: dict[str, collections.Counter[int]] = dataclasses.field(default_factory=dict)
    categories: dict[str, collections.Counter[int]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (kind, what)
    tracebacks: list[str] = dataclasses.field(default_factory=list)
    leaks: list[str] = dataclasses.field(default_factory=list)
    kdc_expected: int = 0  # Basic logins the oracle says reached the KDC
    kdc_log_lines: int | None = None  # AS_REQ and TGS_REQ lines kdc.log grew by
    mutations_accepted: int = 0
    requests: int = 0
    seconds: float = 0.0
    log_records: int = 0

    @property
    def passed(self) -> bool:
        return not (self.failures or self.tracebacks or self.leaks)

    @property
    def total(self) -> collections.Counter[int]:
        total: collections.Counter[int] = collections.Counter()
        for counts in self.statuses.values():
            total.update(counts)
        return total

    def summary(self) -> str:
        def row(counts: collections.Counter[int], sep: str = ", ") -> str:
            names = {CLOSED: "closed", HANG: "hang"}
            return sep.join(f"{names.get(s, s)}: {n}" for s, n in sorted(counts.items()))

        total = self.total
        out = [
            f"seed {self.seed}: {self.requests} requests in {self.seconds:.1f} s "
            f"({self.requests / max(self.seconds, 1e-9):.0f} requests/s), "
            f"{self.log_records} log records checked",
            *(f"  {transport:6} {row(counts)}" for transport, counts in self.statuses.items()),
            f"  total  {row(total)}",
            f"  >= 500: {sum(n for s, n in total.items() if s >= 500)}; Tornado's own 400: "
            f"{total[400]}; closed for a header block over {MAX_HEADER} bytes: {total[CLOSED]}",
            f"  KDC: {self.kdc_expected} Basic logins reached it "
            f"({self.kdc_expected / max(self.requests, 1):.1%} of the requests; kdc.log grew by "
            f"{self.kdc_log_lines} AS_REQ/TGS_REQ lines); mutated real tokens accepted: "
            f"{self.mutations_accepted}",
            "  per category:",
            *(f"    {c:32} {row(n, ' ')}" for c, n in sorted(self.categories.items())),
        ]
        kinds: dict[str, list[str]] = collections.defaultdict(list)
        for kind, what in self.failures:
            kinds[kind].append(what)
        if kinds:
            out.append(f"  failures ({len(self.failures)}), by kind, with the first of each:")
            out += [f"    {len(w)} x {kind}: {w[0]}" for kind, w in sorted(kinds.items())]
        for title, items in (
            ("tracebacks in the log", self.tracebacks),
            ("secrets in the log", self.leaks),
        ):
            if items:
                out.append(f"  {title} ({len(items)}):")
                out += [f"    {item}" for item in items[:30]]
        out.append("PASS" if self.passed else f"FAIL (seed {self.seed})")
        return "\n".join(out)


def _kdc_lines(path: str | None) -> int | None:
    if path is None or not os.path.exists(path):
        return None
    text = pathlib.Path(path).read_text(errors="replace")
    return text.count("AS_REQ") + text.count("TGS_REQ")


def _show(lines: list[bytes]) -> str:
    shown = repr(b"\r\n".join(lines))
    return shown if len(shown) <= 300 else f"{shown[:300]}… ({len(shown)} chars)"


class Run:
    """One fuzz run: the server, a connection per transport, the oracle, the findings."""

    def __init__(self, target: Target, seed: int) -> None:
        rng = random.Random(seed)
        self.secret = f"fuzz-cookie-secret-{rng.getrandbits(128):032x}"
        self.target = target
        self.result = Result(seed)
        self.oracle = Oracle(target, self.secret)
        self.generator = Generator(rng, target, self.secret)
        self.secrets: dict[str, str] = {target.password: "the real password"}

    def transport(self, server: FuzzServer, https: bool, count: int) -> None:
        name = "https" if https else "http"
        self.generator.https = https
        port = server.ports[name]
        tls = ssl.create_default_context(cafile=self.target.ca) if https else None
        conn = Connection(port, tls)
        counts = self.result.statuses.setdefault(name, collections.Counter())
        try:
            # First a valid login: over HTTPS it brings the session cookie to forge from.
            cases = [self.generator.valid_token()]
            for i in range(count):
                case = cases.pop() if cases else self.generator.next()
                counts[self.one(case, f"{name} #{i}", port, conn)] += 1
            # Whatever came before, a valid login on a new connection still works.
            conn.close()
            final = self.generator.valid_token()
            final.category = "final-valid-token"
            counts[self.one(final, f"{name} final", port, conn)] += 1
        finally:
            conn.close()

    def one(self, case: Case, where: str, port: int, conn: Connection) -> int:
        """Send one case, check its answer; returns the status."""
        result = self.result
        head = request_head(port, case.lines, case.eol)
        end = _HEADER_END.search(head)
        assert end is not None and end.end() == len(head), f"generator bug: {_show(case.lines)}"
        expect = self.oracle.expect(case, head, port == self.https_port)
        # Tornado logs the value of a header it refuses: only garbage may go there.
        assert not (expect == BAD_REQUEST and case.secrets), f"generator bug: {_show(case.lines)}"
        self.secrets.update(case.secrets)
        where = f"[seed {result.seed} {where} {case.category}]"
        result.kdc_expected += expect.kdc
        try:
            response = conn.exchange(head)
        except Hang:
            what = f"{where} no answer in {TIMEOUT:.0f} s to {_show(case.lines)}"
            result.failures.append((f"{case.category}: hang", what))
            return HANG
        result.requests += 1
        status = response.status
        result.categories[case.category][status] += 1
        self._note_secrets(response)
        if status >= 500 or status not in expect.statuses:
            body = response.body[:120].decode("utf-8", "replace")
            what = (
                f"{where} got {status} {body!r}, expected {sorted(expect.statuses)} "
                f"({expect.why or 'refused'}) for {_show(case.lines)}"
            )
            result.failures.append((f"{case.category}: {status}", what))
        elif status == 200:
            principal = response.body.decode("utf-8", "replace")
            if principal != expect.principal:
                what = (
                    f"{where} 200 as {principal!r}, not {expect.principal!r}: {_show(case.lines)}"
                )
                result.failures.append((f"{case.category}: 200 as someone else", what))
            result.mutations_accepted += expect.why == MUTATED
        return status

    def _note_secrets(self, response: Response) -> None:
        # What the server answers is as secret as what was sent: the mutual-authentication
        # token, and the session cookie (which the generator forges from next).
        for value in response.all("www-authenticate"):
            scheme, _, token = value.partition(" ")
            if scheme == "Negotiate" and token:
                self.secrets[token] = "mutual-authentication token"
        for value in response.all("set-cookie"):
            name, _, rest = value.partition("=")
            cookie = rest.split(";", 1)[0]
            if name == COOKIE and cookie.strip('"'):  # not the clearing of a bad one
                self.secrets[cookie.strip('"')] = "cookie"
                self.generator.cookies = [*self.generator.cookies[-7:], cookie]

    def run(self, count: int) -> Result:
        result = self.result
        kdc_before = _kdc_lines(self.target.kdc_log)
        with captured_log() as log:
            server = FuzzServer(self.target, self.secret)
            self.https_port = server.ports["https"]
            started = time.perf_counter()
            try:
                # HTTPS first: its logins bring the session cookies that both then forge.
                self.transport(server, True, count - count // 2)
                self.transport(server, False, count // 2)
            finally:
                result.seconds = time.perf_counter() - started
                server.stop()
        kdc_after = _kdc_lines(self.target.kdc_log)
        if kdc_before is not None and kdc_after is not None:
            result.kdc_log_lines = kdc_after - kdc_before
        result.log_records = len(log.records)
        result.tracebacks = tracebacks(log.records)
        result.leaks = find_leaks(log.records, self.secrets)
        if result.kdc_expected > KDC_SHARE * result.requests:
            what = (
                f"{result.kdc_expected} of {result.requests} requests reached the KDC, more "
                f"than {KDC_SHARE:.0%}: the fuzz would measure the KDC (seed {result.seed})"
            )
            result.failures.append(("KDC share", what))
        return result


def run(target: Target, count: int, seed: int) -> Result:
    """``count`` fuzzed requests (half over HTTPS, then half over HTTP) against one server,
    plus a valid login at the start and end of each transport."""
    return Run(target, seed).run(count)


# -- the command line ----------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_target() -> Iterator[Target]:
    """A realm of its own (always stopped), HTTP/localhost's keytab, dev certificates."""
    from tornado_kerb.testing import start_realm

    saved = dict(os.environ)
    k5 = None
    with tempfile.TemporaryDirectory(prefix="tornado_kerb-fuzz-") as tmp:
        try:
            subprocess.run(
                [str(ROOT / "certs" / "make-dev-certs.sh"), tmp],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            k5 = start_realm(krb5_conf={"libdefaults": {"forwardable": "true"}}, get_creds=False)
            os.environ.update(k5.env)  # the in-process clients and server read it
            k5.addprinc("HTTP/localhost")
            keytab = os.path.join(k5.tmpdir, "http.keytab")
            k5.extract_keytab("HTTP/localhost", keytab)
            password = k5.password("user")
            k5.kinit(k5.user_princ, password, flags=["-f"])
            yield Target(
                keytab,
                k5.realm,
                k5.user_princ,
                password,
                os.path.join(tmp, "localhost.pem"),
                os.path.join(tmp, "localhost.key"),
                os.path.join(tmp, "ca.pem"),
                os.path.join(k5.tmpdir, "kdc.log"),
            )
        finally:
            os.environ.clear()
            os.environ.update(saved)
            if k5 is not None:
                k5.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--count", type=int, default=10000, help="requests, half per transport")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"fuzzing with --count {args.count} --seed {seed}", flush=True)
    with throwaway_target() as target:
        result = run(target, args.count, seed)
    print(result.summary())
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
