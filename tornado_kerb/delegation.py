"""Constrained delegation: our own initiating credentials, fetched and kept fresh off the IOLoop.

For S4U2Proxy MIT needs acceptor credentials that can also initiate as our principal:
then accepting a token whose client forwarded nothing still yields credentials that act
as the user towards the services the KDC allows. Initiating needs a TGT of our own, from
the keytab (as the client keytab) into a private memory cache: a KDC round trip. So it is
fetched in a thread of its own as soon as the guard is built, refreshed at 60% of its
life, and until it is there (or while the KDC cannot be reached) logins simply go on
with the accept-only credentials: no constrained delegation for them, no 503, no KDC wait
on the IOLoop. Nothing here imports Tornado.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

import gssapi
import gssapi.raw
from gssapi.raw.misc import GSSError

from ._gss import describe, translate
from .errors import DelegationRefused, KDCUnavailable, KerberosError
from .keytab import find_client_principal, inspect_keytab, wanted_prefix

__all__ = ["ConstrainedDelegation"]

log = logging.getLogger(__name__)

_REFRESH_AT = 0.6  # of the TGT's life
_RETRY = 30.0  # seconds between attempts when the KDC (or the keytab) fails us


class ConstrainedDelegation:
    """Initiating credentials for our principal, kept fresh by a background thread."""

    def __init__(
        self, keytab: str, service: str, hostname: str | None, account: str | None = None
    ) -> None:
        self.keytab = keytab
        self._service = service
        self._hostname = hostname
        self._account = account
        # One private cache for the life of the guard: refreshes reuse it, so nothing leaks.
        self._ccache = f"MEMORY:tornado_kerb-s4u-{secrets.token_hex(16)}"
        self._lock = threading.Lock()
        self._creds: gssapi.Credentials | None = None
        self._expires = 0.0  # monotonic
        self._next_fetch = 0.0  # monotonic: refresh (or retry) due
        self._fetching = False
        self._attempted = threading.Event()
        #: Why there are no credentials, after a failed attempt (for logs and errors).
        self.problem = "not fetched yet"
        self.principal = ""
        self._start_fetch()

    def current(self) -> gssapi.Credentials | None:
        """The credentials if they are good now, else ``None``; starts a refresh when
        one is due. Cheap: called on the IOLoop for every Negotiate login."""
        now = time.monotonic()
        if now >= self._next_fetch:
            self._start_fetch()
        return self._creds if now < self._expires else None

    def ready(self, timeout: float | None = None) -> bool:
        """Wait (blocking: not on the IOLoop) for the first attempt; are they there?"""
        self._attempted.wait(timeout)
        return self.current() is not None

    def impersonate(self, principal: str) -> gssapi.Credentials:
        """Act as ``principal`` without a ticket from them (S4U2Self; S4U2Proxy at use).
        Blocks on the KDC: call it in a worker thread."""
        creds = self.current()
        if creds is None:
            raise DelegationRefused(
                f"{principal} (S4U2Self)", f"no TGT for our own service: {self.problem}"
            )
        user = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
        try:
            return creds.impersonate(user, usage="initiate")
        except GSSError as err:
            unreachable = translate(err, "ticket")
            if isinstance(unreachable, KDCUnavailable):
                raise unreachable from None
            raise DelegationRefused(f"{principal} (S4U2Self)", describe(err)) from None

    def _start_fetch(self) -> None:
        with self._lock:
            if self._fetching or time.monotonic() < self._next_fetch:
                return
            self._fetching = True
        threading.Thread(target=self._fetch, name="tornado_kerb-s4u", daemon=True).start()

    def _fetch(self) -> None:
        now = time.monotonic()
        try:
            principal = self._our_principal()
            name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
            store: dict[bytes | str, bytes | str] = {
                "keytab": self.keytab,
                "client_keytab": self.keytab,
                "ccache": self._ccache,
            }
            creds = gssapi.Credentials(name=name, usage="both", store=store)
            life = gssapi.raw.inquire_cred_by_mech(
                creds, gssapi.MechType.kerberos, init_lifetime=True
            ).init_lifetime
            if not life:
                raise DelegationRefused(principal, "the TGT from the keytab has no lifetime")
        except (GSSError, KerberosError) as err:
            self.problem = describe(err) if isinstance(err, GSSError) else str(err)
            log.warning(
                "constrained delegation unavailable for now (retrying in %gs): %s",
                _RETRY,
                self.problem,
            )
            self._next_fetch = now + _RETRY
        else:
            if self._creds is None:
                log.info("constrained delegation ready: a TGT for %s", principal)
            self.principal = principal
            self._creds = creds
            self._expires = now + life
            # A TGT that MIT did not renew yet (refresh too early) comes back short-lived:
            # retry soon, but never in a tight loop.
            self._next_fetch = now + max(_RETRY, life * _REFRESH_AT)
            self.problem = ""
        finally:
            self._fetching = False
            self._attempted.set()

    def _our_principal(self) -> str:
        report = inspect_keytab(self.keytab)
        principal = report.check(self._service, self._hostname)
        account = self._account or find_client_principal(
            self.keytab, principal.rpartition("@")[2], principal
        )
        if account is not None:
            # Active Directory gives no TGT to an SPN (HTTP/web is not a client name):
            # the account's own name, with the same keys. Credentials named so accept
            # tickets for every SPN of the account: in AD's eyes they are one service.
            return account
        several = sorted(set(report.ours(self._service, self._hostname)))
        if len(several) > 1:
            # Delegation acts as one principal, and accepting with its credentials would
            # take tickets for that one only: the others' users would be locked out.
            raise DelegationRefused(
                wanted_prefix(self._service, self._hostname),
                f"the keytab holds {', '.join(several)}: set 'hostname' to pick one (with "
                "'hostnames', add the account's own name to the keytab, or set "
                "'service_account')",
            )
        return principal
