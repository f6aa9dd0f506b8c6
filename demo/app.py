"""The demo's pages: a public landing page, who-am-I (HTML and JSON), acting as the user."""

from __future__ import annotations

import datetime
import logging
import os
import secrets
from typing import Any

import gssapi
import psycopg
import tornado.ioloop
import tornado.web
from gssapi.raw.misc import GSSError

from demo.database import Database, whoami_in_db
from tornado_kerb import (
    DelegationRefused,
    KerberosAuthMixin,
    KerberosGuard,
    KerberosUser,
    NoCredentials,
)

log = logging.getLogger("demo")

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


def describe(handler: tornado.web.RequestHandler, user: KerberosUser) -> dict[str, Any]:
    """What the who-am-I pages show."""
    expires = (
        datetime.datetime.fromtimestamp(user.expires_at, datetime.timezone.utc)
        if user.expires_at
        else None
    )
    return {
        "principal": user.principal,
        "username": user.username,
        "mechanism": user.mechanism,
        # forwarded, constrained (S4U2Proxy), password (Basic) or none
        "credentials": user.credential_kind,
        "expires": expires.isoformat(timespec="seconds") if expires else None,
        "tls": handler.request.protocol == "https",
    }


class DemoHandler(KerberosAuthMixin, tornado.web.RequestHandler):
    """Base of the guarded pages: every method of a subclass needs a Kerberos login."""

    kerberos_required = True

    def on_finish(self) -> None:
        user = self.current_user
        if isinstance(user, KerberosUser):
            # The record a test (or you) can check: who got which page, and how.
            log.info("served %s to %s via %s", self.request.path, user.principal, user.mechanism)


class Landing(tornado.web.RequestHandler):
    def get(self) -> None:
        self.render("index.html", backend=self.settings["backend"])


class Whoami(DemoHandler):
    def get(self) -> None:
        self.render("whoami.html", me=describe(self, self.current_user))


class WhoamiJSON(DemoHandler):
    def get(self) -> None:
        self.write(describe(self, self.current_user))


class ActsAsUser(DemoHandler):
    """A page that acts as its user: a session cookie from a Negotiate login brought no
    credentials, so the browser logs in afresh (silently, with its ticket: delegated if
    it delegates to us). A sign-in form's user has no ticket to bring: constrained
    delegation (S4U2Self) acts for them where the KDC allows it."""

    def login_with_credentials(self) -> KerberosUser:
        """The user, after a fresh login if the session cookie let them in by Negotiate."""
        user: KerberosUser = self.current_user
        if user.from_session and user.mechanism == "negotiate":
            self.get_kerberos_guard().challenge(self)  # a 401: the browser logs in again
        return user


class ActAsUser(ActsAsUser):
    """Use the user's credentials: get a ticket for a backend service as them."""

    async def get(self) -> None:
        user = self.login_with_credentials()
        backend = self.settings["backend"]
        result: dict[str, Any] = {"principal": user.principal, "backend": backend}
        if user.delegated_credentials is None:
            result.update(ok=False, why="the client delegated no credentials")
        else:
            loop = tornado.ioloop.IOLoop.current()
            # May talk to the KDC: never on the IOLoop.
            result.update(
                await loop.run_in_executor(None, ticket_for, user.delegated_credentials, backend)
            )
        if self.get_argument("format", "") == "json":
            self.write(result)
        else:
            self.render("act.html", result=result)


def ticket_for(creds: gssapi.Credentials, backend: str) -> dict[str, Any]:
    """Start a context with ``backend`` as the user; the KDC issues a ticket for it."""
    service, _, host = backend.partition("/")
    target = gssapi.Name(f"{service}@{host}", gssapi.NameType.hostbased_service)
    try:
        ctx = gssapi.SecurityContext(name=target, creds=creds, usage="initiate")
        token = ctx.step()
    except GSSError as err:
        # GSSAPI detail goes to the log, not into the page.
        log.info("no ticket for %s: %s", backend, " ".join(str(err).split()))
        return {"ok": False, "why": "the KDC did not issue a ticket (see the server log)"}
    return {"ok": True, "token_bytes": len(token or b""), "as": str(creds.name)}


class DatabaseAsUser(ActsAsUser):
    """Log in to PostgreSQL as the web user, with their own Kerberos credentials."""

    async def get(self) -> None:
        user = self.login_with_credentials()
        database: Database = self.settings["database"]
        result: dict[str, Any] = {"principal": user.principal, "username": user.username}
        if not database.configured:
            result.update(ok=False, why="no database is configured (see --db_host)")
        else:
            try:
                conninfo = await database.conninfo(user.username)
                # libpq asks for postgres/<host>: fetched first, a refusal is ours to name.
                target = f"postgres@{conninfo['host']}"
                seen = await self.run_as_user(whoami_in_db, conninfo, delegate_to=target)
                result.update(ok=True, credentials=user.credential_kind, **seen)
                log.info(
                    "database login for %s as %s (encrypted: %s, credentials: %s)",
                    user.principal,
                    seen["db_user"],
                    seen["encrypted"],
                    user.credential_kind,
                )
            except DelegationRefused as err:
                log.info("no database login for %s: %s", user.principal, err)
                result.update(ok=False, why="the KDC would not let this server act as you")
            except NoCredentials:
                result.update(ok=False, delegate=True, why="your client delegated no credentials")
            except (psycopg.Error, RuntimeError, OSError) as err:
                # Database detail goes to the log, not into the page.
                log.info("no database login for %s: %s", user.principal, err)
                result.update(ok=False, why="the database refused the login (see the server log)")
        if self.get_argument("format", "") == "json":
            self.write(result)
        else:
            self.render("db.html", result=result)


def make_app(guard: KerberosGuard, backend: str, database: Database) -> tornado.web.Application:
    """The demo application; the same one serves HTTPS and plain HTTP."""
    return tornado.web.Application(
        [
            (r"/", Landing),
            (r"/whoami", Whoami),
            (r"/api/whoami", WhoamiJSON),
            (r"/act", ActAsUser),
            (r"/db", DatabaseAsUser),
            # The sign-in form for browsers without a ticket, and signing out.
            *guard.login_routes("/login"),
        ],
        template_path=TEMPLATES,
        kerberos=guard,
        # Signs the session cookie: a fresh one per run, so a restart signs everyone out.
        cookie_secret=secrets.token_urlsafe(32),
        backend=backend,
        database=database,
    )
