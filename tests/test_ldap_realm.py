"""LDAPRealm: a KDC on OpenLDAP that does constrained delegation and protocol transition.

Real slapd, real krb5kdc, real GSSAPI in this process: HTTP/localhost acts as the user
towards postgres/localhost (which its ACL allows) and nowhere else, with or without a
ticket from the user, and stop() leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import gssapi
import pytest

from tests.conftest import AUTH_TO_LOCAL, require_ldap
from tests.test_postgres_fixture import stat
from tornado_kerb.testing import realm_environment
from tornado_kerb.testing.ldap import LDAPRealm, start_ldap_realm

require_ldap()

# What the main suite's realm uses: forwardable tickets (evidence for S4U2Proxy must be
# forwardable), TCP, its auth_to_local rules; merged over k5test's and the LDAP settings.
KRB5_CONF: dict[str, Any] = {
    "libdefaults": {"forwardable": "true", "udp_preference_limit": "1"},
    "realms": {"$realm": {"auth_to_local": AUTH_TO_LOCAL}},
}

PRINCIPAL = gssapi.NameType.kerberos_principal
HOSTBASED = gssapi.NameType.hostbased_service
# KRB5KDC_ERR_BADOPTION ("KDC can't fulfill requested option") as GSSAPI's unsigned minor
# code: the KDC's refusal of S4U2Proxy, whatever language the message is in.
KDC_ERR_BADOPTION = 2529638925


@pytest.fixture(scope="module")
def ldap_realm() -> Iterator[LDAPRealm]:
    """One LDAP-backed realm for the module, its environment in os.environ meanwhile."""
    # The session realm may have put its KRB5_CONFIG etc. here: later tests need it back.
    with start_ldap_realm(krb5_conf=KRB5_CONF) as realm, realm_environment(realm.k5.env):
        yield realm


class Services:
    def __init__(self, realm: LDAPRealm) -> None:
        self.realm = realm
        self.keytabs: dict[str, str] = {}
        for service in ("HTTP", "postgres", "ldap"):
            principal = f"{service}/localhost"
            keytab = os.path.join(realm.k5.tmpdir, f"{service}.keytab")
            realm.k5.addprinc(principal)
            realm.k5.extract_keytab(principal, keytab)
            self.keytabs[service] = keytab
        realm.allow_delegation("HTTP/localhost", ["postgres/localhost"])

    def http_creds(self) -> gssapi.Credentials:
        """The web server's credentials: accept, and get tickets of its own from the keytab."""
        keytab = self.keytabs["HTTP"]
        return gssapi.Credentials(
            name=gssapi.Name(f"HTTP/localhost@{self.realm.realm}", PRINCIPAL),
            usage="both",
            store={
                "keytab": keytab,
                "client_keytab": keytab,
                "ccache": f"MEMORY:ldap-realm-{uuid.uuid4().hex}",
            },
        )

    def acceptor(self, service: str) -> gssapi.SecurityContext:
        creds = gssapi.Credentials(usage="accept", store={"keytab": self.keytabs[service]})
        return gssapi.SecurityContext(creds=creds, usage="accept")


@pytest.fixture(scope="module")
def services(ldap_realm: LDAPRealm) -> Services:
    return Services(ldap_realm)


def initiator(service: str, creds: gssapi.Credentials | None = None) -> gssapi.SecurityContext:
    # Mutual authentication only: in particular, never delegate_to_peer.
    return gssapi.SecurityContext(
        name=gssapi.Name(f"{service}@localhost", HOSTBASED),
        creds=creds,
        usage="initiate",
        flags=gssapi.RequirementFlag.mutual_authentication,
    )


def handshake(client: gssapi.SecurityContext, server: gssapi.SecurityContext) -> None:
    token = client.step()
    while not (client.complete and server.complete):
        assert token is not None
        reply = server.step(token)
        if client.complete:
            break
        token = client.step(reply)
    assert client.complete and server.complete


def test_user_has_a_ticket_and_reaches_http(ldap_realm: LDAPRealm, services: Services) -> None:
    listing = ldap_realm.k5.klist().decode()
    assert f"Default principal: {ldap_realm.k5.user_princ}" in listing
    assert f"krbtgt/{ldap_realm.realm}@{ldap_realm.realm}" in listing

    client, server = initiator("HTTP"), services.acceptor("HTTP")
    handshake(client, server)
    assert str(server.initiator_name) == ldap_realm.k5.user_princ
    assert str(server.target_name) == f"HTTP/localhost@{ldap_realm.realm}"


def test_constrained_delegation_without_the_client_delegating(
    ldap_realm: LDAPRealm, services: Services
) -> None:
    client = initiator("HTTP")
    server = gssapi.SecurityContext(creds=services.http_creds(), usage="accept")
    handshake(client, server)
    assert not client.actual_flags & gssapi.RequirementFlag.delegate_to_peer
    delegated = server.delegated_creds
    assert delegated is not None  # from the user's service ticket (S4U2Proxy evidence)
    assert str(delegated.name) == ldap_realm.k5.user_princ

    downstream, postgres = initiator("postgres", delegated), services.acceptor("postgres")
    handshake(downstream, postgres)
    assert str(postgres.initiator_name) == ldap_realm.k5.user_princ
    assert str(postgres.target_name) == f"postgres/localhost@{ldap_realm.realm}"


def test_a_target_outside_the_acl_is_refused(services: Services) -> None:
    server = gssapi.SecurityContext(creds=services.http_creds(), usage="accept")
    handshake(initiator("HTTP"), server)
    assert server.delegated_creds is not None

    with pytest.raises(gssapi.exceptions.GSSError) as refused:
        initiator("ldap", server.delegated_creds).step()
    assert refused.value.min_code == KDC_ERR_BADOPTION


def test_protocol_transition(ldap_realm: LDAPRealm, services: Services) -> None:
    user = gssapi.Name(ldap_realm.k5.user_princ, PRINCIPAL)

    # Without +ok_to_auth_as_delegate the S4U2Self ticket is no evidence for S4U2Proxy.
    before = services.http_creds().impersonate(user, usage="initiate")
    with pytest.raises(gssapi.exceptions.GSSError) as refused:
        initiator("postgres", before).step()
    assert refused.value.min_code == KDC_ERR_BADOPTION

    ldap_realm.allow_protocol_transition("HTTP/localhost")
    creds = services.http_creds().impersonate(user, usage="initiate")
    downstream, postgres = initiator("postgres", creds), services.acceptor("postgres")
    handshake(downstream, postgres)
    assert str(postgres.initiator_name) == ldap_realm.k5.user_princ


def test_allow_errors_carry_the_tools_message(ldap_realm: LDAPRealm) -> None:
    with pytest.raises(RuntimeError, match=r"ldapmodify failed.*No such object"):
        ldap_realm.allow_delegation("nobody/localhost", ["postgres/localhost"])
    with pytest.raises(RuntimeError, match="Principal does not exist"):
        ldap_realm.allow_protocol_transition("nobody/localhost")


def alive(pid: int) -> bool:
    fields = stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def live_children() -> set[int]:
    me = os.getpid()
    return {
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and (fields := stat(entry)) and int(fields[1]) == me
        if alive(int(entry))
    }


def test_stop_ends_slapd_and_the_kdc_and_is_idempotent() -> None:
    before = live_children()
    realm = start_ldap_realm(get_creds=False)
    try:
        slapd = realm.slapd_pid
        assert slapd is not None and alive(slapd)
        started = live_children() - before
        assert slapd in started and len(started) == 2  # slapd and krb5kdc
        directories = [realm.directory, realm.k5.tmpdir]
    finally:
        realm.stop()
    assert not alive(slapd)
    assert not live_children() - before
    assert not any(os.path.exists(d) for d in directories)
    assert realm.slapd_pid is None
    realm.stop()


def test_a_failed_setup_stops_what_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> str:
        path = mkdtemp(*args, **kwargs)
        made.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    before = live_children()
    # slapd starts, then the realm's database points at a server that is not there.
    nowhere = {"dbmodules": {"ldap": {"ldap_servers": "ldapi://%2Fnonexistent%2Fsocket"}}}
    with pytest.raises(RuntimeError, match="kdb5_ldap_util create failed"):
        start_ldap_realm(kdc_conf=nowhere)
    assert len(made) == 2  # slapd's and k5test's
    assert not any(os.path.exists(d) for d in made)
    assert not live_children() - before
