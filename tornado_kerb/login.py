"""The sign-in form: a page instead of the browser's password box, and its routes.

With the ``login_form`` setting, a browser's 401 offers only ``Negotiate`` (a browser with
a ticket still gets in without a click) and its page carries a form. The form posts to
:class:`LoginHandler`; the password is proven as Basic's is, the session cookie is set,
and the browser goes back to ``next``. :class:`LogoutHandler` clears the cookie. Mount
both with :meth:`KerberosGuard.login_routes <tornado_kerb.KerberosGuard.login_routes>`::

    app = tornado.web.Application(
        [(r"/", Home), *guard.login_routes("/login")],
        kerberos=guard, cookie_secret=...,
    )
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import tornado.escape
import tornado.web

from .basic import parse_user
from .errors import AuthenticationFailed, KerberosError, StoreUnavailable
from .refusals import NAME_IS_REAL
from .user import KerberosUser

if TYPE_CHECKING:
    from .guard import KerberosGuard

__all__ = ["LoginHandler", "LogoutHandler", "login_page", "safe_next", "sign_in", "write_page"]

log = logging.getLogger("tornado_kerb.guard")  # the guard's log, as before the split

# C0 controls, DEL, whitespace: browsers drop tabs and newlines from URLs, so "/\t/evil"
# would become "//evil", another host.
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site, else ``/``. Absolute URLs,
    ``//host``, ``/\\host``, schemes, backslashes and control characters are refused: an
    open redirect would send a user who just typed a password to a look-alike site."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/"
    if _UNSAFE.search(value):
        return "/"
    return value


def login_page(
    *,
    title: str,
    message: str,
    action: str,
    next_url: str,
    username: str,
    xsrf_form_html: str,
    host: str,
) -> str:
    """The sign-in page's HTML: labels, ``autocomplete`` hints, no JavaScript."""
    e = tornado.escape.xhtml_escape
    return _PAGE.format(
        title=e(title),
        message=e(message),
        action=e(action),
        next=e(next_url),
        username=e(username),
        xsrf=xsrf_form_html,
        host=e(host),
    )


def write_page(
    handler: tornado.web.RequestHandler,
    *,
    action: str,
    next_url: str,
    failed: bool,
    username: str,
) -> None:
    """The built-in sign-in page (:meth:`KerberosGuard.write_login_page`'s default)."""
    host = handler.request.host_name
    if failed:
        message = "The user name or password was wrong. Check both and try again."
    elif handler.get_status() == 401:
        message = f"Sign in to {host} with your Kerberos (domain) account."
    else:
        message = f"Sign in to {host}."
    handler.set_header("Content-Type", "text/html; charset=UTF-8")
    handler.write(
        login_page(
            title="Sign in",
            message=message,
            action=action,
            next_url=next_url,
            username=username,
            xsrf_form_html=handler.xsrf_form_html(),
            host=host,
        )
    )


async def sign_in(
    guard: KerberosGuard,
    handler: tornado.web.RequestHandler,
    username: str,
    password: str,
    next_url: str,
) -> None:
    """:meth:`KerberosGuard.form_login`: prove the password as Basic's (within
    ``login_limits``), set the session cookie, 303 to ``next_url``; a refused password
    shows the form again, with one message whatever the reason."""
    peer = handler.request.remote_ip
    if guard.sessions is None or guard.proxies.scheme(handler.request) != "https":
        # No cookie to sign in with, or a password in clear: refuse before reading it.
        log.info("sign-in form used without sessions or TLS from %s", peer)
        raise tornado.web.HTTPError(403, "sign-in needs HTTPS and sessions")
    try:
        principal, password = parse_user(username, password, guard.realm, guard._forms)
    except AuthenticationFailed as err:
        log.info("sign-in refused (%s) from %s", err.reason, peer)
        guard._observe_form(handler, err.reason)
        guard.write_login_page(handler, 200, next_url=next_url, failed=True, username=username)
        return
    try:
        accepted = await guard._prove_limited(handler, principal, password)
        result = guard._admit(handler, accepted, "basic")
        if not isinstance(result, KerberosUser):
            await result
    except AuthenticationFailed as err:
        who = principal if err.reason in NAME_IS_REAL else "a user"
        log.info("sign-in refused (%s) for %s from %s", err.reason, who, peer)
        guard._observe_form(handler, err.reason)
        guard.write_login_page(handler, 200, next_url=next_url, failed=True, username=username)
        return
    except KerberosError as err:
        guard.refuse(handler, err, where="form", principal=principal)
    handler.redirect(next_url, status=303)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem;
color:#222}}
h1{{font-size:1.4rem}} p{{line-height:1.4}}
label{{display:block;margin-top:1rem;font-weight:600}}
input[type=text],input[type=password]{{width:100%;box-sizing:border-box;padding:.5rem;
font-size:1rem;margin-top:.25rem}}
button{{margin-top:1.5rem;padding:.5rem 1.5rem;font-size:1rem}}
.note{{color:#555;font-size:.9rem}}
</style></head>
<body><main>
<h1>{title}</h1>
<p role="status">{message}</p>
<form method="post" action="{action}">
{xsrf}
<input type="hidden" name="next" value="{next}">
<label for="username">User name</label>
<input type="text" id="username" name="username" value="{username}"
 autocomplete="username" autocapitalize="none" spellcheck="false" required>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password"
 required>
<button type="submit">Sign in</button>
</form>
<p class="note">Your Kerberos (domain) user name and password, for {host}. A computer
signed in to the domain, with a browser set up for it, signs you in without this page.</p>
</main></body></html>
"""

_SIGNED_OUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><main><h1>{title}</h1><p>{message}</p>
{form}
</main></body></html>
"""


class _GuardedRoute(tornado.web.RequestHandler):
    def initialize(self, guard: KerberosGuard | None = None) -> None:
        self._guard = guard

    def kerberos_guard(self) -> KerberosGuard:
        from .guard import KerberosGuard

        return self._guard or KerberosGuard.for_application(self.application)

    def check_xsrf_cookie(self) -> None:
        # Always, whatever the application's xsrf_cookies setting: a page elsewhere must
        # not be able to sign a browser in (or out) as somebody of its choosing. Tornado's
        # token is a double-submit cookie, which a page on a sibling host, another port or
        # plain HTTP can plant: the browser's word on where the request came from counts
        # first, as for every guarded request (cross_site).
        guard = self.kerberos_guard()
        if guard.settings.cross_site == "refuse" and guard._cross_site(self.request):
            log.info(
                "sign-in request refused (cross-site): %s %s from %s",
                self.request.method,
                self.request.path,
                self.request.remote_ip,
            )
            raise tornado.web.HTTPError(403, "cross-site sign-in request")
        tornado.web.RequestHandler.check_xsrf_cookie(self)

    def usable(self) -> bool:
        """Whether a password may be typed here: TLS, and sessions to sign in with."""
        guard = self.kerberos_guard()
        return guard.sessions is not None and guard.proxies.scheme(self.request) == "https"


class LoginHandler(_GuardedRoute):
    """``GET``: the sign-in page; ``POST``: sign in (``username``, ``password``, ``next``,
    ``_xsrf``), then a 303 to ``next``; a failed login shows the form again."""

    def get(self) -> None:
        if not self.usable():
            # No form where a password would travel in clear or could sign nobody in.
            raise tornado.web.HTTPError(403, "sign-in needs HTTPS and sessions")
        guard = self.kerberos_guard()
        guard.write_login_page(self, 200, next_url=safe_next(self.get_argument("next", "/")))

    async def post(self) -> None:
        self.check_xsrf_cookie()
        await self.kerberos_guard().form_login(
            self,
            self.get_body_argument("username", ""),
            # As typed: spaces at either end are part of a password.
            self.get_body_argument("password", "", strip=False),
            safe_next(self.get_body_argument("next", "/")),
        )


class LogoutHandler(_GuardedRoute):
    """``GET``: a page with sign-out buttons; ``POST``: clear the session cookie, and
    with ``everywhere=1`` end all the user's sessions (other browsers and devices, on
    every process sharing the ``store``)."""

    def get(self) -> None:
        form = (
            f'<form method="post">{self.xsrf_form_html()}'
            '<button type="submit">Sign out</button> '
            '<button type="submit" name="everywhere" value="1">Sign out everywhere</button>'
            "</form>"
        )
        self._page("Sign out", "Sign out of this site?", form)

    async def post(self) -> None:
        self.check_xsrf_cookie()
        guard = self.kerberos_guard()
        everywhere = self.get_body_argument("everywhere", "") == "1"
        user = await guard.authenticate(self, optional=True) if everywhere else None
        if isinstance(user, KerberosUser):
            self.current_user = user
            try:
                await guard.logout(self, everywhere=True)
            except StoreUnavailable:
                self.set_status(503)
                self._page(
                    "Not signed out everywhere",
                    "You are signed out in this browser, but your other sessions could not "
                    "be ended right now. Please try again in a minute.",
                    '<p><a href="/">Back to the site</a></p>',
                )
                return
        else:
            guard.logout(self)
        self._page(
            "Signed out",
            "You are signed out of this site"
            + (" on every device" if user is not None else "")
            + ". A browser with a Kerberos ticket (a computer "
            "signed in to the domain) signs you straight back in on your next visit; to "
            "stay out, close the browser or sign out of the computer.",
            '<p><a href="/">Back to the site</a></p>',
        )

    def _page(self, title: str, message: str, form: str) -> None:
        self.set_header("Cache-Control", "no-store")
        e = tornado.escape.xhtml_escape
        self.write(_SIGNED_OUT.format(title=e(title), message=e(message), form=form))


def routes(prefix: str, guard: KerberosGuard | None = None) -> list[tuple[str, Any, Any]]:
    """The sign-in routes under ``prefix``: ``prefix`` (the form) and ``prefix/logout``."""
    prefix = prefix.rstrip("/") or "/login"
    kwargs = {"guard": guard}
    return [
        (re.escape(prefix), LoginHandler, kwargs),
        (re.escape(prefix) + "/logout", LogoutHandler, kwargs),
    ]
