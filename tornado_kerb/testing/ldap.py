"""A throwaway MIT realm whose KDC keeps its database in a private OpenLDAP, for tests.

MIT's KDC does constrained delegation (S4U2Proxy) and protocol transition (S4U2Self) only
with the LDAP database back end: the DB2 one cannot hold the delegation ACL. Needs Debian's
``slapd ldap-utils krb5-kdc-ldap`` (see :func:`ldap_available`) and ``k5test``::

    realm = start_ldap_realm(krb5_conf={"libdefaults": {"forwardable": "true"}})
    try:
        realm.k5.addprinc("HTTP/localhost")
        realm.k5.addprinc("postgres/localhost")
        realm.allow_delegation("HTTP/localhost", ["postgres/localhost"])
        ...
    finally:
        realm.stop()

slapd runs from a temporary directory and listens only on a unix socket in it; the realm
is a ``k5test.K5Realm`` (:attr:`LDAPRealm.k5`) set up as k5test sets up a DB2 realm: the
user and user/admin principals, the host principal in ``k5.keytab``, a running KDC and the
user's ticket in ``k5.ccache``. :meth:`LDAPRealm.stop` stops both and removes both
directories. MIT's own ``src/tests/t_kdb.py`` is the model.
"""

from __future__ import annotations

import glob
import gzip
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from tornado_kerb.testing import start_realm

if TYPE_CHECKING:
    import k5test  # untyped: mypy sees Any

__all__ = ["LDAPRealm", "ldap_available", "start_ldap_realm"]

_PACKAGES = "slapd ldap-utils krb5-kdc-ldap"
_KDB5_LDAP_UTIL = "/usr/sbin/kdb5_ldap_util"
_KLDAP_GLOBS = (
    "/usr/lib/*/krb5/plugins/kdb/kldap.so",
    "/usr/lib/krb5/plugins/kdb/kldap.so",
    "/usr/lib64/krb5/plugins/kdb/kldap.so",
)
_KERBEROS_SCHEMA = "/usr/share/doc/krb5-kdc-ldap/kerberos.openldap.ldif.gz"
_CORE_SCHEMA = "/etc/ldap/schema/core.ldif"
_SLAPD_MODULES = "/usr/lib/ldap"

_TOP_DN = "cn=krb5"
_ADMIN_DN = "cn=admin,cn=krb5"
_READY_TIMEOUT = 10.0
_POLL_INTERVAL = 0.005
_LOG_TAIL = 4000
# k5test options that make no sense here: the database is always created, in LDAP.
_REFUSED = ("create_kdb", "existing", "krbtgt_keysalt")


def _program(name: str) -> str | None:
    # slapd and slapadd live in /usr/sbin, which a non-root PATH often lacks.
    found = shutil.which(name)
    if found is None and os.access(f"/usr/sbin/{name}", os.X_OK):
        found = f"/usr/sbin/{name}"
    return found


def _kldap_plugin() -> str | None:
    for pattern in _KLDAP_GLOBS:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path):
                return path
    return None


def ldap_available() -> str | None:
    """``None`` when everything :func:`start_ldap_realm` runs is installed, else why not.

    The reason is one line naming what is missing and the Debian packages that provide
    it, ready for ``pytest.skip()``.
    """
    missing = [name for name in ("slapd", "slapadd", "ldapmodify") if _program(name) is None]
    if not os.access(_KDB5_LDAP_UTIL, os.X_OK):
        missing.append(_KDB5_LDAP_UTIL)
    if _kldap_plugin() is None:
        missing.append("the kldap KDB plugin (krb5/plugins/kdb/kldap.so)")
    # Images that drop /usr/share/doc (dpkg path-exclude) lose the Kerberos schema too.
    for path in (_KERBEROS_SCHEMA, _CORE_SCHEMA):
        if not os.path.isfile(path):
            missing.append(path)
    if not missing:
        return None
    return f"missing {', '.join(missing)}; on Debian: apt-get install {_PACKAGES}"


def start_ldap_realm(**kwargs: Any) -> LDAPRealm:
    """Start slapd and a k5test realm backed by it; call ``.stop()`` when done.

    Takes :class:`LDAPRealm`'s arguments.
    """
    return LDAPRealm(**kwargs)


def _merge(base: dict[str, Any], over: dict[str, Any] | None) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, dictionaries key by key."""
    merged = dict(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _dn_value(value: str) -> str:
    """``value`` escaped for a DN attribute value (RFC 4514)."""
    escaped = "".join("\\" + ch if ch in '\\,+"<>;=' else ch for ch in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped


class LDAPRealm:
    """slapd in a temp dir plus a ``k5test`` realm keeping its principals there.

    Keyword arguments are ``k5test.K5Realm``'s (``realm``, ``krb5_conf``, ``create_user``,
    ``create_host``, ``get_creds``, ``start_kdc``, ``start_kadmind``, program paths) and
    mean what they mean there; ``kdc_conf`` is merged over the LDAP database settings.
    ``attempts`` bounds how many random port bases are tried when the KDC cannot bind.
    Usable as a context manager, which stops it on exit.

    Raises :class:`RuntimeError` when a program is missing (the :func:`ldap_available`
    reason) or fails (with its output); whatever was started by then is stopped first.
    """

    #: The running realm: ``env``, ``user_princ``, ``addprinc()``, ``kinit()``...
    k5: k5test.K5Realm
    #: The realm name, e.g. ``KRBTEST.COM``.
    realm: str
    #: Where slapd listens: ``ldapi://`` and the URL-encoded socket path.
    ldap_uri: str
    #: The LDAP administrator the KDC and this class bind as.
    admin_dn: str
    #: slapd's temporary directory: ``slapd.d/``, ``data/``, the socket, ``slapd.log``.
    directory: str

    def __init__(self, *, attempts: int = 5, **kwargs: Any) -> None:
        refused = [name for name in _REFUSED if name in kwargs]
        if refused:
            raise TypeError(f"LDAPRealm does not take {', '.join(refused)}")
        reason = ldap_available()
        if reason is not None:
            raise RuntimeError(reason)
        self.k5 = None
        self.realm = ""
        self.admin_dn = _ADMIN_DN
        self._admin_pw = secrets.token_hex(16)
        self._master_pw = secrets.token_hex(16)
        self._stopped = False
        self._slapd: subprocess.Popen[bytes] | None = None
        self._slapd_log: Any = None
        self.directory = tempfile.mkdtemp(prefix="throwaway-ldap-")
        socket_path = os.path.join(self.directory, "ldapi")
        self._socket = socket_path
        self.ldap_uri = "ldapi://" + urllib.parse.quote(socket_path, safe="")
        try:
            self._start_slapd()
            self._start_realm(attempts, kwargs)
        except BaseException:
            self.stop()
            raise

    @property
    def slapd_pid(self) -> int | None:
        """slapd's process id while it runs, else ``None``."""
        if self._slapd is None or self._slapd.poll() is not None:
            return None
        return self._slapd.pid

    def principal_dn(self, principal: str) -> str:
        """The LDAP entry of ``principal`` (the realm is added when missing)."""
        return f"krbPrincipalName={_dn_value(self._qualify(principal))},cn={self.realm},{_TOP_DN}"

    def add_alias(self, alias: str, principal: str) -> None:
        """Make ``alias`` another name of ``principal`` (MIT's LDAP back end: one more
        ``krbPrincipalName`` on the entry, ``krbCanonicalName`` naming the real one; MIT
        1.20's kadmin has no ``add_alias``). Clients see the canonical name only with
        ``canonicalize = true`` in krb5.conf's libdefaults."""
        canonical = self._qualify(principal)
        self._ldapmodify(
            f"dn: {self.principal_dn(canonical)}\nchangetype: modify\n"
            f"add: krbPrincipalName\nkrbPrincipalName: {self._qualify(alias)}\n-\n"
            f"replace: krbCanonicalName\nkrbCanonicalName: {canonical}\n-\n"
        )

    def allow_delegation(self, service_principal: str, targets: list[str]) -> None:
        """Let ``service_principal`` act as its users towards ``targets`` (S4U2Proxy).

        Adds the names to the service's ``krbAllowedToDelegateTo`` ACL; names without a
        realm get this one. Raises :class:`RuntimeError` (with ldapmodify's message) when
        a principal does not exist or a target is allowed already.
        """
        if isinstance(targets, str):
            raise TypeError("targets is a list of principal names, not one string")
        if not targets:
            return
        lines = [
            f"dn: {self.principal_dn(service_principal)}",
            "changetype: modify",
            "add: krbAllowedToDelegateTo",
            *(f"krbAllowedToDelegateTo: {self._qualify(target)}" for target in targets),
            "-",
        ]
        self._ldapmodify("\n".join(lines) + "\n")

    def allow_protocol_transition(self, service_principal: str) -> None:
        """Let ``service_principal`` get tickets to itself for any user (S4U2Self).

        Sets ``+ok_to_auth_as_delegate``, so those tickets are forwardable and count as
        evidence for :meth:`allow_delegation`'s targets: the service can act as a user who
        never sent it a ticket (``Credentials.impersonate()``).
        """
        principal = self._qualify(service_principal)
        query = f"modprinc +ok_to_auth_as_delegate {shlex.quote(principal)}"
        # kadmin.local exits 0 when its query fails: its complaint on stderr is the check.
        result = self._run([self.k5.kadmin_local, "-q", query], "kadmin.local modprinc")
        if result.stderr.strip():
            raise RuntimeError(f"kadmin.local modprinc failed: {result.stderr.strip()}")

    def stop(self) -> None:
        """Stop the KDC and slapd and remove their directories; safe to call again."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.k5 is not None:
                self.k5.stop()
        finally:
            try:
                self._stop_slapd()
            finally:
                shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LDAPRealm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start_slapd(self) -> None:
        conf_dir = os.path.join(self.directory, "slapd.d")
        data_dir = os.path.join(self.directory, "data")
        os.mkdir(conf_dir)
        os.mkdir(data_dir)
        schema = os.path.join(self.directory, "kerberos.openldap.ldif")
        with gzip.open(_KERBEROS_SCHEMA, "rb") as packed, open(schema, "wb") as plain:
            shutil.copyfileobj(packed, plain)
        # One entry per slapadd: an include and the entries after it do not mix in one
        # run. cn=schema,cn=config exists already: adding it fails.
        entries = [
            "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n"
            f"olcPidFile: {os.path.join(self.directory, 'slapd.pid')}\n",
            "dn: cn=module,cn=config\nobjectClass: olcModuleList\ncn: module\n"
            f"olcModulePath: {_SLAPD_MODULES}\nolcModuleLoad: back_mdb\n",
            f"include: file://{_CORE_SCHEMA}\n",
            f"include: file://{schema}\n",
            "dn: olcDatabase=mdb,cn=config\nobjectClass: olcDatabaseConfig\n"
            f"objectClass: olcMdbConfig\nolcDatabase: mdb\nolcSuffix: {_TOP_DN}\n"
            f"olcRootDN: {_ADMIN_DN}\nolcRootPW: {self._admin_pw}\n"
            # A throwaway database needs no fsync.
            f"olcDbDirectory: {data_dir}\nolcDbNoSync: TRUE\n",
        ]
        slapadd = _program("slapadd") or "slapadd"
        env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
        for ldif in entries:
            self._run([slapadd, "-b", "cn=config", "-F", conf_dir], "slapadd", ldif, env)
        self._slapd_log = open(os.path.join(self.directory, "slapd.log"), "wb")
        # -d keeps slapd in the foreground, so this Popen owns the server's PID.
        self._slapd = subprocess.Popen(  # noqa: S603 - a fixed argument list, no shell
            [_program("slapd") or "slapd", "-d", "0", "-h", self.ldap_uri, "-F", conf_dir],
            stdin=subprocess.DEVNULL,
            stdout=self._slapd_log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.directory,
        )
        self._wait_for_slapd()

    def _wait_for_slapd(self) -> None:
        # slapd binds its socket before it listens: connecting is the readiness check.
        if self._slapd is None:
            raise RuntimeError("slapd was not started")
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            code = self._slapd.poll()
            if code is not None:
                raise RuntimeError(f"slapd exited with code {code}:\n{self._log_tail()}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                try:
                    sock.connect(self._socket)
                    return
                except (FileNotFoundError, ConnectionRefusedError):
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"slapd did not listen within {_READY_TIMEOUT:g} s:\n{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _start_realm(self, attempts: int, kwargs: dict[str, Any]) -> None:
        create_user = kwargs.pop("create_user", True)
        create_host = kwargs.pop("create_host", True)
        get_creds = kwargs.pop("get_creds", True)
        start_kdc = kwargs.pop("start_kdc", True)
        start_kadmind = kwargs.pop("start_kadmind", False)
        kldap = _kldap_plugin()
        if kldap is None:  # ldap_available() said it was there
            raise RuntimeError("the kldap KDB plugin is gone")
        ldap_conf = {
            "realms": {"$realm": {"database_module": "ldap"}},
            "dbmodules": {
                # k5test's own guess names a directory without kldap.so in it.
                "db_module_dir": os.path.dirname(kldap).replace("$", "$$"),
                "ldap": {
                    "db_library": "kldap",
                    "ldap_kerberos_container_dn": _TOP_DN,
                    "ldap_kdc_dn": _ADMIN_DN,
                    "ldap_kadmind_dn": _ADMIN_DN,
                    "ldap_service_password_file": "$tmpdir/ldap.pw",
                    "ldap_servers": self.ldap_uri,
                },
            },
        }
        kdc_conf = _merge(ldap_conf, kwargs.pop("kdc_conf", None))
        last: Exception | None = None
        for _ in range(attempts):
            # create_kdb=False: k5test writes the configuration and nothing else.
            k5 = start_realm(attempts=1, create_kdb=False, kdc_conf=kdc_conf, **kwargs)
            self.k5 = k5
            self.realm = k5.realm
            self._stash_password()
            self._ldap_util(["create", "-s", "-P", self._master_pw, "-r", self.realm])
            # What K5Realm.__init__ does after creating a DB2 database.
            if create_user:
                k5.addprinc(k5.user_princ, k5.password("user"))
                k5.addprinc(k5.admin_princ, k5.password("admin"))
            if create_host:
                k5.addprinc(k5.host_princ)
                k5.extract_keytab(k5.host_princ, k5.keytab)
            try:
                if start_kdc:
                    k5.start_kdc()
                if start_kadmind:
                    k5.start_kadmind()
                break
            except Exception as err:  # k5test raises a bare Exception when a daemon fails
                # Most likely a port in use: the realm's ports are in its configuration,
                # so the next attempt is a new realm on a new port base.
                last = err
                self._ldap_util(["destroy", "-f", "-r", self.realm])
                self.k5 = None
                k5.stop()
        else:
            raise RuntimeError(f"could not start a KDC in {attempts} attempts: {last}")
        if get_creds and create_user and start_kdc:
            k5.kinit(k5.user_princ, k5.password("user"))
            k5.klist()

    def _stash_password(self) -> None:
        pw_file = os.path.join(self.k5.tmpdir, "ldap.pw")
        answer = f"{self._admin_pw}\n{self._admin_pw}\n"
        self._run(
            [_KDB5_LDAP_UTIL, "stashsrvpw", "-f", pw_file, _ADMIN_DN],
            "kdb5_ldap_util stashsrvpw",
            answer,
        )

    def _ldap_util(self, args: list[str]) -> None:
        self._run(
            [_KDB5_LDAP_UTIL, "-D", _ADMIN_DN, "-w", self._admin_pw, *args],
            f"kdb5_ldap_util {args[0]}",
        )

    def _ldapmodify(self, ldif: str) -> None:
        ldapmodify = _program("ldapmodify") or "ldapmodify"
        # LDAPNOINIT: no ldap.conf or ~/.ldaprc of the machine's changes what we bind to.
        env = {**self.k5.env, "LDAPNOINIT": "1"}
        args = [ldapmodify, "-H", self.ldap_uri, "-x", "-D", _ADMIN_DN, "-w", self._admin_pw]
        self._run(args, "ldapmodify", ldif, env)

    def _run(
        self,
        args: list[str],
        what: str,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        for arg in args:
            if "\n" in arg or "\0" in arg:
                raise ValueError(f"bad argument for {what}: {arg!r}")
        if stdin is not None and "\0" in stdin:
            raise ValueError(f"bad input for {what}")
        result = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            args,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            env=self.k5.env if env is None else env,
            cwd=self.directory,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-_LOG_TAIL:]
            raise RuntimeError(f"{what} failed (exit {result.returncode}): {detail}")
        return result

    def _qualify(self, principal: str) -> str:
        if not principal or any(ch in principal for ch in "\n\r\0"):
            raise ValueError(f"bad principal name {principal!r}")
        return principal if "@" in principal else f"{principal}@{self.realm}"

    def _stop_slapd(self) -> None:
        proc, self._slapd = self._slapd, None
        try:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            if self._slapd_log is not None:
                self._slapd_log.close()
                self._slapd_log = None

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.directory, "slapd.log"), errors="replace") as log:
                return log.read()[-_LOG_TAIL:]
        except OSError:
            return ""
