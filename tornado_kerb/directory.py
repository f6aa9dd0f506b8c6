"""Group names to SIDs, looked up over LDAP as the service itself (Active Directory, Samba).

A ticket's PAC lists groups by SID; people write names. :class:`Directory` asks a domain
controller, binding with SASL GSSAPI as the service's *own account*: a TGT from the keytab
for ``svc@EXAMPLE.COM`` (or ``WEB$@EXAMPLE.COM``: AD gives no TGT to an SPN) in a private
``MEMORY:`` cache. The process's default credentials (``KRB5CCNAME``) are never used or
touched, and ``os.environ`` is never written: every LDAP call runs in one thread of our own
whose MIT default cache is that private cache (``gss_krb5_ccache_name`` is per thread),
which is where python-ldap's Cyrus SASL GSSAPI plug-in finds its credentials.

Lookups use the SASL security layer (AD and Samba refuse a GSSAPI bind without signing or
sealing on ``ldap://``; we refuse one without integrity, since the answers decide who gets
in). Each lookup is one connection: TGT (reused while fresh), connect, bind, search, unbind,
in a child process (python-ldap holds the GIL through the SASL bind: a DC that hangs
there must not stall the server's threads).
:class:`GroupSids` keeps a set of names current with a daemon thread. Needs python-ldap
(``pip install "tornado_kerb[ad]"``); SIDs alone need no directory. Nothing here imports
Tornado. Example::

    directory = Directory(keytab="/etc/web.keytab", client_principal="web$@EXAMPLE.COM",
                          realm="EXAMPLE.COM", ldap_url="ldap://dc1.example.com")
    directory.resolve(["EXAMPLE\\\\web-users", "admins@example.com", "S-1-5-32-544"])
    # {"EXAMPLE\\\\web-users": "S-1-5-21-…-1104", "admins@example.com": "S-1-5-21-…-512",
    #  "S-1-5-32-544": "S-1-5-32-544"}
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import re
import secrets
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import gssapi
import gssapi.raw
import krb5
from gssapi.raw.misc import GSSError

from ._gss import describe, translate
from .errors import ConfigurationError, DirectoryUnavailable, KDCUnavailable
from .keytab import find_client_principal, inspect_keytab
from .pac import PacError, canonical_sid, sid_from_bytes, sid_to_bytes

if TYPE_CHECKING:
    from .negotiate import Acceptor
    from .policy import Policy
    from .settings import KerberosSettings

__all__ = ["Directory", "GroupSids", "connect", "find_client_principal", "is_sid_like"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_URL = re.compile(r"ldap://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?/?")
# groupType's GROUP_TYPE_SECURITY_ENABLED (MS-ADTS 2.2.12): only such groups reach the PAC.
_SECURITY_ENABLED = 0x80000000
_PLUGIN_PACKAGE = "apt-get install libsasl2-modules-gssapi-mit"
_USER_OR_COMPUTER = "(objectClass=user)"  # computers are users too; groups are not


def is_sid_like(name: str) -> bool:
    """Whether ``name`` is meant as a SID (``S-1-…``, any case) rather than a group name."""
    return name[:4].upper() == "S-1-"


@dataclasses.dataclass(frozen=True)
class _Domain:
    base_dn: str
    dns: str  # samba.test
    netbios: str  # SAMBA


@dataclasses.dataclass(frozen=True)
class _Name:
    given: str
    account: str
    netbios: str | None = None  # the DOMAIN of DOMAIN\name
    dns: str | None = None  # the domain of name@domain

    @classmethod
    def parse(cls, given: str) -> _Name:
        text = given.strip()
        if "\\" in text:
            domain, _, account = text.partition("\\")
            return cls(given, account, netbios=domain)
        if "@" in text:
            account, _, domain = text.rpartition("@")
            return cls(given, account, dns=domain.rstrip("."))
        return cls(given, text)

    def outside(self, domain: _Domain) -> str | None:
        """Why this name cannot be in ``domain``, or ``None``."""
        if not self.account:
            return "no group name"
        if self.netbios is not None and self.netbios.casefold() != domain.netbios.casefold():
            return f"domain {self.netbios} is not this directory's {domain.netbios}"
        if self.dns is not None and self.dns.casefold() != domain.dns.casefold():
            return f"domain {self.dns} is not this directory's {domain.dns}"
        return None


class _Local:
    """An Active Directory (or Samba) domain controller, asked as the service's account.

    ``client_principal`` is the account's own name in ``keytab`` (see
    :func:`find_client_principal`). ``ldap_url`` is ``ldap://host[:port]``; the host as
    written names the DC's ``ldap/host`` principal. Without it, ``ldap://<realm's DNS
    name>`` (the domain's name, which AD's DNS resolves to its DCs) and then, as the DC's
    name, what reverse DNS says of the address reached. ``base_dn``: where groups are
    searched (default: the domain's naming context). ``timeout``: seconds one lookup
    (TGT, connect, bind, searches) may take.

    Every method blocks: call them at start-up or in a worker thread, never on the IOLoop.
    Directory problems (no KDC, no DC, bind refused) raise
    :class:`~tornado_kerb.ConfigurationError` naming the directory.
    """

    def __init__(
        self,
        *,
        keytab: str,
        client_principal: str,
        realm: str,
        ldap_url: str | None = None,
        base_dn: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._ldap: Any = _python_ldap()
        _check_url(ldap_url)
        #: The domain controller's URL.
        self.url = (ldap_url or f"ldap://{realm.lower()}").rstrip("/")
        # A host the user wrote is the DC's name; the domain's own name is not (AD
        # registers ldap/<dc host>, not ldap/<domain>): ask reverse DNS, like ldapsearch.
        self._canonicalize = ldap_url is None
        self.keytab = keytab
        self.client_principal = client_principal
        self.timeout = timeout
        self._base_dn = base_dn
        self._domain: _Domain | None = None
        self._name = gssapi.Name(client_principal, gssapi.NameType.kerberos_principal)
        # Process-wide but unguessable; only our worker thread makes it its default.
        self._ccache = f"MEMORY:tornado_kerb-directory-{secrets.token_hex(16)}"
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._worker = threading.Thread(
            target=self._work, name="tornado_kerb-directory", daemon=True
        )
        self._worker.start()

    def __repr__(self) -> str:
        return f"<directory {self.url} as {self.client_principal}>"

    def __str__(self) -> str:
        return f"directory {self.url} (as {self.client_principal})"

    # -- public -----------------------------------------------------------------------

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        """Each name as given → its group's SID (``S-1-5-21-…``).

        Names: ``DOMAIN\\group`` (NetBIOS domain), ``group@dns.domain``, ``group``, or a
        SID (validated and returned in canonical form, without asking the directory).
        Raises :class:`~tornado_kerb.ConfigurationError` listing every name that is no
        group of this domain, or saying why the directory could not be asked.
        """
        found, missing = self.lookup(names)
        if missing:
            listed = "; ".join(f"{name!r}: {why}" for name, why in missing.items())
            raise ConfigurationError(f"group names not found by {self}: {listed}")
        return found

    def lookup(self, names: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
        """Like :meth:`resolve`, but names it cannot resolve come back with the reason
        (``found, missing``) instead of raising; directory problems still raise."""
        names = list(dict.fromkeys(names))
        answers: dict[str, tuple[str | None, str]] = {}  # name -> (SID, or None and why)
        wanted: list[_Name] = []
        for name in names:
            if is_sid_like(name):
                try:
                    answers[name] = (canonical_sid(name.strip()), "")
                except PacError:
                    answers[name] = (None, "not a valid SID")
            else:
                wanted.append(_Name.parse(name))
        if wanted:
            answers.update(self._call(lambda conn: self._find_groups(conn, wanted)))
        found = {n: sid for n in names if (sid := answers[n][0]) is not None}
        missing = {n: answers[n][1] for n in names if answers[n][0] is None}
        return found, missing

    def netbios_domain(self) -> str:
        """The domain's NetBIOS name (``EXAMPLE`` of ``EXAMPLE\\user``), from the
        directory's partitions (``nETBIOSName`` of the domain's ``crossRef``)."""
        return self._call(self._domain_of).netbios

    def dns_domain(self) -> str:
        """The domain's DNS name (``example.com``), from the same ``crossRef``."""
        return self._call(self._domain_of).dns

    def whoami(self) -> str:
        """The account the directory sees our bind as, ``DOMAIN\\name`` (from the
        rootDSE's ``tokenGroups``: the SIDs of our token on the DC)."""
        return self._call(self._whoami)

    def close(self) -> None:
        """Stop the worker thread (after a lookup under way, waiting up to ``timeout``)
        and destroy the private credential cache."""
        self._jobs.put(None)
        if self._worker is not threading.current_thread():
            self._worker.join(self.timeout)

    # -- the worker thread: every LDAP and Kerberos call happens here -----------------

    def _call(self, job: Callable[[Any], T]) -> T:
        if not self._worker.is_alive():
            raise ConfigurationError(f"{self} is closed")
        future: Future[T] = Future()
        self._jobs.put((lambda: self._session(job), future))
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            future.cancel()  # if it has not started: the worker skips it
            raise DirectoryUnavailable(
                f"{self}: no answer within {self.timeout:g}s (KDC or domain controller)"
            ) from None

    def _work(self) -> None:
        # MIT keeps a default cache name per thread: ours, for this thread's lifetime.
        gssapi.raw.krb5_ccache_name(self._ccache.encode())
        while (item := self._jobs.get()) is not None:
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as err:  # handed to the waiting caller, which raises it
                future.set_exception(err)
        _destroy(self._ccache)

    def _session(self, job: Callable[[Any], T]) -> T:
        self._tgt()
        ldap = self._ldap
        try:
            conn = ldap.initialize(self.url)
            try:
                conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
                conn.set_option(ldap.OPT_REFERRALS, 0)  # AD refers to other partitions
                conn.set_option(ldap.OPT_NETWORK_TIMEOUT, self.timeout)
                conn.set_option(ldap.OPT_TIMEOUT, self.timeout)
                conn.set_option(ldap.OPT_X_SASL_NOCANON, 0 if self._canonicalize else 1)
                # Integrity at least: these answers decide who gets in.
                conn.set_option(ldap.OPT_X_SASL_SSF_MIN, 1)
                # python-ldap holds the GIL through a SASL bind (its callbacks are
                # Python), so a DC that connects and then hangs would stall every thread
                # of the process. An anonymous read of the root DSE waits without the
                # GIL: only a DC that answers it gets the bind.
                conn.search_ext_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
                conn.sasl_interactive_bind_s("", ldap.sasl.gssapi())
                log.debug(
                    "directory %s: bound as %s, SASL SSF %s",
                    self.url,
                    self.client_principal,
                    conn.get_option(ldap.OPT_X_SASL_SSF),
                )
                return job(conn)
            finally:
                with contextlib.suppress(ldap.LDAPError):  # a connection already gone
                    conn.unbind_s()
        except ldap.LDAPError as err:
            words = _ldap_words(err)
            if isinstance(err, (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR)):
                raise DirectoryUnavailable(f"{self}: {words}") from None
            if "no mechanism available" in words:  # Cyrus SASL found no GSSAPI plug-in
                words += f" (Cyrus SASL has no GSSAPI plug-in: on Debian, {_PLUGIN_PACKAGE})"
            raise ConfigurationError(f"{self}: {words}") from None

    def _tgt(self) -> None:
        """Our TGT in the private cache: fetched from the keytab, or reused while fresh
        (MIT refetches it from the client keytab when it nears its end)."""
        store: dict[bytes | str, bytes | str] = {
            "client_keytab": self.keytab,
            "ccache": self._ccache,
        }
        try:
            gssapi.Credentials(
                name=self._name, usage="initiate", mechs=[gssapi.MechType.kerberos], store=store
            )
        except GSSError as err:
            if isinstance(translate(err, "ticket"), KDCUnavailable):
                raise DirectoryUnavailable(f"{self}: no KDC answered: {describe(err)}") from None
            if self.client_principal not in inspect_keytab(self.keytab).principals():
                why = f"keytab {self.keytab} holds no key for {self.client_principal}"
            else:
                why = f"no TGT from keytab {self.keytab}: {describe(err)}"
            raise ConfigurationError(f"{self}: {why}") from None

    # -- searches (in the worker, on a bound connection) ------------------------------

    def _domain_of(self, conn: Any) -> _Domain:
        if self._domain is not None:
            return self._domain
        ldap = self._ldap
        root = _attrs(conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", _ROOT_ATTRS))
        base = self._base_dn or _text(root, "defaultNamingContext")
        config = _text(root, "configurationNamingContext")
        if not base or not config:
            raise ldap.LDAPError({"desc": "the rootDSE names no naming contexts"})
        refs = conn.search_s(
            f"CN=Partitions,{config}",
            ldap.SCOPE_ONELEVEL,
            "(&(objectClass=crossRef)(nETBIOSName=*))",
            ["nCName", "dnsRoot", "nETBIOSName"],
        )
        # The domain whose naming context holds base_dn (it may be an OU of it).
        best: tuple[int, dict[str, list[bytes]]] | None = None
        wanted = _dn_key(base)
        for dn, attrs in refs:
            if dn is None:  # a referral
                continue
            nc = _dn_key(_text(attrs, "nCName"))
            if nc and wanted[-len(nc) :] == nc and (best is None or len(nc) > best[0]):
                best = (len(nc), attrs)
        if best is None:
            raise ldap.LDAPError({"desc": f"no domain partition holds {base}"})
        self._domain = _Domain(base, _text(best[1], "dnsRoot"), _text(best[1], "nETBIOSName"))
        log.debug("directory %s: domain %s (%s)", self.url, self._domain.netbios, base)
        return self._domain

    def _find_groups(self, conn: Any, names: list[_Name]) -> dict[str, tuple[str | None, str]]:
        ldap = self._ldap
        domain = self._domain_of(conn)
        answers: dict[str, tuple[str | None, str]] = {}
        asked = []
        for name in names:
            why = name.outside(domain)
            if why:
                answers[name.given] = (None, why)
            else:
                asked.append(name)
        # One search per name, as given: the directory's own matching rules decide (AD
        # ignores case). Folding here would be ours, and Python's casefold() maps
        # "Straße" to "strasse", another group AD may hold.
        for name in asked:
            found = [
                attrs
                for dn, attrs in conn.search_s(
                    domain.base_dn,
                    ldap.SCOPE_SUBTREE,
                    f"(sAMAccountName={ldap.filter.escape_filter_chars(name.account)})",
                    ["sAMAccountName", "objectSid", "objectClass", "groupType"],
                )
                if dn is not None
            ]
            if len(found) > 1:
                answers[name.given] = (None, f"{len(found)} directory entries match it")
            else:
                answers[name.given] = _group_sid(found[0] if found else None, domain)
        return answers

    def _whoami(self, conn: Any) -> str:
        ldap = self._ldap
        domain = self._domain_of(conn)
        root = _attrs(conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["tokenGroups"]))
        sids = [sid_from_bytes(raw) for raw in root.get("tokenGroups", [])]
        if not sids:
            raise ldap.LDAPError({"desc": "the rootDSE shows no tokenGroups"})
        terms = "".join(f"(objectSid={_escape_bytes(sid_to_bytes(s))})" for s in sids)
        for dn, attrs in conn.search_s(
            domain.base_dn,
            ldap.SCOPE_SUBTREE,
            f"(&{_USER_OR_COMPUTER}(|{terms}))",
            ["sAMAccountName"],
        ):
            if dn is not None:
                return f"{domain.netbios}\\{_text(attrs, 'sAMAccountName')}"
        return sids[0]


class Directory:
    """An Active Directory (or Samba) domain controller, asked as the service's account.

    ``client_principal`` is the account's own name in ``keytab`` (see
    :func:`~tornado_kerb.keytab.find_client_principal`). ``ldap_url`` is
    ``ldap://host[:port]``; the host as written names the DC's ``ldap/host`` principal.
    Without it, ``ldap://<realm's DNS name>`` (the domain's name, which AD's DNS resolves to
    its DCs) and then, as the DC's name, what reverse DNS says of the address reached.
    ``base_dn``: where groups are searched (default: the domain's naming context).
    ``timeout``: seconds one lookup (TGT, connect, bind, searches) may take.

    The lookups run in a child process of their own (``python -m tornado_kerb.directory``,
    started at the first one, restarted after a failure): python-ldap holds the GIL
    through a SASL bind, so a DC that connects and then hangs would stall every thread of
    ours, the IOLoop included, for up to ``timeout``. Every method blocks: call them at
    start-up or in a worker thread, never on the IOLoop. A directory that cannot be
    reached raises :class:`~tornado_kerb.DirectoryUnavailable`; other problems (a bind
    refused, a name unknown) :class:`~tornado_kerb.ConfigurationError`, naming it.
    """

    def __init__(
        self,
        *,
        keytab: str,
        client_principal: str,
        realm: str,
        ldap_url: str | None = None,
        base_dn: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        _python_ldap()  # the child needs it: say so here, at once
        _check_url(ldap_url)
        self._args = {
            "keytab": keytab,
            "client_principal": client_principal,
            "realm": realm,
            "ldap_url": ldap_url,
            "base_dn": base_dn,
            "timeout": timeout,
        }
        #: The domain controller's URL.
        self.url = (ldap_url or f"ldap://{realm.lower()}").rstrip("/")
        self.keytab = keytab
        self.client_principal = client_principal
        self.timeout = timeout
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Directory {self.url} as {self.client_principal}>"

    def __str__(self) -> str:
        return f"directory {self.url} (as {self.client_principal})"

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        """Each name as given → its group's SID (``S-1-5-21-…``). A SID (``S-1-…``) is
        checked and passes unchanged; every name that does not resolve is listed, with why,
        in one :class:`~tornado_kerb.ConfigurationError`."""
        return dict(self._ask("resolve", list(names)))

    def lookup(self, names: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
        """``(found, missing)``: name → SID, and name → why not; raises only when the
        directory cannot be asked at all."""
        found, missing = self._ask("lookup", list(names))
        return dict(found), dict(missing)

    def netbios_domain(self) -> str:
        """The domain's NetBIOS name (``EXAMPLE`` of ``EXAMPLE\\\\alice``)."""
        return str(self._ask("netbios_domain"))

    def dns_domain(self) -> str:
        """The domain's DNS name (``example.com``)."""
        return str(self._ask("dns_domain"))

    def whoami(self) -> str:
        """Whom the domain controller sees us as (``EXAMPLE\\\\websvc``)."""
        return str(self._ask("whoami"))

    def close(self) -> None:
        """Stop the child process. Idempotent."""
        with self._lock:
            self._closed = True
            self._stop_child()

    def _ask(self, op: str, *args: Any) -> Any:
        with self._lock:
            if self._closed:
                raise ConfigurationError(f"{self} is closed")
            child = self._child or self._start_child()
            stdin, stdout = cast(IO[bytes], child.stdin), cast(IO[bytes], child.stdout)
            ready: list[Any] = []
            try:
                stdin.write(json.dumps([op, *args]).encode() + b"\n")
                stdin.flush()
                # Startup (imports) counts too: a cold child may take a second more.
                ready, _, _ = select.select([stdout], [], [], self.timeout + 2)
                line = stdout.readline() if ready else b""
            except OSError:
                line = b""
            if not line:
                self._stop_child()
                why = f"no answer within {self.timeout:g}s" if not ready else "its worker died"
                raise DirectoryUnavailable(f"{self}: {why} (KDC or domain controller)")
            reply = json.loads(line)
            if reply.get("unavailable"):
                self._stop_child()  # the next lookup starts afresh (new TGT, new config)
        if "error" in reply:
            kind = DirectoryUnavailable if reply["unavailable"] else ConfigurationError
            raise kind(reply["error"])
        return reply["result"]

    def _start_child(self) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, "-m", "tornado_kerb.directory"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        stdin = cast(IO[bytes], child.stdin)
        stdin.write(json.dumps(self._args).encode() + b"\n")
        stdin.flush()
        self._child = child
        return child

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.kill()
            child.wait()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()


def connect(
    settings: KerberosSettings, acceptor: Acceptor, realm: str, policy: Policy
) -> tuple[Directory, GroupSids | None, str]:
    """What a guard's AD settings ask of the directory: a :class:`Directory` as the
    service account (``service_account``, else the keytab's account name), the group
    names resolved (:class:`GroupSids`, kept current into ``policy``), and the NetBIOS
    domain name (``netbios_domain``, else the directory's). Raises
    :class:`~tornado_kerb.ConfigurationError` with nothing left running."""
    account = settings.service_account or find_client_principal(
        acceptor.keytab, realm, acceptor.service_principal()
    )
    if account is None:
        raise ConfigurationError(
            "group names are looked up as the service account, and the keytab holds no "
            f"account name of {realm} (svc@{realm}, HOST$@{realm}: Active Directory gives "
            "no ticket to an SPN): add it to the keytab, set 'service_account', or give "
            "the groups' SIDs"
        )
    directory = Directory(
        keytab=acceptor.keytab,
        client_principal=account,
        realm=realm,
        ldap_url=settings.ldap_url,
        timeout=settings.kdc_timeout,
    )
    groups = None
    try:
        if policy.names:
            groups = GroupSids(
                directory,
                policy.names,
                refresh_interval=settings.group_refresh,
                on_change=policy.set_names,
            )
        return directory, groups, settings.netbios_domain or directory.netbios_domain()
    except BaseException:
        if groups is not None:
            groups.close()
        directory.close()
        raise


def _python_ldap() -> Any:
    # Imported here: SIDs alone need no directory, hence no python-ldap.
    try:
        import ldap
        import ldap.filter
        import ldap.sasl
    except ImportError:
        raise ConfigurationError(
            "looking up group names needs python-ldap: pip install 'tornado_kerb[ad]' "
            "(or give the groups' SIDs)"
        ) from None
    return ldap


def _check_url(ldap_url: str | None) -> None:
    if ldap_url is not None and not _URL.fullmatch(ldap_url):
        raise ConfigurationError(
            f"directory URL must be ldap://host[:port], not {ldap_url!r} (ldaps:// is "
            "not needed: the Kerberos bind signs and seals the connection)"
        )


def _serve() -> None:
    """The child's loop: the arguments, then one JSON request per line, one reply each."""
    args = json.loads(sys.stdin.readline())
    local = _Local(**args)
    for line in sys.stdin:
        op, *params = json.loads(line)
        try:
            result: Any = getattr(local, op)(*params)
            reply: dict[str, Any] = {"result": result}
        except ConfigurationError as err:
            reply = {"error": str(err), "unavailable": isinstance(err, DirectoryUnavailable)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    local.close()


class GroupSids:
    """Group names resolved to SIDs at start-up, kept current by a daemon thread.

    The constructor resolves every name (raising
    :class:`~tornado_kerb.ConfigurationError` for any it cannot: a name that silently
    meant nobody would lock its members out) and hands the mapping to ``on_change``;
    then every ``refresh_interval`` seconds it asks again and calls ``on_change`` with
    the new mapping when it changed. A group recreated under the same name gets its new
    SID; a group that no longer resolves (renamed, deleted) keeps its last known SID, and
    a directory that cannot be reached keeps them all: each is logged as a warning.
    """

    def __init__(
        self,
        directory: Directory,
        names: Iterable[str],
        *,
        refresh_interval: float = 900.0,
        on_change: Callable[[Mapping[str, str]], None] | None = None,
        start: bool = True,
    ) -> None:
        self.directory = directory
        self.names = tuple(dict.fromkeys(names))
        self.refresh_interval = refresh_interval
        self._on_change = on_change
        self._mapping = directory.resolve(self.names)
        if on_change is not None:
            on_change(dict(self._mapping))
        self._lock = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tornado_kerb-groups", daemon=True)
        if start and not all(is_sid_like(name) for name in self.names):
            self._thread.start()

    @property
    def mapping(self) -> dict[str, str]:
        """Each name as given → its SID, as of the last successful lookup."""
        return dict(self._mapping)

    def refresh(self) -> bool:
        """Ask the directory again now (blocking); whether the mapping changed. Never
        raises for the directory's sake: problems are logged, the last SIDs kept."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> bool:
        try:
            found, missing = self.directory.lookup(self.names)
        except ConfigurationError as err:
            log.warning("group names not refreshed, keeping their last SIDs: %s", err)
            return False
        mapping = dict(self._mapping)
        for name in self.names:
            sid = found.get(name)
            if sid is None:
                log.warning(
                    "group %r no longer resolves (%s): keeping its last known SID %s",
                    name,
                    missing.get(name, "not found"),
                    mapping[name],
                )
            elif sid != mapping[name]:
                log.warning("group %r is now %s (was %s)", name, sid, mapping[name])
                mapping[name] = sid
        if mapping == self._mapping:
            return False
        self._mapping = mapping
        if self._on_change is not None:
            self._on_change(dict(mapping))
        return True

    def close(self) -> None:
        """Stop refreshing (the directory stays open: close it yourself)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.directory.timeout + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            self.refresh()


# -- helpers ----------------------------------------------------------------------------


def _group_sid(attrs: dict[str, list[bytes]] | None, domain: _Domain) -> tuple[str | None, str]:
    if attrs is None:
        return None, f"no such group in {domain.dns} under {domain.base_dn}"
    classes = {c.decode(errors="replace").casefold() for c in attrs.get("objectClass", [])}
    if "group" not in classes:
        kind = "computer" if "computer" in classes else "user" if "user" in classes else ""
        return None, f"is a {kind or 'directory entry'}, not a group"
    try:
        group_type = int(attrs.get("groupType", [b"0"])[0])
    except ValueError:
        group_type = 0
    if not group_type & _SECURITY_ENABLED:
        # A distribution group is never in a ticket's PAC: allowing it would let nobody in.
        return None, "is a distribution group, never in a ticket (only security groups are)"
    try:
        return sid_from_bytes(attrs["objectSid"][0]), ""
    except (KeyError, IndexError, PacError):
        return None, "the directory gave no valid objectSid"


_ROOT_ATTRS = ["defaultNamingContext", "configurationNamingContext"]


def _attrs(results: list[tuple[str | None, Any]]) -> dict[str, list[bytes]]:
    for dn, attrs in results:
        if dn is not None:
            return dict(attrs)
    return {}


def _text(attrs: Mapping[str, list[bytes]], key: str) -> str:
    values = attrs.get(key) or [b""]
    return values[0].decode(errors="replace")


def _dn_key(dn: str) -> tuple[str, ...]:
    # DC=Samba, DC=Test and dc=samba,dc=test are one DN; enough for naming contexts.
    return tuple(part.strip().casefold() for part in dn.split(",") if part.strip())


def _escape_bytes(data: bytes) -> str:
    return "".join(f"\\{byte:02x}" for byte in data)


def _ldap_words(err: Exception) -> str:
    info = err.args[0] if err.args and isinstance(err.args[0], dict) else {}
    words = [str(info.get("desc") or type(err).__name__)]
    if info.get("info"):
        words.append(str(info["info"]))
    return ": ".join(words)


def _destroy(name: str) -> None:
    ctx = krb5.init_context()
    try:
        krb5.cc_destroy(ctx, krb5.cc_resolve(ctx, name.encode()))
    except krb5.Krb5Error:  # never created: nothing to destroy
        pass


if __name__ == "__main__":
    _serve()
