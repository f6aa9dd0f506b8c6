"""A pytest plugin: a throwaway Kerberos realm for testing your own Tornado handlers.

The ``kerberos_realm`` fixture (session-scoped) is a
:class:`tornado_kerb.testing.KerberosRealm`: a real MIT KDC on a random port base with an
``HTTP/localhost`` key in :attr:`~tornado_kerb.testing.KerberosRealm.keytab` and a user
holding a forwardable ticket; its environment (``KRB5_CONFIG``, ``KRB5CCNAME``, ...) is in
``os.environ`` for the session, put back exactly afterwards, and the KDC is always stopped.
Needs ``k5test`` (the ``test`` extra) and MIT krb5's KDC programs only when the fixture is
used: loading the plugin does not import k5test. A test::

    import pytest
    import tornado.testing
    import tornado.web

    from tornado_kerb import KerberosAuthMixin, authenticated


    class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
        @authenticated
        def get(self):
            self.write(self.current_user.principal)


    class TestWhoami(tornado.testing.AsyncHTTPTestCase):
        @pytest.fixture(autouse=True)
        def _realm(self, kerberos_realm):
            self.realm = kerberos_realm

        def get_app(self):
            kerberos = {"keytab": self.realm.keytab, "hostname": "localhost"}
            return tornado.web.Application([("/", Whoami)], kerberos=kerberos)

        def test_whoami(self):
            response = self.fetch("/", headers={"Authorization": self.realm.negotiate_header()})
            assert response.code == 200
            assert response.body.decode() == self.realm.user

Real clients work too: ``requests.get(url, auth=kerberos_realm.requests_auth())`` and
``httpx.get(url, auth=kerberos_realm.httpx_auth())``; more users with
``kerberos_realm.add_user("bob")``. For a realm set up differently, override the fixture in
your ``conftest.py`` with :func:`~tornado_kerb.testing.kerberos_realm_session`. Outside
pytest, :func:`tornado_kerb.testing.start_kerberos_realm` starts the same realm: the realm
and its helpers live in :mod:`tornado_kerb.testing` (this module re-exports them) and only
the fixtures are here.

The ``samba_realm`` fixture (session-scoped) is an Active Directory realm instead: a
:class:`tornado_kerb.testing.samba.SambaRealm`, a real Samba domain controller (KDC and
LDAP) provisioned into a temporary directory and bound to a loopback address of its own,
with an ``HTTP/localhost`` AES keytab in ``keytab``, a user with a forwardable ticket, and
``add_user``, ``add_group``, ``add_members``, ``add_service``, ``allow_delegation`` and
``negotiate_header`` to set up what a test needs; tickets it issues carry a PAC with the
user's groups. Its environment is in ``os.environ`` for the session like
``kerberos_realm``'s, so a session uses one of the two (``realm_environment(realm.env)``
switches within a test). Needs root and Debian's ``samba-ad-dc samba-ad-provision
ldb-tools krb5-user`` (a test using it fails with what is missing); it takes about five
seconds to start and is always stopped. Configure it with
:func:`~tornado_kerb.testing.samba.samba_realm_session`. Loading the plugin imports neither
k5test nor anything of Samba's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

# The realm lives in tornado_kerb.testing, which needs no pytest; re-exported here for
# conftest.py files that import it from the plugin.
from tornado_kerb.testing import (
    KerberosRealm,
    RealmUser,
    kerberos_realm_session,
    start_kerberos_realm,
)

if TYPE_CHECKING:
    from tornado_kerb.testing.samba import SambaRealm

__all__ = [
    "KerberosRealm",
    "RealmUser",
    "kerberos_realm",
    "kerberos_realm_session",
    "samba_realm",
    "start_kerberos_realm",
]


@pytest.fixture(scope="session")
def kerberos_realm() -> Iterator[KerberosRealm]:
    """A :class:`~tornado_kerb.testing.KerberosRealm` for the session, its environment in
    ``os.environ``."""
    with kerberos_realm_session() as realm:
        yield realm


@pytest.fixture(scope="session")
def samba_realm() -> Iterator[SambaRealm]:
    """A :class:`~tornado_kerb.testing.samba.SambaRealm` (an AD domain controller) for the
    session, its environment in ``os.environ``."""
    # Imported here: a session that never asks for a DC does not load the module.
    from tornado_kerb.testing.samba import samba_realm_session

    with samba_realm_session() as realm:
        yield realm
