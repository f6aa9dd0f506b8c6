"""The demo's database: a throwaway PostgreSQL that only Kerberos users get into.

With the throwaway realm, the demo starts PostgreSQL in the background (``initdb`` takes a
second or two; the site is up before it is) with a role for the demo user. With a real
realm, ``--db_host`` names your own server. The ``/db`` page logs in *as the web user*
through :meth:`~tornado_kerb.KerberosAuthMixin.run_as_user`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from tornado_kerb.testing.postgres import ThrowawayPostgres

log = logging.getLogger("demo")

# What the /db page shows: who the database thinks we are, and how we got there.
QUERY = (
    "SELECT current_user, gss_authenticated, principal, encrypted"
    " FROM pg_stat_gssapi WHERE pid = pg_backend_pid()"
)


class Database:
    """Where ``/db`` connects: a throwaway server starting in the background, or yours."""

    def __init__(self, *, start: Any = None, conninfo: dict[str, Any] | None = None) -> None:
        # ``start``: a k5test realm whose demo user gets a throwaway server.
        self._server: asyncio.Future[ThrowawayPostgres] | None = None
        self._conninfo = conninfo
        if start is not None:
            loop = asyncio.get_running_loop()
            self._server = loop.run_in_executor(None, ThrowawayPostgres, start, ["alice"])

    @property
    def configured(self) -> bool:
        return self._server is not None or self._conninfo is not None

    async def conninfo(self, user: str) -> dict[str, Any]:
        """Connection settings for ``user``, once the server is up."""
        if self._server is not None:
            return (await self._server).conninfo(user)
        return {**(self._conninfo or {}), "user": user}

    async def stop(self) -> None:
        """Stop the throwaway server (waiting for it to finish starting, if need be)."""
        if self._server is None:
            return
        try:
            server = await self._server
        except Exception as err:  # it never started: nothing to stop, but say why
            log.warning("the demo database did not start: %s", err)
            return
        server.stop()


def whoami_in_db(conninfo: dict[str, Any]) -> dict[str, Any]:
    """Log in with the calling thread's default Kerberos credentials (the web user's,
    inside run_as_user) and ask the database who we are."""
    with psycopg.connect(**conninfo, connect_timeout=10) as conn:
        row = conn.execute(QUERY).fetchone()
    if row is None:  # a connection pg_stat_gssapi does not list: not a GSS login at all
        raise RuntimeError("pg_stat_gssapi has no row for this connection")
    user, gss, principal, encrypted = row
    return {"db_user": user, "gss": gss, "db_principal": principal, "encrypted": encrypted}
