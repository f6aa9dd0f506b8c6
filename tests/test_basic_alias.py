"""The Basic cache against principal aliases and refused logins (issue 15).

A real LDAP-backed MIT KDC where ``boss`` is an alias of ``alice`` (a second
``krbPrincipalName`` on her entry, ``krbCanonicalName`` naming her) and clients ask for
canonical names (``canonicalize = true``): a Basic login typed as ``boss`` is accepted by our
keytab as ``alice``. A cache hit must give the same user as the login that filled it, and
only a login that was let in may fill the cache. The KDC's own log (``kdc.log``) tells a
cache hit (no AS request) from a real login.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest
import requests
import tornado.web

from tests.conftest import TLS, ServeFn, Server, require_ldap
from tornado_kerb import KerberosAuthMixin, KerberosUser, authenticated
from tornado_kerb.testing import realm_environment
from tornado_kerb.testing.ldap import LDAPRealm, start_ldap_realm

require_ldap()


@dataclasses.dataclass
class Aliased:
    """An LDAP realm with ``alice`` and her alias ``boss``, and our HTTP/localhost keytab."""

    ldap: LDAPRealm
    keytab: str
    #: alice's password: ``boss`` logs in with it too (one entry, one key).
    password: str

    @property
    def alice(self) -> str:
        return f"alice@{self.ldap.realm}"

    @property
    def boss(self) -> str:
        return f"boss@{self.ldap.realm}"

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "keytab": self.keytab,
            "hostname": "localhost",
            "realm": self.ldap.realm,
            "basic_cache": True,
            **extra,
        }

    def as_requests(self, typed: str) -> int:
        """How many AS requests for the name ``typed`` (a password login) the KDC logged."""
        log = pathlib.Path(self.ldap.k5.tmpdir, "kdc.log").read_text()
        # "AS_REQ (...) 127.0.0.1: ISSUE: ..., boss@KRBTEST.COM for krbtgt/KRBTEST.COM@...":
        # the KDC logs the name as requested, before canonicalising it.
        return sum(
            1 for line in log.splitlines() if "AS_REQ" in line and f" {typed} for krbtgt/" in line
        )


@pytest.fixture(scope="module")
def aliased() -> Iterator[Aliased]:
    """One LDAP realm for the module, its environment in os.environ meanwhile."""
    conf = {"libdefaults": {"canonicalize": "true", "udp_preference_limit": "1"}}
    # get_creds=False: nobody here needs the default user's ticket. The session realm's
    # environment, if it started first, comes back afterwards.
    with (
        start_ldap_realm(krb5_conf=conf, get_creds=False) as ldap,
        realm_environment(ldap.k5.env),
    ):
        k5 = ldap.k5
        keytab = os.path.join(k5.tmpdir, "http.keytab")
        k5.addprinc("HTTP/localhost")
        k5.extract_keytab("HTTP/localhost", keytab)
        password = k5.password("alice")
        alice = f"alice@{ldap.realm}"
        k5.addprinc(alice, password)
        ldap.add_alias("boss", alice)
        yield Aliased(ldap, keytab, password)


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    """Echoes the principal; its authorization is the test's ``verdict`` (``allow`` and
    ``awaitable``), read at each request."""

    def initialize(self, verdict: dict[str, bool] | None = None) -> None:
        self.verdict = verdict

    def kerberos_authorize(self, user: KerberosUser) -> bool | Awaitable[bool]:
        if self.verdict is None:
            return True
        allow = self.verdict["allow"]
        return _later(allow) if self.verdict.get("awaitable") else allow

    @authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


async def _later(allow: bool) -> bool:
    await asyncio.sleep(0)  # a real suspension: the verdict arrives on a later turn
    return allow


def start(serve: ServeFn, aliased: Aliased, verdict: Any = None, **extra: Any) -> Server:
    handler_args = {} if verdict is None else {"verdict": verdict}
    return serve([(r"/", Whoami, handler_args)], aliased.settings(**extra), https=True)


def login(server: Server, tls: TLS, user: str, password: str) -> requests.Response:
    return requests.get(server.url("/"), auth=(user, password), verify=tls.ca, timeout=30)


def test_a_cache_hit_is_the_principal_the_keytab_accepted(
    serve: ServeFn, aliased: Aliased, tls: TLS
) -> None:
    server = start(serve, aliased)
    before = aliased.as_requests(aliased.boss)
    first = login(server, tls, "boss", aliased.password)
    assert first.status_code == 200, first.text
    # The set-up: the KDC canonicalised the alias, our keytab accepted alice.
    assert first.text == aliased.alice
    assert aliased.as_requests(aliased.boss) == before + 1
    second = login(server, tls, "boss", aliased.password)
    assert second.status_code == 200, second.text
    assert aliased.as_requests(aliased.boss) == before + 1, "the repeat was not a cache hit"
    assert second.text == aliased.alice, "a cache hit must be the user the KDC proved"


@pytest.mark.parametrize(("listed", "status"), [("alice", 200), ("boss", 403)])
def test_allowed_principals_answers_a_repeat_as_it_answered_the_login(
    serve: ServeFn, aliased: Aliased, tls: TLS, listed: str, status: int
) -> None:
    """Only the accepted principal counts: listing alice lets boss's login in every time,
    listing only boss keeps it out every time (the cache must not let in the second time
    what it refused the first)."""
    server = start(serve, aliased, allowed_principals=[f"{listed}@{aliased.ldap.realm}"])
    statuses, bodies, kdc_logins = [], [], []
    for _ in range(2):
        before = aliased.as_requests(aliased.boss)
        response = login(server, tls, "boss", aliased.password)
        statuses.append(response.status_code)
        bodies.append(response.text)
        kdc_logins.append(aliased.as_requests(aliased.boss) - before)
    assert statuses == [status, status]
    if status == 200:
        assert bodies == [aliased.alice, aliased.alice]
    else:
        # Refused logins are never cached: each one is a real login again.
        assert kdc_logins == [1, 1]


@pytest.mark.parametrize("awaitable", [False, True], ids=["verdict", "awaitable-verdict"])
def test_a_login_refused_by_authorization_does_not_fill_the_cache(
    serve: ServeFn, aliased: Aliased, tls: TLS, awaitable: bool
) -> None:
    """A 403 leaves nothing behind: once the application lets alice in, her identical
    request is proven by the KDC again, and only then cached."""
    verdict = {"allow": False, "awaitable": awaitable}
    server = start(serve, aliased, verdict)
    alice, password = aliased.alice, aliased.password
    before = aliased.as_requests(alice)
    refused = login(server, tls, "alice", password)
    assert refused.status_code == 403, refused.text
    assert aliased.as_requests(alice) == before + 1
    verdict["allow"] = True
    admitted = login(server, tls, "alice", password)
    assert admitted.status_code == 200, admitted.text
    assert admitted.text == alice
    assert aliased.as_requests(alice) == before + 2, "the refused login was cached"
    # The control: the cache is on, and the login that was let in filled it.
    again = login(server, tls, "alice", password)
    assert again.status_code == 200, again.text
    assert aliased.as_requests(alice) == before + 2
