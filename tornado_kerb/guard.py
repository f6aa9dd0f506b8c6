"""The request flow for *a handler*: authenticate, authorize, answer 401/403/503.

:class:`KerberosGuard` takes the handler as an argument, so handlers that cannot inherit
:class:`~tornado_kerb.KerberosAuthMixin` (a Jupyter Server handler, a WebSocket handler,
any plain ``RequestHandler``) use the same flow as those that do. One guard serves one
application: it owns the acceptor credentials, the Basic realm and the KDC thread pool.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import difflib
import functools
import inspect
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, NoReturn, TypeVar, overload

import gssapi.raw
import tornado.httputil
import tornado.ioloop
import tornado.web
import tornado.websocket

from . import _localname, _routes
from ._header import split_authorization
from ._kdc import KDCPool
from .answers import PASSWORD_REFUSALS, Form, write_default_answer
from .basic import NameForms, default_realm, parse_basic
from .bindings import server_end_point
from .claims import NONE, Claims
from .credentials import call_as
from .delegation import ConstrainedDelegation
from .directory import Directory, GroupSids, connect
from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    DirectoryUnavailable,
    Forbidden,
    KerberosError,
    LocalNameError,
    NoCredentials,
    TooManyAttempts,
)
from .gssproxy import GSSProxy
from .limits import LoginLimitOptions, LoginLimits, principal_key
from .login import routes as login_routes
from .login import safe_next, sign_in, write_page
from .negotiate import Accepted, Acceptor, parse_negotiate
from .policy import Policy
from .proxies import Proxies
from .reasons import Outcome, Reason, outcome_for
from .refusals import Refusals
from .session import BasicCache, Session, SessionCookies, require_secret
from .settings import KerberosSettings, normal_origin
from .store import MemoryStore, make_store
from .user import KerberosUser, Mechanism
from .websocket import close_when_login_ends

__all__ = ["KerberosGuard"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = tornado.web.RequestHandler
Verdict = bool | Awaitable[bool]

_SCHEMES = frozenset({"negotiate", "basic"})
_LOCAL_NAME_CACHE = 4096
# RFC 9110's safe methods: a page elsewhere may make a browser send them, harmlessly.
_STUB = tornado.web.RequestHandler._unimplemented_method
_WAITERS = 4  # rounds of per_principal logins that may wait on one user's attempts
_RECHECK = 1.0  # seconds between asking a shared store again for a waiting login
_STORE_READY = 2.0  # seconds check() waits for a shared store's ended sessions
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Sec-Fetch-Site values that say the request did not come from another origin's page.
_OWN_SITE = frozenset({"same-origin", "none"})


class _GuardOrClass:
    # check_application works on a guard, and on the class for the application's guard.
    def __init__(self, method: Callable[..., None]) -> None:
        self._method = method
        functools.update_wrapper(self, method)  # type: ignore[arg-type]

    def __get__(self, guard: KerberosGuard | None, cls: type[KerberosGuard]) -> Callable[..., None]:
        if guard is not None:
            return functools.partial(self._method, guard)

        def check_application(app: tornado.web.Application, key: str = "kerberos") -> None:
            self._method(cls.for_application(app, key), app, key)

        check_application.__doc__ = self._method.__doc__
        return check_application


class KerberosGuard:
    """Kerberos login for any :class:`tornado.web.RequestHandler`.

    Build one per application from settings (a :class:`KerberosSettings` or the same dict
    the ``kerberos`` application setting takes) and hand it to the application as that
    setting, so :class:`~tornado_kerb.KerberosAuthMixin` handlers find it; other handlers
    call it with themselves::

        guard = KerberosGuard({"keytab": "/etc/http.keytab", "hostname": "www.example.com"})

        class Plain(tornado.web.RequestHandler):
            async def prepare(self):
                await guard.authenticate(self)  # answers 401/403/503 and finishes, or...

            def get(self):
                self.write(self.current_user.principal)  # ...the user is in

        app = tornado.web.Application([(r"/", Plain)], kerberos=guard)
        ...
        guard.close()  # at shutdown: stops the KDC threads

    Subclasses may override :meth:`authorize` and :meth:`local_name`.
    """

    def __init__(self, settings: KerberosSettings | Mapping[str, Any] | None = None) -> None:
        self.settings = KerberosSettings.from_mapping(settings)
        s = self.settings
        realm = s.realm or default_realm()
        self.acceptor = Acceptor(
            s.keytab,
            s.service,
            s.hostname,
            s4u2proxy=s.s4u2proxy,
            account=s.service_account,
            hostnames=s.hostnames,
            gssproxy=GSSProxy(s.gssproxy) if s.gssproxy is not False else None,
            realm=realm or "",
        )
        if s.basic and not realm:
            raise ConfigurationError(
                "Basic needs a realm: set kerberos['realm'] or default_realm in krb5.conf"
            )
        #: Realm of Basic users and of the Basic challenge.
        self.realm = realm or ""
        #: Who may in, guard-wide: realms, principals, groups, indicators.
        self.policy = Policy(s, realm)
        #: Realms whose users may log in; ``None`` means any realm.
        self.realms = self.policy.realms
        self._needs_claims = self.policy.needs_claims
        self._sid_of = self.policy.sid_of
        #: The threads that prove Basic passwords (see :mod:`tornado_kerb._kdc`).
        self.kdc = KDCPool(s.kdc_workers, s.kdc_queue, s.kdc_timeout)
        self._mapped = functools.lru_cache(maxsize=_LOCAL_NAME_CACHE)(self._map_local_name)
        limits = s.login_limits if isinstance(s.login_limits, LoginLimitOptions) else None
        #: Where failed password logins are counted and sessions ended (``store``): this
        #: process, or a Redis that every process and host shares.
        self.store = make_store(s.store, limits, keep_for=_keep_for(s))
        self._own_store = isinstance(s.store, str)
        self.basic_cache = BasicCache(s.basic_cache, self.store) if s.basic_cache else None
        #: Whose word on the scheme and the client's address counts (``trusted_proxies``).
        self.proxies = Proxies(s.trusted_proxies)
        self._bindings: gssapi.raw.ChannelBindings | None = None
        if s.channel_binding != "off" and s.tls_certificate is not None:
            try:
                self._bindings = server_end_point(s.tls_certificate)
            except (OSError, ValueError) as err:
                raise ConfigurationError(
                    f"kerberos setting 'tls_certificate': {s.tls_certificate}: {err}"
                ) from None
        self._require_binding = s.channel_binding == "require"
        self._basic_on = s.basic
        session = s.session
        if self._require_binding and (s.basic or session is not None):
            # A password, or a cookie, is not bound to the channel: a man in the middle
            # with a certificate of its own would collect either. Only bound tokens.
            log.info("channel_binding='require': Basic and session cookies are off")
            self._basic_on = False
            session = None
        #: The session cookie (``None`` when the ``session`` setting is off). It is
        #: taken only for a mechanism this guard offers: a cookie a Basic login minted
        #: elsewhere is no login here if Basic is off.
        # A sign-in form's login is a password login: its cookie says "basic".
        offered: tuple[Mechanism, ...] = (
            ("negotiate", "basic") if self._basic_on or s.login_form else ("negotiate",)
        )
        self.sessions = (
            None
            if session is None
            else SessionCookies(
                session, offered, self.policy.named_sids, self.proxies.scheme, self.store
            )
        )
        # Per user name: an event set when one of its password attempts ends, and how
        # many logins wait for it (IOLoop only).
        self._attempts: dict[str, tuple[asyncio.Event, int]] = {}
        self._login_form = s.login_form if session is not None else None
        self._negotiate = s.negotiate
        self._ws_expiry = s.websocket_expiry
        self._refuse_cross_site = s.cross_site == "refuse"
        self._trusted_origins = frozenset(s.trusted_origins)
        # Decided once: a guard whose class does not count outcomes pays nothing for them,
        # nor asks handlers that have no kerberos_authorize of their own (per class).
        self._observed = type(self).on_outcome is not KerberosGuard.on_outcome
        self._default_authorize = type(self).authorize is KerberosGuard.authorize
        self._hookless: dict[type, bool] = {}
        #: Turns failures into log lines, outcomes and answers (401/403/429/503).
        self.refusals = Refusals(self, basic_on=self._basic_on, login_form=self._login_form)
        self._down = self.refusals.down  # checked on every login: one attribute lookup
        # With s4u2proxy: principals with a request in flight, the only ones the guard
        # impersonates (IOLoop thread only: no lock).
        self._live: dict[str, int] | None = {} if s.s4u2proxy else None
        #: The domain controller asked for group names and the NetBIOS domain name
        #: (``None`` without ``ldap_url`` or group names), and the names' SIDs.
        self.directory: Directory | None = None
        self._group_sids: GroupSids | None = None
        netbios = s.netbios_domain
        if self.policy.names or s.ldap_url is not None:
            if self.acceptor.proxy is not None:
                raise ConfigurationError(
                    "kerberos setting 'gssproxy': group names and 'ldap_url' need our own "
                    "TGT from the keytab, which GSS-Proxy keeps: name groups by SID"
                )
            try:
                self.directory, self._group_sids, netbios = connect(
                    s, self.acceptor, self.realm or next(iter(self.realms or ()), ""), self.policy
                )
            except BaseException:
                self.close()
                raise
        #: Basic's Active Directory user-name forms (DOMAIN\\user, user@suffix).
        self._forms = NameForms(netbios, frozenset(s.upn_suffixes))
        # With Active Directory settings, users are named as their PAC names the account.
        self.acceptor.canonical_names = (
            self._forms.enterprise
            or s.allowed_groups is not None
            or bool(s.group_names)
            or s.ldap_url is not None
        )

    @property
    def limits(self) -> LoginLimits | None:
        """The in-process counters of failed password logins (0.4's attribute): ``None``
        with ``login_limits`` off or a shared ``store``, which counts them instead."""
        store = self.store
        return store.counters if isinstance(store, MemoryStore) else None

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The KDC threads (``kdc_workers`` of them), for the application's own blocking
        Kerberos work too."""
        return self.kdc.executor

    @classmethod
    def for_application(cls, app: tornado.web.Application, key: str = "kerberos") -> KerberosGuard:
        """The guard of ``app``: ``app.settings[key]`` itself when it is a guard, else one
        built from it on first use and kept on the application.

        Raises :class:`~tornado_kerb.ConfigurationError` when the application has no such
        setting (``kerberos={}`` asks for the defaults), or when
        :meth:`check_application` finds a problem: the guarded request answers 500.
        """
        raw = app.settings.get(key)
        if isinstance(raw, KerberosGuard):
            raw._check_once(app, key)  # on every request: once per application (and change)
            return raw
        cached: tuple[object, KerberosGuard | ConfigurationError, int, float] | None = getattr(
            app, "_tornado_kerb_guard", None
        )
        if (
            cached is None
            or cached[0] is not raw
            or cached[2] != _routes.fingerprint(app)
            or cached[3] <= time.monotonic()
        ):
            try:
                if raw is None:
                    # A typo (kerbros=...) would otherwise run on defaults: the system
                    # keytab, any HTTP/ key in it, and none of the settings meant.
                    raise ConfigurationError(_missing_setting(app, key))
                # Checked before a guard is built: a broken application must not build
                # one (KDC threads, a TGT fetch with s4u2proxy) on every request.
                settings = KerberosSettings.from_mapping(raw)
                _check_routes(app, sessions=_sessions_on(settings))
                built: KerberosGuard | ConfigurationError = (
                    cached[1]
                    if cached is not None
                    and cached[0] is raw
                    and isinstance(cached[1], KerberosGuard)
                    else cls(settings)
                )
            except ConfigurationError as err:
                built = err  # every request answers 500 until the application is fixed
            # A directory that could not be reached is asked again, retry_after seconds
            # on (not on every request: each try may wait kdc_timeout on the IOLoop).
            retry = math.inf
            if isinstance(built, DirectoryUnavailable):
                retry = KerberosSettings.from_mapping(raw).retry_after
            cached = (raw, built, _routes.fingerprint(app), time.monotonic() + retry)
            app._tornado_kerb_guard = cached  # type: ignore[attr-defined]
        if isinstance(cached[1], ConfigurationError):
            raise cached[1]
        return cached[1]

    def _check_application(self, app: tornado.web.Application, key: str = "kerberos") -> None:
        """Raise :class:`~tornado_kerb.ConfigurationError` if ``app`` is set up so that
        some handler would be open, or every login would fail. Call it at start-up.

        It checks the application's ``key`` setting when it has one (a dict of known
        names: a guard may also serve an application without it), the ``cookie_secret``
        sessions need, and every handler class its routing rules
        reach (nested routers and host rules too): a class that sets what only
        :class:`~tornado_kerb.KerberosAuthMixin` reads (``kerberos_required``…) without
        inheriting it, a near miss of our names, Tornado's own
        ``@tornado.web.authenticated`` on a mixin handler, or a streamed body
        (``@stream_request_body``) that would reach the handler before the login.

        Called on the class, ``KerberosGuard.check_application(app)`` checks the
        application's own guard (building it from the setting, as the first request would).
        """
        raw = app.settings.get(key)
        if isinstance(raw, Mapping):
            KerberosSettings.from_mapping(raw)  # unknown names, bad values
        _check_routes(app, sessions=self.sessions is not None)

    check_application = _GuardOrClass(_check_application)

    def check(self, app: tornado.web.Application | None = None) -> None:
        """Do now what the first request would: check the keytab and acquire the acceptor
        credentials, and with ``app`` :meth:`check_application` too. Raises
        :class:`~tornado_kerb.KeytabError` (or :class:`~tornado_kerb.ConfigurationError`)
        so that a broken deployment fails at start-up, not at the first user. No KDC is
        contacted; a shared ``store`` is given a moment to load the sessions already
        ended (a warning if it does not answer)."""
        if app is not None:
            self.check_application(app)
        self.acceptor.credentials()
        if not self.store.wait_ready(_STORE_READY):
            log.warning(
                "store %s: not answering at start-up: password logins get 503 until it "
                "does, and sessions ended elsewhere are not known here until then",
                self.store,
            )

    def close(self) -> None:
        """Stop the KDC threads (waiting Basic logins are cancelled) and the directory's
        refresh. Idempotent."""
        if self._group_sids is not None:
            self._group_sids.close()
        if self.directory is not None:
            self.directory.close()
        self.kdc.close()
        if self._own_store:
            self.store.close()

    # -- extension points ---------------------------------------------------------------

    def authorize(self, user: KerberosUser, handler: Handler) -> Verdict:
        """May ``user`` in? ``True``/``False`` or an awaitable of it. May be overridden.

        Called after the ``realms`` and ``allowed_principals`` checks passed. The default
        asks the handler's ``kerberos_authorize(user)`` when it has one.
        """
        hook = getattr(handler, "kerberos_authorize", None)
        return True if hook is None else bool_or_awaitable(hook(user))

    def local_name(self, principal: str) -> str:
        """The local name of ``principal`` (``current_user.username``). May be overridden.

        For our realms (``realm``, and those listed in ``realms``): krb5.conf's
        ``auth_to_local`` rules (and MIT's default rule), else the principal without its
        realm. For a realm admitted only by ``realms="*"``: the whole principal, so that
        nobody from elsewhere becomes a local user. Results are cached: restart to apply
        changed rules.
        """
        return self._mapped(principal)

    # -- the flow -----------------------------------------------------------------------

    @overload
    async def authenticate(
        self, handler: Handler, *, optional: Literal[False] = False
    ) -> KerberosUser: ...

    @overload
    async def authenticate(self, handler: Handler, *, optional: bool) -> KerberosUser | None: ...

    async def authenticate(
        self, handler: Handler, *, optional: bool = False
    ) -> KerberosUser | None:
        """Authenticate ``handler``'s request, or answer it and raise
        :class:`tornado.web.Finish`. Sets and returns ``handler.current_user``.

        ``optional``: a request that brings no credentials at all (no ``Authorization``
        header, no valid session cookie) is let through with ``current_user`` ``None``;
        credentials that fail still get the 401. A CORS preflight (``OPTIONS`` with
        ``Access-Control-Request-Method``, no body, to a handler with an ``options()`` of
        its own) is let through with ``None`` too: it carries no credentials by design."""
        result = self.begin(handler, optional=optional)
        return result if result is None or isinstance(result, KerberosUser) else await result

    def begin(
        self, handler: Handler, *, optional: bool = False
    ) -> KerberosUser | Awaitable[KerberosUser] | None:
        """Like :meth:`authenticate`, but returns the user at once when no KDC (and no
        async authorization) is needed, as for every Negotiate login: staying synchronous
        keeps the hot path off the coroutine machinery."""
        return self._begin(handler, optional)

    def _begin(
        self, handler: Handler, optional: bool
    ) -> KerberosUser | Awaitable[KerberosUser] | None:
        # Positional, for the decorators: a keyword argument costs measurably (valgrind).
        if handler._headers_written:
            self._too_late(handler)
        request = handler.request
        if request.method == "OPTIONS" and _preflight(handler):
            # A CORS preflight carries no credentials, by design: it goes to the handler's
            # options() (the application's CORS answer) as nobody, never to a 401.
            handler.current_user = None
            return None
        tls = self.proxies.scheme(request) == "https"
        scheme = ""
        try:
            if (
                self._refuse_cross_site
                and request.method not in _SAFE_METHODS
                and self._cross_site(request)
            ):
                # Before any challenge: a 401 would invite the browser to log in, for a
                # page on another site, with the user's ticket or remembered password.
                raise Forbidden("cross-site", "")
            self.acceptor.credentials()  # a broken keytab fails every request, anonymous or not
            headers = request.headers
            if "Authorization" in headers:  # `in`: no KeyError raised and caught, as get() does
                scheme, credentials = split_authorization(headers["Authorization"])
                if scheme == "negotiate":
                    token = parse_negotiate(credentials)
                    bindings = self._bindings if tls else None
                    accepted = self.acceptor.accept(token, bindings, request.host_name)
                    if self._require_binding and not accepted.channel_bound:
                        # On plain HTTP there is no channel to bind to: never bound.
                        raise AuthenticationFailed("unbound", "token not bound to a TLS channel")
                    return self._admit(handler, accepted, "negotiate")
                if scheme == "basic" and self._basic_on and tls:
                    principal, password = parse_basic(credentials, self.realm, self._forms)
                    if self.basic_cache is not None:
                        proven = self.basic_cache.get(principal, password)
                        if proven is not None:  # no KDC: the password was proven before
                            # Whom the keytab accepted then, not the name as typed (an alias).
                            cached = Accepted(
                                proven[0], None, None, proven[1], "none", False, proven[2]
                            )
                            return self._admit(handler, cached, "basic", fresh=False)
                    return self._basic(handler, principal, password)
                if scheme == "basic":
                    # Plain HTTP (or Basic turned off): the password goes nowhere.
                    raise AuthenticationFailed(
                        "insecure-transport" if self.settings.basic else "basic-not-offered"
                    )
                if scheme:
                    raise AuthenticationFailed("unsupported-scheme")
            # Only without credentials in the request: a fresh login always wins.
            if self.sessions is not None:
                user = self.sessions.read(handler, self._session_user, tls)
                # Checked again each time, not only when the cookie was first verified:
                # the groups allowed move when the directory's names resolve anew.
                if user is not None and not (
                    self._needs_claims and self.policy.claims_refusal(user.claims)
                ):
                    # Realm, principal and local name were settled when the cookie was
                    # verified; the handler's own authorization is asked each time.
                    return self._authorize(handler, user, False)
            if optional:
                handler.current_user = None
                return None
            raise AuthenticationFailed("no-credentials")
        except KerberosError as err:
            self.refuse(handler, err, where=scheme if scheme in _SCHEMES else "")

    def _cross_site(self, request: tornado.httputil.HTTPServerRequest) -> bool:
        """Whether the browser says this request comes from another site's page."""
        headers = request.headers
        origin = headers.get("Origin")
        if origin is not None and origin.lower() in self._trusted_origins:
            return False
        site = headers.get("Sec-Fetch-Site")
        if site is not None:
            # A forbidden header: page scripts cannot set it. Anything but "from here"
            # (an unknown value too) counts as cross-site.
            return site.strip().lower() not in _OWN_SITE
        if origin is None:
            return False  # not a browser, or one too old to say: nothing to go by
        own = f"{self.proxies.scheme(request)}://{request.host}"
        return normal_origin(origin) != normal_origin(own)

    def challenge(self, handler: Handler) -> NoReturn:
        """Answer 401 with the challenges now, whoever is logged in, and raise
        :class:`tornado.web.Finish`: the browser logs in afresh (with a token, delegated
        if it delegates to us), for example when a session user needs credentials."""
        log.debug("fresh login asked of %s", handler.request.remote_ip)
        self.refusals.answer(handler, 401, "login-requested")

    @overload
    def logout(self, handler: Handler, *, everywhere: Literal[False] = False) -> None: ...
    @overload
    def logout(self, handler: Handler, *, everywhere: Literal[True]) -> asyncio.Task[float]: ...
    def logout(self, handler: Handler, *, everywhere: bool = False) -> asyncio.Task[float] | None:
        """Clear the session cookie (a browser with a ticket logs in again at once,
        without a prompt: Negotiate needs none).

        ``everywhere=True``: also end every session of the request's user, on every
        process that shares the ``store`` (other browsers, other devices), and their
        remembered Basic passwords: see :meth:`end_sessions`. This process stops taking
        them at once; the returned task records it in the store (await it to know it
        did: :class:`~tornado_kerb.StoreUnavailable` if the store did not answer; a task
        nobody awaits still runs, and logs a failure)."""
        if self.sessions is not None:
            self.sessions.clear(handler)
        if not everywhere:
            return None
        user = handler.current_user
        if not isinstance(user, KerberosUser):
            raise NoCredentials("logout(everywhere=True) needs a logged-in user")
        return _logged(asyncio.create_task(self.end_sessions(user.principal)), user.principal)

    async def end_sessions(self, principal: str) -> float:
        """End every session cookie of ``principal`` issued until now, and forget their
        remembered Basic passwords, on every process sharing the ``store`` (an admin's
        call for a user who left, or whose password leaked). Their next request logs in
        afresh, which the KDC decides. Returns the time recorded; raises
        :class:`~tornado_kerb.StoreUnavailable` when the store could not record it (this
        process has stopped taking them all the same)."""
        when = await self.store.end_sessions(principal)
        log.info("sessions of %s ended everywhere (before %.0f)", principal, when)
        return when

    def _session_user(self, handler: Handler, session: Session) -> KerberosUser | None:
        # A cookie that verified: is its principal still one this guard lets in?
        if self._refusal(session.principal):
            return None
        try:
            username = self._local_name_for(handler, session.principal)
        except LocalNameError:
            # We never sign a principal krb5 cannot parse: a cookie forged with the
            # secret, or a rule that broke since. Either way not a login: the fresh one
            # that follows fails closed (503) if the rule is what broke.
            return None
        if self._needs_claims and self.policy.claims_refusal(session.claims):
            # Groups or indicators of a login made under other settings: a fresh login
            # decides (and answers 403 if it still falls short).
            return None
        log.debug("session cookie of %s verified", session.principal)
        return KerberosUser(
            session.principal,
            session.mechanism,
            None,
            float(session.expires_at),
            username,
            True,
            "none",
            False,
            session.claims,
            self._sid_of,
        )

    def _check_once(self, app: tornado.web.Application, key: str = "kerberos") -> None:
        # An explicit guard meets its application only here, at its first request (and
        # again after add_handlers() changed the routes).
        routes = _routes.fingerprint(app)
        if getattr(app, "_tornado_kerb_checked", None) != routes:
            self.check_application(app, key)
            app._tornado_kerb_checked = routes  # type: ignore[attr-defined]

    def admits(self, principal: str, claims: Claims | None = None) -> Reason | None:
        """The guard-wide checks (``realms``, ``allowed_principals``, and with ``claims``
        ``allowed_groups`` and ``required_indicators``) for a principal authenticated some
        other way (a login cookie of its own): ``None`` when it may in, else the reason it
        may not (``"foreign-realm"``, ``"forbidden"``, ``"not-in-group"``…). Without
        ``claims`` a guard that checks groups or indicators says no. The handler's
        :meth:`authorize` is still to be asked."""
        return self._refusal(principal) or (
            self.policy.claims_refusal(claims or NONE) if self._needs_claims else None
        )

    def _refusal(self, principal: str) -> Reason | None:
        """The guard-wide checks: why ``principal`` may not log in, or ``None``."""
        return self.policy.refusal(principal)

    async def run_as_user(
        self,
        user: object,
        fn: Callable[..., T],
        /,
        *args: Any,
        delegate_to: str | Iterable[str] = (),
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker thread acting as ``user``.

        The user's credentials are that thread's default Kerberos credentials for the
        call (see :mod:`tornado_kerb.credentials`): GSSAPI clients inside act as the user.
        ``delegate_to`` names the services ``fn`` will reach (``"postgres@db.example.com"``):
        their tickets are fetched first, and one the KDC refuses raises
        :class:`~tornado_kerb.DelegationRefused` naming it.

        Credentials are the client's forwarded TGT, a Basic login's TGT, or, with the
        ``s4u2proxy`` setting, constrained delegation: from the user's own ticket to us
        (S4U2Proxy), or for a user whose request brought no ticket (a session cookie, a
        Basic cache hit) by protocol transition (S4U2Self, if the KDC allows it). Without
        any, raises :class:`~tornado_kerb.NoCredentials`. ``fn`` must be a plain
        function: a coroutine would run later, on the IOLoop, as somebody else
        (TypeError). Threads that ``fn`` starts do not inherit the user's credentials.
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("run_as_user needs a plain function, not a coroutine function")
        if not isinstance(user, KerberosUser):
            raise NoCredentials("no credentials to act as the user: nobody is logged in")
        if self.acceptor.proxy is not None:
            raise NoCredentials(
                "no acting as users with the gssproxy setting: GSS-Proxy's credentials "
                "cannot become a thread's credential cache (a client library would act as "
                "the service itself), and constrained delegation needs the keytab"
            )
        targets = (delegate_to,) if isinstance(delegate_to, str) else tuple(delegate_to)
        creds = user.delegated_credentials
        delegation = self.acceptor.delegation
        if creds is not None:
            call = functools.partial(call_as, creds, fn, *args, delegate_to=targets, **kwargs)
        elif delegation is not None and self._live and self._live.get(user.principal):
            # Protocol transition, only for a user with a request in flight here: the
            # guard never acts for users who are not using the application right now.
            call = functools.partial(
                _impersonating, delegation, user.principal, fn, targets, args, kwargs
            )
        elif delegation is not None:
            raise NoCredentials(
                f"will not act as {user.principal}: no request of theirs is in flight"
            )
        else:
            raise NoCredentials(
                "no credentials to act as the user: the client delegated none "
                "(or the request that brought them has finished); constrained delegation "
                "(the s4u2proxy setting) can act without them"
            )
        return await tornado.ioloop.IOLoop.current().run_in_executor(None, call)

    @property
    def delegation_problem(self) -> str:
        """Why constrained delegation cannot be used now ("" when it can, or is off)."""
        delegation = self.acceptor.delegation
        return "" if delegation is None or delegation.current() else delegation.problem

    def delegation_ready(self, timeout: float | None = None) -> bool:
        """Wait until constrained delegation can be used (the ``s4u2proxy`` setting: our
        own TGT, fetched in the background from the moment the guard is built); whether
        it can. Blocks: call it at start-up, or in an executor. Logins never wait for it:
        those that come first just get no constrained credentials."""
        delegation = self.acceptor.delegation
        return delegation is not None and delegation.ready(timeout)

    async def prove(self, principal: str, password: str) -> Accepted:
        """Prove a Basic password on a KDC thread; the IOLoop keeps serving meanwhile.

        Gives up after ``kdc_timeout`` seconds (:class:`~tornado_kerb.KDCUnavailable`,
        503); the thread still counts against ``kdc_workers + kdc_queue`` until libkrb5
        returns, so a hanging KDC cannot pile up threads without bound.
        """
        return await self.kdc.prove(principal, password, self.acceptor)

    async def _basic(self, handler: Handler, principal: str, password: str) -> KerberosUser:
        try:
            accepted = await self._prove_limited(handler, principal, password)
            result = self._admit(handler, accepted, "basic")
            user = result if isinstance(result, KerberosUser) else await result
        except KerberosError as err:
            self.refuse(handler, err, where="basic", principal=principal)
        if self.basic_cache is not None:
            # Only now, for a user let in: a password whose owner got a 403 proves
            # nothing worth keeping. Remembered as whom our keytab accepted.
            self.basic_cache.put(principal, password, user, accepted.expires_at)
        return user

    async def _prove_limited(self, handler: Handler, principal: str, password: str) -> Accepted:
        """Prove a password, within ``login_limits``: over one, :class:`TooManyAttempts`
        and the KDC is not asked; a refused password counts against the user's name and
        the client's address, a good one clears the user's count."""
        store = self.store
        limits = store.limits  # the settings' login_limits (make_store checks)
        if limits is None:
            return await self.kdc.prove(principal, password, self.acceptor)
        key, address = principal_key(principal), self.proxies.client(handler.request)
        deadline = time.monotonic() + self.settings.kdc_timeout
        # A store down: StoreUnavailable (503), the KDC not asked: limits fail closed.
        attempt = secrets.token_hex(8)  # its in-flight count ends with it, and only it
        while (wait := await store.begin(key, address, attempt)) == 0:
            # That user's attempts at the KDC now would fill the limit if they failed:
            # wait for one of them to end. Guesses sent all at once go per_principal at a
            # time, and so do a user's own parallel logins; past a few rounds of waiters,
            # the answer is 429 at once rather than a coroutine held for kdc_timeout.
            ended, waiting = self._attempts.get(key, (None, 0))
            remaining = deadline - time.monotonic()
            if waiting >= _WAITERS * limits.per_principal or remaining <= 0:
                wait = 1
                break
            if ended is None:
                ended = asyncio.Event()
            self._attempts[key] = (ended, waiting + 1)
            try:
                # Attempts in other processes (a shared store) wake nobody here: ask
                # the store again every _RECHECK seconds until the deadline.
                timeout = min(remaining, _RECHECK) if store.shared else remaining
                await asyncio.wait_for(ended.wait(), timeout)
            except asyncio.TimeoutError:
                if not store.shared or time.monotonic() >= deadline:
                    wait = 1
                    break
            finally:
                ended_now, left = self._attempts.get(key, (None, 1))
                if ended_now is ended:
                    if left > 1:
                        self._attempts[key] = (ended, left - 1)
                    else:
                        del self._attempts[key]
        if wait is not None:
            raise TooManyAttempts(wait)
        failed = proven = False
        try:
            accepted = await self.kdc.prove(principal, password, self.acceptor)
            proven = True
            return accepted
        except AuthenticationFailed as err:
            failed = err.reason in PASSWORD_REFUSALS
            raise
        finally:
            # Counted from begin() to here: guesses sent at once wait for each other.
            await store.end(
                key, address, failed=failed, proven=proven, name=principal, attempt=attempt
            )
            # Wake only this user's waiters (a new event for those who come later).
            waiters = self._attempts.pop(key, None)
            if waiters is not None:
                waiters[0].set()

    def refuse(
        self,
        handler: Handler,
        err: KerberosError,
        *,
        where: str = "",
        principal: str | None = None,
    ) -> NoReturn:
        """The one place a failure becomes a log line, an outcome and an answer (401, 403,
        429 or 503; see :mod:`tornado_kerb.refusals`). ``where``: the scheme that was
        tried; ``principal``: who, if known."""
        self.refusals.refuse(handler, err, where=where, principal=principal)

    def _admit(
        self,
        handler: Handler,
        accepted: Accepted,
        mechanism: Mechanism,
        *,
        fresh: bool = True,
    ) -> KerberosUser | Awaitable[KerberosUser]:
        """Authorize an authenticated principal; the user, or an awaitable of it.

        ``fresh``: proven just now (a session cookie may be set)."""
        if accepted.output_token:
            # Mutual authentication: even a 403 proves the server to the client.
            token = base64.b64encode(accepted.output_token).decode("ascii")
            handler._kerberos_mutual_token = f"Negotiate {token}"  # type: ignore[attr-defined]
            handler.add_header("WWW-Authenticate", f"Negotiate {token}")
        principal = accepted.principal
        refusal = self._refusal(principal)
        if refusal:
            raise Forbidden(refusal, principal)
        # Positional: a keyword argument here costs ~1% of the guard's own work (valgrind).
        user = KerberosUser(
            principal,
            mechanism,
            accepted.delegated_credentials,
            accepted.expires_at,
            self._local_name_for(handler, principal),
            False,  # from_session
            accepted.credential_kind,
            accepted.channel_bound,
            accepted.claims,
            self._sid_of,
        )
        if self._needs_claims:
            refusal = self.policy.claims_refusal(user.claims)
            if refusal:
                raise Forbidden(refusal, principal)
        return self._authorize(handler, user, fresh)

    def _authorize(
        self, handler: Handler, user: KerberosUser, fresh: bool
    ) -> KerberosUser | Awaitable[KerberosUser]:
        """The handler's (or a subclass's) own verdict on a user who passed the rest."""
        cls = type(handler)
        hookless = self._hookless.get(cls)
        if hookless is None:
            hook = getattr(cls, "kerberos_authorize", None)
            hookless = self._hookless[cls] = self._default_authorize and (
                hook is None or _is_default(hook)
            )
        if hookless and "kerberos_authorize" not in handler.__dict__:
            # Neither the guard's class nor the handler's says more than "yes": asking
            # would cost more than the rest of a session request's guard work.
            return self._grant(handler, user, fresh)
        # A subclass's authorize() may return anything: only True lets the user in.
        verdict = bool_or_awaitable(self.authorize(user, handler))
        if verdict is True:
            return self._grant(handler, user, fresh)
        if verdict is False:
            raise Forbidden("forbidden", user.principal)
        return self._grant_later(handler, user, verdict, fresh)

    async def _grant_later(
        self, handler: Handler, user: KerberosUser, verdict: Awaitable[bool], fresh: bool
    ) -> KerberosUser:
        try:
            if bool_or_awaitable(await verdict) is not True:
                raise Forbidden("forbidden", user.principal)
        except KerberosError as err:
            # As a refusal by a plain verdict is told: the scheme of this request's login.
            self.refuse(handler, err, where="" if user.from_session else user.mechanism)
        return self._grant(handler, user, fresh)

    def _grant(self, handler: Handler, user: KerberosUser, fresh: bool) -> KerberosUser:
        if not user.from_session:  # a session's user was logged when its cookie was verified
            log.debug("authenticated %s via %s", user.principal, user.mechanism)
        handler.current_user = user
        if self._down:
            self.refusals.back_up(user, fresh)
        if self._observed:
            outcome: Outcome = (
                "session.ok"
                if user.from_session
                else "negotiate.ok"
                if user.mechanism == "negotiate"
                else "basic.ok"
                if fresh
                else "basic.cached"
            )
            self.on_outcome(handler, outcome, user.mechanism, user.principal)
        if user.delegated_credentials is not None or self._live is not None:
            _forget_on_finish(handler, user, self._live)
        if fresh and self.sessions is not None:
            self._check_once(handler.application)
            self.sessions.start(handler, user)
        if self._ws_expiry and isinstance(handler, tornado.websocket.WebSocketHandler):
            close_when_login_ends(handler, user, self.store)
        return user

    def _local_name_for(self, handler: Handler, principal: str) -> str:
        hook = getattr(handler, "kerberos_local_name", None)
        if hook is None or getattr(hook, "_tornado_kerb_default", False):
            return self.local_name(principal)
        return str(hook(principal))

    def _map_local_name(self, principal: str) -> str:
        name, _, realm = principal.rpartition("@")
        if realm != self.realm and (self.realms is None or realm not in self.realms):
            # A realm admitted only by "*": krb5 would map it by rules that may ignore
            # the realm (auth_to_local_names does), making dave@PARTNER.ORG the local
            # dave. The whole principal can collide with nobody.
            return principal
        mapped = _localname.aname_to_localname(principal)
        if mapped is not None:
            return mapped
        return name or principal

    # -- answers ------------------------------------------------------------------------

    def on_outcome(
        self,
        handler: Handler,
        outcome: Outcome,
        mechanism: str | None,
        principal: str | None,
    ) -> None:
        """Called with every login's outcome. May be overridden, to count them.

        ``outcome`` is a stable code (:data:`tornado_kerb.reasons.OUTCOMES`: ``negotiate.ok``,
        ``basic.bad-password``, ``kdc.unreachable``…); ``mechanism`` the scheme this
        request tried (``"negotiate"``, ``"basic"``; ``"form"`` for a sign-in form refused
        with 429 or 503), the original login's on ``session.ok``, else ``None`` (no
        credentials, a session request refused); ``principal`` the user
        where known. ``handler.request.request_time()`` gives the seconds so far. Runs on
        the IOLoop, on the hot path: keep it cheap, never block. Not overridden, it costs
        nothing.
        """

    def write_answer(
        self, handler: Handler, status: int, reason: str, principal: str | None = None
    ) -> None:
        """Write the body of a 401, 403 or 503 answer. May be overridden.

        Status, challenges and ``Retry-After`` are set already (and set again after
        this returns, whatever it did to them); do not finish. ``reason`` is our word for
        what happened (``no-credentials``, ``forbidden``, ``kdc-unreachable``…): never
        GSSAPI detail, but not all of it is for clients either. The default asks the
        handler's ``write_kerberos_answer(status, reason)`` when it has one, else writes
        :func:`~tornado_kerb.answers.write_default_answer`'s HTML, JSON or text.
        """
        hook = getattr(handler, "write_kerberos_answer", None)
        if hook is not None and not _is_default(hook):
            # Like write_error(status_code, **kwargs): principal only when there is one.
            if principal is None:
                hook(status, reason)
            else:
                hook(status, reason, principal=principal)
            return
        self.write_default_answer(handler, status, reason, principal)

    def write_default_answer(
        self,
        handler: Handler,
        status: int,
        reason: str,
        principal: str | None = None,
        *,
        form: Form | None = None,
    ) -> None:
        """The built-in body: HTML for browsers, JSON when asked for, else text; or
        ``form`` (``"html"``, ``"json"``, ``"text"``) whatever the client asked for. With
        ``login_form``, a browser's 401 is the sign-in page."""
        if status == 401 and form in (None, "html") and self.refusals.shows_form(handler):
            self.write_login_page(handler, 401, next_url=safe_next(handler.request.uri))
            return
        write_default_answer(
            handler,
            status,
            reason,
            principal=principal,
            retry_after=(
                self.settings.retry_after
                if status == 503
                else getattr(handler, "_kerberos_retry_after", None)
            ),
            password_offered=self.refusals.offers_basic(handler),
            form=form,
        )

    def write_login_page(
        self,
        handler: Handler,
        status: int,
        *,
        next_url: str = "/",
        failed: bool = False,
        username: str = "",
    ) -> None:
        """Write the sign-in page (its status is set; do not finish). May be overridden,
        as may the handler's ``write_kerberos_login_page(status, next_url=, failed=,
        username=)``. ``failed``: a login was just refused (one message whatever the
        reason: it must not say whether the user exists)."""
        hook = getattr(handler, "write_kerberos_login_page", None)
        handler.set_status(status)
        handler.set_header("Cache-Control", "no-store")
        if hook is not None:
            hook(status, next_url=next_url, failed=failed, username=username)
            return
        action = self._login_form.path if self._login_form is not None else "/login"
        write_page(handler, action=action, next_url=next_url, failed=failed, username=username)

    async def form_login(
        self, handler: Handler, username: str, password: str, next_url: str
    ) -> None:
        """Sign in from the form: prove the password (as Basic's, within
        ``login_limits``), set the session cookie and redirect (303) to ``next_url``; a
        refused password shows the form again. Called by :class:`~tornado_kerb.login.
        LoginHandler`."""
        await sign_in(self, handler, username, password, next_url)

    def _observe_form(self, handler: Handler, reason: Reason) -> None:
        if self._observed:
            self.on_outcome(handler, outcome_for("form", reason), "basic", None)

    def login_routes(self, prefix: str = "/login") -> list[tuple[str, Any, Any]]:
        """The sign-in form's routes for the application: ``prefix`` (the form, which
        posts there) and ``prefix + "/logout"``; the ``login_form`` setting's ``path``
        must be ``prefix``. Handlers that use this guard::

            app = tornado.web.Application([..., *guard.login_routes("/login")], ...)
        """
        return login_routes(prefix, self)

    def _too_late(self, handler: Handler) -> NoReturn:
        # Too late for a 401: say why, then cut the connection so the client cannot take
        # the partial response for a complete one.
        message = (
            "tornado_kerb: authentication ran after the response headers were flushed; "
            "guard the method (or authenticate in prepare()) before writing"
        )
        log.error("%s (%s %s)", message, handler.request.method, handler.request.path)
        handler.request.connection.close()  # type: ignore[union-attr]
        raise RuntimeError(message)


def bool_or_awaitable(value: object) -> Verdict:
    """``value`` as a verdict: awaitables stay awaitable, anything else must be a bool."""
    if value is True or value is False:
        return value  # the common case, before the costlier awaitable check
    if inspect.isawaitable(value):
        return value
    # Fail closed: only True lets a user in (None from a hook that forgot to return).
    return False


def _impersonating(
    delegation: ConstrainedDelegation,
    principal: str,
    fn: Callable[..., T],
    targets: tuple[str, ...],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    # In the worker thread: S4U2Self talks to the KDC.
    creds = delegation.impersonate(principal)
    return call_as(creds, fn, *args, delegate_to=targets, **kwargs)


def _logged(task: asyncio.Task[float], principal: str) -> asyncio.Task[float]:
    # A logout's task that nobody awaits must not fail silently.
    def done(finished: asyncio.Task[float]) -> None:
        if not finished.cancelled() and finished.exception() is not None:
            log.error(
                "sessions of %s ended in this process only: %s", principal, finished.exception()
            )

    task.add_done_callback(done)
    return task


def _keep_for(settings: KerberosSettings) -> float:
    # How long a "sessions ended before" time matters: until the last session or cached
    # password it could end has expired anyway.
    longest = 3600.0
    if settings.session is not None:
        longest = max(longest, settings.session.max_age)
    if settings.basic_cache is not None:
        longest = max(longest, settings.basic_cache.ttl)
    return longest + 60


def _sessions_on(settings: KerberosSettings) -> bool:
    # As the guard decides: channel_binding="require" turns session cookies off.
    return settings.session is not None and settings.channel_binding != "require"


def _check_routes(app: tornado.web.Application, *, sessions: bool) -> None:
    if sessions:
        require_secret(app.settings)
    problems = _routes.application_problems(app)
    if problems:
        raise ConfigurationError("; ".join(problems))


def _missing_setting(app: tornado.web.Application, key: str) -> str:
    others = [str(name) for name in app.settings if name != key]
    near = difflib.get_close_matches(key, others, n=1, cutoff=0.7)
    hint = f" (did you mean {key!r}, not {near[0]!r}?)" if near else ""
    return (
        f"the application has no {key!r} setting{hint}: tornado_kerb will not guess "
        f"(pass {key}={{...}}; {key}={{}} asks for the defaults: the system keytab, any "
        "HTTP/ key in it)"
    )


def _is_default(method: Any) -> bool:
    return bool(getattr(method, "_tornado_kerb_default", False))


def _preflight(handler: Handler) -> bool:
    """A CORS preflight for a handler that answers one: ``Access-Control-Request-Method``,
    no body (browsers send none, and a streaming handler would take it before any
    login), and an ``options()`` of the handler's own, not Tornado's 405 stub."""
    headers = handler.request.headers
    if "Access-Control-Request-Method" not in headers or "Transfer-Encoding" in headers:
        return False
    if headers.get("Content-Length", "0") != "0":
        return False
    options = inspect.unwrap(getattr(type(handler), "options", _STUB))
    return options is not _STUB


def _forget_on_finish(
    handler: Handler, user: KerberosUser, live: dict[str, int] | None = None
) -> None:
    # Tornado calls on_finish once the response is done; wrapping it on the instance
    # (not the class) also covers handlers that override on_finish without super().
    original = handler.on_finish
    principal = user.principal
    if live is not None:
        live[principal] = live.get(principal, 0) + 1

    def on_finish() -> None:
        try:
            original()
        finally:
            user._forget_credentials()
            if live is not None:
                left = live.pop(principal, 1) - 1
                if left > 0:
                    live[principal] = left
            # This closure and the handler refer to each other: undo it, so refcounting
            # frees the handler without waiting for the cycle collector.
            handler.__dict__.pop("on_finish", None)

    handler.on_finish = on_finish  # type: ignore[method-assign,unused-ignore]
