"""The bodies of the guard's 401, 403 and 503 answers: what happened, and what to do.

Browsers (``Accept: text/html``) get a short HTML page, clients that ask for JSON get
JSON, everybody else one line of text. Only our own reason words reach a body, and only
those that help the person in front of the browser (no GSS detail, ever); the rest read
``rejected`` or ``unavailable``. Status and challenge headers are the guard's business:
see :meth:`~tornado_kerb.KerberosGuard.write_answer` to render your own.
"""

from __future__ import annotations

import json
from typing import Literal

import tornado.escape
import tornado.web

__all__ = ["Form", "write_default_answer"]

#: The form of an answer's body.
Form = Literal["html", "json", "text"]

_ERRORS = {401: "unauthorized", 403: "forbidden", 429: "too-many-requests", 503: "unavailable"}

_NO_TICKET = (
    "Your browser sent no Kerberos ticket. Get one (run kinit, or log in to your "
    "Windows or macOS domain account), and let your browser use it for {host}: in "
    "Firefox, about:config, add {host} to network.negotiate-auth.trusted-uris; in "
    "Chrome and Edge, the AuthServerAllowlist policy."
)
# Reasons worth telling the user; every other 401 reads "rejected", every other 503
# "unavailable".
_MESSAGES = {
    "no-credentials": _NO_TICKET,
    "login-requested": "Please log in again: a browser with a Kerberos ticket for {host} "
    "does so by itself.",
    "ntlm": "Your computer offered NTLM, not Kerberos: it has no Kerberos ticket for {host}. "
    + _NO_TICKET.split(". ", 1)[1],
    "expired": "Your Kerberos ticket has expired: get a new one (kinit) and reload.",
    "clock-skew": "Your computer's clock and the server's differ by more than five "
    "minutes: set the time right and reload.",
    "basic-not-offered": "This site does not accept passwords.",
    "bad-password": "The user name or password was wrong. Check both (the user name "
    "without a realm, or as user@REALM) and try again.",
    "cross-site": "This request came from a page on another site, so it was refused: "
    "another site cannot act here in your name. Open {host} itself and try again.",
    "insecure-transport": "Passwords are accepted only over HTTPS.",
    "unbound": "This site requires Kerberos logins bound to its TLS connection (channel "
    "bindings), and your client did not bind its ticket.",
    "forbidden": "You are logged in as {principal}, but not allowed here.",
    "foreign-realm": "You are logged in as {principal}, but users of your realm are not "
    "allowed here.",
    "not-in-group": "You are logged in as {principal}, but not a member of a group "
    "allowed here. Ask the administrators to add you; you may have to log in again "
    "afterwards (lock and unlock your computer, or kinit).",
    "weak-authentication": "You are logged in as {principal}, but this site needs a "
    "stronger login (a second factor or a smart card). Get a ticket that way (kinit with "
    "your token or card) and reload.",
    "too-many-attempts": "Too many failed logins for this user name or from your address: "
    "passwords are not checked for now. Try again in {retry} seconds.",
    "kdc-unreachable": "Passwords cannot be checked right now: the Kerberos server "
    "cannot be reached. Try again in {retry} seconds.",
    "kdc-busy": "Too many logins are waiting for the Kerberos server. Try again in "
    "{retry} seconds.",
    "kdc-timeout": "The Kerberos server did not answer in time. Try again in {retry} seconds.",
    "closed": "The server is shutting down.",
}
_DEFAULTS = {
    401: "Your Kerberos login was not accepted. Get a fresh ticket (kinit) and reload.",
    403: "You are logged in, but not allowed here.",
    503: "Logins are not possible right now: the server cannot check them. The "
    "administrators have been told.",
}
_ALSO_BASIC = " On this HTTPS site you can also log in with your Kerberos password."


# One answer for every refused password: which of them it was (no such user, a wrong
# password, a locked account) would tell a stranger which user names exist.
PASSWORD_REFUSALS = frozenset(
    {"bad-password", "unknown-user", "empty-password", "revoked", "password-expired"}
)


def public_reason(status: int, reason: str) -> str:
    """``reason`` if it may be shown to the client, else ``rejected``/``unavailable``."""
    if reason in PASSWORD_REFUSALS:
        return "bad-password"
    if reason in _MESSAGES:
        return reason
    return "unavailable" if status == 503 else "forbidden" if status == 403 else "rejected"


def message(
    status: int,
    reason: str,
    *,
    host: str,
    principal: str | None = None,
    retry_after: int | None = None,
    password_offered: bool = False,
) -> str:
    """The sentence (or three) that says what happened and what to do."""
    template = _MESSAGES.get(reason, _DEFAULTS.get(status, _DEFAULTS[401]))
    if "{principal}" in template and not principal:
        template = _DEFAULTS.get(status, _DEFAULTS[401])
    text = template.format(host=host, principal=principal, retry=retry_after or 30)
    if status == 401 and password_offered:
        text += _ALSO_BASIC
    return text


def write_default_answer(
    handler: tornado.web.RequestHandler,
    status: int,
    reason: str,
    *,
    principal: str | None = None,
    retry_after: int | None = None,
    password_offered: bool = False,
    form: Form | None = None,
) -> None:
    """Write the default body for ``status`` in the form the client asked for, or in
    ``form`` for a handler that labels every answer itself (Jupyter's API handlers: JSON)."""
    shown = public_reason(status, reason)
    text = message(
        status,
        shown,
        host=handler.request.host_name,
        principal=principal,
        retry_after=retry_after,
        password_offered=password_offered,
    )
    accept = handler.request.headers.get("Accept", "")
    if form is None:
        form = "html" if "text/html" in accept else "json" if "json" in accept else "text"
    title = f"{status} {_ERRORS.get(status, 'error').replace('-', ' ').capitalize()}"
    if form == "html":
        handler.set_header("Content-Type", "text/html; charset=UTF-8")
        handler.write(_PAGE.format(title=title, text=tornado.escape.xhtml_escape(text)))
    elif form == "json":
        handler.set_header("Content-Type", "application/json; charset=UTF-8")
        body = {"error": _ERRORS.get(status, "error"), "reason": shown, "message": text}
        handler.write(json.dumps(body) + "\n")
    else:
        handler.set_header("Content-Type", "text/plain; charset=UTF-8")
        handler.write(f"{title}: {text}\n")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}
h1{{font-size:1.4em}}</style></head>
<body><h1>{title}</h1><p>{text}</p></body></html>
"""
