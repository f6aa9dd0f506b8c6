"""Several host names on one keytab (issue 18, "Several host names"): tickets for any of
the listed names are accepted, for no other name the keytab holds."""

from __future__ import annotations

import base64
from typing import Any

import gssapi
import pytest
import requests
import tornado.web

from tests.conftest import Realm, ServeFn, Server
from tornado_kerb import KerberosAuthMixin, KerberosGuard, KeytabError, authenticated

NAMES = ("www.multi.test", "multi.test")
OTHER = "other.multi.test"


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


@pytest.fixture(scope="module")
def keytab(realm: Realm, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A keytab with HTTP/ keys for both names and one more we do not serve."""
    path = str(tmp_path_factory.mktemp("hostnames") / "http.keytab")
    for host in (*NAMES, OTHER):
        realm.k5.addprinc(f"HTTP/{host}")
        realm.k5.extract_keytab(f"HTTP/{host}", path)
    return path


def token_for(realm: Realm, host: str) -> str:
    name = gssapi.Name(f"HTTP/{host}@{realm.k5.realm}", gssapi.NameType.kerberos_principal)
    step = gssapi.SecurityContext(name=name, usage="initiate").step()
    assert step
    return "Negotiate " + base64.b64encode(step).decode()


def start(serve: ServeFn, keytab: str, **extra: Any) -> Server:
    return serve([("/", Whoami)], {"keytab": keytab, "hostnames": list(NAMES), **extra})


@pytest.mark.parametrize(
    ("ticket", "host"),
    [(NAMES[0], NAMES[0]), (NAMES[1], NAMES[1]), (NAMES[1], NAMES[0]), (NAMES[0], "localhost")],
)
def test_a_ticket_for_any_listed_name_is_accepted_whatever_the_host_header(
    serve: ServeFn, realm: Realm, keytab: str, ticket: str, host: str
) -> None:
    server = start(serve, keytab)
    headers = {"Authorization": token_for(realm, ticket), "Host": host}
    response = requests.get(server.url("/"), headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.text == realm.user


def test_a_ticket_for_another_name_in_the_keytab_is_refused(
    serve: ServeFn, realm: Realm, keytab: str
) -> None:
    server = start(serve, keytab)
    for host in (OTHER, NAMES[0]):
        headers = {"Authorization": token_for(realm, OTHER), "Host": host}
        assert requests.get(server.url("/"), headers=headers, timeout=30).status_code == 401


def test_hostname_and_hostnames_together_serve_both(
    serve: ServeFn, realm: Realm, keytab: str
) -> None:
    server = serve(
        [("/", Whoami)], {"keytab": keytab, "hostname": NAMES[0], "hostnames": [NAMES[1]]}
    )
    for host in NAMES:
        headers = {"Authorization": token_for(realm, host)}
        assert requests.get(server.url("/"), headers=headers, timeout=30).status_code == 200


def test_a_listed_name_missing_from_the_keytab_is_named(realm: Realm, keytab: str) -> None:
    guard = KerberosGuard({"keytab": keytab, "hostnames": [*NAMES, "absent.multi.test"]})
    try:
        with pytest.raises(KeytabError, match=r"absent\.multi\.test"):
            guard.check()
    finally:
        guard.close()


def test_constrained_delegation_with_several_names_and_no_account_stays_off(
    realm: Realm, keytab: str
) -> None:
    guard = KerberosGuard({"keytab": keytab, "hostnames": list(NAMES), "s4u2proxy": True})
    try:
        assert not guard.delegation_ready(10)
        assert "hostname" in guard.delegation_problem
    finally:
        guard.close()


def test_doctor_checks_every_name(keytab: str) -> None:
    from tornado_kerb import doctor

    checks = doctor.run(keytab, hostname=NAMES[0], hostnames=[NAMES[1]])
    by_name = [(c.name, c.status) for c in checks]
    assert ("spn", "OK") in by_name
    round_trips = [c for c in checks if c.name == "end-to-end"]
    assert [c.status for c in round_trips] == ["OK", "OK"]
    assert {n for n in NAMES if any(n in c.detail for c in round_trips)} == set(NAMES)
    missing = doctor.run(keytab, hostname=NAMES[0], hostnames=["absent.multi.test"])
    (spn,) = [c for c in missing if c.name == "spn"]
    assert spn.status == "FAIL" and "absent.multi.test" in spn.detail


def test_doctor_takes_hostname_once_per_name(keytab: str) -> None:
    from tornado_kerb.__main__ import main

    argv = ["doctor", "--keytab", keytab, "--hostname", NAMES[0], "--hostname", "absent.multi.test"]
    assert main(argv) == 1  # the second name is not in the keytab: FAIL
    assert main(["doctor", "--keytab", keytab, "--hostname", NAMES[0], "--hostname", NAMES[1]]) == 0
