"""Active Directory end to end, on a real Samba domain controller (issue 16).

Group access from the ticket's PAC (by SID and by name, nested groups, a member removed),
for Negotiate, Basic, session cookies and Basic-cache hits; AD's user-name forms in Basic;
a user in 300 groups. The DC is the suite's session fixture ``samba``; its environment is
in ``os.environ`` for this module only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import tornado.web

from tests.clients import basic_header
from tests.conftest import TLS, ServeFn, Server, require_samba
from tornado_kerb import ConfigurationError, KerberosAuthMixin, KerberosGuard, authenticated
from tornado_kerb.testing import RealmUser, realm_environment

require_samba()

JSON = {"Accept": "application/json"}


@dataclasses.dataclass
class Domain:
    samba: Any  # tornado_kerb.testing.samba.SambaRealm
    #: In ``web``: alice directly, carol through the nested group ``team``; bob in none.
    alice: RealmUser
    bob: RealmUser
    carol: RealmUser
    web: str  # SIDs
    team: str

    def settings(self, **extra: Any) -> dict[str, Any]:
        s = self.samba
        return {
            "keytab": s.keytab,
            "hostname": "localhost",
            "realm": s.realm,
            "ldap_url": s.ldap_url,
            **extra,
        }

    def negotiate(self, user: RealmUser) -> str:
        return str(self.samba.negotiate_header(ccache=user.ccache))


@pytest.fixture(scope="module")
def ad(samba: Any) -> Iterator[Domain]:
    with realm_environment(samba.env):
        web = samba.add_group("web-users")
        team = samba.add_group("team")
        alice = samba.add_user("alice")
        bob = samba.add_user("bob")
        carol = samba.add_user("carol")
        samba.add_members("web-users", "alice", "team")
        samba.add_members("team", "carol")
        # Tickets issued before the memberships carry no such groups: fresh ones.
        alice, carol = samba.add_user("alice"), samba.add_user("carol")
        yield Domain(samba, alice, bob, carol, web, team)


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        user = self.current_user
        self.write(
            {
                "principal": user.principal,
                "groups": sorted(user.groups),
                "in_web": user.in_group(self.get_query_argument("group", user.principal)),
            }
            if self.get_query_argument("group", None)
            else {"principal": user.principal, "groups": sorted(user.groups)}
        )


def start(serve: ServeFn, ad: Domain, **extra: Any) -> Server:
    return serve([("/", Whoami)], ad.settings(**extra), https=True, cookie_secret="c" * 32)


def get(server: Server, tls: TLS, path: str = "/", **headers: str) -> requests.Response:
    return requests.get(server.url(path), headers={**JSON, **headers}, verify=tls.ca, timeout=30)


# -- groups from the PAC ----------------------------------------------------------------


def test_groups_are_the_pac_s_sids(serve: ServeFn, ad: Domain, tls: TLS) -> None:
    server = start(serve, ad)
    groups = get(server, tls, Authorization=ad.negotiate(ad.carol)).json()["groups"]
    # Nested membership is in the PAC: the KDC expands it.
    assert ad.web in groups and ad.team in groups
    assert f"{ad.samba.domain_sid}-513" in groups  # Domain Users, the primary group
    bob = get(server, tls, Authorization=ad.negotiate(ad.bob)).json()["groups"]
    assert ad.web not in bob and ad.team not in bob


@pytest.mark.parametrize("group", ["sid", "ADTEST\\web-users", "web-users@samba.test", "Web-Users"])
def test_members_in_and_others_403_by_sid_or_by_name(
    serve: ServeFn, ad: Domain, tls: TLS, group: str
) -> None:
    server = start(serve, ad, allowed_groups=[ad.web if group == "sid" else group])
    for member in (ad.alice, ad.carol):
        response = get(server, tls, Authorization=ad.negotiate(member))
        assert response.status_code == 200, response.text
    refused = get(server, tls, Authorization=ad.negotiate(ad.bob))
    assert refused.status_code == 403
    assert refused.json()["reason"] == "not-in-group"


def test_in_group_by_name_or_sid_for_handlers(serve: ServeFn, ad: Domain, tls: TLS) -> None:
    server = start(serve, ad, group_names=["ADTEST\\team"])
    auth = {"Authorization": ad.negotiate(ad.carol)}
    assert get(server, tls, "/?group=ADTEST%5Cteam", **auth).json()["in_web"] is True
    auth = {"Authorization": ad.negotiate(ad.alice)}
    assert get(server, tls, "/?group=adtest%5CTEAM", **auth).json()["in_web"] is False
    auth = {"Authorization": ad.negotiate(ad.alice)}
    assert get(server, tls, f"/?group={ad.web}", **auth).json()["in_web"] is True


def test_an_unknown_group_name_stops_start_up(ad: Domain) -> None:
    with pytest.raises(ConfigurationError, match="no-such-group"):
        KerberosGuard(ad.settings(allowed_groups=["ADTEST\\no-such-group"]))


def test_basic_carries_the_groups_of_the_password_s_ticket(
    serve: ServeFn, ad: Domain, tls: TLS
) -> None:
    server = start(serve, ad, allowed_groups=[ad.web], basic_cache=True)
    header = basic_header("carol", ad.carol.password)
    first = get(server, tls, Authorization=header)
    assert first.status_code == 200, first.text
    assert ad.team in first.json()["groups"]
    again = get(server, tls, Authorization=header)  # a cache hit keeps them
    assert again.status_code == 200 and again.json()["groups"] == first.json()["groups"]
    refused = get(server, tls, Authorization=basic_header("bob", ad.bob.password))
    assert refused.status_code == 403
    assert refused.json()["reason"] == "not-in-group"


def test_a_session_keeps_the_groups_of_its_login(serve: ServeFn, ad: Domain, tls: TLS) -> None:
    server = start(serve, ad, allowed_groups=["web-users"], session=True)
    login = get(server, tls, Authorization=ad.negotiate(ad.carol))
    assert login.status_code == 200
    cookie = login.headers["Set-Cookie"].split(";", 1)[0]
    again = get(server, tls, Cookie=cookie)
    assert again.status_code == 200, again.text
    assert again.json()["groups"] == login.json()["groups"]
    # Where the settings allow another group, the cookie is no login: a fresh one decides.
    other = start(serve, ad, allowed_groups=[f"{ad.samba.domain_sid}-512"], session=True)
    assert get(other, tls, Cookie=cookie).status_code == 401


def test_a_remembered_session_is_checked_against_the_groups_as_they_are_now(
    serve: ServeFn, ad: Domain, tls: TLS
) -> None:
    server = start(serve, ad, allowed_groups=["ADTEST\\web-users"], session=True)
    login = get(server, tls, Authorization=ad.negotiate(ad.alice))
    assert login.status_code == 200
    cookie = login.headers["Set-Cookie"].split(";", 1)[0]
    assert get(server, tls, Cookie=cookie).status_code == 200  # verified and remembered
    # What the background refresh does when the group was deleted and made anew.
    guard = KerberosGuard.for_application(server.app)
    guard.policy.set_names({"ADTEST\\web-users": ad.team})
    assert get(server, tls, Cookie=cookie).status_code == 401


def test_a_member_removed_gets_403_at_the_next_fresh_login(
    serve: ServeFn, ad: Domain, tls: TLS
) -> None:
    samba = ad.samba
    dave = samba.add_user("dave")
    samba.add_members("web-users", "dave")
    dave = samba.add_user("dave")  # a ticket with the membership
    server = start(serve, ad, allowed_groups=[ad.web])
    assert get(server, tls, Authorization=ad.negotiate(dave)).status_code == 200
    samba.remove_members("web-users", "dave")
    dave = samba.add_user("dave")  # the next login: a new ticket, a new PAC
    refused = get(server, tls, Authorization=ad.negotiate(dave))
    assert refused.status_code == 403
    assert refused.json()["reason"] == "not-in-group"


# -- AD's user-name forms in Basic ---------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    ["alice", "Alice", "ADTEST\\alice", "adtest\\ALICE", "alice@samba.test", "alice@SAMBA.TEST"],
)
def test_basic_name_forms_end_as_the_canonical_principal(
    serve: ServeFn, ad: Domain, tls: TLS, typed: str
) -> None:
    server = start(serve, ad)  # the NetBIOS domain is learned from the directory
    response = get(server, tls, Authorization=basic_header(typed, ad.alice.password))
    assert response.status_code == 200, response.text
    assert response.json()["principal"] == f"alice@{ad.samba.realm}"


def test_a_case_variant_ends_as_the_account_even_without_the_ad_settings(
    serve: ServeFn, ad: Domain, tls: TLS
) -> None:
    server = start(serve, ad, ldap_url=None, allowed_principals=[ad.alice.principal])
    response = get(server, tls, Authorization=basic_header("ALICE", ad.alice.password))
    assert response.status_code == 200, response.text
    assert response.json()["principal"] == ad.alice.principal


@pytest.mark.parametrize("asked", ["ALICE", "aLiCe"])
def test_with_ad_settings_a_ticket_asked_in_another_case_is_the_account(
    serve: ServeFn, ad: Domain, tls: TLS, asked: str
) -> None:
    # AD leaves the client name as asked: a deny rule for alice@ must not miss ALICE@.
    ccache = ad.samba.kinit(asked, ad.alice.password)
    variant = RealmUser(f"{asked}@{ad.samba.realm}", ad.alice.password, ccache)
    server = start(serve, ad, allowed_principals=[ad.alice.principal])
    response = get(server, tls, Authorization=ad.negotiate(variant))
    assert response.status_code == 200, response.text
    assert response.json()["principal"] == ad.alice.principal


def test_a_upn_suffix_is_an_enterprise_name_the_kdc_maps(
    serve: ServeFn, ad: Domain, tls: TLS
) -> None:
    erin = ad.samba.add_user("erin", upn="erin.smith@corp.example")
    server = start(serve, ad, upn_suffixes=["corp.example"])
    response = get(
        server, tls, Authorization=basic_header("erin.smith@corp.example", erin.password)
    )
    assert response.status_code == 200, response.text
    assert response.json()["principal"] == f"erin@{ad.samba.realm}"
    # A suffix not listed never reaches the KDC.
    plain = start(serve, ad)
    refused = get(plain, tls, Authorization=basic_header("erin.smith@corp.example", erin.password))
    assert refused.status_code == 401


# -- constrained delegation on the DC ------------------------------------------------------


def _backend_sees(keytab: str) -> str:
    """In run_as_user's thread: log in to HTTP/backend as whoever this thread acts as, and
    say whom the backend's keytab accepted."""
    import gssapi
    import gssapi.raw

    name = gssapi.Name("HTTP@backend", gssapi.NameType.hostbased_service)
    token = gssapi.SecurityContext(name=name, usage="initiate").step()
    assert token is not None
    creds = gssapi.Credentials(usage="accept", store={"keytab": keytab})
    accepted = gssapi.raw.accept_sec_context(token, acceptor_creds=creds)
    return str(gssapi.raw.display_name(accepted.initiator_name).name.decode())


class Backend(KerberosAuthMixin, tornado.web.RequestHandler):
    def initialize(self, keytab: str) -> None:
        self.keytab = keytab

    @authenticated
    async def get(self) -> None:
        user = self.current_user
        seen = await self.get_kerberos_guard().run_as_user(
            user, _backend_sees, self.keytab, delegate_to="HTTP@backend"
        )
        self.write({"backend_sees": seen, "kind": user.credential_kind})


@pytest.fixture(scope="module")
def backend(ad: Domain) -> str:
    """A second service, HTTP/backend, that our account may delegate to (both ways)."""
    samba = ad.samba
    keytab = str(samba.add_service("backend", ["HTTP/backend"]))
    samba.allow_delegation(samba.service_account, "HTTP/backend", any_protocol=True)
    return keytab


def test_run_as_user_reaches_a_service_as_the_ad_user(
    serve: ServeFn, ad: Domain, tls: TLS, backend: str
) -> None:
    guard = KerberosGuard(ad.settings(s4u2proxy=True, session=True))
    try:
        # Our TGT is the account's (httpsvc@REALM, in the keytab): AD gives none to an SPN.
        assert guard.delegation_ready(30), guard.delegation_problem
        server = serve(
            [("/", Backend, {"keytab": backend})], guard, https=True, cookie_secret="c" * 32
        )
        login = get(server, tls, Authorization=ad.negotiate(ad.alice))  # delegated nothing
        assert login.status_code == 200, login.text
        assert login.json() == {"backend_sees": ad.alice.principal, "kind": "constrained"}
        # A session user brought no ticket: protocol transition (S4U2Self, then S4U2Proxy).
        cookie = login.headers["Set-Cookie"].split(";", 1)[0]
        again = get(server, tls, Cookie=cookie)
        assert again.status_code == 200, again.text
        assert again.json()["backend_sees"] == ad.alice.principal
    finally:
        guard.close()


# -- a user in 300 groups ----------------------------------------------------------------


def test_a_user_in_300_groups_logs_in_and_keeps_them_in_a_cookie(
    serve: ServeFn, ad: Domain, tls: TLS
) -> None:
    samba = ad.samba
    samba.add_user("many")
    sids = samba.add_groups([f"g{i:03}" for i in range(300)], members=["many"])
    many = samba.add_user("many")  # a ticket with them all
    server = start(serve, ad, allowed_groups=[sids["g299"]], session=True)
    header = ad.negotiate(many)
    # The PAC makes the header large: Tornado's default max_header_size (64 KB) takes it,
    # Apache's and nginx's defaults (8 KB) would not from about 1000 groups on.
    assert len(header) > 4000
    login = get(server, tls, Authorization=header)
    assert login.status_code == 200, login.text
    groups = set(login.json()["groups"])
    assert set(sids.values()) <= groups
    set_cookie = login.headers["Set-Cookie"]
    assert len(set_cookie) < 4096, "browsers drop cookies over 4 KB"
    again = get(server, tls, Cookie=set_cookie.split(";", 1)[0])
    assert again.status_code == 200, again.text
    assert set(again.json()["groups"]) == groups


# -- doctor on AD keytabs -------------------------------------------------------------------


def test_doctor_on_an_ad_keytab(ad: Domain, tmp_path: Any) -> None:
    from tornado_kerb import doctor

    samba = ad.samba
    checks = {c.name: c for c in doctor.run(samba.keytab, hostname="localhost")}
    assert checks["end-to-end"].status == "OK", checks["end-to-end"]
    assert checks["account"].status == "OK"
    assert f"{samba.service_account}@{samba.realm}" in checks["account"].detail
    # The SPN alone: AD gives no TGT to it, and doctor says so (it saw the PAC's domain).
    spn_only = str(tmp_path / "spn.keytab")
    samba.export_keytab(spn_only, "HTTP/localhost")
    account = {c.name: c for c in doctor.run(spn_only, hostname="localhost")}["account"]
    assert account.status == "WARN"
    assert f"Active Directory (domain {samba.domain})" in account.detail
    assert "exportkeytab --principal=SVC" in account.advice


def test_doctor_names_an_rc4_only_keytab_with_the_fixes(ad: Domain) -> None:
    from tornado_kerb import doctor

    legacy = ad.samba.add_service("legacy", ["HTTP/legacy"], aes=False)
    enctypes = {c.name: c for c in doctor.run(legacy, hostname="legacy")}["enctypes"]
    assert enctypes.status == "WARN"
    assert "only weak keys (arcfour-hmac)" in enctypes.detail
    assert "ktpass" in enctypes.detail
    assert "msDS-SupportedEncryptionTypes" in enctypes.advice
    assert "/crypto AES256-SHA1" in enctypes.advice and "samba-tool" in enctypes.advice


# -- our PAC decoder against Samba's, on the DC's own PACs ---------------------------------


def test_our_pac_decoder_reads_the_dc_s_pacs_as_samba_does(ad: Domain) -> None:
    import gssapi
    import gssapi.raw

    from tests.test_pac import assert_agrees_with_samba
    from tornado_kerb.pac import LOGON_INFO

    creds = gssapi.Credentials(usage="accept", store={"keytab": ad.samba.keytab})
    for user in (ad.alice, ad.carol, ad.bob):
        ctx = gssapi.SecurityContext(
            name=gssapi.Name("HTTP@localhost", gssapi.NameType.hostbased_service),
            usage="initiate",
            creds=gssapi.Credentials(usage="initiate", store={"ccache": user.ccache}),
        )
        accepted = gssapi.raw.accept_sec_context(ctx.step(), acceptor_creds=creds)
        pac = gssapi.raw.get_name_attribute(accepted.initiator_name, b"urn:mspac:")
        assert pac.authenticated
        info = assert_agrees_with_samba(pac.values[0])[LOGON_INFO]
        assert info.account_name == user.principal.partition("@")[0]  # type: ignore[attr-defined]
        assert info.logon_domain == ad.samba.domain  # type: ignore[attr-defined]
    assert ad.web not in info.groups  # type: ignore[attr-defined]  # bob: in neither


def test_another_account_s_name_in_a_merged_keytab_is_not_taken_for_ours(
    ad: Domain, tmp_path: Any
) -> None:
    from tornado_kerb import doctor
    from tornado_kerb.keytab import find_client_principal

    samba = ad.samba
    samba.add_service("othersvc", ["HTTP/third"])
    merged = str(tmp_path / "merged.keytab")
    samba.export_keytab(merged, "HTTP/localhost")  # ours (httpsvc's keys)
    samba.export_keytab(merged, "othersvc")  # another account's name and keys
    spn = f"HTTP/localhost@{samba.realm}"
    with pytest.raises(ConfigurationError, match="not its account"):
        find_client_principal(merged, samba.realm, spn)
    assert find_client_principal(samba.keytab, samba.realm, spn) == (
        f"{samba.service_account}@{samba.realm}"
    )
    account = {c.name: c for c in doctor.run(merged, hostname="localhost")}["account"]
    assert account.status == "WARN" and "othersvc" in account.detail
    # Delegation does not switch to the other account's credentials: it stays off.
    guard = KerberosGuard(
        {"keytab": merged, "hostname": "localhost", "realm": samba.realm, "s4u2proxy": True}
    )
    try:
        assert not guard.delegation_ready(30)
        assert "not its account" in guard.delegation_problem
    finally:
        guard.close()


class _Relay:
    """A TCP relay on 127.0.0.1 to the DC's LDAP port, refusing connections until
    :meth:`open` (a domain controller down, then back). Its threads run in this process,
    the server's: a lookup that held the GIL while it waited for the DC (python-ldap's SASL
    bind does) would starve them, and time out."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket
        import threading

        self.target = target
        self.port = _free_port()
        self._open = threading.Event()
        self._socket = socket
        self._threading = threading
        self._server: Any = None

    def open(self) -> None:
        sock = self._socket.create_server(("127.0.0.1", self.port))
        self._server = sock
        self._threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, server: Any) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = self._socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def _pump(src: Any, dst: Any) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(2)
            except OSError:
                pass


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_directory_down_at_the_first_request_is_tried_again(
    serve: ServeFn, ad: Domain, tls: TLS
) -> None:
    import subprocess
    import time

    samba = ad.samba
    relay = _Relay((samba.host_ip, 389))
    # The relay's address names the DC's LDAP service for Kerberos: give the DC that name.
    subprocess.run(
        ["samba-tool", "spn", "add", "ldap/127.0.0.1", "DC1$", "-s", samba._smb_conf],
        check=False,
        capture_output=True,
    )
    try:
        server = start(
            serve,
            ad,
            ldap_url=f"ldap://127.0.0.1:{relay.port}",
            allowed_groups=["ADTEST\\web-users"],
            retry_after=1,
            kdc_timeout=5,
        )
        auth = {"Authorization": ad.negotiate(ad.alice)}
        assert get(server, tls, **auth).status_code == 500  # nothing listens: fail closed
        relay.open()
        deadline = time.monotonic() + 15
        status = 500
        while status == 500 and time.monotonic() < deadline:
            status = get(server, tls, Authorization=ad.negotiate(ad.alice)).status_code
        assert status == 200, "the guard was not built again once the directory was back"
    finally:
        relay.close()
