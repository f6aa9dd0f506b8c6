"""SambaRealm: a real Samba Active Directory DC as a test realm (issue 16).

One DC for the session (conftest's ``samba``), its environment in os.environ for this
module only. Real MIT clients (kinit, gssapi), a real acceptor in this process, Samba's own
PAC decoder as the oracle for what the tickets say, ldapsearch with SASL GSSAPI, and the
pytest plugin's ``samba_realm`` in a pytest of its own next to the session's DC.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import gssapi
import krb5
import pytest

from tests.conftest import require_samba
from tests.test_pac import assert_agrees_with_samba
from tests.test_plugin import CONFTEST, _pytest
from tornado_kerb.pac import LOGON_INFO, UPN_DNS_INFO, LogonInfo, UpnDnsInfo
from tornado_kerb.testing import realm_environment
from tornado_kerb.testing import samba as samba_module
from tornado_kerb.testing.samba import SambaRealm

require_samba()

PRINCIPAL = gssapi.NameType.kerberos_principal
HOSTBASED = gssapi.NameType.hostbased_service
AES256, AES128, RC4 = 18, 17, 23
# An address of no DC: the failed set-up's own.
SPARE_IP = "127.0.0.77"


@pytest.fixture(scope="module", autouse=True)
def _ad_environment(samba: SambaRealm) -> Iterator[None]:
    # The session's MIT realm owns os.environ otherwise: put it back after this module.
    with realm_environment(samba.env):
        yield


def accept(keytab: str, header: str) -> gssapi.SecurityContext:
    """Accept a ``Negotiate`` header with ``keytab``, in this process."""
    creds = gssapi.Credentials(usage="accept", store={"keytab": keytab})
    ctx = gssapi.SecurityContext(creds=creds, usage="accept")
    ctx.step(base64.b64decode(header.split()[1]))
    assert ctx.complete
    return ctx


def fresh_login(samba: SambaRealm, name: str, password: str) -> gssapi.SecurityContext:
    """A new TGT and a Negotiate token from it, accepted with the realm's HTTP/localhost
    keytab. AD copies the TGT's groups into service tickets; Samba 4.17 was seen to look
    them up again at each ticket, and a fresh TGT holds either way."""
    ccache = samba.kinit(name, password, os.path.join(samba.directory, uuid.uuid4().hex))
    return accept(samba.keytab, samba.negotiate_header(ccache=ccache))


def pac(ctx: gssapi.SecurityContext) -> tuple[LogonInfo, UpnDnsInfo]:
    """The accepted ticket's PAC as MIT's GSSAPI hands it out, decoded by ours and by Samba's
    decoder, which must agree."""
    name = ctx.initiator_name
    attrs = gssapi.raw.inquire_name(name, mech_name=True, attrs=True).attrs
    assert b"urn:mspac:logon-info" in attrs
    logon_info = gssapi.raw.get_name_attribute(name, b"urn:mspac:logon-info")
    assert logon_info.authenticated
    assert logon_info.values and logon_info.values[0]
    whole = gssapi.raw.get_name_attribute(name, b"urn:mspac:")
    assert whole.authenticated
    decoded = assert_agrees_with_samba(whole.values[0])
    logon, upn = decoded[LOGON_INFO], decoded[UPN_DNS_INFO]
    assert isinstance(logon, LogonInfo) and isinstance(upn, UpnDnsInfo)
    return logon, upn


def keytab_entries(path: str) -> set[tuple[str, int]]:
    ctx = krb5.init_context()
    return {
        (entry.principal.name.decode(), entry.key.enctype)
        for entry in krb5.kt_resolve(ctx, f"FILE:{path}".encode())
    }


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                ip = socket.inet_ntoa(raw[::-1]) if len(raw) == 4 else raw.hex()
                found.add((ip, int(port, 16)))
    return found


def processes_in(directory: str) -> list[int]:
    """Processes working in ``directory`` or below (a DC runs in its own; samba overwrites
    its command line with "samba: root process", so that cannot tell)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd").removesuffix(" (deleted)")
            except OSError:  # gone, or a kernel thread
                continue
            if cwd == directory or cwd.startswith(directory.rstrip("/") + "/"):
                pids.append(int(entry))
    return pids


def test_the_realm_is_described_as_it_is(samba: SambaRealm) -> None:
    assert (samba.realm, samba.dns_domain, samba.base_dn) == (
        "SAMBA.TEST",
        "samba.test",
        "DC=samba,DC=test",
    )
    assert samba.domain == "ADTEST" != samba.realm.split(".")[0]
    assert re.fullmatch(r"S-1-5-21-\d+-\d+-\d+", samba.domain_sid)
    assert samba.sid_of("user").startswith(samba.domain_sid + "-")
    assert samba.sid_of("DC1$").startswith(samba.domain_sid + "-")
    assert samba.dc_hostname == "dc1.samba.test"
    assert samba.ldap_url == f"ldap://{samba.host_ip}"
    assert samba.user == "user@SAMBA.TEST"
    with pytest.raises(KeyError):
        samba.sid_of("nobody-here")


def test_the_dc_listens_on_its_own_address_only(samba: SambaRealm) -> None:
    assert samba.samba_pid is not None
    ports = listening(samba.samba_pid)
    assert {(samba.host_ip, 88), (samba.host_ip, 389)} <= ports
    assert {ip for ip, _ in ports} == {samba.host_ip}
    assert samba.host_ip != "127.0.0.1"


def test_the_default_user_holds_a_forwardable_ticket(samba: SambaRealm) -> None:
    assert os.environ["KRB5CCNAME"] == samba.ccache
    out = subprocess.run(["klist", "-f"], capture_output=True, text=True, check=True).stdout
    assert f"Default principal: {samba.user}" in out
    flags = re.search(r"krbtgt/SAMBA\.TEST@SAMBA\.TEST\n.*Flags: (\w+)", out)
    assert flags is not None and "F" in flags.group(1)


def test_negotiate_is_accepted_and_the_pac_lists_nested_groups(samba: SambaRealm) -> None:
    bob = samba.add_user("rtbob")
    staff = samba.add_group("rtstaff")
    admins = samba.add_group("rtadmins")
    samba.add_members("rtstaff", "rtbob")
    samba.add_members("rtadmins", "rtstaff")  # bob is in rtadmins through rtstaff

    ctx = fresh_login(samba, "rtbob", bob.password)
    assert str(ctx.initiator_name) == "rtbob@SAMBA.TEST" == bob.principal
    info, _ = pac(ctx)
    assert info.account_name == "rtbob"
    # The NetBIOS name comes from the PAC: the realm's first label would be "SAMBA".
    assert info.logon_domain == samba.domain
    assert info.domain_sid == samba.domain_sid
    assert info.user_sid == samba.sid_of("rtbob")
    domain_users = f"{samba.domain_sid}-513"
    assert info.primary_group == domain_users
    in_domain = {sid for sid in info.groups if sid.startswith(samba.domain_sid + "-")}
    assert in_domain == {domain_users, staff, admins}
    assert staff == samba.sid_of("rtstaff") != admins

    # Out of rtstaff: a new ticket has neither group (rtadmins came only through it).
    samba.remove_members("rtstaff", "rtbob")
    info, _ = pac(fresh_login(samba, "rtbob", bob.password))
    assert {sid for sid in info.groups if sid.startswith(samba.domain_sid)} == {domain_users}


def test_the_http_keytab_is_aes_and_holds_the_account_name(samba: SambaRealm) -> None:
    entries = keytab_entries(samba.keytab)
    http = {enctype for name, enctype in entries if name == "HTTP/localhost@SAMBA.TEST"}
    assert http == {AES256, AES128}
    account = {enctype for name, enctype in entries if name == "httpsvc@SAMBA.TEST"}
    assert AES256 in account
    assert samba.env["KRB5_KTNAME"] == samba.keytab

    # The ticket the KDC issues for HTTP/localhost is aes256 too.
    samba.negotiate_header()
    out = subprocess.run(["klist", "-e"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"HTTP/localhost@SAMBA\.TEST\n.*Etype \(skey, tkt\): \S+, aes256", out)


def test_the_service_gets_its_tgt_as_the_account_not_as_its_spn(samba: SambaRealm) -> None:
    def tgt(principal: str) -> gssapi.Credentials:
        creds = gssapi.Credentials(
            name=gssapi.Name(principal, PRINCIPAL),
            usage="initiate",
            store={"client_keytab": samba.keytab, "ccache": f"MEMORY:{uuid.uuid4().hex}"},
        )
        assert creds.lifetime > 0
        return creds

    assert str(tgt(f"{samba.service_account}@SAMBA.TEST").name) == "httpsvc@SAMBA.TEST"
    with pytest.raises(gssapi.exceptions.GSSError, match="not found in Kerberos database"):
        tgt("HTTP/localhost@SAMBA.TEST")


def test_an_rc4_service_gets_an_rc4_only_keytab_that_works(samba: SambaRealm) -> None:
    keytab = samba.add_service("rtlegacy", ["HTTP/legacy.samba.test"], aes=False)
    entries = keytab_entries(keytab)
    assert {name for name, _ in entries} == {
        "HTTP/legacy.samba.test@SAMBA.TEST",
        "rtlegacy@SAMBA.TEST",
    }
    assert {enctype for _, enctype in entries} == {RC4}
    # The KDC encrypts its tickets in RC4 for it, and that keytab accepts them.
    ctx = accept(keytab, samba.negotiate_header("HTTP@legacy.samba.test"))
    assert str(ctx.initiator_name) == samba.user

    modern = keytab_entries(samba.add_service("rtmodern", ["HTTP/modern.samba.test"]))
    spn = {enctype for name, enctype in modern if name.startswith("HTTP/")}
    assert spn == {AES256, AES128}


def test_enterprise_login_by_a_upn_of_another_suffix(samba: SambaRealm) -> None:
    dana = samba.add_user("rtdana", "plain", upn="dana.smith@corp.example")
    assert dana.password == "plain"  # the relaxed policy takes a simple password
    ccache = samba.kinit("dana.smith@corp.example", "plain", enterprise=True)
    out = subprocess.run(["klist", "-c", ccache], capture_output=True, text=True, check=True).stdout
    assert "Default principal: rtdana@SAMBA.TEST" in out  # canonicalised by the KDC
    _, upn = pac(accept(samba.keytab, samba.negotiate_header(ccache=ccache)))
    assert upn.upn == "dana.smith@corp.example"
    with pytest.raises(RuntimeError, match="kinit failed"):
        samba.kinit("dana.smith@corp.example", "wrong", enterprise=True)


def test_constrained_delegation_and_protocol_transition(samba: SambaRealm) -> None:
    web = samba.add_service("rtweb", ["HTTP/rtweb.samba.test"])
    db = samba.add_service("rtdb", ["postgres/rtdb.samba.test"])
    other = samba.add_service("rtother", ["postgres/rtother.samba.test"])
    samba.allow_delegation("rtweb", "postgres/rtdb.samba.test", any_protocol=True)
    erin = samba.add_user("rterin")

    web_creds = gssapi.Credentials(
        name=gssapi.Name("rtweb@SAMBA.TEST", PRINCIPAL),
        usage="initiate",
        store={"client_keytab": web, "ccache": f"MEMORY:{uuid.uuid4().hex}"},
    )
    as_erin = web_creds.impersonate(gssapi.Name(erin.principal, PRINCIPAL), usage="initiate")

    def token_to(target: str) -> bytes:
        ctx = gssapi.SecurityContext(
            name=gssapi.Name(target, HOSTBASED), creds=as_erin, usage="initiate"
        )
        token: bytes = ctx.step()
        return token

    acceptor = gssapi.SecurityContext(
        creds=gssapi.Credentials(usage="accept", store={"keytab": db}), usage="accept"
    )
    acceptor.step(token_to("postgres@rtdb.samba.test"))
    assert str(acceptor.initiator_name) == erin.principal
    # Not in msDS-AllowedToDelegateTo: the KDC refuses.
    with pytest.raises(gssapi.exceptions.GSSError):
        token_to("postgres@rtother.samba.test")
    assert os.path.isfile(other)


def test_ldap_with_sasl_gssapi_as_the_service(samba: SambaRealm) -> None:
    ccache = os.path.join(samba.directory, "ccache.ldap-client")
    principal = f"{samba.service_account}@{samba.realm}"
    subprocess.run(["kinit", "-k", "-t", samba.keytab, "-c", ccache, principal], check=True)
    env = {**os.environ, "KRB5CCNAME": ccache, "LDAPNOINIT": "1"}
    args = ["-N", "-Y", "GSSAPI", "-H", samba.ldap_url, "-b", samba.base_dn]
    result = subprocess.run(
        ["ldapsearch", *args, "(sAMAccountName=user)", "objectSid"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"SASL username: {principal}" in result.stderr
    assert f"dn: CN=user,CN=Users,{samba.base_dn}" in result.stdout
    klist = subprocess.run(
        ["klist", "-c", ccache], capture_output=True, text=True, check=True
    ).stdout
    # No canonicalisation: the ticket is for the SPN added to DC1$, named by the address.
    assert f"Ticket server: {samba.ldap_spn}@SAMBA.TEST" in klist


@pytest.fixture
def short_tmp() -> Iterator[pathlib.Path]:
    """A parent directory short enough for samba's unix sockets (pytest's tmp_path is not)."""
    with tempfile.TemporaryDirectory(prefix="sr-") as path:
        yield pathlib.Path(path)


def test_a_failed_set_up_leaves_no_process_and_no_files(short_tmp: pathlib.Path) -> None:
    # A real fault: LDAP's port on the DC's address is taken. samba only logs that and
    # keeps running, so the set-up must notice, stop it and clean up.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((SPARE_IP, 389))
        squatter.listen()
        with pytest.raises(RuntimeError, match=f"could not bind on {SPARE_IP}"):
            SambaRealm(host_ip=SPARE_IP, parent=str(short_tmp))
    assert list(short_tmp.iterdir()) == []
    assert processes_in(str(short_tmp)) == []


def test_an_address_taken_after_the_probe_moves_the_dc_to_the_next(
    short_tmp: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two runs starting at once can both find an address free, then one binds it first.
    # The probe is made to miss the squatter (the race); the bind that fails is real.
    taken, free = SPARE_IP, "127.0.0.78"
    monkeypatch.setattr(samba_module, "_CANDIDATE_IPS", (taken, free))
    probe = samba_module._ports_free
    monkeypatch.setattr(samba_module, "_ports_free", lambda ip: ip == taken or probe(ip))
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((taken, 88))
        squatter.listen()
        with SambaRealm(parent=str(short_tmp)) as moved, realm_environment(moved.env):
            assert moved.host_ip == free
            assert moved.ldap_url == f"ldap://{free}"
            assert moved.samba_pid is not None
            assert processes_in(moved.directory) == [moved.samba_pid]
            assert str(accept(moved.keytab, moved.negotiate_header()).initiator_name) == (
                moved.user
            )
    assert list(short_tmp.iterdir()) == []


def test_a_parent_too_long_for_unix_sockets_is_refused(tmp_path: pathlib.Path) -> None:
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    with pytest.raises(ValueError, match="too long for the unix sockets"):
        SambaRealm(parent=str(deep))
    assert list(deep.iterdir()) == []


# The plugin's fixture, in a pytest of its own: a second DC while the session's runs.
PLUGIN_TESTS = """
import json
import os

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
    def _realm(self, samba_realm):
        self.realm = samba_realm

    def get_app(self):
        kerberos = {"keytab": self.realm.keytab, "hostname": "localhost"}
        return tornado.web.Application([("/", Whoami)], kerberos=kerberos)

    def test_whoami(self):
        bob = self.realm.add_user("bob")
        header = self.realm.negotiate_header(ccache=bob.ccache)
        response = self.fetch("/", headers={"Authorization": header})
        assert response.code == 200
        assert response.body.decode() == "bob@SAMBA.TEST"


def test_a_dc_of_its_own_that_stops(samba_realm):
    assert os.environ["KRB5_CONFIG"] == samba_realm.krb5_conf
    assert samba_realm.host_ip != os.environ["PARENT_DC_IP"]
    pid, directory = samba_realm.samba_pid, samba_realm.directory
    with open("dc.json", "w") as out:
        json.dump({"pid": pid, "directory": directory}, out)
    samba_realm.stop()
    samba_realm.stop()  # again: nothing left to do (and the fixture stops it a third time)
    assert samba_realm.samba_pid is None
    assert not os.path.exists(directory)
    assert not os.path.exists(f"/proc/{pid}")
"""


def test_the_plugin_fixture_next_to_another_dc(
    samba: SambaRealm, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "test_ad.py").write_text(PLUGIN_TESTS)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    monkeypatch.setenv("PARENT_DC_IP", samba.host_ip)
    result = _pytest(tmp_path, "test_ad.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert json.loads((tmp_path / "session.json").read_text())["environ_restored"]
    dc = json.loads((tmp_path / "dc.json").read_text())
    assert not os.path.exists(dc["directory"])
    assert processes_in(dc["directory"]) == []
    # The session's DC is untouched.
    assert samba.samba_pid is not None
    assert (samba.host_ip, 88) in listening(samba.samba_pid)
