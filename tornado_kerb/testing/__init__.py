"""Test your Kerberos-protected Tornado app against a real, throwaway MIT realm.

Needs ``k5test`` (the ``test`` extra) and MIT krb5's KDC programs. Under pytest, take the
``kerberos_realm`` fixture (:mod:`tornado_kerb.testing.plugin`); anywhere else,
:func:`start_kerberos_realm` starts the same typed :class:`KerberosRealm`: a KDC on a random
port base, an ``HTTP/localhost`` keytab for your server, a user with a forwardable ticket,
:meth:`~KerberosRealm.add_user` for more users and :meth:`~KerberosRealm.negotiate_header`
for the ``Authorization`` header a browser would send. A second user, bob, logging in::

    import asyncio

    import tornado.httpclient
    import tornado.httpserver
    import tornado.testing
    import tornado.web

    from tornado_kerb import KerberosAuthMixin, authenticated
    from tornado_kerb.testing import realm_environment, start_kerberos_realm


    class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
        @authenticated
        def get(self):
            self.write(self.current_user.principal)


    async def main():
        realm = start_kerberos_realm()
        try:
            with realm_environment(realm.env):  # where Kerberos looks for the realm's KDC
                bob = realm.add_user("bob")  # a password, a ticket in a cache of his own
                header = realm.negotiate_header(ccache=bob.ccache)  # "Negotiate YII..."

                kerberos = {"keytab": realm.keytab, "hostname": "localhost"}
                app = tornado.web.Application([("/", Whoami)], kerberos=kerberos)
                sock, port = tornado.testing.bind_unused_port()
                tornado.httpserver.HTTPServer(app).add_socket(sock)
                response = await tornado.httpclient.AsyncHTTPClient().fetch(
                    f"http://127.0.0.1:{port}/", headers={"Authorization": header}
                )
                print(response.body.decode())  # bob@KRBTEST.COM
        finally:
            realm.stop()  # stops the KDC and removes the realm's files


    asyncio.run(main())

The realm is also a context manager that stops it (``with start_kerberos_realm() as
realm:``), and ``with kerberos_realm_session() as realm:`` also puts its environment into
``os.environ`` for the block. :func:`start_realm` is the raw form underneath: an untyped
``k5test.K5Realm`` with any of k5test's options (no user, no database yet), for realms the
typed one does not fit (:mod:`tornado_kerb.testing.ldap` builds on it).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import random
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import gssapi
    import httpx_gssapi

__all__ = [
    "KerberosRealm",
    "RealmUser",
    "kerberos_realm_session",
    "random_portbase",
    "realm_environment",
    "start_kerberos_realm",
    "start_realm",
]

# Below Linux's ephemeral port range (32768+), where servers bound to port 0 land.
_PORTS = range(20000, 32000, 10)

# Client settings that make "HTTP@localhost" mean HTTP/localhost whatever DNS says.
_LIBDEFAULTS = {"dns_canonicalize_hostname": "false", "rdns": "false"}

# The service principal a server on this machine accepts, as clients ask for it.
_HTTP_SERVICE = "HTTP/localhost"
# k5test options the typed realm decides itself: the user and their forwardable ticket.
_REFUSED = ("create_kdb", "create_user", "get_creds", "start_kdc", "existing")


def random_portbase() -> int:
    """A random k5test port base (k5test uses the ten ports from there)."""
    return random.choice(_PORTS)  # noqa: S311 - spreading ports, not a secret


def start_realm(*, attempts: int = 5, **kwargs: Any) -> Any:
    """Start a raw ``k5test.K5Realm`` on a random port base; call ``.stop()`` when done.

    The building block under :func:`start_kerberos_realm`, for a realm that one does not
    fit: keyword arguments go to ``k5test.K5Realm`` (``create_user=False``,
    ``get_creds=False``, ``create_kdb=False``, ``kdc_conf=...``), and the result is
    k5test's own object (``.run()``, ``.addprinc()``, ``.extract_keytab()``, ``.kinit()``,
    ``.password(name)``, ``.env``, ``.tmpdir``, ``.portbase``), untyped.

    k5test's fixed default port base makes two realms (or two test runs) collide, and a
    port already in use makes ``krb5kdc`` exit: each attempt takes a new random base.
    ``krb5_conf`` is merged over settings that keep host names as typed.
    """
    import k5test  # the test extra; not needed to serve

    conf = dict(kwargs.pop("krb5_conf", None) or {})
    conf["libdefaults"] = {**_LIBDEFAULTS, **conf.get("libdefaults", {})}
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return k5test.K5Realm(portbase=random_portbase(), krb5_conf=conf, **kwargs)
        except Exception as err:  # k5test raises a bare Exception when a daemon fails
            last = err
    raise RuntimeError(f"could not start a KDC in {attempts} attempts: {last}")


@contextlib.contextmanager
def realm_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Put a realm's environment (``KRB5_CONFIG``, ``KRB5CCNAME``…) into ``os.environ`` for
    the block, then put ``os.environ`` back exactly as it was. For tests only: a server
    never changes the process environment."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def spnego_header(target: str, creds: Any, *, delegate: bool = False) -> str:
    """``Negotiate <SPNEGO token>`` for ``target`` (``service@host``, or a URL: ``HTTP@``
    its host) from the initiator credentials ``creds``, asking for mutual authentication
    (and delegation, with ``delegate``). Each call makes a fresh token."""
    import gssapi

    if "://" in target:
        target = f"HTTP@{urllib.parse.urlsplit(target).hostname or 'localhost'}"
    flags = int(gssapi.RequirementFlag.mutual_authentication)
    if delegate:
        flags |= gssapi.RequirementFlag.delegate_to_peer
    ctx = gssapi.SecurityContext(
        name=gssapi.Name(target, gssapi.NameType.hostbased_service),
        usage="initiate",
        mech=gssapi.Mechanism.from_sasl_name("SPNEGO"),
        creds=creds,
        flags=flags,
    )
    token: bytes = ctx.step()
    return "Negotiate " + base64.b64encode(token).decode()


class RealmUser(NamedTuple):
    """A user of a :class:`KerberosRealm` with a forwardable ticket in a cache of its own."""

    #: ``name@REALM``.
    principal: str
    password: str
    #: Path of the credentials cache holding the user's ticket.
    ccache: str


@dataclasses.dataclass(repr=False, eq=False)
class KerberosRealm:
    """A running throwaway MIT realm (k5test) set up for testing an HTTP service.

    Attributes:

    - ``realm``: the realm name (``KRBTEST.COM``).
    - ``user``: the principal of the realm's user (``user@KRBTEST.COM``), who holds a
      forwardable ticket in ``ccache``, so a client can delegate.
    - ``password``: that user's password (for Basic logins).
    - ``ccache``: path of the user's credentials cache (``KRB5CCNAME`` in ``env``).
    - ``keytab``: path of a keytab with the ``HTTP/localhost`` key: give it to the server as
      ``kerberos={"keytab": realm.keytab, "hostname": "localhost"}``.
    - ``env``: the realm's environment (``KRB5_CONFIG``, ``KRB5CCNAME``,
      ``KRB5RCACHEDIR``, ...). Kerberos clients and servers in this process read
      ``os.environ``, so they reach this realm only while it is there: the
      ``kerberos_realm`` fixture puts it there; with :func:`start_kerberos_realm` it is yours
      to do (:func:`realm_environment`, or pass it to a subprocess).
    - ``k5``: the ``k5test.K5Realm`` underneath (``k5.tmpdir``, ``k5.run``, ``k5.addprinc``,
      ``k5.portbase``): what :func:`start_realm` returns. Its ``keytab`` (``host/``) and
      ``password(name)`` are not this object's.

    Build one with :func:`start_kerberos_realm`; :meth:`stop` it when done (it is also a
    context manager that stops it on exit).
    """

    realm: str
    user: str
    password: str
    ccache: str
    keytab: str
    env: dict[str, str]
    k5: Any
    _stopped: bool = dataclasses.field(default=False, init=False)

    def add_user(self, name: str) -> RealmUser:
        """Add the principal ``name@REALM`` with a password, and get it a forwardable
        ticket in a credentials cache of its own (the default cache stays :attr:`user`'s).
        Pass that cache on as ``ccache=`` (:meth:`negotiate_header`, :meth:`requests_auth`,
        :meth:`httpx_auth`) to log in as that user.

        Calling it again for the same name gets a fresh ticket.
        """
        if not name or "@" in name:
            raise ValueError(f"a principal name without a realm, not {name!r}")
        principal = f"{name}@{self.realm}"
        password = self.k5.password(name)
        # kadmin.local exits 0 when the principal exists already: kinit is the check.
        self.k5.addprinc(principal, password)
        ccache = os.path.join(self.k5.tmpdir, f"ccache.{_file_part(name)}")
        self.k5.kinit(principal, password, flags=["-f", "-c", ccache])
        return RealmUser(principal, password, ccache)

    def add_service(self, principal: str) -> str:
        """Add a service principal (``postgres/localhost``) with a random key; return the
        path of a new keytab holding that key (reusing the key if the principal exists)."""
        if not principal or any(c.isspace() for c in principal):
            raise ValueError(f"bad principal name {principal!r}")
        keytab = os.path.join(self.k5.tmpdir, f"{_file_part(principal)}.keytab")
        self.k5.addprinc(principal)
        self.k5.extract_keytab(principal, keytab)
        # kadmin.local exits 0 even when ktadd fails: the keytab itself is the check.
        if not os.path.isfile(keytab) or os.path.getsize(keytab) == 0:
            raise RuntimeError(f"could not extract a keytab for {principal}")
        return keytab

    def negotiate_header(
        self, target: str = "HTTP@localhost", *, delegate: bool = False, ccache: str | None = None
    ) -> str:
        """An ``Authorization`` header value, ``Negotiate <SPNEGO token>``, for ``target``
        (a host-based service name, ``service@host``, or a URL: ``HTTP@`` its host, as a
        browser builds it), as a browser would send it.

        The token comes from :attr:`user`'s ticket, or from the cache ``ccache`` (see
        :meth:`add_user`). With ``delegate``, the client forwards its ticket, and the
        server's ``current_user.delegated_credentials`` is set. Each call makes a fresh
        token: a server refuses one it has seen (replay). Needs :attr:`env` in
        ``os.environ``, where the Kerberos library looks for the KDC.
        """
        return spnego_header(target, self._credentials(ccache), delegate=delegate)

    def requests_auth(self, *, ccache: str | None = None, **kwargs: Any) -> Any:
        """A ``requests_gssapi.HTTPSPNEGOAuth`` logging in as :attr:`user` (or as the owner
        of ``ccache``), requiring the server's mutual authentication; ``kwargs`` go to it
        (``delegate=True``, ``opportunistic_auth=True``, ...). Needs ``requests-gssapi``."""
        import requests_gssapi  # type: ignore[import-untyped]

        kwargs.setdefault("mutual_authentication", requests_gssapi.REQUIRED)
        kwargs.setdefault("creds", self._credentials(ccache))
        return requests_gssapi.HTTPSPNEGOAuth(**kwargs)

    def httpx_auth(
        self, *, ccache: str | None = None, **kwargs: Any
    ) -> httpx_gssapi.HTTPSPNEGOAuth:
        """An ``httpx_gssapi.HTTPSPNEGOAuth`` (sync and async clients) logging in as
        :attr:`user` (or as the owner of ``ccache``), requiring the server's mutual
        authentication; ``kwargs`` go to it. Needs ``httpx-gssapi``."""
        import httpx_gssapi

        kwargs.setdefault("mutual_authentication", httpx_gssapi.REQUIRED)
        kwargs.setdefault("creds", self._credentials(ccache))
        return httpx_gssapi.HTTPSPNEGOAuth(**kwargs)

    def stop(self) -> None:
        """Stop the KDC and remove the realm's directory; safe to call again."""
        if self._stopped:
            return
        self._stopped = True
        self.k5.stop()

    def __enter__(self) -> KerberosRealm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"port {self.k5.portbase}"
        return f"<KerberosRealm {self.realm} user={self.user} {state}>"

    def _credentials(self, ccache: str | None) -> gssapi.Credentials:
        import gssapi

        # Named explicitly, so the ticket used does not depend on KRB5CCNAME.
        return gssapi.Credentials(usage="initiate", store={"ccache": ccache or self.ccache})


def _file_part(name: str) -> str:
    # Percent-encoded, so that no two names share a file ("col/x" and "col_x" did).
    return urllib.parse.quote(name, safe="")


def start_kerberos_realm(
    *,
    krb5_conf: Mapping[str, Any] | None = None,
    prepare: Callable[[Any], None] | None = None,
    **kwargs: Any,
) -> KerberosRealm:
    """Start a :class:`KerberosRealm`: a k5test realm on a random port base with forwardable
    tickets, the ``HTTP/localhost`` key in its own keytab, and the user's ticket (``kinit
    -f``). Leaves ``os.environ`` alone (see :func:`realm_environment`,
    :func:`kerberos_realm_session`); :meth:`~KerberosRealm.stop` it when done.

    ``krb5_conf`` is merged over those settings (``{"libdefaults": {...}}``); ``prepare``
    is called with the k5test realm before any principal or ticket is made (to point a
    KDC proxy at it, say); other keyword arguments go to :func:`start_realm` and
    ``k5test.K5Realm`` (``realm="EXAMPLE.COM"``). Raises :class:`ImportError` without
    ``k5test``, :class:`RuntimeError` when no KDC would start.
    """
    refused = [name for name in _REFUSED if name in kwargs]
    if refused:
        raise TypeError(f"start_kerberos_realm does not take {', '.join(refused)}")
    try:
        import k5test  # noqa: F401 - only to say what is missing
    except ImportError as err:
        raise ImportError(
            "a throwaway realm needs k5test (pip install 'tornado_kerb[test]') "
            "and MIT krb5's KDC programs"
        ) from err

    conf = dict(krb5_conf or {})
    # Forwardable, so a client can delegate: without it delegation silently gives None.
    conf["libdefaults"] = {"forwardable": "true", **conf.get("libdefaults", {})}
    k5 = start_realm(krb5_conf=conf, get_creds=False, **kwargs)
    try:
        if prepare is not None:
            prepare(k5)
        keytab = os.path.join(k5.tmpdir, "http.keytab")
        k5.addprinc(_HTTP_SERVICE)
        k5.extract_keytab(_HTTP_SERVICE, keytab)
        password = k5.password("user")
        k5.kinit(k5.user_princ, password, flags=["-f"])
        return KerberosRealm(
            realm=k5.realm,
            user=k5.user_princ,
            password=password,
            ccache=k5.ccache,
            keytab=keytab,
            env=dict(k5.env),
            k5=k5,
        )
    except BaseException:
        k5.stop()
        raise


@contextlib.contextmanager
def kerberos_realm_session(
    *,
    krb5_conf: Mapping[str, Any] | None = None,
    prepare: Callable[[Any], None] | None = None,
    **kwargs: Any,
) -> Iterator[KerberosRealm]:
    """Start a realm (see :func:`start_kerberos_realm`, which takes the same arguments) and
    put its environment into ``os.environ`` until the block ends; then put ``os.environ``
    back exactly as it was and stop the realm, whatever happened. To configure the pytest
    fixture, override it in your ``conftest.py``::

        @pytest.fixture(scope="session")
        def kerberos_realm():
            with kerberos_realm_session(realm="EXAMPLE.COM") as realm:
                yield realm
    """
    with start_kerberos_realm(krb5_conf=krb5_conf, prepare=prepare, **kwargs) as realm:
        with realm_environment(realm.env):
            yield realm
