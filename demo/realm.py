"""A throwaway MIT realm for the demo: a KDC, a service keytab, a user with a ticket.

Where slapd is installed the KDC keeps its database in a private OpenLDAP, the back end
that can do constrained delegation: ``HTTP/localhost`` may then act as its users towards
the demo's PostgreSQL and backend service, as in an Active Directory domain, so ``/db``
works in a browser that was never told to delegate.
"""

from __future__ import annotations

import os
from typing import Any

from tornado_kerb.testing import start_realm
from tornado_kerb.testing.ldap import LDAPRealm, ldap_available, start_ldap_realm

REALM = "DEMO.TEST"
USER = "alice"
PASSWORD = "alice-demo-password"  # a demo realm that lives as long as the demo
BACKEND = "backend/localhost"  # a second service, to show acting as the user
DATABASE = "postgres/localhost"  # the throwaway PostgreSQL's principal (demo.database)


class DemoRealm:
    """Start a KDC on a random port base with ``HTTP/localhost`` and a demo user.

    Everything lives in one temporary directory that :meth:`stop` removes, together with
    the ``krb5kdc`` process.
    """

    def __init__(self) -> None:
        self._ldap: LDAPRealm | None = None
        #: Why the KDC cannot do constrained delegation here, or ``None`` when it can.
        self.no_delegation = ldap_available()
        if self.no_delegation is None:
            self._ldap = start_ldap_realm(**_REALM_ARGS)
            self._k5 = self._ldap.k5
        else:
            self._k5 = start_realm(**_REALM_ARGS)
        #: The k5test realm itself, for services that need keys from it (the database).
        self.k5 = self._k5
        try:
            k5 = self._k5
            self.keytab = os.path.join(k5.tmpdir, "http.keytab")
            k5.addprinc("HTTP/localhost")
            k5.extract_keytab("HTTP/localhost", self.keytab)
            k5.addprinc(BACKEND)
            self.principal = f"{USER}@{REALM}"
            k5.addprinc(self.principal, PASSWORD)
            k5.kinit(self.principal, PASSWORD, flags=["-f"])  # forwardable: can delegate
            if self._ldap is not None:
                # What an AD admin does with "trust this account for delegation to
                # specified services only". No protocol transition: every demo request
                # brings a ticket.
                self._ldap.allow_delegation("HTTP/localhost", [DATABASE, BACKEND])
        except BaseException:
            self.stop()
            raise
        self.tmpdir: str = k5.tmpdir
        self.krb5_conf: str = k5.env["KRB5_CONFIG"]
        self.ccache: str = k5.ccache
        self.rcache_dir: str = k5.env["KRB5RCACHEDIR"]

    @property
    def delegation(self) -> bool:
        """Whether the KDC lets ``HTTP/localhost`` act as users (S4U2Proxy)."""
        return self._ldap is not None

    def stop(self) -> None:
        """Stop the KDC (and slapd) and remove the realm's directories."""
        if self._ldap is not None:
            self._ldap.stop()
        else:
            self._k5.stop()


_REALM_ARGS: dict[str, Any] = {
    "realm": REALM,
    "krb5_conf": {"libdefaults": {"forwardable": "true"}},
    "create_user": False,
    "create_host": False,
    "get_creds": False,
}
