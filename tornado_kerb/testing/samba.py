"""A throwaway Samba Active Directory domain controller, for tests.

An AD realm is not an MIT realm: its KDC (Samba's, Heimdal underneath) puts the user's
groups into a PAC, refuses service principal names as clients, exports RC4-only keytabs
unless told otherwise, and answers LDAP with SASL GSSAPI. :class:`SambaRealm` provisions a
domain into a temporary directory and runs ``samba`` in the foreground on a loopback
address of its own, with only its KDC and LDAP server::

    with start_samba_realm() as ad, realm_environment(ad.env):
        bob = ad.add_user("bob")                # a ticket for bob@SAMBA.TEST in bob.ccache
        admins = ad.add_group("webadmins")      # the group's SID
        ad.add_members("webadmins", "bob")
        header = ad.negotiate_header(ccache=bob.ccache)
        kerberos = {"keytab": ad.keytab, "hostname": "localhost"}
        ...                                     # bob's PAC lists `admins`

Needs Debian's ``samba-ad-dc samba-ad-provision ldb-tools krb5-user`` and root (the KDC
binds port 88): :func:`samba_available` says what is missing. Under pytest, take the
``samba_realm`` fixture (:mod:`tornado_kerb.testing.plugin`).

The DC binds only its own address (``127.0.0.2`` by default, or the next free one of a few
loopback addresses; ``host_ip=`` chooses), so DCs of several test runs can coexist; it
keeps its pid file, sockets and logs in its directory, not in ``/run/samba``. It runs with
``-i`` and stops by itself when the pipe on its standard input closes, so a test process that
dies leaves no DC behind; :meth:`SambaRealm.stop` stops it (SIGTERM to its process group,
SIGKILL after a bounded wait) and removes the directory, and so does a failed set-up.

The domain's password policy is relaxed (no complexity, no minimum length or age), so tests
may use simple passwords; accounts and groups go under ``CN=Users``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tornado_kerb.testing import RealmUser, realm_environment, spnego_header

if TYPE_CHECKING:
    import gssapi

__all__ = [
    "SambaRealm",
    "samba_available",
    "samba_realm_session",
    "start_samba_realm",
]

_PACKAGES = "samba-ad-dc samba-ad-provision ldb-tools krb5-user"
_PROGRAMS = ("samba", "samba-tool", "ldbsearch", "ldbadd", "ldbmodify", "kinit")
# samba-ad-provision ships the schema; samba-ad-dc only recommends it, so an install with
# --no-install-recommends provisions nothing ("Please install samba-ad-provision package").
_SCHEMA_DIR = "/usr/share/samba/setup/ad-schema"
# The system interpreter, where python3-samba lives (a venv does not see it).

# Loopback addresses tried in order when none is given. 127.0.0.1 is left to the machine's
# own servers; so are a few low ones, for DCs started by hand.
_CANDIDATE_IPS = ("127.0.0.2", *(f"127.0.0.{n}" for n in range(10, 40)))
# What the DC listens on with "server services = kdc ldap" (kpasswd is part of kdc).
_TCP_PORTS = (88, 389, 464, 3268)
_UDP_PORTS = (88, 464)
_READY_PORTS = (88, 389)
_SERVICES = "kdc ldap"

_READY_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0
_POLL_INTERVAL = 0.01
_LOG_TAIL = 4000
# samba's own words when a service cannot bind: it logs them and keeps running without it.
# samba's words when its address is taken, or matches no interface (a bare address in
# "interfaces" does not): it logs them, then exits or runs on without the service.
_BIND_FAILURE = re.compile(r"Failed to listen on [0-9.]+:|no network interfaces found")
# ... and when a service fails for any other reason.
_START_FAILURE = re.compile(r"task_server_terminate|Failed to listen on")
# Unix sockets (108 bytes with the NUL) live under the directory: ldapi is the deepest,
# "private/ldap_priv/ldapi".
_MAX_DIRECTORY = 80
# Auto-picked addresses tried when another DC takes one between the probe and the bind.
_BIND_ATTEMPTS = 3

# msDS-SupportedEncryptionTypes: AES128 (8) + AES256 (16).
_AES_ENCTYPES = 24
_RC4_HMAC = 23
_UF_NORMAL_ACCOUNT = 512
_HTTP_SPN = "HTTP/localhost"


def _program(name: str) -> str | None:
    # samba lives in /usr/sbin, which a non-root PATH often lacks.
    found = shutil.which(name)
    if found is None and os.access(f"/usr/sbin/{name}", os.X_OK):
        found = f"/usr/sbin/{name}"
    return found


def samba_available() -> str | None:
    """``None`` when everything :class:`SambaRealm` runs is installed and usable, else why
    not: one line naming what is missing and the Debian packages that provide it, ready for
    ``pytest.skip()``."""
    missing = [name for name in _PROGRAMS if _program(name) is None]
    if not os.path.isdir(_SCHEMA_DIR):
        missing.append(f"{_SCHEMA_DIR} (samba-ad-provision)")
    if missing:
        return f"missing {', '.join(missing)}; on Debian: apt-get install {_PACKAGES}"
    if os.geteuid() != 0:
        return "a Samba DC needs root (its KDC binds port 88)"
    return None


def start_samba_realm(**kwargs: Any) -> SambaRealm:
    """Provision and start a :class:`SambaRealm`; call ``.stop()`` when done (or use it as a
    context manager). Takes :class:`SambaRealm`'s arguments. Leaves ``os.environ`` alone."""
    return SambaRealm(**kwargs)


@contextlib.contextmanager
def samba_realm_session(**kwargs: Any) -> Iterator[SambaRealm]:
    """Start a :class:`SambaRealm` (same arguments) and put its :attr:`~SambaRealm.env` into
    ``os.environ`` until the block ends; then put ``os.environ`` back exactly as it was and
    stop the DC, whatever happened. What the ``samba_realm`` fixture does; override that
    in your ``conftest.py`` to configure it::

        @pytest.fixture(scope="session")
        def samba_realm():
            with samba_realm_session(domain="CORP") as realm:
                yield realm
    """
    with start_samba_realm(**kwargs) as realm, realm_environment(realm.env):
        yield realm


def _strong_password() -> str:
    # Provisioning enforces AD's complexity rules on the administrator's password even
    # though the domain's policy is relaxed afterwards: all four kinds of character.
    return f"Tk-{secrets.token_hex(12)}-Az9"


def _ports_free(ip: str) -> bool:
    """Whether the DC's ports can be bound on ``ip`` (a wildcard listener blocks them)."""
    kinds = [(socket.SOCK_STREAM, port) for port in _TCP_PORTS]
    kinds += [(socket.SOCK_DGRAM, port) for port in _UDP_PORTS]
    for kind, port in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            # samba sets SO_REUSEADDR too: a TIME_WAIT left by an earlier DC is no obstacle.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((ip, port))
            except OSError:
                return False
    return True


def _pick_ip(skip: Sequence[str] = ()) -> str:
    for ip in _CANDIDATE_IPS:
        if ip not in skip and _ports_free(ip):
            return ip
    raise RuntimeError(
        f"the ports of a DC ({', '.join(map(str, _TCP_PORTS))}) are taken on every loopback "
        f"address tried ({_CANDIDATE_IPS[0]}...{_CANDIDATE_IPS[-1]}): is a system KDC or "
        "samba listening on all addresses?"
    )


def _listening_inodes(ip: str, ports: Sequence[int]) -> dict[int, set[str]]:
    """Inodes of TCP sockets listening on ``ip`` at each of ``ports`` (Linux /proc)."""
    packed = socket.inet_aton(ip)[::-1].hex().upper()  # /proc/net/tcp: little-endian
    wanted = {f"{packed}:{port:04X}": port for port in ports}
    found: dict[int, set[str]] = {port: set() for port in ports}
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] == "0A" and fields[1] in wanted:  # 0A: LISTEN
                found[wanted[fields[1]]].add(fields[9])
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _ldif_value(attr: str, value: str) -> str:
    """One LDIF line; base64 when the value is not safe as it is (RFC 2849)."""
    if value and value.isascii() and value.isprintable() and value[0] not in " :<":
        if not value.endswith(" "):
            return f"{attr}: {value}"
    return f"{attr}:: {base64.b64encode(value.encode()).decode()}"


def _filter_value(value: str) -> str:
    """``value`` escaped for an LDAP search filter (RFC 4515)."""
    return "".join(f"\\{ord(ch):02x}" if ch in "*()\\\x00" else ch for ch in value)


def _unicode_pwd(password: str) -> str:
    # AD takes a password as unicodePwd: the quoted password in UTF-16LE.
    return base64.b64encode(f'"{password}"'.encode("utf-16-le")).decode()


class SambaRealm:
    """A Samba AD DC in a temporary directory, with a user and an HTTP service account.

    Keyword arguments:

    - ``realm``, ``domain``: the Kerberos realm (also the DNS domain, lower-cased) and the
      NetBIOS domain name, deliberately not the realm's first label.
    - ``host_ip``: the loopback address the DC binds; by default the first of
      ``127.0.0.2``, ``127.0.0.10``... whose ports are free.
    - ``host_name``: the DC's short name (``dc1`` → ``DC1$``, ``dc1.samba.test``).
    - ``user``: the account name of the default user, who gets a forwardable ticket in
      ``env["KRB5CCNAME"]``; ``service_account``: the account holding ``HTTP/localhost``.
    - ``options``: more ``smb.conf`` settings for the DC (``{"log level": "3"}``).
    - ``parent``: where the temporary directory goes (``tempfile``'s default when ``None``).
    - ``ready_timeout``: seconds to wait for the KDC and LDAP to listen.

    Raises :class:`RuntimeError` when a program is missing (the :func:`samba_available`
    reason) or fails (with its output); whatever was started by then is stopped and the
    directory removed first. Usable as a context manager, which stops it on exit.
    """

    #: The Kerberos realm, ``SAMBA.TEST``.
    realm: str
    #: The NetBIOS domain name (``ADTEST``): what AD calls the domain in ``DOMAIN\\user``
    #: and in the PAC's logon-info. Not derivable from the realm.
    domain: str
    #: The DNS domain, ``samba.test``.
    dns_domain: str
    #: The domain's base DN, ``DC=samba,DC=test``.
    base_dn: str
    #: The domain's SID, ``S-1-5-21-...``.
    domain_sid: str
    #: The loopback address the DC binds (KDC on port 88, LDAP on 389).
    host_ip: str
    #: The DC's DNS name, ``dc1.samba.test`` (nothing resolves it: no DNS server runs).
    dc_hostname: str
    #: An LDAP URL reaching the DC, ``ldap://127.0.0.2``. For SASL GSSAPI, turn off the
    #: client's host name canonicalisation (``ldapsearch -N``, ``SASL_NOCANON on``,
    #: ``LDAPSASL_NOCANON=on``): it then asks for :attr:`ldap_spn`, which the DC holds.
    ldap_url: str
    #: The host part of the DC's LDAP service name a client asks a ticket for
    #: (the address in :attr:`ldap_url`); GSSAPI's host-based form is ``ldap@<this>``.
    ldap_spn_host: str
    #: ``ldap/<ldap_spn_host>``: registered on the DC's account ``DC1$``.
    ldap_spn: str
    #: Path of the client ``krb5.conf`` for this realm (``KRB5_CONFIG`` in :attr:`env`).
    krb5_conf: str
    #: The realm's environment: ``KRB5_CONFIG``, ``KRB5CCNAME`` (the default user's
    #: ticket), ``KRB5_KTNAME`` (:attr:`keytab`), ``KRB5RCACHEDIR``..., each key k5test
    #: sets, so that :func:`~tornado_kerb.testing.realm_environment` overrides an MIT
    #: realm's entirely.
    env: dict[str, str]
    #: The account holding ``HTTP/localhost`` (``httpsvc``), with AES keys.
    service_account: str
    #: Path of a keytab with ``HTTP/localhost`` (aes256, aes128) and the account's own name
    #: ``httpsvc@SAMBA.TEST`` (AD refuses an SPN as a client: a service gets its own TGT
    #: as the account).
    keytab: str
    #: The default user's principal, ``user@SAMBA.TEST``.
    user: str
    #: That user's password.
    password: str
    #: That user's credentials cache (``KRB5CCNAME`` in :attr:`env`).
    ccache: str
    #: The DC's temporary directory: ``etc/smb.conf``, ``private/sam.ldb``, ``samba.log``...
    directory: str

    def __init__(
        self,
        *,
        realm: str = "SAMBA.TEST",
        domain: str = "ADTEST",
        host_ip: str | None = None,
        host_name: str = "dc1",
        user: str = "user",
        service_account: str = "httpsvc",
        options: Mapping[str, str] | None = None,
        parent: str | None = None,
        ready_timeout: float = _READY_TIMEOUT,
    ) -> None:
        reason = samba_available()
        if reason is not None:
            raise RuntimeError(reason)
        if not re.fullmatch(r"[A-Z0-9-]+(\.[A-Z0-9-]+)+", realm):
            raise ValueError(f"a realm is an upper-case DNS name, not {realm!r}")
        if not re.fullmatch(r"[A-Z0-9-]{1,15}", domain) or domain == realm.split(".")[0]:
            raise ValueError(f"a NetBIOS domain name other than the realm's label: {domain!r}")
        if not re.fullmatch(r"[a-z0-9-]{1,15}", host_name):
            raise ValueError(f"bad host name {host_name!r}")
        self.realm = realm
        self.domain = domain
        self.dns_domain = realm.lower()
        self.base_dn = ",".join(f"DC={label}" for label in self.dns_domain.split("."))
        self.domain_sid = ""
        self.dc_hostname = f"{host_name}.{self.dns_domain}"
        self.service_account = self._check_name(service_account)
        self.user = f"{self._check_name(user)}@{realm}"
        self.password = ""
        self.ccache = ""
        self.keytab = ""
        self._host_name = host_name
        self._options = dict(options or {})
        self._conf_options: dict[str, str] = {}
        self._provisioned_conf = ""
        self._passwords: dict[str, str] = {}
        self._stopped = False
        self._samba: subprocess.Popen[bytes] | None = None
        self._samba_log: Any = None
        self.directory = tempfile.mkdtemp(prefix="throwaway-samba-", dir=parent)
        if len(self.directory) > _MAX_DIRECTORY:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise ValueError(
                f"{self.directory} is too long for the unix sockets samba makes under it "
                f"(at most {_MAX_DIRECTORY} characters): give a shorter parent"
            )
        self.krb5_conf = os.path.join(self.directory, "krb5.conf")
        self._smb_conf = os.path.join(self.directory, "etc", "smb.conf")
        self._sam = os.path.join(self.directory, "private", "sam.ldb")
        self._log = os.path.join(self.directory, "samba.log")
        if host_ip is not None:
            socket.inet_aton(host_ip)  # an address, not a name
        self.host_ip = self.ldap_url = self.ldap_spn_host = self.ldap_spn = ""
        try:
            self.env = {
                "KRB5_CONFIG": self.krb5_conf,
                "KRB5_KDC_PROFILE": os.devnull,
                "KRB5CCNAME": "",
                "KRB5_KTNAME": "",
                # Absent on purpose: no client keytab unless a test asks for one.
                "KRB5_CLIENT_KTNAME": os.path.join(self.directory, "client.keytab"),
                "KRB5RCACHEDIR": self.directory,
            }
            self._provision()
            self._start_samba(host_ip, ready_timeout)
            self._populate(user)
        except BaseException:
            self.stop()
            raise

    # -- accounts ------------------------------------------------------------------------

    def add_user(
        self, name: str, password: str | None = None, *, upn: str | None = None
    ) -> RealmUser:
        """Create the user ``name`` (``CN=name,CN=Users``; a random password unless given;
        ``userPrincipalName`` ``upn``, by default ``name@dns_domain``) and get it a
        forwardable ticket as ``name@REALM`` in a credentials cache of its own (the
        default cache stays :attr:`user`'s).

        Calling it again for the same name sets the password (the given one, or the one it
        had) and gets a fresh ticket.
        """
        name = self._check_name(name)
        if upn is not None and (not upn or any(ch in upn for ch in "\n\r\0")):
            raise ValueError(f"bad user principal name {upn!r}")
        password = password if password is not None else self._passwords.get(name)
        password = password if password is not None else _strong_password()
        dn = self._find_dn(name)
        if dn is None:
            self._add_account(name, password, upn=upn or f"{name}@{self.dns_domain}")
        else:
            changes = [("unicodePwd", _unicode_pwd(password), True)]
            if upn is not None:
                changes.append(("userPrincipalName", upn, False))
            self._modify(dn, changes)
        self._passwords[name] = password
        ccache = self.kinit(name, password)
        return RealmUser(f"{name}@{self.realm}", password, ccache)

    def kinit(
        self,
        principal_or_name: str,
        password: str,
        ccache: str | None = None,
        *,
        enterprise: bool = False,
    ) -> str:
        """Get a forwardable ticket with MIT's ``kinit`` and return the credentials cache.

        ``principal_or_name`` is an account name (``bob``), a principal (``bob@SAMBA.TEST``)
        or, with ``enterprise``, an enterprise name such as a UPN (``bob@corp.example``,
        ``kinit -E``: the KDC answers with the canonical ``bob@SAMBA.TEST``). The cache is
        ``ccache`` or a file of its own in :attr:`directory`. Raises :class:`RuntimeError`
        when the KDC refuses.
        """
        if not principal_or_name or any(ch in principal_or_name for ch in "\n\r\0"):
            raise ValueError(f"bad principal {principal_or_name!r}")
        principal = principal_or_name
        if "@" not in principal and not enterprise:
            principal = f"{principal}@{self.realm}"
        if ccache is None:
            ccache = os.path.join(self.directory, f"ccache.{_file_part(principal_or_name)}")
        flags = ["-f", "-c", ccache]
        if enterprise:
            flags += ["-E", "-C"]
        kinit = _program("kinit") or "kinit"
        self._run([kinit, *flags, principal], "kinit", f"{password}\n", env=self._client_env())
        return ccache

    def add_group(self, name: str, *, security: bool = True) -> str:
        """Create the global security group ``name`` (``CN=name,CN=Users``), or with
        ``security=False`` a distribution group (never in a ticket); return its SID."""
        name = self._check_name(name)
        dn = self._dn(name)
        kind = "" if security else "groupType: 2\n"  # GROUP_TYPE_ACCOUNT_GROUP alone
        self._ldb(
            "ldbadd",
            [],
            f"dn: {dn}\nobjectClass: group\n{_ldif_value('sAMAccountName', name)}\n{kind}",
        )
        return self.sid_of(name)

    def add_groups(self, names: Sequence[str], *, members: Sequence[str] = ()) -> dict[str, str]:
        """Create many global security groups at once (one ``ldbadd``: 300 take about a
        second, not a minute), each with ``members`` (account names) in it; return each
        name's SID."""
        if isinstance(names, str):
            raise TypeError("names is a list of group names, not one string")
        dns = []
        for member in members:
            dn = self._find_dn(self._check_name(member))
            if dn is None:
                raise KeyError(member)
            dns.append(dn)
        records = []
        for name in names:
            lines = [f"dn: {self._dn(self._check_name(name))}", "objectClass: group"]
            lines.append(_ldif_value("sAMAccountName", name))
            lines += [_ldif_value("member", dn) for dn in dns]
            records.append("\n".join(lines) + "\n")
        self._ldb("ldbadd", [], "\n".join(records))
        out = self._ldb(
            "ldbsearch",
            [
                "-b",
                f"CN=Users,{self.base_dn}",
                "(objectClass=group)",
                "sAMAccountName",
                "objectSid",
            ],
        )
        sids: dict[str, str] = {}
        for entry in out.split("\n\n"):
            found = re.search(r"^sAMAccountName: (.+)$", entry, re.MULTILINE)
            sid = re.search(r"^objectSid: (S-1-[0-9-]+)$", entry, re.MULTILINE)
            if found and sid:
                sids[found.group(1)] = sid.group(1)
        return {name: sids[name] for name in names}

    def add_members(self, group: str, *members: str) -> None:
        """Add users or groups (nesting) to ``group``, by account name."""
        self._members(group, members, "add")

    def remove_members(self, group: str, *members: str) -> None:
        """Remove users or groups from ``group``, by account name."""
        self._members(group, members, "delete")

    def sid_of(self, name: str) -> str:
        """The ``objectSid`` of the user, group or computer (``DC1$``) ``name``."""
        name = self._check_name(name)
        out = self._ldb(
            "ldbsearch",
            ["-b", self.base_dn, f"(sAMAccountName={_filter_value(name)})", "objectSid"],
        )
        match = re.search(r"^objectSid: (S-1-[0-9-]+)$", out, re.MULTILINE)
        if match is None:
            raise KeyError(name)
        return match.group(1)

    def add_service(self, account: str, spns: Sequence[str], *, aes: bool = True) -> str:
        """Create the service account ``account`` with a random password and the service
        principal names ``spns`` (``["HTTP/web.samba.test"]``); return the path of a new
        keytab with each SPN and the account's own name (``account@REALM``, for the
        service's own TGT: AD refuses an SPN as a client).

        With ``aes`` the account's ``msDS-SupportedEncryptionTypes`` is 24 (AES128+AES256)
        and the keytab holds aes256 and aes128 keys for the SPNs (the account name's entries
        add RC4: Samba exports every key of an account's own name). Without it the account
        is left as AD leaves a new one (RC4 tickets), and the keytab holds RC4 keys only: a
        legacy keytab.
        """
        account = self._check_name(account)
        if isinstance(spns, str):
            raise TypeError("spns is a list of service principal names, not one string")
        for spn in spns:
            self._check_spn(spn)
        password = _strong_password()
        self._add_account(
            account,
            password,
            upn=None,
            spns=list(spns),
            enctypes=_AES_ENCTYPES if aes else None,
        )
        self._passwords[account] = password
        keytab = os.path.join(self.directory, f"{_file_part(account)}.keytab")
        for principal in [*spns, account]:
            self.export_keytab(keytab, principal)
        if not aes:
            _keep_enctypes(keytab, {_RC4_HMAC})
        return keytab

    def export_keytab(self, path: str, principal: str) -> None:
        """Add ``principal``'s current keys (an SPN or an account name) to the keytab
        ``path`` (``samba-tool domain exportkeytab``; which enctypes follows the account's
        ``msDS-SupportedEncryptionTypes``)."""
        self._check_spn(principal)
        self._samba_tool(
            ["domain", "exportkeytab", path, f"--principal={principal}"], "exportkeytab"
        )

    def allow_delegation(
        self, account: str, target_spn: str, *, any_protocol: bool = False
    ) -> None:
        """Let ``account`` act as its users towards ``target_spn`` (S4U2Proxy,
        ``msDS-AllowedToDelegateTo``); with ``any_protocol``, also for users who sent it no
        ticket (protocol transition, S4U2Self: ``TRUSTED_TO_AUTH_FOR_DELEGATION``)."""
        account = self._check_name(account)
        self._check_spn(target_spn)
        self._samba_tool(["delegation", "add-service", account, target_spn], "delegation")
        if any_protocol:
            self._samba_tool(["delegation", "for-any-protocol", account, "on"], "delegation")

    # -- clients -------------------------------------------------------------------------

    def negotiate_header(
        self, service: str = "HTTP@localhost", ccache: str | None = None, *, delegate: bool = False
    ) -> str:
        """An ``Authorization`` header value, ``Negotiate <SPNEGO token>``, for ``service``
        (``service@host``, or a URL: ``HTTP@`` its host), from :attr:`user`'s ticket or the
        cache ``ccache`` (see :meth:`add_user`). Each call makes a fresh token. Needs
        :attr:`env` in ``os.environ``, where the Kerberos library looks for the KDC."""
        return spnego_header(service, self._credentials(ccache), delegate=delegate)

    # -- life cycle ----------------------------------------------------------------------

    @property
    def samba_pid(self) -> int | None:
        """The DC's process id while it runs, else ``None``."""
        if self._samba is None or self._samba.poll() is not None:
            return None
        return self._samba.pid

    def stop(self) -> None:
        """Stop the DC and remove its directory; safe to call again."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._stop_samba()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SambaRealm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"on {getattr(self, 'host_ip', '?')}"
        return f"<SambaRealm {self.realm} ({self.domain}) {state}>"

    # -- set-up --------------------------------------------------------------------------

    def _provision(self) -> None:
        admin_password = _strong_password()
        d = self.directory
        options = {
            "bind interfaces only": "yes",
            "server services": _SERVICES,
            # Out of /run/samba and /var/log/samba: another samba there would refuse to
            # start next to a pid file of ours, or share our sockets.
            "pid directory": os.path.join(d, "run"),
            "ncalrpc dir": os.path.join(d, "run", "ncalrpc"),
            "winbindd socket directory": os.path.join(d, "run", "winbindd"),
            "ntp signd socket directory": os.path.join(d, "run", "ntp_signd"),
            "log file": os.path.join(d, "log.%m"),
            # A throwaway database needs no fsync.
            "ldb:nosync": "true",
            # No LDAPS: generating its self-signed key costs a second at every start.
            "tls enabled": "no",
            **self._options,
        }
        # A bare address matches no interface: "127.0.0.2/8" binds 127.0.0.2 alone.
        for key, value in options.items():
            if not key or any(ch in key for ch in "=\n\r\0") or any(ch in value for ch in "\n\r\0"):
                raise ValueError(f"bad smb.conf option {key!r}")
        os.mkdir(os.path.join(d, "run"))
        args = [
            "domain",
            "provision",
            f"--targetdir={d}",
            f"--realm={self.realm}",
            f"--domain={self.domain}",
            "--server-role=dc",
            "--dns-backend=NONE",
            f"--adminpass={admin_password}",
            f"--host-name={self._host_name}",
            # Only for DNS records, and there is no DNS: the address is chosen at start.
            "--host-ip=127.0.0.1",
            "--option=interfaces=127.0.0.1/8",
            *(f"--option={key}={value}" for key, value in options.items()),
        ]
        self._samba_tool(args, "samba-tool domain provision", config=False)
        with open(self._smb_conf) as conf:
            self._provisioned_conf = conf.read()
        self._conf_options = options
        out = self._ldb("ldbsearch", ["-b", self.base_dn, "-s", "base", "objectSid"])
        match = re.search(r"^objectSid: (S-1-5-21-[0-9-]+)$", out, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no domain SID in {self._sam}")
        self.domain_sid = match.group(1)
        # Before the DC runs: the relaxed password policy.
        ldif = (
            f"dn: {self.base_dn}\nchangetype: modify\n"
            "replace: pwdProperties\npwdProperties: 0\n-\n"
            "replace: minPwdLength\nminPwdLength: 0\n-\n"
            "replace: minPwdAge\nminPwdAge: 0\n-\n"
            "replace: pwdHistoryLength\npwdHistoryLength: 0\n-\n"
        )
        self._ldb("ldbmodify", [], ldif)

    def _use_address(self, ip: str) -> None:
        """Point smb.conf and krb5.conf at ``ip``."""
        self.host_ip = self.ldap_spn_host = ip
        self.ldap_url = f"ldap://{ip}"
        self.ldap_spn = f"ldap/{ip}"
        # Provisioning writes some options and drops others ("tls enabled = no"): ours go
        # at the end of [global], where they win.
        options = {**self._conf_options, "interfaces": f"{ip}/8", **self._options}
        text = self._provisioned_conf
        ours = "".join(f"\t{key} = {value}\n" for key, value in options.items())
        start = text.index("[global]")
        end = text.find("\n[", start)  # the next section, if any
        end = len(text) if end < 0 else end + 1
        with open(self._smb_conf, "w") as conf:
            conf.write(text[:end].rstrip("\n") + "\n" + ours + "\n" + text[end:])
        self._write_krb5_conf()

    def _write_krb5_conf(self) -> None:
        kdc = self.host_ip
        conf = f"""\
[libdefaults]
    default_realm = {self.realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    # Host names as typed: HTTP@localhost is HTTP/localhost, ldap@{kdc} is ldap/{kdc}.
    dns_canonicalize_hostname = false
    rdns = false
    # S4U2Proxy needs forwardable evidence: without it the KDC answers a bare BADOPTION.
    forwardable = true
    udp_preference_limit = 1

[realms]
    {self.realm} = {{
        kdc = {kdc}:88
        kpasswd_server = {kdc}:464
    }}

[domain_realm]
    localhost = {self.realm}
    .{self.dns_domain} = {self.realm}
    {self.dns_domain} = {self.realm}
"""
        with open(self.krb5_conf, "w") as out:
            out.write(conf)

    def _start_samba(self, host_ip: str | None, timeout: float) -> None:
        tried: list[str] = []
        while True:
            self._use_address(host_ip or _pick_ip(tried))
            try:
                self._run_samba(timeout)
                break
            except _BindError:
                # Another DC took the address after the probe: the next one, if ours to pick.
                tried.append(self.host_ip)
                if host_ip is not None or len(tried) >= _BIND_ATTEMPTS:
                    raise
                self._stop_samba()
        # The LDAP SPN a client asks for when it does not canonicalise the DC's address.
        dc_dn = f"CN={self._host_name.upper()},OU=Domain Controllers,{self.base_dn}"
        self._ldb(
            "ldbmodify",
            [],
            f"dn: {dc_dn}\nchangetype: modify\n"
            f"add: servicePrincipalName\nservicePrincipalName: {self.ldap_spn}\n-\n",
        )

    def _run_samba(self, timeout: float) -> None:
        samba = _program("samba") or "samba"
        self._samba_log = open(self._log, "wb")
        # -i: foreground, and samba exits when its standard input closes, so the pipe
        # held here ties the DC's life to this process. Its own process group: stop()
        # signals the group, never anything else.
        self._samba = subprocess.Popen(  # noqa: S603 - a fixed argument list, no shell
            [samba, "-i", "-M", "single", "-s", self._smb_conf, "--debug-stdout"],
            stdin=subprocess.PIPE,
            stdout=self._samba_log,
            stderr=subprocess.STDOUT,
            env=self._tool_env(),
            cwd=self.directory,
            start_new_session=True,
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        # Listening sockets owned by our samba on host_ip:88 and :389. A connect alone would
        # not do: another process there answers too, and samba, when a service cannot
        # bind, sometimes exits and sometimes only logs it and runs on without it.
        proc = self._samba
        if proc is None:
            raise RuntimeError("samba was not started")
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            tail = self._log_tail()
            if _BIND_FAILURE.search(tail):
                raise _BindError(f"samba could not bind on {self.host_ip}:\n{tail}")
            if _START_FAILURE.search(tail):
                raise RuntimeError(f"samba could not start a service:\n{tail}")
            if code is not None:
                raise RuntimeError(f"samba exited with code {code}:\n{tail}")
            listening = _listening_inodes(self.host_ip, _READY_PORTS)
            ours = _socket_inodes(proc.pid)
            if all(inodes & ours for inodes in listening.values()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"samba did not listen on {self.host_ip} within {timeout:g} s:\n{tail}"
                )
            time.sleep(_POLL_INTERVAL)

    def _populate(self, user: str) -> None:
        user_password = _strong_password()
        svc_password = _strong_password()
        # One ldbadd for both accounts: every samba-tool run costs a quarter of a second.
        self._add_account(
            self.service_account,
            svc_password,
            upn=None,
            spns=[_HTTP_SPN],
            enctypes=_AES_ENCTYPES,
            also=(user, user_password, f"{user}@{self.dns_domain}"),
        )
        self._passwords[self.service_account] = svc_password
        self._passwords[user] = user_password
        self.keytab = os.path.join(self.directory, "http.keytab")
        self.export_keytab(self.keytab, _HTTP_SPN)
        self.export_keytab(self.keytab, self.service_account)
        self.env["KRB5_KTNAME"] = self.keytab
        self.password = user_password
        self.ccache = os.path.join(self.directory, "ccache")
        self.env["KRB5CCNAME"] = self.ccache
        self.kinit(user, user_password, self.ccache)

    # -- helpers -------------------------------------------------------------------------

    def _add_account(
        self,
        name: str,
        password: str,
        *,
        upn: str | None,
        spns: Sequence[str] = (),
        enctypes: int | None = None,
        also: tuple[str, str, str] | None = None,
    ) -> None:
        def entry(name: str, password: str, upn: str | None) -> list[str]:
            lines = [
                f"dn: {self._dn(name)}",
                "objectClass: user",
                _ldif_value("sAMAccountName", name),
                f"userAccountControl: {_UF_NORMAL_ACCOUNT}",
                f"unicodePwd:: {_unicode_pwd(password)}",
            ]
            if upn is not None:
                lines.append(_ldif_value("userPrincipalName", upn))
            return lines

        lines = entry(name, password, upn)
        lines += [_ldif_value("servicePrincipalName", spn) for spn in spns]
        if enctypes is not None:
            lines.append(f"msDS-SupportedEncryptionTypes: {enctypes}")
        ldif = "\n".join(lines) + "\n"
        if also is not None:
            ldif += "\n" + "\n".join(entry(*also)) + "\n"
        self._ldb("ldbadd", [], ldif)

    def _members(self, group: str, members: Sequence[str], op: str) -> None:
        group = self._check_name(group)
        if not members:
            return
        dns = []
        for member in members:
            dn = self._find_dn(self._check_name(member))
            if dn is None:
                raise KeyError(member)
            dns.append(dn)
        group_dn = self._find_dn(group)
        if group_dn is None:
            raise KeyError(group)
        lines = [f"dn: {group_dn}", "changetype: modify", f"{op}: member"]
        lines += [_ldif_value("member", dn) for dn in dns]
        self._ldb("ldbmodify", [], "\n".join(lines) + "\n-\n")

    def _modify(self, dn: str, changes: Sequence[tuple[str, str, bool]]) -> None:
        lines = [f"dn: {dn}", "changetype: modify"]
        for attr, value, is_base64 in changes:
            lines.append(f"replace: {attr}")
            lines.append(f"{attr}:: {value}" if is_base64 else _ldif_value(attr, value))
            lines.append("-")
        self._ldb("ldbmodify", [], "\n".join(lines) + "\n")

    def _find_dn(self, name: str) -> str | None:
        out = self._ldb(
            "ldbsearch",
            ["-b", self.base_dn, f"(sAMAccountName={_filter_value(name)})", "dn"],
        )
        for line in out.splitlines():
            if line.startswith("dn: "):
                return line[4:]
            if line.startswith("dn:: "):
                return base64.b64decode(line[5:]).decode()
        return None

    def _dn(self, name: str) -> str:
        escaped = "".join("\\" + ch if ch in '\\,+"<>;=#' else ch for ch in name)
        return f"CN={escaped},CN=Users,{self.base_dn}"

    @staticmethod
    def _check_name(name: str) -> str:
        # An account name (sAMAccountName): at most 20 characters, none of AD's forbidden.
        if not isinstance(name, str) or not name or len(name) > 20:
            raise ValueError(f"bad account name {name!r}")
        if any(ch in name for ch in '"/\\[]:;|=,+*?<>@\n\r\0') or name.strip() != name:
            raise ValueError(f"bad account name {name!r}")
        return name

    @staticmethod
    def _check_spn(spn: str) -> None:
        if not spn or any(ch.isspace() or ch in "\0=" for ch in spn):
            raise ValueError(f"bad principal name {spn!r}")

    def _samba_tool(self, args: list[str], what: str, *, config: bool = True) -> str:
        tool = _program("samba-tool") or "samba-tool"
        extra = ["-s", self._smb_conf] if config else []
        return self._run([tool, *args, *extra], what)

    def _ldb(self, tool: str, args: list[str], ldif: str | None = None) -> str:
        program = _program(tool) or tool
        return self._run([program, "-H", self._sam, *args], tool, ldif)

    def _tool_env(self) -> dict[str, str]:
        # Samba's tools need no Kerberos settings of the test process.
        return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "HOME": self.directory}

    def _client_env(self) -> dict[str, str]:
        return {**self._tool_env(), **self.env}

    def _run(
        self,
        args: list[str],
        what: str,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        # Never put the arguments into a message: some are passwords.
        for arg in args:
            if "\n" in arg or "\0" in arg:
                raise ValueError(f"bad argument for {what}")
        if stdin is not None and "\0" in stdin:
            raise ValueError(f"bad input for {what}")
        result = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            args,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            env=self._tool_env() if env is None else env,
            cwd=self.directory,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-_LOG_TAIL:]
            raise RuntimeError(f"{what} failed (exit {result.returncode}): {detail}")
        return result.stdout

    def _credentials(self, ccache: str | None) -> gssapi.Credentials:
        import gssapi

        # Named explicitly, so the ticket used does not depend on KRB5CCNAME.
        return gssapi.Credentials(usage="initiate", store={"ccache": ccache or self.ccache})

    def _stop_samba(self) -> None:
        proc, self._samba = self._samba, None
        try:
            if proc is not None:
                _stop_group(proc)
        finally:
            if self._samba_log is not None:
                self._samba_log.close()
                self._samba_log = None

    def _log_tail(self) -> str:
        try:
            with open(self._log, errors="replace") as log:
                return log.read()[-_LOG_TAIL:]
        except OSError:
            return ""


class _BindError(RuntimeError):
    """samba could not listen on its address."""


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL it after a bounded wait."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group's id
    try:
        # Only while the leader lives: after it is reaped its pid could be anyone's.
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # gone meanwhile
        pass
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait()


def _keep_enctypes(keytab: str, keep: set[int]) -> None:
    """Remove every entry of the keytab ``keytab`` whose enctype is not in ``keep``."""
    import krb5

    ctx = krb5.init_context()
    kt = krb5.kt_resolve(ctx, f"FILE:{keytab}".encode())
    # Removing while iterating a FILE keytab is not allowed: collect first. The entries
    # stay referenced until removed (their principals live as long as they do).
    doomed = [entry for entry in kt if entry.key.enctype not in keep]
    for entry in doomed:
        krb5.kt_remove_entry(ctx, kt, entry)


def _file_part(name: str) -> str:
    return urllib.parse.quote(name, safe="")
