"""The Tornado face of tornado_kerb: :class:`KerberosAuthMixin` and the method guards."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import tornado.ioloop
import tornado.web

from ._header import split_authorization
from .basic import default_realm, parse_basic, prove_password
from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    KDCUnavailable,
    KeytabError,
    LoginError,
)
from .negotiate import Accepted, Acceptor, parse_negotiate
from .settings import KerberosSettings
from .user import KerberosUser, Mechanism

__all__ = ["KerberosAuthMixin", "authenticated", "public"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Every browser login starts without credentials: not worth an info line. A ticket our
# keytab rejects after the KDC accepted the password means someone answers for the KDC.
_REFUSAL_LEVELS = {"no-credentials": logging.DEBUG, "kdc-not-trusted": logging.WARNING}

if TYPE_CHECKING:
    _HandlerBase = tornado.web.RequestHandler
else:
    _HandlerBase = object


class _Authenticator:
    """What one distinct settings object needs at run time, shared by all its handlers."""

    def __init__(self, settings: KerberosSettings) -> None:
        self.settings = settings
        self.acceptor = Acceptor(settings.keytab, settings.service, settings.hostname)
        realm = settings.realm or default_realm()
        if settings.basic and not realm:
            raise ConfigurationError(
                "Basic needs a realm: set kerberos['realm'] or default_realm in krb5.conf"
            )
        #: Realm of Basic users and of the Basic challenge.
        self.realm = realm or ""
        self.executor = concurrent.futures.ThreadPoolExecutor(
            settings.kdc_workers, thread_name_prefix="tornado_kerb-kdc"
        )
        self._lock = threading.Lock()
        self._in_flight = 0

    @contextlib.contextmanager
    def _kdc_slot(self) -> Iterator[None]:
        # Bound the work a flood of Basic logins can queue up behind the KDC threads.
        with self._lock:
            if self._in_flight >= self.settings.kdc_workers + self.settings.kdc_queue:
                raise KDCUnavailable("kdc-busy", "too many Basic logins waiting")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    async def prove(self, principal: str, password: str) -> Accepted:
        """Prove a Basic password on a KDC thread; the IOLoop keeps serving meanwhile."""
        with self._kdc_slot():
            return await tornado.ioloop.IOLoop.current().run_in_executor(
                self.executor, prove_password, principal, password, self.acceptor
            )


_authenticators: dict[KerberosSettings, _Authenticator] = {}
_by_identity: dict[int, tuple[KerberosSettings, _Authenticator]] = {}
_authenticators_lock = threading.Lock()
_parsed: dict[int, tuple[weakref.ref[tornado.web.Application], object, KerberosSettings]] = {}


def _authenticator(settings: KerberosSettings) -> _Authenticator:
    # Looked up by identity first: hashing the settings on every request costs more.
    entry = _by_identity.get(id(settings))
    if entry is not None and entry[0] is settings:
        return entry[1]
    with _authenticators_lock:
        auth = _authenticators.get(settings)
        if auth is None:
            # Only the first object of a value is remembered by identity, so settings
            # rebuilt per request (an overridden get_kerberos_settings) cannot pile up.
            auth = _authenticators[settings] = _Authenticator(settings)
            _by_identity[id(settings)] = (settings, auth)
    return auth


class KerberosAuthMixin(_HandlerBase):
    """Kerberos single sign-on for a :class:`tornado.web.RequestHandler`.

    Settings come from ``Application.settings["kerberos"]`` (see :class:`KerberosSettings`).
    Guard methods with :func:`authenticated`, or set ``kerberos_required = True`` on a base
    handler to guard every HTTP method its subclasses define (leave one open with
    :func:`public`)::

        class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
            @authenticated
            def get(self):
                self.write({"principal": self.current_user.principal})

    Unauthenticated requests get ``401`` with ``WWW-Authenticate: Negotiate`` and, on TLS
    connections only, ``Basic``. On success ``current_user`` is a :class:`KerberosUser`.
    """

    #: Guard every HTTP method this class and its subclasses dispatch to (see :func:`public`).
    kerberos_required: bool = False

    _KERBEROS_SETTINGS_KEY = "kerberos"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.kerberos_required:
            return
        # Wrapping at class creation, not in prepare(), keeps the protection even when a
        # subclass overrides prepare() and forgets to call super(). Every method Tornado
        # may dispatch to is wrapped, wherever it was defined (another base, a
        # StaticFileHandler, a SUPPORTED_METHODS extension).
        for verb in cls.SUPPORTED_METHODS:
            name = verb.lower()
            method = getattr(cls, name, None)
            # RequestHandler's own "405" stubs stay as they are: a wrapped copy here would
            # hide a real method of a later base (StaticFileHandler.get) in the MRO.
            unimplemented = method is getattr(tornado.web.RequestHandler, name, None)
            if callable(method) and not unimplemented and not _is_public(method):
                setattr(cls, name, authenticated(method))

    def get_kerberos_settings(self) -> KerberosSettings:
        """The validated settings for this request. May be overridden.

        The default reads ``self.settings["kerberos"]`` and validates it once per
        application; a bad value raises :class:`~tornado_kerb.ConfigurationError`.
        """
        app = self.application
        raw = app.settings.get(self._KERBEROS_SETTINGS_KEY)
        # Keyed by id() with a weak reference to check it: cheaper per request than a
        # WeakKeyDictionary, which builds a new weak reference on every lookup.
        cached = _parsed.get(id(app))
        if cached is None or cached[0]() is not app or cached[1] is not raw:
            cached = (weakref.ref(app), raw, KerberosSettings.from_mapping(raw))
            _parsed[id(app)] = cached
        return cached[2]

    def clear(self) -> None:
        """Reset the response (see :meth:`tornado.web.RequestHandler.clear`), keeping the
        mutual-authentication token: an error page after a successful login must still
        prove the server to a client that requires it."""
        super().clear()
        token = getattr(self, "_kerberos_mutual_token", None)
        if token:
            self.add_header("WWW-Authenticate", token)

    def write_kerberos_unauthorized(self) -> None:
        """Write the body of the 401 answer. May be overridden (status and challenges
        are already set; do not finish)."""
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.write("401 Unauthorized: Kerberos (Negotiate) authentication required.\n")

    async def kerberos_authenticate(self) -> KerberosUser:
        """Authenticate the request, or answer it and raise :class:`tornado.web.Finish`.

        Sets and returns ``self.current_user``. :func:`authenticated` calls this; call it
        yourself (for example from ``prepare``) only before anything has been flushed.
        """
        pending = self._kerberos_begin()
        return await pending if pending is not None else cast(KerberosUser, self.current_user)

    def _kerberos_begin(self) -> Awaitable[KerberosUser] | None:
        """Authenticate now when no KDC is needed (Negotiate) and return ``None``; for
        Basic, return the awaitable KDC work. Either way, a refusal answers and raises
        :class:`tornado.web.Finish`. Staying synchronous keeps Negotiate off the
        coroutine machinery (measurable at thousands of requests a second)."""
        if self._headers_written:
            # Too late for a 401: say why, then cut the connection so the client cannot
            # take the partial response for a complete one.
            message = (
                "tornado_kerb: authentication ran after the response headers were flushed; "
                "guard the method (or authenticate in prepare()) before writing"
            )
            log.error("%s (%s %s)", message, self.request.method, self.request.path)
            self.request.connection.close()  # type: ignore[union-attr]
            raise RuntimeError(message)
        settings = self.get_kerberos_settings()
        auth = _authenticator(settings)
        offer_basic = settings.basic and self.request.protocol == "https"
        scheme, credentials = split_authorization(self.request.headers.get("Authorization", ""))
        try:
            auth.acceptor.credentials()  # a broken keytab fails every request, anonymous or not
            if scheme == "negotiate":
                self._kerberos_login(
                    auth.acceptor.accept(parse_negotiate(credentials)), "negotiate"
                )
                return None
            if scheme == "basic" and offer_basic:
                principal, password = parse_basic(credentials, auth.realm)
                return self._kerberos_basic(auth, principal, password, offer_basic)
            if scheme == "basic":
                # Plain HTTP (or Basic turned off): the password goes nowhere.
                raise AuthenticationFailed("basic-not-offered")
            raise AuthenticationFailed("unsupported-scheme" if scheme else "no-credentials")
        except (LoginError, KeytabError) as err:
            self._kerberos_refuse(err, auth, offer_basic)

    async def _kerberos_basic(
        self, auth: _Authenticator, principal: str, password: str, offer_basic: bool
    ) -> KerberosUser:
        try:
            accepted = await auth.prove(principal, password)
        except (LoginError, KeytabError) as err:
            self._kerberos_refuse(err, auth, offer_basic)
        return self._kerberos_login(accepted, "basic")

    def _kerberos_login(self, accepted: Accepted, mechanism: Mechanism) -> KerberosUser:
        if accepted.output_token:
            token = base64.b64encode(accepted.output_token).decode("ascii")
            self._kerberos_mutual_token = f"Negotiate {token}"
            self.add_header("WWW-Authenticate", self._kerberos_mutual_token)
        log.debug("authenticated %s via %s", accepted.principal, mechanism)
        user = KerberosUser(
            principal=accepted.principal,
            mechanism=mechanism,
            delegated_credentials=accepted.delegated_credentials,
            expires_at=accepted.expires_at,
        )
        self.current_user = user
        return user

    def _kerberos_refuse(
        self, err: LoginError | KeytabError, auth: _Authenticator, offer_basic: bool
    ) -> NoReturn:
        """The one place a failure becomes a log line and an answer."""
        if isinstance(err, AuthenticationFailed):
            level = _REFUSAL_LEVELS.get(err.reason, logging.INFO)
            peer = self.request.remote_ip
            log.log(level, "Kerberos login refused (%s) from %s", err.reason, peer)
            log.debug("refusal detail: %s", err.detail)
            self._kerberos_answer(401, auth.realm if offer_basic else None)
        elif isinstance(err, KDCUnavailable):
            log.error("Kerberos login impossible (%s): %s", err.reason, err.detail)
            self._kerberos_answer(503, retry_after=auth.settings.retry_after)
        else:
            log.error("Kerberos logins impossible, failing closed: %s", err)
            self._kerberos_answer(503)

    def _kerberos_answer(
        self, status: int, basic_realm: str | None = None, retry_after: int | None = None
    ) -> NoReturn:
        # Not send_error(): it clears headers after we set them. clear() first drops
        # anything prepare() may have buffered, so the answer carries none of the body.
        self.clear()
        self.set_status(status)
        if status == 401:
            self.add_header("WWW-Authenticate", "Negotiate")
            if basic_realm is not None:
                self.add_header("WWW-Authenticate", f'Basic realm="{basic_realm}", charset="UTF-8"')
            self.write_kerberos_unauthorized()
        else:
            if retry_after:
                self.set_header("Retry-After", str(retry_after))
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.write("503 Service Unavailable: logins are not possible right now.\n")
        self.finish()
        raise tornado.web.Finish()


def authenticated(method: F) -> F:
    """Guard a handler method (sync or ``async``) of a :class:`KerberosAuthMixin` handler.

    The method runs only for an authenticated user; everyone else gets the 401 challenge
    before a byte of the method's output::

        class Report(KerberosAuthMixin, tornado.web.RequestHandler):
            @authenticated
            async def get(self):
                self.write(f"hello {self.current_user.principal}")
    """
    if getattr(method, "_tornado_kerb_guarded", False):
        return method

    @functools.wraps(method)
    def guarded(self: KerberosAuthMixin, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, KerberosAuthMixin):
            raise TypeError(
                f"@tornado_kerb.authenticated needs {type(self).__name__} to inherit "
                "KerberosAuthMixin"
            )
        # Only a Kerberos login counts: a truthy user from some other get_current_user
        # (a cookie, say) must not stand in for one.
        if not isinstance(self.current_user, KerberosUser):
            pending = self._kerberos_begin()
            if pending is not None:
                return _run_after(pending, method, self, args, kwargs)
        return method(self, *args, **kwargs)

    guarded._tornado_kerb_guarded = True  # type: ignore[attr-defined]
    return cast(F, guarded)


async def _run_after(
    pending: Awaitable[KerberosUser],
    method: Callable[..., Any],
    handler: KerberosAuthMixin,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    await pending
    result = method(handler, *args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _is_public(method: Callable[..., Any]) -> bool:
    return bool(getattr(method, "_tornado_kerb_public", False))


def public(method: F) -> F:
    """Leave one method open in a handler whose base sets ``kerberos_required = True``."""
    method._tornado_kerb_public = True  # type: ignore[attr-defined]
    return method
