"""Refusals: the one place a failed login becomes a log line, an outcome and an answer.

:class:`Refusals` is the guard's collaborator for 401, 403, 429 and 503: the challenges
each answer offers (``Negotiate`` as the ``negotiate`` setting says, ``Basic`` on TLS
unless a browser gets the sign-in form), ``Retry-After``, and the log (once per failure,
at a level by reason; while the KDC or the keytab keeps failing, an error line once and
then every minute). The bodies come from the guard's overridable ``write_answer``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, NoReturn

import tornado.web

from ._gss import mechanism_message
from .errors import (
    AuthenticationFailed,
    Forbidden,
    KDCUnavailable,
    KerberosError,
    LoginError,
    TooManyAttempts,
)
from .reasons import outcome_for

if TYPE_CHECKING:
    from .guard import KerberosGuard
    from .settings import LoginFormOptions
    from .user import KerberosUser

__all__ = ["NAME_IS_REAL", "Refusals"]

log = logging.getLogger("tornado_kerb.guard")  # the guard's log, as before the split

Handler = tornado.web.RequestHandler

# Every browser login starts without credentials: not worth an info line. A ticket our
# keytab rejects after the KDC accepted the password means someone answers for the KDC.
_REFUSAL_LEVELS = {"no-credentials": logging.DEBUG, "kdc-not-trusted": logging.WARNING}
# Refusals that are the server's configuration, not the client: explained, with MIT's words.
_EXPLAINED = {
    "stale-keytab": "the keytab is out of date (the KDC has a newer key): ",
    "wrong-service": "the client asked for another of the keytab's names: ",
    "wrong-kvno": "the keytab does not hold the key the ticket is for: ",
    "wrong-enctype": "the keytab lacks the key type the ticket uses (an RC4-only keytab? "
    "extract its AES keys): ",
    "kdc-not-trusted": "the password was right, but its ticket failed our keytab: keytab out "
    "of date, or a KDC that is not ours: ",
}
# Basic refusals that prove the typed name is a real user's: only those name it (in the
# log, to on_outcome). Users type passwords into the name box; the KDC knew no such name.
NAME_IS_REAL = frozenset({"bad-password", "revoked", "password-expired", "kdc-not-trusted"})
_REMINDER = 60.0  # seconds between error lines while the KDC or the keytab keeps failing


class Refusals:
    """The answers of one guard; ``guard`` supplies the overridable parts (the body,
    ``on_outcome``)."""

    def __init__(
        self, guard: KerberosGuard, *, basic_on: bool, login_form: LoginFormOptions | None
    ) -> None:
        s = guard.settings
        self._guard = guard
        self._basic_on = basic_on
        self._basic_challenge = f'Basic realm="{guard.realm}", charset="UTF-8"'
        self._retry_after = s.retry_after
        self._negotiate = s.negotiate
        self._login_form = login_form
        #: What is failing (the KDC, the keytab) and when the error log last said so.
        self.down: dict[str, float] = {}

    def refuse(
        self,
        handler: Handler,
        err: KerberosError,
        *,
        where: str = "",
        principal: str | None = None,
    ) -> NoReturn:
        """Log, count and answer ``err`` (401, 403, 429 or 503) and raise
        :class:`tornado.web.Finish`; :meth:`KerberosGuard.refuse` is the entry point."""
        peer = handler.request.remote_ip
        confirmed = principal is not None and getattr(err, "reason", None) in NAME_IS_REAL
        if not confirmed:
            principal = None  # an unknown name may be a password typed in the wrong box
        if self._guard._observed:
            self._observe(handler, err, where, principal)
        if isinstance(err, Forbidden) and err.reason == "cross-site":
            origin = handler.request.headers.get("Origin", "")[:100]
            log.info(
                "Kerberos request refused (cross-site): %s %s from %s, Origin %r",
                handler.request.method,
                handler.request.path[:200],
                peer,
                origin,
            )
            self.answer(handler, 403, err.reason)
        elif isinstance(err, Forbidden):
            log.info(
                "Kerberos login forbidden (%s) for %s from %s", err.reason, err.principal, peer
            )
            self.answer(handler, 403, err.reason, principal=err.principal)
        elif isinstance(err, AuthenticationFailed):
            level = _REFUSAL_LEVELS.get(err.reason, logging.INFO)
            why = _EXPLAINED.get(err.reason)
            if why is None and principal:  # a Basic user: whom they claimed to be
                log.log(
                    level, "Kerberos login refused (%s) for %s from %s", err.reason, principal, peer
                )
            elif why is None:
                log.log(level, "Kerberos login refused (%s) from %s", err.reason, peer)
            else:
                # Our keytab's problem, not the client's: say what MIT says, at info.
                mit = mechanism_message(err.detail)
                log.log(
                    level, "Kerberos login refused (%s) from %s: %s%s", err.reason, peer, why, mit
                )
            if where != "basic" or confirmed:
                # MIT's text for a Basic login may quote the name as typed ("Client
                # '<what the user typed>' not found"), and users type passwords there.
                log.debug("refusal detail: %s", err.detail)
            self.answer(handler, 401, err.reason)
        elif isinstance(err, TooManyAttempts):
            log.info("Kerberos password login refused (too many failed attempts) from %s", peer)
            handler._kerberos_retry_after = err.retry_after  # type: ignore[attr-defined]
            self.answer(handler, 429, err.reason)
        elif isinstance(err, KDCUnavailable):
            if self.going_down("kdc"):
                log.error("Kerberos login impossible (%s): %s", err.reason, err.detail)
            else:
                log.debug("Kerberos login impossible (%s): %s", err.reason, err.detail)
            self.answer(handler, 503, err.reason)
        else:
            if self.going_down("keytab"):
                log.error("Kerberos logins impossible, failing closed: %s", err)
            else:
                log.debug("Kerberos logins impossible, failing closed: %s", err)
            self.answer(handler, 503, "unusable")

    def _observe(
        self, handler: Handler, err: KerberosError, where: str, principal: str | None
    ) -> None:
        if isinstance(err, Forbidden) and err.reason == "cross-site":
            outcome = outcome_for("", err.reason)
        elif isinstance(err, Forbidden):
            outcome = outcome_for("authz", err.reason)
            principal = err.principal
        elif isinstance(err, LoginError):
            outcome = outcome_for(where, err.reason)
        else:
            outcome = outcome_for("keytab", "unusable")
        self._guard.on_outcome(handler, outcome, where or None, principal)

    def going_down(self, what: str) -> bool:
        """Whether to say at error level that ``what`` (the KDC, the keytab) fails: on
        the first failure, then every :data:`_REMINDER` seconds, not on every request."""
        now = time.monotonic()
        last = self.down.get(what)
        if last is not None and now - last < _REMINDER:
            return False
        self.down[what] = now
        if last is not None:
            log.error("still failing: %s (since the last message %.0f s ago)", what, now - last)
        return True

    def back_up(self, user: KerberosUser, fresh: bool) -> None:
        # Any login proves the keytab works; a fresh Basic one that the KDC works.
        for what in ("keytab", "kdc") if fresh and user.mechanism == "basic" else ("keytab",):
            if self.down.pop(what, None) is not None:
                log.warning("Kerberos logins work again (%s)", what)

    def offers_basic(self, handler: Handler) -> bool:
        return self._basic_on and self._guard.proxies.scheme(handler.request) == "https"

    def answer(
        self, handler: Handler, status: int, reason: str, principal: str | None = None
    ) -> NoReturn:
        # Not send_error(): it clears headers after we set them. clear() first drops
        # anything prepare() may have buffered, so the answer carries none of the body.
        handler.clear()
        self.headers(handler, status)
        old_hook = getattr(type(handler), "write_kerberos_unauthorized", None)
        if (
            status == 401
            and old_hook is not None
            and not getattr(old_hook, "_tornado_kerb_default", False)
        ):
            handler.write_kerberos_unauthorized()  # type: ignore[attr-defined]  # 0.1's hook
        else:
            self._guard.write_answer(handler, status, reason, principal)
        # Whatever the renderer did, the answer keeps its status and its challenges.
        self.headers(handler, status)
        handler.finish()
        raise tornado.web.Finish()

    def headers(self, handler: Handler, status: int) -> None:
        handler.set_status(status)
        handler.clear_header("WWW-Authenticate")
        token = getattr(handler, "_kerberos_mutual_token", None)
        if token:
            handler.add_header("WWW-Authenticate", token)
        if status == 401:
            form = self.shows_form(handler)
            basic = self.offers_basic(handler) and not form
            # A 401 needs a challenge (RFC 9110): Negotiate stays when it would be the
            # only one. A browser shown the form is the exception: Negotiate again is
            # the loop that "once" ends, and the page itself says what to do.
            if self.offers_negotiate(handler) or not (basic or form):
                handler.add_header("WWW-Authenticate", "Negotiate")
            if basic:
                handler.add_header("WWW-Authenticate", self._basic_challenge)
        elif status == 503:
            handler.set_header("Retry-After", str(self._retry_after))
        elif status == 429:
            retry = getattr(handler, "_kerberos_retry_after", self._retry_after)
            handler.set_header("Retry-After", str(retry))

    def offers_negotiate(self, handler: Handler) -> bool:
        when = self._negotiate
        if when == "always":
            return True
        if when == "once":
            # The answer to a failed Negotiate attempt offers it no more: a browser that
            # can only send NTLM (no ticket) stops at the form or Basic, not in a loop.
            auth = handler.request.headers.get("Authorization", "")
            return not auth[:10].lower().startswith("negotiate")
        try:
            return bool(when(handler.request))
        except Exception:  # the app's own callable: offering Negotiate is no security call
            log.exception("the 'negotiate' setting's callable failed: offering Negotiate")
            return True

    def shows_form(self, handler: Handler) -> bool:
        """A browser (HTML asked for) over TLS, with ``login_form``: its 401 carries the
        sign-in form, not a Basic challenge (which would pop up the browser's box)."""
        return (
            self._login_form is not None
            and self._guard.proxies.scheme(handler.request) == "https"
            and "text/html" in handler.request.headers.get("Accept", "")
        )
