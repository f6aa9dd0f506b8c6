"""Session cookies and the Basic result cache: skipping GSSAPI and the KDC on repeat requests.

Nothing here imports Tornado: the cookie's *payload* is made and read here, and the guard
signs it with Tornado's ``set_signed_cookie`` (signature version 2: HMAC-SHA256, with key
rotation through the application's ``cookie_secret`` dict and ``key_version``).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from typing import Any, NamedTuple

from .errors import ConfigurationError
from .user import Mechanism

__all__ = ["BasicCache", "BasicCacheOptions", "SessionOptions", "decode_session", "encode_session"]

_VERSION = "1"
_MECHANISMS: dict[str, str] = {"negotiate": "n", "basic": "b"}
_BY_LETTER: dict[str, Mechanism] = {"n": "negotiate", "b": "basic"}


@dataclasses.dataclass(frozen=True)
class SessionOptions:
    """The ``session`` setting: ``True`` for these defaults, or a dict of them."""

    #: Cookie name.
    name: str = "tornado_kerb_session"
    #: Cookie path.
    path: str = "/"
    #: Longest life of a session in seconds; never longer than the user's ticket.
    max_age: int = 3600
    #: Also set the cookie on plain HTTP, where anyone on the path can copy and replay it.
    http: bool = False

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.isascii() or not name.isidentifier():
            raise ConfigurationError(f"kerberos setting 'session': bad cookie name {name!r}")
        if not isinstance(self.path, str) or not self.path.startswith("/") or ";" in self.path:
            raise ConfigurationError("kerberos setting 'session': path must start with '/'")
        _positive("session", "max_age", self.max_age)
        if not isinstance(self.http, bool):
            raise ConfigurationError("kerberos setting 'session': http must be True or False")


@dataclasses.dataclass(frozen=True)
class BasicCacheOptions:
    """The ``basic_cache`` setting: ``True`` for these defaults, or a dict of them."""

    #: Most remembered logins (least recently used go first).
    entries: int = 1024
    #: Longest time in seconds a proven password is trusted without the KDC (Apache's
    #: ``GssapiBasicTicketTimeout`` default); never longer than the user's ticket.
    ttl: int = 300

    def __post_init__(self) -> None:
        _positive("basic_cache", "entries", self.entries)
        _positive("basic_cache", "ttl", self.ttl)


def _positive(setting: str, key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"kerberos setting {setting!r}: {key} must be an integer >= 1, not {value!r}"
        )


def options(setting: str, cls: type[Any], value: object) -> Any:
    """``True``/``False``/``None``/a dict/an options object → options or ``None``."""
    if value is None or value is False:
        return None
    if value is True:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigurationError(
                f"kerberos setting {setting!r}: unknown option {unknown[0]!r}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**value)
    raise ConfigurationError(f"kerberos setting {setting!r} must be True, False or a dict")


class Session(NamedTuple):
    """What a session cookie says."""

    principal: str
    mechanism: Mechanism
    expires_at: int


def encode_session(principal: str, mechanism: str, expires_at: float) -> str:
    """The cookie payload: version, mechanism, expiry, then the principal (last: it may
    hold any character)."""
    return f"{_VERSION}|{_MECHANISMS[mechanism]}|{int(expires_at)}|{principal}"


def decode_session(value: bytes, now: float) -> Session | None:
    """The session in a (signature-checked) payload, or ``None`` when it is malformed or
    has expired: the server checks the expiry itself, whatever the cookie's Max-Age."""
    try:
        version, letter, expires, principal = value.decode("utf-8").split("|", 3)
        expires_at = int(expires)
    except (UnicodeDecodeError, ValueError):
        return None
    mechanism = _BY_LETTER.get(letter)
    if version != _VERSION or mechanism is None or not principal or expires_at <= now:
        return None
    return Session(principal, mechanism, expires_at)


class BasicCache:
    """Proven Basic passwords, so a browser that resends one on every request does not
    cost two KDC round trips each time (what Apache's ``GssapiBasicTicketTimeout`` does).

    Keys are an HMAC, under a random per-process key, of principal and password: the
    password itself is never kept, and a different password for the same user is simply
    a miss. Only passwords the KDC and our keytab accepted go in. Thread-safe.
    """

    def __init__(self, opts: BasicCacheOptions) -> None:
        self._opts = opts
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[bytes, float] = collections.OrderedDict()

    def _hash(self, principal: str, password: str) -> bytes:
        data = principal.encode("utf-8") + b"\0" + password.encode("utf-8")
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def get(self, principal: str, password: str) -> float | None:
        """Until when this password stands proven for ``principal``, or ``None``."""
        key = self._hash(principal, password)
        now = time.time()
        with self._lock:
            until = self._entries.get(key)
            if until is None:
                return None
            if until <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return until

    def put(self, principal: str, password: str, ticket_end: float | None) -> None:
        """Remember a proven password until ``ttl`` or the end of the ticket, if sooner."""
        until = time.time() + self._opts.ttl
        if ticket_end is not None:
            until = min(until, ticket_end)
        key = self._hash(principal, password)
        with self._lock:
            self._entries[key] = until
            self._entries.move_to_end(key)
            while len(self._entries) > self._opts.entries:
                self._entries.popitem(last=False)
