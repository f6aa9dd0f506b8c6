"""Session cookies and the Basic result cache: skipping GSSAPI and the KDC on repeat requests.

The cookie's payload (principal, mechanism, expiry) is signed with Tornado's signed-cookie
format (version 2: HMAC-SHA256, key rotation through the application's ``cookie_secret``
dict and ``key_version``): :class:`SessionCookies` sets, reads and clears it for a handler,
and remembers the cookies it has verified. It signs but does not encrypt: nothing in it
may be secret.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import tornado.httputil
import tornado.web

from .claims import NONE, Claims, decode_groups, encode_groups
from .errors import ConfigurationError
from .user import KerberosUser, Mechanism

if TYPE_CHECKING:
    from tornado.web import RequestHandler

__all__ = [
    "BasicCache",
    "BasicCacheOptions",
    "SessionCookies",
    "SessionOptions",
    "decode_session",
    "encode_session",
]

log = logging.getLogger(__name__)

_VERSION = "2"
_VERSIONS = frozenset({"1", "2"})  # 1: no claims (tornado_kerb 0.3); still read
_MECHANISMS: dict[str, str] = {"negotiate": "n", "basic": "b"}
_BY_LETTER: dict[str, Mechanism] = {"n": "negotiate", "b": "basic"}
# RFC 6265's cookie-name token (no separators, controls or spaces).
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERIFIED_SESSIONS = 4096
# Cookie headers longer than this are not remembered whole (their cookie value still is):
# 4096 of them stay within a few megabytes.
_HEADER_KEY_MAX = 1024


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
        if not isinstance(name, str) or not _COOKIE_NAME.fullmatch(name):
            raise ConfigurationError(f"kerberos setting 'session': bad cookie name {name!r}")
        if not isinstance(self.path, str) or not self.path.startswith("/") or ";" in self.path:
            raise ConfigurationError("kerberos setting 'session': path must start with '/'")
        _positive("session", "max_age", self.max_age)
        if not isinstance(self.http, bool):
            raise ConfigurationError("kerberos setting 'session': http must be True or False")
        # Browsers keep the prefixes' promises only for cookies that fit them: a __Secure-
        # or __Host- cookie is set with Secure (never on plain HTTP), __Host- at path "/".
        if name.startswith(("__Secure-", "__Host-")) and self.http:
            raise ConfigurationError(
                f"kerberos setting 'session': a {name.split('-')[0]}- cookie is never sent "
                "over plain HTTP: http must be False"
            )
        if name.startswith("__Host-") and self.path != "/":
            raise ConfigurationError("kerberos setting 'session': a __Host- cookie needs path '/'")


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
    #: The login's groups and authentication indicators (none in a version 1 cookie).
    claims: Claims = NONE


def encode_session(
    principal: str,
    mechanism: str,
    expires_at: float,
    claims: Claims = NONE,
    keep: Collection[str] = (),
) -> str:
    """The cookie payload: version, mechanism, expiry, indicators, groups, then the
    principal (last: it may hold any character). Groups are written compactly (see
    :func:`~tornado_kerb.claims.encode_groups`: a user in 300 groups of one domain adds
    about 900 characters); past the budget only those in ``keep`` are."""
    indicators = ",".join(urllib.parse.quote(i, safe="") for i in claims.indicators)
    groups = encode_groups(claims.groups, keep) if claims.groups else ""
    if groups.startswith("!"):
        log.warning(
            "%s is in %d groups, too many for a session cookie: it keeps the %d the "
            "settings name (in_group() of others reads False on session requests)",
            principal,
            len(claims.groups),
            groups.count(".") + groups.count(":"),
        )
    letter = _MECHANISMS[mechanism]
    return f"{_VERSION}|{letter}|{int(expires_at)}|{indicators}|{groups}|{principal}"


def decode_session(value: bytes, now: float) -> Session | None:
    """The session in a (signature-checked) payload, or ``None`` when it is malformed or
    has expired: the server checks the expiry itself, whatever the cookie's Max-Age."""
    try:
        version, letter, expires, rest = value.decode("utf-8").split("|", 3)
        expires_at = int(expires)
    except (UnicodeDecodeError, ValueError):
        return None
    mechanism = _BY_LETTER.get(letter)
    if version not in _VERSIONS or mechanism is None or expires_at <= now:
        return None
    claims = NONE
    if version == "1":
        principal = rest
    else:
        try:
            indicators, groups, principal = rest.split("|", 2)
        except ValueError:
            return None
        if indicators or groups:
            decoded = decode_groups(groups)
            if decoded is None:
                return None
            found = tuple(urllib.parse.unquote(i) for i in indicators.split(",") if i)
            claims = Claims(decoded[0], found, complete=decoded[1])
    if not principal:
        return None
    return Session(principal, mechanism, expires_at, claims)


class BasicCache:
    """Proven Basic passwords, so a browser that resends one on every request does not
    cost two KDC round trips each time (what Apache's ``GssapiBasicTicketTimeout`` does).

    Keys are an HMAC, under a random per-process key, of principal and password: the
    password itself is never kept, and a different password for the same user is simply
    a miss. Only passwords the KDC and our keytab accepted go in. Thread-safe.
    """

    def __init__(self, opts: BasicCacheOptions, ended: Ended | None = None) -> None:
        self._opts = opts
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        # principal, until, claims, when proven
        self._entries: collections.OrderedDict[bytes, tuple[str, float, Claims, float]] = (
            collections.OrderedDict()
        )
        self._ended = ended or _NeverEnded()

    def _hash(self, principal: str, password: str) -> bytes:
        data = principal.encode("utf-8") + b"\0" + password.encode("utf-8")
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def get(self, principal: str, password: str) -> tuple[str, float, Claims] | None:
        """Whom this password proved ``principal`` to be (the principal our keytab
        accepted, which an alias or canonicalisation may have changed), until when, and
        the claims (groups, indicators) of that login; ``None`` when it is not known to
        be good."""
        key = self._hash(principal, password)
        now = time.time()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            ended = self._ended
            if entry[1] <= now or (ended.ended and entry[3] < ended.not_before(entry[0])):
                del self._entries[key]  # expired, or the user's sessions were ended
                return None
            self._entries.move_to_end(key)
            return entry[:3]

    def put(
        self, principal: str, password: str, proven: KerberosUser, ticket_end: float | None
    ) -> None:
        """Remember that ``password`` for ``principal`` (as typed) proved the user
        ``proven`` (whom our keytab accepted, with the ticket's claims), until ``ttl`` or
        the end of the ticket, if sooner. Call it only for a user let in."""
        until = time.time() + self._opts.ttl
        if ticket_end is not None:
            until = min(until, ticket_end)
        key = self._hash(principal, password)
        with self._lock:
            self._entries[key] = (proven.principal, until, proven.claims, time.time())
            self._entries.move_to_end(key)
            while len(self._entries) > self._opts.entries:
                self._entries.popitem(last=False)


class _Verified(NamedTuple):
    # A cookie value that passed the signature check, and what it is good for.
    expires_at: int
    user: KerberosUser
    handler_class: type
    application: object
    issued_at: int  # when it was signed: sessions ended after that end it


class Ended(Protocol):
    """Where sessions ended everywhere are known (a :class:`~tornado_kerb.store.Store`):
    ``ended`` is true once any principal's were, ``not_before(principal)`` the time
    before which that principal's sessions no longer count (0: none)."""

    ended: bool

    def not_before(self, principal: str) -> float: ...


class _NeverEnded:
    ended = False

    def not_before(self, principal: str) -> float:
        return 0.0


#: Builds the user of a verified session for a handler, or ``None`` when the guard would
#: no longer let that principal in (realm, allowed principals, local name).
UserFactory = Callable[["RequestHandler", Session], "KerberosUser | None"]


class SessionCookies:
    """The session cookie of one guard: set after a fresh login, read instead of one.

    A cookie is taken only if the application serving the request verifies its signature
    with its own ``cookie_secret``, only for a mechanism the guard offers, and only until
    the expiry signed into it. Verified values are remembered (with the application and
    handler class they were verified for), so a repeat request costs a dict lookup.
    """

    def __init__(
        self,
        opts: SessionOptions,
        mechanisms: Collection[Mechanism],
        keep: Callable[[], Collection[str]] = frozenset,
        scheme: Callable[[tornado.httputil.HTTPServerRequest], str] | None = None,
        ended: Ended | None = None,
    ) -> None:
        self.opts = opts
        # Sessions ended everywhere (logout(everywhere=True), end_sessions()).
        self._ended = ended or _NeverEnded()
        # The request's real scheme (a trusted proxy's word, see tornado_kerb.proxies).
        self._scheme = scheme or _protocol
        # The group SIDs the guard's settings name: all a cookie keeps of a user in
        # too many groups to fit.
        self._keep = keep
        self._mechanisms = frozenset(mechanisms)
        self._verified: dict[str, _Verified] = {}
        self._by_header: dict[str, _Verified] = {}

    def read(
        self, handler: RequestHandler, make_user: UserFactory, tls: bool | None = None
    ) -> KerberosUser | None:
        """The user of the request's valid session cookie, or ``None``: a cookie that is
        tampered, expired, malformed, signed by another application, of a mechanism not
        offered, or whose principal ``make_user`` refuses is ignored and cleared. ``tls``:
        whether the request came over TLS, when the caller knows (see ``trusted_proxies``)."""
        opts = self.opts
        request = handler.request
        if tls is None:
            tls = self._scheme(request) == "https"
        if not opts.http and not tls:
            return None  # never set on plain HTTP, so never taken there either
        headers = request.headers
        if "Cookie" not in headers:
            return None
        header = headers["Cookie"]
        now = time.time()
        # A browser sends the same Cookie header request after request: one dict lookup,
        # and the expiry, application and handler class checked each time.
        known = self._by_header.get(header)
        if known is not None and self._good(known, handler, now):
            return known.user
        if opts.name not in header:
            return None
        # What get_signed_cookie() does, minus the http.cookies.SimpleCookie that
        # request.cookies builds first (measured: most of a session request's cost).
        value = tornado.httputil.parse_cookie(header).get(opts.name)
        if value is None:
            return None
        # The same cookie among other cookies that changed skips the HMAC too; it counts
        # only for the application whose secret verified it.
        known = self._verified.get(value)
        if known is None or not self._good(known, handler, now):
            raw = tornado.web.decode_signed_value(
                require_secret(handler.application.settings),
                opts.name,
                value,
                max_age_days=opts.max_age / 86400,
                min_version=2,
            )
            session = decode_session(raw, now) if raw else None
            issued = _signed_at(value)
            user = None
            if (
                session is not None
                and session.mechanism in self._mechanisms
                and issued >= self._ended.not_before(session.principal)
            ):
                user = make_user(handler, session)
            if session is None or user is None:
                self._verified.pop(value, None)
                log.info("session cookie ignored from %s", request.remote_ip)
                self.clear(handler)
                return None
            known = _Verified(session.expires_at, user, type(handler), handler.application, issued)
            _remember(self._verified, value, known)
        if len(header) <= _HEADER_KEY_MAX:
            _remember(self._by_header, header, known)
        return known.user

    def _good(self, known: _Verified, handler: RequestHandler, now: float) -> bool:
        return (
            known.expires_at > now
            and known.handler_class is type(handler)
            and known.application is handler.application
            # One attribute read until somebody's sessions are ended somewhere.
            and not (
                self._ended.ended and known.issued_at < self._ended.not_before(known.user.principal)
            )
        )

    def start(self, handler: RequestHandler, user: KerberosUser) -> None:
        """Set the cookie after a fresh login: never longer than the user's ticket, never
        on plain HTTP unless the ``http`` option says so."""
        opts = self.opts
        tls = self._scheme(handler.request) == "https"
        if not tls and not opts.http:
            return  # a cookie sniffed off plain HTTP would be as good as a password
        now = time.time()
        # Never longer than the ticket: the server checks this itself, whatever the
        # browser does with Max-Age.
        expires = min(now + opts.max_age, user.expires_at or now + opts.max_age)
        if expires <= now:
            return
        require_secret(handler.application.settings)
        handler.set_signed_cookie(
            opts.name,
            encode_session(user.principal, user.mechanism, expires, user.claims, self._keep()),
            expires_days=None,
            version=2,
            path=opts.path,
            max_age=int(expires - now),
            httponly=True,
            secure=tls,
            samesite="Lax",
        )

    def clear(self, handler: RequestHandler) -> None:
        """Tell the browser to drop the cookie."""
        opts = self.opts
        handler.clear_cookie(
            opts.name,
            path=opts.path,
            # A __Secure-/__Host- cookie can be cleared only by a Secure Set-Cookie.
            secure=opts.name.startswith(("__Secure-", "__Host-")),
        )


def _signed_at(value: str) -> int:
    # Tornado's signed value (version 2, already verified): "2|<key version>|<n>:<time>|…",
    # the time it was signed. Unreadable: 0, which any ended session's time ends.
    try:
        return int(value.split("|", 3)[2].partition(":")[2])
    except (IndexError, ValueError):
        return 0


def _protocol(request: tornado.httputil.HTTPServerRequest) -> str:
    return request.protocol


def _remember(cache: dict[str, _Verified], key: str, entry: _Verified) -> None:
    if len(cache) >= _VERIFIED_SESSIONS and key not in cache:
        del cache[next(iter(cache))]  # the oldest
    cache[key] = entry


def require_secret(settings: Mapping[str, Any]) -> Any:
    """The application's ``cookie_secret``; :class:`ConfigurationError` without one."""
    secret = settings.get("cookie_secret")
    if not secret:
        raise ConfigurationError(
            "kerberos['session'] needs the application setting 'cookie_secret' "
            "(a long random string, or a dict of them with 'key_version' to rotate keys)"
        )
    return secret
