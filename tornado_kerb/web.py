"""The Tornado face of tornado_kerb: :class:`KerberosAuthMixin` and the method guards.

The request flow itself lives in :class:`~tornado_kerb.KerberosGuard`; the mixin finds
its application's guard and adds the overridable methods Tornado users expect.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import tornado.web

from .errors import ConfigurationError
from .guard import KerberosGuard
from .settings import KerberosSettings
from .user import KerberosUser

__all__ = ["KerberosAuthMixin", "authenticated", "optional_login", "public"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

if TYPE_CHECKING:
    _HandlerBase = tornado.web.RequestHandler
else:
    _HandlerBase = object


class KerberosAuthMixin(_HandlerBase):
    """Kerberos single sign-on for a :class:`tornado.web.RequestHandler`.

    Settings come from ``Application.settings["kerberos"]``: a dict (see
    :class:`KerberosSettings`), a :class:`KerberosSettings`, or a :class:`KerberosGuard`.
    Guard methods with :func:`authenticated`, or set ``kerberos_required = True`` on a base
    handler to guard every HTTP method its subclasses define (leave one open with
    :func:`public`)::

        class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
            @authenticated
            def get(self):
                self.write({"principal": self.current_user.principal})

    Unauthenticated requests get ``401`` with ``WWW-Authenticate: Negotiate`` and, on TLS
    connections only, ``Basic``; users who are not allowed get ``403``. On success
    ``current_user`` is a :class:`KerberosUser`.
    """

    #: Guard every HTTP method this class and its subclasses dispatch to (see :func:`public`).
    kerberos_required: bool = False
    #: Let every HTTP method run with or without a login (see :func:`optional_login`).
    kerberos_optional: bool = False

    _KERBEROS_SETTINGS_KEY = "kerberos"
    # Read by the guard: our clear() puts the mutual-authentication token back itself.
    _kerberos_clear_keeps_token = True
    _kerberos_own_settings = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap the methods of classes that set ``kerberos_required`` or
        ``kerberos_optional``, and refuse near-misses of our names (a typo such as
        ``kerberos_requried = True`` would otherwise leave every method open)."""
        super().__init_subclass__(**kwargs)
        _refuse_near_misses(cls)
        # Tornado reads a streamed body (@stream_request_body, applied after the class is
        # made) right after prepare(): the login must come first, so prepare() is
        # wrapped here, whatever the class (or a later subclass) defines as prepare.
        _guard_prepare(cls)
        # Decided once per class, not per request: does it bring its own settings?
        cls._kerberos_own_settings = (
            cls.get_kerberos_settings is not KerberosAuthMixin.get_kerberos_settings
        )
        if cls.kerberos_required and cls.kerberos_optional:
            raise TypeError(f"{cls.__name__}: kerberos_required or kerberos_optional, not both")
        if not (cls.kerberos_required or cls.kerberos_optional):
            return
        optional = not cls.kerberos_required
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
                setattr(cls, name, _guarded(method, optional=optional))

    def get_kerberos_guard(self) -> KerberosGuard:
        """The guard that authenticates this request. May be overridden.

        The default is the application's guard (see :meth:`KerberosGuard.for_application`)
        or, when :meth:`get_kerberos_settings` is overridden, one guard per distinct
        settings value, kept on the application.
        """
        app = self.application
        if not self._kerberos_own_settings:
            return KerberosGuard.for_application(app, self._KERBEROS_SETTINGS_KEY)
        settings = self.get_kerberos_settings()
        if app.settings.get(self._KERBEROS_SETTINGS_KEY) is not None:
            own = KerberosGuard.for_application(app, self._KERBEROS_SETTINGS_KEY)
            if settings == own.settings:
                return own  # the application's guard, with whatever its class overrides
        guards: dict[KerberosSettings, KerberosGuard] = app.__dict__.setdefault(
            "_tornado_kerb_guards", {}
        )
        guard = guards.get(settings)
        if guard is None:
            guard = guards[settings] = KerberosGuard(settings)
        return guard

    def get_kerberos_settings(self) -> KerberosSettings:
        """The validated settings for this request. May be overridden.

        The default returns the settings of the application's guard, built once from
        ``self.settings["kerberos"]``; a bad value raises
        :class:`~tornado_kerb.ConfigurationError`.
        """
        return KerberosGuard.for_application(self.application, self._KERBEROS_SETTINGS_KEY).settings

    def kerberos_authorize(self, user: KerberosUser) -> bool | Awaitable[bool]:
        """May ``user`` (already authenticated, and within ``realms`` and
        ``allowed_principals``) use this handler? May be overridden, also as ``async``.

        Only ``True`` lets the user in; anything else is a 403.
        """
        return True

    kerberos_authorize._tornado_kerb_default = True  # type: ignore[attr-defined]

    def kerberos_local_name(self, principal: str) -> str:
        """The local name for ``principal`` (``current_user.username``). May be
        overridden; the default is :meth:`KerberosGuard.local_name`
        (krb5.conf's ``auth_to_local``, else the principal without our realm)."""
        return self.get_kerberos_guard().local_name(principal)

    kerberos_local_name._tornado_kerb_default = True  # type: ignore[attr-defined]

    async def run_as_user(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        delegate_to: str | Iterable[str] = (),
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker thread, acting as the current user.

        Inside ``fn``, the user's credentials are the thread's default Kerberos
        credentials, so GSSAPI clients (libpq, requests-gssapi, …) act as the user; no
        other thread or request sees them. Raises :class:`~tornado_kerb.NoCredentials`
        when there are none (the client did not delegate, and constrained delegation, the
        ``s4u2proxy`` setting, is off); ``delegate_to`` names the services ``fn`` reaches,
        so that a refusal raises :class:`~tornado_kerb.DelegationRefused` naming one
        (see :meth:`KerberosGuard.run_as_user`)::

            def whoami_in_db(user):
                with psycopg.connect(host="db.example.com", user=user, dbname="app",
                                     gssencmode="require") as conn:
                    return conn.execute("SELECT current_user").fetchone()[0]

            db_user = await self.run_as_user(whoami_in_db, self.current_user.username)
        """
        guard = self.get_kerberos_guard()
        return await guard.run_as_user(
            self.current_user, fn, *args, delegate_to=delegate_to, **kwargs
        )

    def kerberos_challenge(self) -> None:
        """Ask for a fresh login: answer 401 with the challenges and finish (raises
        :class:`tornado.web.Finish`). For a session user whose request needs credentials
        (``run_as_user``): the browser answers with a new token."""
        self.get_kerberos_guard().challenge(self)

    def kerberos_logout(self, everywhere: bool = False) -> Awaitable[float] | None:
        """End the session: clear the session cookie (see the ``session`` setting).

        A browser that holds a ticket logs in again on its next request, silently:
        Negotiate needs no prompt. Logging out of Kerberos itself is ``kdestroy``.
        ``everywhere=True`` ends all the user's sessions, on every process sharing the
        ``store``: await what it returns (see :meth:`KerberosGuard.logout`).
        """
        guard = self.get_kerberos_guard()
        return guard.logout(self, everywhere=True) if everywhere else guard.logout(self)

    def get_login_url(self) -> str:
        """Tornado's login page, for ``@tornado.web.authenticated``: without a
        ``login_url`` setting, an error that names the decorator to use instead."""
        if "login_url" not in self.settings:
            raise ConfigurationError(
                f"{type(self).__name__}: @tornado.web.authenticated needs a login page "
                "(the login_url setting); for a Kerberos login use "
                "@tornado_kerb.authenticated (it answers 401 with the challenge)"
            )
        return super().get_login_url()

    def clear(self) -> None:
        """Reset the response (see :meth:`tornado.web.RequestHandler.clear`), keeping the
        mutual-authentication token: an error page after a successful login must still
        prove the server to a client that requires it."""
        super().clear()
        token = getattr(self, "_kerberos_mutual_token", None)
        if token:
            self.add_header("WWW-Authenticate", token)

    def write_kerberos_answer(self, status: int, reason: str, **kwargs: Any) -> None:
        """Write the body of a 401, 403 or 503 answer. May be overridden, like
        :meth:`~tornado.web.RequestHandler.write_error`.

        Status, challenges and ``Retry-After`` are set already, and set again afterwards
        whatever this does; do not finish. ``reason`` is tornado_kerb's word for what
        happened (``no-credentials``, ``forbidden``, ``kdc-unreachable``…; not all of them
        are for clients); ``kwargs`` has ``principal``, the refused user, for a 403. The default is
        a short HTML page for browsers, JSON for clients asking for JSON, else text (see
        :mod:`tornado_kerb.answers`).
        """
        guard = self.get_kerberos_guard()
        guard.write_default_answer(self, status, reason, kwargs.get("principal"))

    write_kerberos_answer._tornado_kerb_default = True  # type: ignore[attr-defined]

    def write_kerberos_unauthorized(self) -> None:
        """Write the body of the 401 answer: 0.1's hook, still honoured when overridden
        (then it wins over :meth:`write_kerberos_answer` for 401s)."""
        self.write_kerberos_answer(401, "rejected")

    write_kerberos_unauthorized._tornado_kerb_default = True  # type: ignore[attr-defined]

    async def kerberos_authenticate(self) -> KerberosUser:
        """Authenticate the request, or answer it and raise :class:`tornado.web.Finish`.

        Sets and returns ``self.current_user``. :func:`authenticated` calls this; call it
        yourself (for example from ``prepare``) only before anything has been flushed.
        """
        return await self.get_kerberos_guard().authenticate(self)


def authenticated(method: F) -> F:
    """Guard a handler method (sync or ``async``).

    The method runs only for an authenticated (and authorized) user; everyone else gets
    the 401 (or 403) answer before a byte of the method's output::

        class Report(KerberosAuthMixin, tornado.web.RequestHandler):
            @authenticated
            async def get(self):
                self.write(f"hello {self.current_user.principal}")

    On a handler without :class:`KerberosAuthMixin` it uses the application's guard. On a
    :class:`tornado.websocket.WebSocketHandler`, guard ``get``: the answer comes before
    the upgrade.
    One exception: a CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``,
    no body) carries no credentials by design, and reaches an ``options()`` of the
    handler's own with ``current_user`` ``None``.
    """
    return cast(F, _InClassBody(_guarded(method, optional=False)))


def optional_login(method: F) -> F:
    """Let a handler method run with or without a login.

    A request without credentials (no ``Authorization`` header, no valid session cookie)
    runs with ``current_user`` ``None``; one with valid credentials runs as that user;
    credentials that fail still get the 401 (a wrong password must not silently become
    anonymous)::

        class Home(KerberosAuthMixin, tornado.web.RequestHandler):
            @optional_login
            def get(self):
                who = self.current_user.principal if self.current_user else "stranger"
                self.write(f"hello {who}")

    Browsers send Negotiate only after a 401, so a page reached this way sees most
    browser users as anonymous until some guarded page has asked them to log in (and,
    with sessions, set the cookie).
    """
    return cast(F, _InClassBody(_guarded(method, optional=True)))


def _guarded(method: F, *, optional: bool) -> F:
    if isinstance(method, _InClassBody):
        return cast(F, method._guarded)
    if getattr(method, "_tornado_kerb_guarded", False):
        return method

    @functools.wraps(method)
    def guarded(self: tornado.web.RequestHandler, *args: Any, **kwargs: Any) -> Any:
        # Only a Kerberos login counts: a truthy user from some other get_current_user
        # (a cookie, say) must not stand in for one.
        if not isinstance(self.current_user, KerberosUser):
            guard = (  # inline, not _guard_of(): this runs on every guarded request
                self.get_kerberos_guard()
                if isinstance(self, KerberosAuthMixin)
                else KerberosGuard.for_application(self.application)
            )
            pending = guard._begin(self, optional)
            if pending is not None and not isinstance(pending, KerberosUser):
                return _run_after(pending, method, self, args, kwargs)
        return method(self, *args, **kwargs)

    guarded._tornado_kerb_guarded = True  # type: ignore[attr-defined]
    guarded._tornado_kerb_optional = optional  # type: ignore[attr-defined]
    return cast(F, guarded)


class _InClassBody:
    """What the decorators leave in a class body: when Python makes the class
    (``__set_name__``), it makes sure the class logs in before a streamed body can reach
    it (``@stream_request_body`` comes after the class is made, so this cannot wait), then
    puts the plain guarded function in its place: requests never see this object."""

    def __init__(self, guarded: Callable[..., Any]) -> None:
        self._guarded = guarded
        functools.update_wrapper(self, guarded)

    def __set_name__(self, owner: type, name: str) -> None:
        setattr(owner, name, self._guarded)
        if issubclass(owner, tornado.web.RequestHandler):
            _guard_prepare(owner)

    def __get__(self, handler: object, owner: type | None = None) -> Any:
        return self._guarded.__get__(handler, owner)  # outside a class body (rare)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._guarded(*args, **kwargs)


def _guard_of(handler: tornado.web.RequestHandler) -> KerberosGuard:
    if isinstance(handler, KerberosAuthMixin):
        return handler.get_kerberos_guard()
    return KerberosGuard.for_application(handler.application)


def _guard_prepare(cls: type[tornado.web.RequestHandler]) -> None:
    if not getattr(cls.prepare, "_tornado_kerb_before_body", False):
        cls.prepare = _login_before_body(cls.prepare)  # type: ignore[method-assign]


_STUB = tornado.web.RequestHandler._unimplemented_method


def _login_before_body(prepare: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(prepare)
    def login_then_prepare(self: tornado.web.RequestHandler, *args: Any, **kwargs: Any) -> Any:
        cls = type(self)
        streams = cls._stream_request_body
        # kerberos_required set on a class after it was made: its methods were never
        # wrapped. Rare, and found by check_application; here it fails closed.
        late = getattr(cls, "kerberos_required", False) or getattr(cls, "kerberos_optional", False)
        if streams or late:
            method = getattr(self, (self.request.method or "").lower(), None)
            if (
                streams
                and inspect.unwrap(getattr(cls, (self.request.method or "").lower(), _STUB))
                is _STUB
            ):
                # A method the handler does not have: Tornado would say 405 only after
                # taking the whole body, which nobody logged in to send.
                raise tornado.web.HTTPError(405)
            if getattr(method, "_tornado_kerb_guarded", False):
                # Only a streamed body must wait for the login; the guarded method finds
                # current_user set and does not log in again.
                optional = streams and getattr(method, "_tornado_kerb_optional", False)
                login = streams
            else:
                optional = not getattr(cls, "kerberos_required", False)
                login = late and not getattr(method, "_tornado_kerb_public", False)
            if login:
                pending = _guard_of(self)._begin(self, optional)
                if pending is not None and not isinstance(pending, KerberosUser):
                    return _run_after(pending, prepare, self, args, kwargs)
        return prepare(self, *args, **kwargs)

    login_then_prepare._tornado_kerb_before_body = True  # type: ignore[attr-defined]
    return login_then_prepare


async def _run_after(
    pending: Awaitable[KerberosUser],
    method: Callable[..., Any],
    handler: tornado.web.RequestHandler,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    await pending
    result = method(handler, *args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


#: What only the mixin reads: set on a handler without it, they protect nothing.
MIXIN_ONLY = frozenset(
    {
        "kerberos_required",
        "kerberos_optional",
        "get_kerberos_guard",
        "get_kerberos_settings",
        "_KERBEROS_SETTINGS_KEY",
    }
)
#: Every name a handler may define for tornado_kerb.
OUR_NAMES = (
    "kerberos_required",
    "kerberos_optional",
    "kerberos_authorize",
    "kerberos_local_name",
    "kerberos_challenge",
    "kerberos_logout",
    "kerberos_authenticate",
    "write_kerberos_answer",
    "write_kerberos_unauthorized",
    "get_kerberos_guard",
    "get_kerberos_settings",
)


def _refuse_near_misses(cls: type) -> None:
    # A security library must not fail open on a typo in a class attribute.
    for name in vars(cls):
        if name in OUR_NAMES or "kerb" not in name.lower():
            continue
        close = difflib.get_close_matches(name, OUR_NAMES, n=1, cutoff=0.85)
        if close:
            raise TypeError(
                f"{cls.__name__}.{name}: not a tornado_kerb name; did you mean {close[0]!r}?"
            )


def _is_public(method: Callable[..., Any]) -> bool:
    return bool(getattr(method, "_tornado_kerb_public", False))


def public(method: F) -> F:
    """Leave one method open in a handler whose base sets ``kerberos_required = True``."""
    method._tornado_kerb_public = True  # type: ignore[attr-defined]
    return method
