"""A throwaway MIT realm for the demo: a KDC, a service keytab, a user with a ticket."""

from __future__ import annotations

import os

import k5test

from tornado_kerb.testing import start_realm

REALM = "DEMO.TEST"
USER = "alice"
PASSWORD = "alice-demo-password"  # a demo realm that lives as long as the demo
BACKEND = "backend/localhost"  # a second service, to show acting as the user


class DemoRealm:
    """Start a KDC on a random port base with ``HTTP/localhost`` and a demo user.

    Everything lives in one temporary directory that :meth:`stop` removes, together with
    the ``krb5kdc`` process.
    """

    def __init__(self) -> None:
        self._k5 = _start_kdc()
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
        except BaseException:
            self._k5.stop()
            raise
        self.tmpdir: str = k5.tmpdir
        self.krb5_conf: str = k5.env["KRB5_CONFIG"]
        self.ccache: str = k5.ccache
        self.rcache_dir: str = k5.env["KRB5RCACHEDIR"]

    def stop(self) -> None:
        """Stop the KDC and remove the realm's directory."""
        self._k5.stop()


def _start_kdc() -> k5test.K5Realm:
    return start_realm(
        realm=REALM,
        krb5_conf={"libdefaults": {"forwardable": "true"}},
        create_user=False,
        create_host=False,
        get_creds=False,
    )
