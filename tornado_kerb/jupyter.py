"""Kerberos single sign-on for Jupyter Server 2 (JupyterLab, Notebook 7).

::

    jupyter lab --ServerApp.identity_provider_class=tornado_kerb.jupyter.KerberosIdentityProvider \\
                --KerberosIdentityProvider.keytab=/etc/http.keytab \\
                --KerberosIdentityProvider.hostname=lab.example.com \\
                --KerberosIdentityProvider.allowed_principals=alice@EXAMPLE.COM

Every kernel runs as the server's OS account: whoever logs in can run code as that account.
So the server refuses to start without ``allowed_principals``, the user (or users) it
belongs to; letting several users in (several names, or a pattern such as
``*@EXAMPLE.COM``) works, with a warning at start-up, because they then share one account.
An unknown option of the provider or of :class:`KerberosKernelManager` (a typo) stops the
server at start-up too, as does a keytab that cannot be used.

A request without Jupyter's login cookie goes through a :class:`~tornado_kerb.KerberosGuard`
(401 with ``Negotiate``, Basic only over TLS, 403 for disallowed principals, 503 when the KDC
is down for Basic). A successful login over TLS sets Jupyter's signed login cookie (Secure,
HttpOnly, SameSite=Lax, never longer than the user's ticket, checked by the server too), so
the WebSockets and API calls that follow need no Kerberos exchange each; every request with
it is checked again against ``realms``, ``allowed_principals`` and :meth:`authorize`.
Jupyter's token page is turned off: Kerberos is the login.

Delegated tickets reach kernels when the server also runs
``--ServerApp.kernel_manager_class=tornado_kerb.jupyter.KerberosKernelManager``: the
credentials a browser delegates are stored in a per-user ccache file (mode 0600) under the
server's runtime directory, refreshed on each fresh login, and new kernels of that user get
``KRB5CCNAME`` pointing at it. Trust: every kernel of this server runs as the server's OS
account, so code in any kernel can read any ccache file there and act as its user until the
ticket expires. Use it on single-user servers (``allowed_principals`` set to that user).

This module is the only one of tornado_kerb that imports Jupyter (the ``jupyter`` extra).
"""

from __future__ import annotations

import ast
import asyncio
import difflib
import getpass
import hashlib
import inspect
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Awaitable, Mapping
from typing import Any, NoReturn

import gssapi
import tornado.web
from gssapi.raw.misc import GSSError
from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.base.handlers import APIHandler
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Bool, Int, List, Unicode, Union, default
from traitlets.config import Application, Config, Configurable

from ._gss import describe
from .answers import Form
from .errors import ConfigurationError, Forbidden, KerberosError, LocalNameError, NoCredentials
from .guard import KerberosGuard, bool_or_awaitable
from .user import KerberosUser, Mechanism

__all__ = ["KerberosIdentityProvider", "KerberosKernelManager"]

# Bytes kept as they are in a ccache file name; every other byte is percent-encoded, "%"
# included, so two principals never share a file (col/x and col_x did, with "_").
_NAME_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.@-")
_NAME_MAX = 200  # longer encodings (file names stop at 255 bytes) use a hash instead
_MECHANISMS: frozenset[str] = frozenset({"negotiate", "basic"})


class _Names(List):  # type: ignore[type-arg]
    """A list of names; on the command line, ``["a", "b"]`` or one bare name (traitlets
    would read a bare string as None, and so silently as "anyone")."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(Unicode(), default_value=[], **kwargs)

    def from_string(self, s: str) -> list[str]:
        if not s.lstrip().startswith("["):
            return [s]
        value = ast.literal_eval(s)  # traitlets' own from_string fails on List(Unicode())
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"not a list of strings: {s}")
        return value


class KerberosIdentityProvider(IdentityProvider):
    """A Jupyter Server identity provider that logs users in with Kerberos.

    Subclasses may override :meth:`authorize`.
    """

    keytab = Unicode(
        None, allow_none=True, config=True, help="Keytab of the HTTP service (default: system)."
    )
    service = Unicode("HTTP", config=True, help="Service name of the acceptor principal.")
    hostname = Unicode(
        None, allow_none=True, config=True, help="Host name of the acceptor principal."
    )
    realm = Unicode(
        None, allow_none=True, config=True, help="Realm for Basic (default: krb5.conf's)."
    )
    realms = _Names(
        config=True,
        help='Realms whose users may log in (["*"]: any; default: the realm).',
    )
    allowed_principals = _Names(
        config=True,
        help="Required: the principals (or fnmatch patterns) allowed in. Every kernel runs as "
        "the server's OS account, so more than one user means they share it (warned at "
        "start-up).",
    )
    basic = Bool(True, config=True, help="Offer Basic (password) login, over TLS only.")
    session_max_age = Int(
        10 * 3600,
        config=True,
        help="Longest life in seconds of a login cookie (never longer than the user's ticket).",
    )
    trusted_proxies = _Names(
        config=True,
        help="Reverse proxies (addresses or networks) whose X-Forwarded-Proto counts, with "
        "ServerApp.trust_xheaders: the login cookie is set and taken over what they say is "
        "HTTPS. From any other peer the connection's own scheme counts.",
    )
    gssproxy = Union(
        [Bool(), Unicode()],
        default_value=False,
        config=True,
        help="Accept through GSS-Proxy, which holds the keytab, so that no kernel of the "
        "server's account can read it: True, or GSS-Proxy's socket path. Start the server "
        "with GSS_USE_PROXY=yes in its environment; set hostname; not keytab.",
    )
    login_cookie_http = Bool(
        False,
        config=True,
        help="Also set the login cookie on plain HTTP, where anyone on the path can copy it "
        "and use it as the user until it expires.",
    )

    _guard: KerberosGuard | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _route_library_log(self.log)
        problems = _unknown_options(self.config, type(self), KerberosIdentityProvider)
        problems += _unknown_options(self.config, KerberosKernelManager, KerberosKernelManager)
        kernel_manager = getattr(self.parent, "kernel_manager_class", None)
        in_use = (type(self), kernel_manager if isinstance(kernel_manager, type) else object)
        problems += _unknown_sections(self.config, *in_use)
        if problems:
            _stop(self, "; ".join(problems))

    @default("need_token")
    def _need_token_default(self) -> bool:
        return False

    @default("token")
    def _token_default(self) -> str:
        # Kerberos is the login: no generated token, no token page.
        return ""

    @property
    def login_available(self) -> bool:
        return False  # no /login form: the 401 challenge is the login

    @property
    def logout_available(self) -> bool:
        return True

    @property
    def guard(self) -> KerberosGuard:
        """The guard, built from the traitlets on first use."""
        if self._guard is None:
            settings: dict[str, Any] = {
                "keytab": self.keytab,
                "service": self.service,
                "hostname": self.hostname,
                "realm": self.realm,
                "basic": self.basic,
            }
            if self.realms:
                settings["realms"] = "*" if list(self.realms) == ["*"] else tuple(self.realms)
            if self.allowed_principals:
                settings["allowed_principals"] = tuple(self.allowed_principals)
            if self.trusted_proxies:
                settings["trusted_proxies"] = tuple(self.trusted_proxies)
            if self.gssproxy not in (False, ""):
                settings["gssproxy"] = self.gssproxy
            self._guard = _JupyterGuard(self, settings)
        return self._guard

    def authorize(
        self, user: KerberosUser, handler: tornado.web.RequestHandler
    ) -> bool | Awaitable[bool]:
        """May ``user`` in? ``True``/``False`` or an awaitable of it. May be overridden.

        Asked after the ``realms`` and ``allowed_principals`` checks passed, on every
        request: at each Kerberos login and for each request with the login cookie
        (``user.from_session`` is then true). Only ``True`` lets the user in; anything
        else answers 403. The default lets in everyone who passed those checks.
        """
        return True

    async def get_user(self, handler: tornado.web.RequestHandler) -> User | None:
        # Jupyter's login cookie (checked again, see get_user_cookie), or its token when
        # one was configured explicitly, first.
        found = super().get_user(handler)
        known = await found if inspect.isawaitable(found) else found
        if known is not None:
            return known
        method = getattr(handler, (handler.request.method or "get").lower(), None)
        if getattr(method, "__allow_unauthenticated", False):
            return None  # a public endpoint (static files, version): no challenge
        # Answers 401/403/503 itself and raises Finish: Jupyter never redirects.
        kuser = await self.guard.authenticate(handler)
        if kuser is None:  # a CORS preflight (the one way authenticate() gives no user)
            return None
        user = User(username=kuser.username, name=kuser.principal, display_name=kuser.principal)
        if kuser.delegated_credentials is not None and kuser.credential_kind == "forwarded":
            await self._keep_credentials(kuser.principal, kuser.delegated_credentials)
        self._start_session(handler, user, kuser)
        return user

    async def get_user_cookie(self, handler: tornado.web.RequestHandler) -> User | None:
        """The user of a valid login cookie, checked again like a fresh login: realm,
        ``allowed_principals`` (a principal removed since still holds a signed cookie) and
        :meth:`authorize` (403 when it says no). ``None`` for no cookie, or one that has
        expired, is malformed or whose principal is no longer allowed (Jupyter then
        clears it, and the Kerberos challenge follows)."""
        tls = self.guard.proxies.scheme(handler.request) == "https"
        if not tls and not self.login_cookie_http:
            return None  # never set on plain HTTP, so never taken there either
        raw = handler.get_signed_cookie(
            self.get_cookie_name(handler), **self.get_secure_cookie_kwargs
        )
        if not raw:
            return None
        session = _read_session(raw, time.time())
        if session is None:
            return None
        data, until, mechanism = session
        principal = data["name"]
        guard = self.guard
        refusal = guard.admits(principal)
        if refusal is not None:
            self.log.info("Login cookie of %s no longer valid (%s)", principal, refusal)
            return None
        try:
            username = guard.local_name(principal)
        except LocalNameError:
            return None  # a rule that broke since: the fresh login fails closed (503)
        kuser = KerberosUser(principal, mechanism, None, float(until), username, True)
        verdict = bool_or_awaitable(guard.authorize(kuser, handler))
        if not isinstance(verdict, bool):
            verdict = bool_or_awaitable(await verdict) is True
        if verdict is not True:
            guard.refuse(handler, Forbidden("forbidden", principal))
        user = User(
            username,
            principal,
            data.get("display_name") or principal,
            data.get("initials"),
            data.get("avatar_url"),
            data.get("color"),
        )
        return user

    def user_from_cookie(self, cookie_value: str) -> User | None:
        session = _read_session(cookie_value.encode("utf-8"), time.time())
        if session is None:
            return None  # not ours, or too old: log in again
        data = session[0]
        return User(data["username"], data["name"], data.get("display_name") or data["name"])

    def set_login_cookie(self, handler: tornado.web.RequestHandler, user: User) -> None:
        # Jupyter calls this for logins that are not ours (its token, when one was
        # configured): they keep sending the token, a cookie here would outlive it.
        self.log.debug("No login cookie for %s: not a Kerberos login", user.username)

    def _start_session(
        self, handler: tornado.web.RequestHandler, user: User, kuser: KerberosUser
    ) -> None:
        tls = self.guard.proxies.scheme(handler.request) == "https"
        if not tls and not self.login_cookie_http:
            return  # a cookie sniffed off plain HTTP would be as good as the ticket
        now = time.time()
        until = now + self.session_max_age
        if kuser.expires_at is not None:
            until = min(until, kuser.expires_at)  # never longer than the ticket
        if until - now < 1:
            return
        data = json.loads(self.user_to_cookie(user))
        data["tornado_kerb"] = [int(until), kuser.mechanism]
        options = {
            k: v for k, v in self.cookie_options.items() if k not in ("expires", "expires_days")
        }
        options.setdefault("path", getattr(handler, "base_url", "/"))
        options.update(httponly=True, secure=tls, samesite="Lax")
        handler.set_signed_cookie(
            self.get_cookie_name(handler),
            json.dumps(data),
            expires_days=None,
            expires=int(until),
            max_age=int(until - now),
            **options,
        )

    def ccache_path(self, principal: str) -> str | None:
        """The per-user ccache file of ``principal`` (None: no runtime directory)."""
        runtime_dir = getattr(self.parent, "runtime_dir", None)
        if not runtime_dir:
            return None
        return os.path.join(runtime_dir, "tornado_kerb", _ccache_file_name(principal))

    async def _keep_credentials(self, principal: str, creds: gssapi.Credentials) -> None:
        path = self.ccache_path(principal)
        if path is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(None, _store, creds, path)
        except (OSError, NoCredentials) as err:
            # The login stands: kernels of this user just get no ticket.
            self.log.warning("Could not store delegated credentials of %s: %s", principal, err)
            return
        self.log.info("Stored delegated credentials of %s in %s", principal, path)

    def validate_security(self, app: Any, ssl_options: dict[str, Any] | None = None) -> None:
        super().validate_security(app, ssl_options)
        names = list(self.allowed_principals)
        if not names:
            _stop(
                self,
                "KerberosIdentityProvider.allowed_principals is not set: every user of the "
                "realm could run code as this server's OS account. Set it to the server's "
                "owner, e.g. --KerberosIdentityProvider.allowed_principals=alice@EXAMPLE.COM "
                "(several names, or a pattern such as '*@EXAMPLE.COM', share the server).",
            )
        try:
            self.guard.check()  # a broken keytab fails at start-up, not at the first user
        except KerberosError as err:
            _stop(self, f"tornado_kerb: {err}")
        tls = ssl_options is not None or getattr(app, "trust_xheaders", False)
        if not tls and not self.login_cookie_http:
            self.log.warning(
                "Plain HTTP: no login cookie is set, so every request logs in with "
                "Kerberos again. Serve over TLS (ServerApp.certfile and keyfile, or "
                "ServerApp.trust_xheaders behind a TLS proxy)."
            )
        if len(names) > 1 or any(c in name for name in names for c in "*?["):
            self.log.warning(
                "KerberosIdentityProvider.allowed_principals lets more than one user in (%s): "
                "they share this server. Every kernel runs as its OS account (%s), so each of "
                "them can read the others' files and Kerberos ticket caches and act as them.",
                ", ".join(names),
                _os_account(),
            )


class _JupyterGuard(KerberosGuard):
    """The guard, asking the provider's :meth:`~KerberosIdentityProvider.authorize`, with
    answers whose body matches the Content-Type Jupyter gives them."""

    def __init__(self, provider: KerberosIdentityProvider, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.provider = provider

    def authorize(
        self, user: KerberosUser, handler: tornado.web.RequestHandler
    ) -> bool | Awaitable[bool]:
        return bool_or_awaitable(self.provider.authorize(user, handler))

    def write_default_answer(
        self,
        handler: tornado.web.RequestHandler,
        status: int,
        reason: str,
        principal: str | None = None,
        *,
        form: Form | None = None,
    ) -> None:
        # APIHandler.finish() labels every answer application/json, whatever the client
        # asked for: so its body is JSON, for every client.
        if form is None and isinstance(handler, APIHandler):
            form = "json"
        super().write_default_answer(handler, status, reason, principal, form=form)


class KerberosKernelManager(AsyncMappingKernelManager):
    """Kernels started by a user who delegated credentials get ``KRB5CCNAME`` (in the
    kernel's environment only) pointing at that user's ccache file."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]  # jupyter_server's
        problems = _unknown_options(self.config, type(self), KerberosKernelManager)
        if problems:
            _stop(self, "; ".join(problems))

    async def start_kernel(self, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        path = _current_ccache()
        if path is not None:
            env = dict(kwargs.get("env") or os.environ)
            env["KRB5CCNAME"] = f"FILE:{path}"
            kwargs["env"] = env
        return await super().start_kernel(*args, **kwargs)


def _current_ccache() -> str | None:
    from jupyter_server.base.call_context import CallContext

    handler = CallContext.get(CallContext.JUPYTER_HANDLER)
    if handler is None:
        return None
    provider = handler.settings.get("identity_provider")
    user = getattr(handler, "current_user", None)
    if not isinstance(provider, KerberosIdentityProvider) or not isinstance(user, User):
        return None
    path = provider.ccache_path(user.name)
    return path if path is not None and os.path.exists(path) else None


# -- ccache files ------------------------------------------------------------------------


def _ccache_file_name(principal: str) -> str:
    """``krb5cc_`` and the principal, every byte outside ``[A-Za-z0-9.@-]`` percent-encoded
    (so no two principals share a name, and none holds a "/"); a hash for long ones."""
    raw = principal.encode("utf-8")
    encoded = "".join(chr(b) if b in _NAME_SAFE else f"%{b:02X}" for b in raw)
    if len(encoded) > _NAME_MAX:
        return "krb5cc=" + hashlib.sha256(raw).hexdigest()  # "=" is never left unencoded
    return "krb5cc_" + encoded


def _store(creds: gssapi.Credentials, path: str) -> None:
    """Write ``creds`` to the ccache file ``path`` (mode 0600), replacing it atomically:
    a kernel never sees half a file, and concurrent logins of one user each write their
    own temporary file. Symbolic links are never followed. Blocking: runs in a thread."""
    directory = os.path.dirname(path)
    _private_directory(directory)
    # mkstemp: a fresh random name, O_CREAT|O_EXCL (never follows a link), mode 0600.
    fd, tmp = tempfile.mkstemp(prefix=".krb5cc-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        try:
            creds.store(
                store={"ccache": f"FILE:{tmp}"},
                usage="initiate",
                mech=gssapi.MechType.kerberos,
                overwrite=True,
            )
        except GSSError as err:  # expired, or not Kerberos credentials at all
            raise NoCredentials(f"the credentials cannot be stored: {describe(err)}") from None
        os.replace(tmp, path)  # replaces a link itself, never what it points to
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _private_directory(directory: str) -> None:
    """Make sure ``directory`` is a real directory (not a link) of ours, mode 0700."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(f"{directory} is not a directory of this account")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(directory, 0o700)


# -- start-up ------------------------------------------------------------------------------


def _read_session(raw: bytes, now: float) -> tuple[dict[str, Any], int, Mechanism] | None:
    """A signature-checked login cookie's user data, expiry and mechanism; ``None`` when it
    is not ours, malformed or expired: the server checks the expiry itself."""
    try:
        data = json.loads(raw)
        until, mechanism = data["tornado_kerb"]
    except (ValueError, KeyError, TypeError):
        return None
    if (
        not isinstance(until, int)
        or until <= now
        or mechanism not in _MECHANISMS
        or not isinstance(data.get("name"), str)
        or not data["name"]
        or not isinstance(data.get("username"), str)
        or not data["username"]
    ):
        return None
    return data, until, mechanism


def _unknown_options(config: Config, cls: type[Configurable], ours: type) -> list[str]:
    """``cls``'s options in ``config`` (its sections and those of its subclasses of
    ``ours``) that it does not have: each with a "did you mean", for the start-up error."""
    known = sorted(cls.class_trait_names(config=True))
    problems = []
    for section in [c.__name__ for c in cls.__mro__ if issubclass(c, ours)]:
        if section not in config:
            continue  # Config creates a section on lookup: never look one up that is absent
        for name, value in config[section].items():
            if name in known or name[:1].isupper() or isinstance(value, Config):
                continue  # a trait, or a nested section (not ours to judge)
            problem = f"unknown option {section}.{name}"
            close = difflib.get_close_matches(name, known, n=1)
            problems.append(f"{problem} (did you mean {close[0]}?)" if close else problem)
    return problems


def _unknown_sections(config: Config, *classes: type) -> list[str]:
    """Sections of ``config`` that look like a misspelling of one of our class names
    (``classes``: those in use, whose names and bases' names are fine)."""
    ours = ["KerberosIdentityProvider", "KerberosKernelManager"]
    used = {c.__name__ for cls in classes for c in cls.__mro__} | set(ours)
    problems = []
    for section in config:
        if section in used:
            continue
        close = difflib.get_close_matches(section, ours, n=1, cutoff=0.85)
        if close:
            problems.append(f"unknown section {section} (did you mean {close[0]}?)")
    return problems


def _stop(configurable: Configurable, problem: str) -> NoReturn:
    """Stop a server that is starting with one line saying what is wrong; outside one
    (a provider built by hand), raise :class:`~tornado_kerb.ConfigurationError`."""
    app = getattr(configurable, "parent", None)
    if not isinstance(app, Application):
        raise ConfigurationError(problem)
    app.log.critical("%s", problem)
    app.exit(1)
    raise SystemExit(1)  # exit() raises it already; for the type checker


def _route_library_log(server_log: Any) -> None:
    """Send tornado_kerb's log records (the guard's refusals, say) to the server's log,
    as Jupyter does with Tornado's: under the server's handlers, format and level. Left
    alone when the deployment gave the ``tornado_kerb`` logger handlers of its own."""
    library = logging.getLogger("tornado_kerb")
    if library.handlers or not isinstance(server_log, logging.Logger):
        return
    if server_log is library or server_log.name.startswith("tornado_kerb."):
        return
    library.parent = server_log
    # Loggers cache what they let through: setLevel (to the same NOTSET) clears the cache.
    library.setLevel(logging.NOTSET)


def _os_account() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.geteuid()}"
