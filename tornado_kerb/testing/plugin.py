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
the fixture is here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# The realm lives in tornado_kerb.testing, which needs no pytest; re-exported here for
# conftest.py files that import it from the plugin.
from tornado_kerb.testing import (
    KerberosRealm,
    RealmUser,
    kerberos_realm_session,
    start_kerberos_realm,
)

__all__ = [
    "KerberosRealm",
    "RealmUser",
    "kerberos_realm",
    "kerberos_realm_session",
    "start_kerberos_realm",
]


@pytest.fixture(scope="session")
def kerberos_realm() -> Iterator[KerberosRealm]:
    """A :class:`~tornado_kerb.testing.KerberosRealm` for the session, its environment in
    ``os.environ``."""
    with kerberos_realm_session() as realm:
        yield realm
