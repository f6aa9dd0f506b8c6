"""The ``kerberos`` application setting, validated into a typed object."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from .errors import ConfigurationError
from .limits import LoginLimitOptions
from .pac import is_sid
from .proxies import Proxies
from .session import BasicCacheOptions, SessionOptions, options
from .store import SCHEMES, Store, redact_url

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


NegotiateWhen = Literal["always", "once"] | Callable[[Any], bool]


@dataclasses.dataclass(frozen=True)
class LoginFormOptions:
    """The ``login_form`` setting: ``True`` for these defaults, or a dict of them."""

    #: Where the sign-in form posts: the prefix given to ``guard.login_routes()``.
    path: str = "/login"

    def __post_init__(self) -> None:
        path = self.path
        if not isinstance(path, str) or not re.fullmatch(r"/[A-Za-z0-9._~/-]*", path):
            raise ConfigurationError(
                f"kerberos setting 'login_form': path must be a URL path such as '/login', "
                f"not {path!r}"
            )


@dataclasses.dataclass(frozen=True)
class KerberosSettings:
    """Validated Kerberos settings.

    Build it from the application setting with :meth:`from_mapping`, or by hand: either
    way every value is checked (in ``__post_init__``) and a bad one raises
    :class:`~tornado_kerb.ConfigurationError` naming the key. Instances are immutable and
    hashable; list values are kept as tuples.

    Fields (the documentation's settings reference, docs/settings.md, says more):

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
    * ``allowed_groups``, ``group_names``: Active Directory groups (from the ticket's PAC)
      whose members may in, and more names for ``KerberosUser.in_group``; names are
      resolved over LDAP (``ldap_url``) with the service's own credentials
      (``service_account``), every ``group_refresh`` seconds.
    * ``required_indicators``: a ticket must carry one of these authentication
      indicators (FreeIPA's ``otp``, ``pkinit``…), else 403 ``weak-authentication``.
    * ``netbios_domain``, ``upn_suffixes``: the Basic user-name forms ``DOMAIN\\user``
      and ``user@suffix`` (an AD enterprise name).
    """

    #: Path of the service keytab; ``None`` means the system default keytab.
    keytab: str | None = None
    #: Service name of the principal clients ask a ticket for (``HTTP/host@REALM``).
    service: str = "HTTP"
    #: Accept only ``service/hostname``; ``None`` accepts any ``service/`` key in the keytab.
    hostname: str | None = None
    #: Several host names (``["www.example.com", "example.com"]``): tickets for any of
    #: them are accepted, for no other name in the keytab; the request's ``Host`` picks
    #: the key tried first. With ``hostname`` too, it counts as one of them.
    hostnames: tuple[str, ...] = ()
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
    #: Reverse proxies (addresses or networks, ``["10.0.0.0/8"]``) whose
    #: ``X-Forwarded-Proto``/``X-Real-IP`` count: the scheme that decides Basic, the form
    #: and ``Secure`` cookies, and the address the guessing limits count. From any other
    #: peer no forwarded header counts, whatever Tornado's ``xheaders`` says.
    trusted_proxies: tuple[str, ...] = ()
    #: Groups whose members may log in: SIDs (``"S-1-5-21-…-1104"``) or names
    #: (``"EXAMPLE\\web-users"``, ``"web-users@example.com"``, ``"web-users"``) resolved over
    #: LDAP at start-up. Group membership comes from the ticket's PAC (Active Directory,
    #: Samba); others get 403 ``not-in-group``. ``None``: no group check.
    allowed_groups: tuple[str, ...] | None = None
    #: More group names for :meth:`KerberosUser.in_group`, resolved with ``allowed_groups``.
    group_names: tuple[str, ...] = ()
    #: LDAP URL of a domain controller, for group names and the NetBIOS domain name
    #: (``"ldap://dc1.example.com"``: the Kerberos bind signs and seals, no ``ldaps``);
    #: ``None``: ``ldap://<the realm in lower case>``, the domain's name, which AD's DNS
    #: resolves to its domain controllers.
    ldap_url: str | None = None
    #: Seconds between refreshes of the group names' SIDs (a group renamed or recreated).
    group_refresh: int = 900
    #: The service account's own principal (``svc@EXAMPLE.COM``, ``WEB$@EXAMPLE.COM``) in
    #: the keytab, for our own TGT (LDAP lookups, constrained delegation): AD gives no TGT
    #: to an SPN. ``None``: the keytab's one-component principal, else the SPN.
    service_account: str | None = None
    #: A ticket must carry one of these authentication indicators (``"otp"``,
    #: ``"pkinit"``…), else 403 ``weak-authentication``. ``None``: any ticket.
    required_indicators: tuple[str, ...] | None = None
    #: The NetBIOS domain name Basic accepts in ``DOMAIN\\user``; ``None``: learned from
    #: the directory when ``ldap_url`` or group names use one, else that form is refused.
    netbios_domain: str | None = None
    #: UPN suffixes Basic accepts in ``user@suffix`` (an enterprise name the KDC maps to
    #: the account); the realm itself is always accepted.
    upn_suffixes: tuple[str, ...] = ()
    #: A sign-in form for browsers (``True``, or a dict of :class:`LoginFormOptions`): a
    #: browser's 401 offers only Negotiate and carries the form, which posts to the routes
    #: of :meth:`KerberosGuard.login_routes`. Needs ``session``; passwords only over TLS.
    login_form: LoginFormOptions | None = None
    #: Limits on failed password logins (form and Basic), per user and per client address
    #: (``True``: :class:`~tornado_kerb.limits.LoginLimitOptions`' defaults, or a dict of
    #: them); over a limit, 429 and the KDC is not asked. ``None``: no limits.
    login_limits: LoginLimitOptions | bool | None = True
    #: When to offer Negotiate: ``"always"``; ``"once"``, not again in the answer to a
    #: failed Negotiate attempt (a browser sending NTLM stops there, at the form or Basic);
    #: or a callable of the request, true where Negotiate can work (user agents, networks).
    negotiate: NegotiateWhen = "always"
    #: Accept through GSS-Proxy, which holds the keytab (the app never opens one):
    #: ``True`` for the socket the environment's ``GSSPROXY_SOCKET`` names (else the
    #: system one), or that socket's path. The process must start with
    #: ``GSS_USE_PROXY=yes``; needs ``hostname`` (or ``hostnames``), not ``keytab``.
    gssproxy: bool | str = False
    #: Where the password-guessing counters and the "sessions ended before" times live:
    #: ``None`` or ``"memory"`` (in this process), or a Redis URL (``"redis://host:6379/0"``,
    #: ``"rediss://…"``, ``"unix:///run/redis.sock"``) that every process and host shares,
    #: or a :class:`~tornado_kerb.store.Store`.
    store: str | Store | None = None

    def __post_init__(self) -> None:
        # Frozen: normalised values go in with object.__setattr__, once, here.
        def put(key: str, value: object) -> None:
            object.__setattr__(self, key, value)

        put("keytab", _path("keytab", self.keytab))
        put("service", _name("service", self.service, optional=False))
        put("hostname", _name("hostname", self.hostname, optional=True))
        names = () if self.hostnames in ((), []) else _strings("hostnames", self.hostnames)
        put("hostnames", tuple(str(_name("hostnames", n, optional=False)) for n in names))
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
        proxies = (
            ()
            if self.trusted_proxies in ((), [])
            else _strings("trusted_proxies", self.trusted_proxies)
        )
        Proxies(proxies)  # a bad address or network: ConfigurationError naming it
        put("trusted_proxies", proxies)
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
        put("allowed_groups", _groups("allowed_groups", self.allowed_groups))
        put("group_names", _groups("group_names", self.group_names, empty=True) or ())
        put("required_indicators", _words("required_indicators", self.required_indicators))
        put("ldap_url", _ldap_url(self.ldap_url))
        _count("group_refresh", self.group_refresh, minimum=10)
        put("service_account", _principal("service_account", self.service_account))
        put("netbios_domain", _name("netbios_domain", self.netbios_domain, optional=True))
        suffixes = _words("upn_suffixes", self.upn_suffixes or None) or ()
        put("upn_suffixes", tuple(suffix.lower() for suffix in suffixes))
        put("login_form", options("login_form", LoginFormOptions, self.login_form))
        put("login_limits", options("login_limits", LoginLimitOptions, self.login_limits))
        if self.login_form is not None and self.session is None:
            raise ConfigurationError(
                "kerberos setting 'login_form' needs 'session': the form's login is a "
                "session cookie"
            )
        self._check_gssproxy()
        if not (
            self.store is None
            or self.store == "memory"
            or isinstance(self.store, Store)
            or (isinstance(self.store, str) and self.store.startswith(SCHEMES))
        ):
            raise ConfigurationError(
                "kerberos setting 'store' must be None or 'memory' (this process), a Redis "
                f"URL ({', '.join(s + '…' for s in SCHEMES)}) or a "
                "tornado_kerb.store.Store, not "
                + (
                    repr(redact_url(self.store))
                    if isinstance(self.store, str)
                    else repr(self.store)
                )
            )
        if inspect.iscoroutinefunction(self.negotiate):
            raise ConfigurationError(
                "kerberos setting 'negotiate': a plain function of the request, not a "
                "coroutine function (it is asked while the answer is written)"
            )
        if self.negotiate not in ("always", "once") and not callable(self.negotiate):
            raise ConfigurationError(
                "kerberos setting 'negotiate' must be 'always', 'once' or a callable of the "
                f"request, not {self.negotiate!r}"
            )

    def _check_gssproxy(self) -> None:
        proxy = self.gssproxy
        if proxy is False:
            return
        if proxy is not True and not (isinstance(proxy, str) and proxy.startswith("/")):
            raise ConfigurationError(
                "kerberos setting 'gssproxy' must be True, False or the absolute path of "
                f"GSS-Proxy's socket, not {proxy!r}"
            )
        if self.keytab is not None:
            raise ConfigurationError(
                "kerberos settings 'gssproxy' and 'keytab' exclude each other: with GSS-Proxy "
                "the keytab is the daemon's (cred_store = keytab:… in gssproxy.conf)"
            )
        if self.hostname is None and not self.hostnames:
            raise ConfigurationError(
                "kerberos setting 'gssproxy' needs 'hostname' (or 'hostnames'): the app "
                "cannot list GSS-Proxy's keytab to find its own name"
            )
        if self.s4u2proxy:
            raise ConfigurationError(
                "kerberos settings 'gssproxy' and 's4u2proxy' exclude each other: constrained "
                "delegation needs our own TGT from the keytab (see the deployment guide, GSS-Proxy)"
            )

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


def _shown(value: object) -> str:
    # A setting's value for an error message: a URL without its password.
    return repr(redact_url(value)) if isinstance(value, str) else repr(value)


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


# DOMAIN\\name, name@domain, name: no controls, no quotes; SIDs are checked on their own.
_GROUP = re.compile(r"[^\x00-\x1f\x7f\"]{1,256}")
_PRINCIPAL = re.compile(r"[^\x00-\x20\x7f\"/@]+@[^\x00-\x20\x7f\"@/]+")
_WORD = re.compile(r"[A-Za-z0-9._-]{1,256}")


def _groups(key: str, value: object, *, empty: bool = False) -> tuple[str, ...] | None:
    if value is None or (empty and value in ((), [])):
        return None
    groups = _strings(key, value)
    for group in groups:
        if group.upper().startswith("S-1-"):
            if not is_sid(group):
                raise ConfigurationError(f"kerberos setting {key!r}: {group!r} is not a SID")
        elif not _GROUP.fullmatch(group) or group.count("\\") > 1 or group.count("@") > 1:
            raise ConfigurationError(
                f"kerberos setting {key!r}: {group!r} is neither a SID (S-1-5-21-…) nor a "
                "group name (DOMAIN\\group, group@domain, group)"
            )
    return groups


def _words(key: str, value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    words = _strings(key, value)
    for word in words:
        if not _WORD.fullmatch(word):
            raise ConfigurationError(f"kerberos setting {key!r}: bad item {word!r}")
    return words


def _ldap_url(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"ldap://[A-Za-z0-9.:\[\]-]+/?", value):
        raise ConfigurationError(
            f"kerberos setting 'ldap_url' must be ldap://host[:port] (the Kerberos bind "
            f"signs and seals: no ldaps), not {value!r}"
        )
    return value.rstrip("/")


def _principal(key: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _PRINCIPAL.fullmatch(value):
        raise ConfigurationError(
            f"kerberos setting {key!r} must be a principal such as 'svc@EXAMPLE.COM', not {value!r}"
        )
    return value


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
