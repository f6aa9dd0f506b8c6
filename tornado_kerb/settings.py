"""The ``kerberos`` application setting, validated into a typed object."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from .errors import ConfigurationError
from .session import BasicCacheOptions, SessionOptions, options

__all__ = ["KerberosSettings"]

_FORBIDDEN_IN_NAMES = set('/@"\\') | {chr(c) for c in range(0x21)} | {"\x7f"}
# A principal pattern may hold "/" and "@" (svc-*/web@REALM), never controls or quotes.
_FORBIDDEN_IN_PATTERNS = {chr(c) for c in range(0x20)} | {"\x7f", '"'}

AnyRealm = Literal["*"]
ChannelBinding = Literal["off", "allow", "require"]
_CHANNEL_BINDINGS = ("off", "allow", "require")
CrossSite = Literal["refuse", "allow"]
_CROSS_SITE = ("refuse", "allow")
# scheme://host[:port], as browsers send Origin: no path, no trailing slash, no userinfo.
_ORIGIN = re.compile(r"(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


@dataclasses.dataclass(frozen=True)
class KerberosSettings:
    """Validated Kerberos settings.

    Build it from the application setting with :meth:`from_mapping`, or by hand: either
    way every value is checked (in ``__post_init__``) and a bad one raises
    :class:`~tornado_kerb.ConfigurationError` naming the key. Instances are immutable and
    hashable; list values are kept as tuples.

    Fields (the README's settings table says more):

    * ``keytab``: the service keytab; ``None``: the system default (``KRB5_KTNAME``).
    * ``service`` (``"HTTP"``), ``hostname`` (``None``: any ``HTTP/`` key in the keytab):
      which service principal clients get tickets for.
    * ``realm``: the realm of Basic users and of the Basic challenge (krb5's default).
    * ``basic`` (``True``): offer Basic, only ever on TLS.
    * ``kdc_workers`` (16), ``kdc_queue`` (64), ``kdc_timeout`` (15.0 seconds),
      ``retry_after`` (30 seconds): the KDC thread pool for Basic logins and its 503s.
    * ``realms``, ``allowed_principals``: who may log in (others get 403).
    * ``session``, ``basic_cache``: signed session cookies, remembered Basic passwords
      (``True`` or a dict of options; ``None``: off).
    * ``s4u2proxy`` (``False``): constrained delegation; needs a KDC that allows this
      service to delegate (Active Directory: "trust this account for delegation to
      specified services only"; MIT: the LDAP back end).
    * ``channel_binding`` (``"allow"``), ``tls_certificate``: TLS channel bindings.
    * ``websocket_expiry`` (``True``): close a WebSocket when its login ends.
    * ``cross_site`` (``"refuse"``), ``trusted_origins``: unsafe requests (POST, PUT…)
      that a browser says come from another site get 403 before any challenge.
    """

    #: Path of the service keytab; ``None`` means the system default keytab.
    keytab: str | None = None
    #: Service name of the principal clients ask a ticket for (``HTTP/host@REALM``).
    service: str = "HTTP"
    #: Accept only ``service/hostname``; ``None`` accepts any ``service/`` key in the keytab.
    hostname: str | None = None
    #: Realm appended to bare Basic user names and shown in the Basic challenge.
    realm: str | None = None
    #: Offer and accept Basic (only ever on TLS connections).
    basic: bool = True
    #: Threads that talk to the KDC for Basic logins.
    kdc_workers: int = 16
    #: Basic logins allowed to wait for a free KDC thread before answering 503.
    kdc_queue: int = 64
    #: Seconds sent in ``Retry-After`` when the KDC cannot be reached.
    retry_after: int = 30
    #: Realms whose users may log in: ``None`` means ``realm`` (else krb5's default realm)
    #: only; ``"*"`` any realm the KDC trusts. Others get 403.
    realms: tuple[str, ...] | AnyRealm | None = None
    #: Principals allowed in (exact names or ``fnmatch`` patterns such as
    #: ``"*@EXAMPLE.COM"``); ``None`` lets every user of an allowed realm in. Others get 403.
    allowed_principals: tuple[str, ...] | None = None
    #: Signed session cookies after a login (``True``, or a dict of
    #: :class:`~tornado_kerb.session.SessionOptions`); ``None``: every request logs in.
    session: SessionOptions | None = None
    #: Remember proven Basic passwords (``True``, or a dict of
    #: :class:`~tornado_kerb.session.BasicCacheOptions`); ``None``: ask the KDC each time.
    basic_cache: BasicCacheOptions | None = None
    #: Seconds a Basic login may take at the KDC before the answer is 503.
    kdc_timeout: float = 15.0
    #: Constrained delegation: act as users whose client delegated nothing (S4U2Proxy),
    #: towards the services the KDC allows, and as session users (S4U2Self, where the
    #: KDC allows protocol transition). Needs a KDC that does it (AD, FreeIPA, MIT LDAP).
    s4u2proxy: bool = False
    #: TLS channel bindings (RFC 5929 ``tls-server-end-point``): ``"allow"`` checks the
    #: bindings a client sends and accepts one that sends none; ``"require"`` refuses
    #: tokens not bound to this TLS channel (401, reason ``unbound``); ``"off"``.
    channel_binding: ChannelBinding = "allow"
    #: The server certificate (PEM) the bindings are computed from: Tornado does not
    #: show handlers the certificate of their own TLS connection. Behind a TLS-terminating
    #: proxy, the proxy's certificate.
    tls_certificate: str | None = None
    #: Close a WebSocket (code 1008) when the login that opened it ends.
    websocket_expiry: bool = True
    #: ``"refuse"``: a request with an unsafe method (anything but GET, HEAD, OPTIONS,
    #: TRACE) that the browser says comes from another site (``Sec-Fetch-Site``, else
    #: ``Origin``) gets 403 ``cross-site`` before any challenge, so that a page elsewhere
    #: cannot make the browser log in to us for it. ``"allow"``: no such check.
    cross_site: CrossSite = "refuse"
    #: Origins (``"https://app.example.com"``) whose pages may send unsafe requests here.
    trusted_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Frozen: normalised values go in with object.__setattr__, once, here.
        def put(key: str, value: object) -> None:
            object.__setattr__(self, key, value)

        put("keytab", _path("keytab", self.keytab))
        put("service", _name("service", self.service, optional=False))
        put("hostname", _name("hostname", self.hostname, optional=True))
        put("realm", _name("realm", self.realm, optional=True))
        _flag("basic", self.basic)
        _flag("s4u2proxy", self.s4u2proxy)
        _flag("websocket_expiry", self.websocket_expiry)
        if self.channel_binding not in _CHANNEL_BINDINGS:
            raise ConfigurationError(
                f"kerberos setting 'channel_binding' must be one of {', '.join(_CHANNEL_BINDINGS)}"
                f", not {self.channel_binding!r}"
            )
        if self.cross_site not in _CROSS_SITE:
            raise ConfigurationError(
                f"kerberos setting 'cross_site' must be one of {', '.join(_CROSS_SITE)}, "
                f"not {self.cross_site!r}"
            )
        put("trusted_origins", _origins(self.trusted_origins))
        put("tls_certificate", _path("tls_certificate", self.tls_certificate))
        if self.channel_binding == "require" and self.tls_certificate is None:
            raise ConfigurationError(
                "kerberos setting 'channel_binding': 'require' needs 'tls_certificate' (the "
                "server's PEM certificate): Tornado does not show it to handlers"
            )
        _count("kdc_workers", self.kdc_workers, minimum=1)
        _count("kdc_queue", self.kdc_queue, minimum=0)
        _count("retry_after", self.retry_after, minimum=1)
        put("realms", _realms(self.realms))
        put("allowed_principals", _patterns("allowed_principals", self.allowed_principals))
        put("session", options("session", SessionOptions, self.session))
        put("basic_cache", options("basic_cache", BasicCacheOptions, self.basic_cache))
        timeout = self.kdc_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigurationError(
                f"kerberos setting 'kdc_timeout' must be a number of seconds > 0, not {timeout!r}"
            )
        put("kdc_timeout", float(timeout))

    @classmethod
    def from_mapping(cls, raw: KerberosSettings | Mapping[str, Any] | None) -> KerberosSettings:
        """Validate ``Application.settings["kerberos"]`` (``None`` means all defaults).

        Raises :class:`~tornado_kerb.ConfigurationError` naming the key at fault.
        """
        if raw is None:
            return cls()
        if isinstance(raw, KerberosSettings):
            return raw
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"kerberos settings must be a dict, not {type(raw).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in raw:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                also = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigurationError(
                    f"unknown kerberos setting {key!r}{also}; known: {', '.join(known)}"
                )
        return cls(**raw)


def _path(key: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(f"kerberos setting {key!r} must be a path, not {value!r}")
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise ConfigurationError(f"kerberos setting {key!r} must be a non-empty path")
    return path


def _name(key: str, value: object, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"kerberos setting {key!r} must be a non-empty string")
    bad = sorted(set(value) & _FORBIDDEN_IN_NAMES)
    if bad:
        raise ConfigurationError(
            f"kerberos setting {key!r} = {value!r} may not contain {''.join(bad)!r}"
        )
    return value


def _flag(key: str, value: object) -> None:
    # A string such as "false" is truthy: refuse it rather than guess.
    if not isinstance(value, bool):
        raise ConfigurationError(f"kerberos setting {key!r} must be True or False")


def _count(key: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"kerberos setting {key!r} must be an integer >= {minimum}, not {value!r}"
        )


def _strings(key: str, value: object) -> tuple[str, ...]:
    # One string is one item: tuple("EXAMPLE.COM") would be a tuple of letters.
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)) or not items:
        raise ConfigurationError(
            f"kerberos setting {key!r} must be a non-empty list of strings, not {value!r}"
        )
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigurationError(f"kerberos setting {key!r} holds a non-string or empty item")
    return tuple(sorted(items)) if isinstance(items, (set, frozenset)) else tuple(items)


def _realms(value: object) -> tuple[str, ...] | AnyRealm | None:
    if value is None:
        return None
    if value == "*":
        return "*"
    realms = _strings("realms", value)
    for realm in realms:
        _name("realms", realm, optional=False)
    return realms


def _patterns(key: str, value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    patterns = _strings(key, value)
    for pattern in patterns:
        bad = sorted(set(pattern) & _FORBIDDEN_IN_PATTERNS)
        if bad:
            raise ConfigurationError(f"kerberos setting {key!r}: {pattern!r} holds {bad!r}")
    return patterns


def _origins(value: object) -> tuple[str, ...]:
    if value == () or value == []:
        return ()
    origins = _strings("trusted_origins", value)
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ConfigurationError(
                f"kerberos setting 'trusted_origins': {origin!r} is not an origin such as "
                "'https://app.example.com' (scheme, host and port only: no path, no '/')"
            )
    return tuple(normal_origin(origin) for origin in origins)


def normal_origin(origin: str) -> str:
    # Browsers send scheme and host in lower case, and no default port.
    origin = origin.lower()
    for scheme, port in (("http://", ":80"), ("https://", ":443")):
        if origin.startswith(scheme) and origin.endswith(port):
            return origin[: -len(port)]
    return origin
