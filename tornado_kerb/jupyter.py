"""Kerberos single sign-on for Jupyter Server 2 (JupyterLab, Notebook 7).

::

    jupyter lab --ServerApp.identity_provider_class=tornado_kerb.jupyter.KerberosIdentityProvider \\
                --KerberosIdentityProvider.keytab=/etc/http.keytab \\
                --KerberosIdentityProvider.hostname=lab.example.com

A request without Jupyter's login cookie goes through a :class:`~tornado_kerb.KerberosGuard`
(401 with ``Negotiate``, Basic only over TLS, 403 for disallowed principals, 503 when the KDC
is down for Basic). A successful login sets Jupyter's own signed login cookie, so the
WebSockets and API calls that follow need no Kerberos exchange each. Jupyter's token page is
turned off: Kerberos is the login.

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
import inspect
import json
import os
import re
import time
from typing import Any

import gssapi
import tornado.web
from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Bool, Int, List, Unicode, default

from .guard import KerberosGuard

__all__ = ["KerberosIdentityProvider", "KerberosKernelManager"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


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
    """A Jupyter Server identity provider that logs users in with Kerberos."""

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
        help="Principals (or fnmatch patterns) allowed in; default (empty): anyone of the realms.",
    )
    basic = Bool(True, config=True, help="Offer Basic (password) login, over TLS only.")
    session_max_age = Int(
        10 * 3600,
        config=True,
        help="Seconds a login cookie is honoured before a new Kerberos login is needed.",
    )

    _guard: KerberosGuard | None = None

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
            self._guard = KerberosGuard(settings)
        return self._guard

    async def get_user(self, handler: tornado.web.RequestHandler) -> User | None:
        # Jupyter's login cookie (or its token, when one was configured) first.
        found = super().get_user(handler)
        known = await found if inspect.isawaitable(found) else found
        if known is not None:
            return known
        method = getattr(handler, (handler.request.method or "get").lower(), None)
        if getattr(method, "__allow_unauthenticated", False):
            return None  # a public endpoint (static files, version): no challenge
        # Answers 401/403/503 itself and raises Finish: Jupyter never redirects.
        kuser = await self.guard.authenticate(handler)
        user = User(username=kuser.username, name=kuser.principal, display_name=kuser.principal)
        if kuser.delegated_credentials is not None and kuser.credential_kind == "forwarded":
            path = self.ccache_path(kuser.principal)
            if path is not None:
                creds = kuser.delegated_credentials
                await asyncio.get_running_loop().run_in_executor(
                    self.guard.executor, _store, creds, path
                )
                self.log.info("Stored delegated credentials of %s in %s", kuser.principal, path)
        self.set_login_cookie(handler, user)
        return user

    def ccache_path(self, principal: str) -> str | None:
        """The per-user ccache file of ``principal`` (None: no runtime directory)."""
        runtime_dir = getattr(self.parent, "runtime_dir", None)
        if not runtime_dir:
            return None
        return os.path.join(runtime_dir, "tornado_kerb", "krb5cc_" + _UNSAFE.sub("_", principal))

    def user_to_cookie(self, user: User) -> str:
        data = json.loads(super().user_to_cookie(user))
        data["tornado_kerb_at"] = int(time.time())
        return json.dumps(data)

    def user_from_cookie(self, cookie_value: str) -> User | None:
        data = json.loads(cookie_value)
        at = data.get("tornado_kerb_at")
        if not isinstance(at, int) or time.time() - at > self.session_max_age:
            return None  # not ours, or too old: log in again
        return super().user_from_cookie(cookie_value)

    def validate_security(self, app: Any, ssl_options: dict[str, Any] | None = None) -> None:
        # The base class warns "authentication is disabled" when there is no token.
        self.guard.check()  # a broken keytab fails at start-up, not at the first user


def _store(creds: gssapi.Credentials, path: str) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    # Created 0600 before krb5 writes to it; replaced atomically so kernels never see half.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        creds.store(
            store={"ccache": f"FILE:{tmp}"},
            usage="initiate",
            mech=gssapi.MechType.kerberos,
            overwrite=True,
        )
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class KerberosKernelManager(AsyncMappingKernelManager):
    """Kernels started by a user who delegated credentials get ``KRB5CCNAME`` (in the
    kernel's environment only) pointing at that user's ccache file."""

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
