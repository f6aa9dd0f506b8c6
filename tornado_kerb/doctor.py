"""``tornado-kerb doctor``: find the broken keytab, SPN, KDC or clock before users do.

Most Kerberos web deployments fail on configuration, not code. Each check here returns a
:class:`Check` (``OK``, ``WARN``, ``FAIL`` or ``SKIP``, one line of detail, one line of
advice); :func:`run` reports every check, in order, and one that could not run (no URL
given, no ticket, an earlier failure) as ``SKIP`` saying why::

    checks = run(keytab="/etc/http.keytab", hostname="www.example.com")
    print(render_text(checks))
    sys.exit(exit_code(checks))

Nothing is changed on the way. The KDC probe only opens a TCP connection. The end-to-end
check copies the caller's ticket-granting ticket into a private ``MEMORY:`` cache, so the
service ticket it asks for is fresh (a cached one would hide a key the KDC has changed
since) and the caller's own cache is left as it was. Results name principals, kvnos and
enctypes, never key material.
"""

from __future__ import annotations

import dataclasses
import grp
import json
import os
import pwd
import re
import shlex
import socket
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Literal
from urllib.parse import urlsplit

import gssapi
import krb5
from gssapi.raw.misc import GSSError

from ._gss import translate
from .basic import default_realm
from .claims import Claims, read_claims
from .errors import ConfigurationError, GSSProxyUnavailable, KerberosError
from .gssproxy import NO_KEYTAB, GSSProxy
from .keytab import KeytabReport, find_client_principal, inspect_keytab
from .negotiate import Acceptor

__all__ = [
    "Check",
    "CheckName",
    "Status",
    "canonical_name",
    "exit_code",
    "render_json",
    "render_text",
    "run",
]

#: ``SKIP``: the check could not run; its detail says why. It does not change the exit code.
Status = Literal["OK", "WARN", "FAIL", "SKIP"]
#: Stable check names, in the order :func:`run` reports them.
CheckName = Literal[
    "keytab",
    "permissions",
    "principals",
    "spn",
    "enctypes",
    "krb5.conf",
    "realm",
    "kdc",
    "url",
    "end-to-end",
    "clock",
    "account",
]

# Single DES, triple DES (RFC 8429) and RC4: a keytab holding nothing better is one
# hardening step (or one MIT upgrade) away from failing every login.
_WEAK = re.compile(r"^(des|arcfour|rc4)", re.IGNORECASE)
_KDC_PORT = 88
_CONNECT_TIMEOUT = 2.0
# MIT's default clockskew: past it, tickets are "not yet valid" or "expired" on arrival.
_MAX_SKEW = 300
_FAIR_SKEW = 60
_SHOWN_PRINCIPALS = 6
_EXTRACT = "MIT: kadmin ktadd -norandkey; AD: ktpass or msktutil; FreeIPA: ipa-getkeytab"


@dataclasses.dataclass(frozen=True)
class Check:
    """One finding: a status, a stable name, one line of detail and one line of advice."""

    status: Status
    name: CheckName
    detail: str
    #: What to do about it; empty when there is nothing to do.
    advice: str = ""

    def __post_init__(self) -> None:
        # One line each, in words, whatever MIT's messages or a principal name hold.
        object.__setattr__(self, "detail", _plain(self.detail))
        object.__setattr__(self, "advice", _plain(self.advice))

    def as_dict(self) -> dict[str, str]:
        """The check as a JSON-ready dict."""
        return dataclasses.asdict(self)


def run(
    keytab: str | None = None,
    service: str = "HTTP",
    hostname: str | None = None,
    realm: str | None = None,
    url: str | None = None,
    *,
    hostnames: Sequence[str] = (),
    gssproxy: bool | str = False,
) -> list[Check]:
    """Run every check and return the findings, in order: one :class:`Check` per name of
    :data:`CheckName` (``end-to-end`` once per SPN), ``SKIP`` for those that could not run.

    The arguments mean what :class:`~tornado_kerb.KerberosSettings` says; ``url`` is the
    address users type, whose host (unless ``hostname`` is given) is the host we serve;
    ``hostnames``: more host names served from the same keytab (each must be in it, and
    each gets its end-to-end check). ``gssproxy``: accept through GSS-Proxy (the
    setting), as the app would: run doctor as the app's user, in its environment.
    """
    if gssproxy is not False:
        return _through_proxy(gssproxy, service, hostname, realm, url, hostnames)
    url_host = _url_host(url) if url is not None else None
    hostname = hostname or url_host
    conf = _Krb5Conf.find()
    report = inspect_keytab(keytab)
    known_realm = realm or default_realm()
    checks = list(_keytab_checks(report, service, hostname, known_realm, hostnames))
    checks += _config_checks(realm, report, service, hostname, conf)
    canonical = None
    if url is not None:
        url_check, canonical = _url_check(url_host, report, service, known_realm)
        checks.append(url_check)
    else:
        checks.append(
            Check(
                "SKIP",
                "url",
                "no --url given: the SPN browsers build from the address they open is not checked",
                "pass --url with the address users open (https://www.example.com/)",
            )
        )
    if report.problem is not None:
        checks += _no_end_to_end("needs a keytab to accept a ticket with (see keytab)")
        return [*checks, _account(report, known_realm or "")]
    spns = report.ours(service, hostname)
    for more in hostnames:
        spns += report.ours(service, more)
    if canonical and canonical != hostname:
        spns += report.ours(service, canonical)
    if not spns:
        checks += _no_end_to_end(
            f"no {service}/{hostname or ''} key in the keytab to accept a ticket with (see spn)"
        )
        return [*checks, _account(report, known_realm or "")]
    checks += _end_to_end(report, service, sorted(set(spns)), conf)
    return checks


def _through_proxy(
    setting: bool | str,
    service: str,
    hostname: str | None,
    realm: str | None,
    url: str | None,
    hostnames: Sequence[str],
) -> list[Check]:
    # The keytab is the daemon's: its own checks need root and the daemon's config; what
    # the app can check is the socket, the configuration and a ticket accepted through it.
    conf = _Krb5Conf.find()
    known_realm = realm or default_realm()
    hostname = hostname or (_url_host(url) if url is not None else None)
    theirs = "the keytab is GSS-Proxy's: check it as root with --keytab (its cred_store)"
    checks = [_proxy_check(setting)]  # "keytab": through the daemon that holds it
    checks += [Check("SKIP", name, theirs) for name in _KEYTAB_CHECKS]
    report = inspect_keytab(NO_KEYTAB)
    checks += _config_checks(realm, report, service, hostname, conf)
    if url is not None:
        checks.append(Check("SKIP", "url", f"not compared with the keytab: {theirs}"))
    else:
        checks.append(Check("SKIP", "url", "no --url given"))
    hosts = [h for h in (hostname, *hostnames) if h]
    if checks[0].status == "FAIL" or not hosts or not known_realm:
        why = "GSS-Proxy cannot be used (see keytab)" if hosts else "no --hostname given"
        return [*checks, *_no_end_to_end(why), Check("SKIP", "account", theirs)]
    proxy = GSSProxy(setting)
    spns = [f"{service}/{host}@{known_realm}" for host in dict.fromkeys(hosts)]

    def acceptor(host: str) -> Acceptor:
        return Acceptor(None, service, host, gssproxy=proxy, realm=known_realm)

    ends = _end_to_end(report, service, spns, conf, acceptor)
    return [*checks, *ends, Check("SKIP", "account", theirs)]


def _proxy_check(setting: bool | str) -> Check:
    try:
        proxy = GSSProxy(setting)
        proxy.probe()
    except ConfigurationError as err:
        return Check("FAIL", "keytab", str(err).removeprefix("kerberos setting "))
    except GSSProxyUnavailable as err:
        return Check(
            "FAIL",
            "keytab",
            str(err),
            "start it (systemctl start gssproxy) and check its socket's path",
        )
    return Check("OK", "keytab", f"held by GSS-Proxy, which answers at {proxy.socket}")


_KEYTAB_CHECKS: tuple[CheckName, ...] = ("permissions", "principals", "spn", "enctypes")


def exit_code(checks: Sequence[Check]) -> int:
    """0 when nothing failed, 1 otherwise (``WARN`` and ``SKIP`` do not count)."""
    return 1 if any(check.status == "FAIL" for check in checks) else 0


def render_text(checks: Sequence[Check]) -> str:
    """One line per check, its advice indented below it, and a count."""
    width = max((len(check.name) for check in checks), default=0)
    lines = []
    for check in checks:
        lines.append(f"{check.status:<4}  {check.name:<{width}}  {check.detail}")
        if check.advice:
            lines.append(f"{'':4}  {'':<{width}}  -> {check.advice}")
    counts = _counts(checks)
    lines.append(", ".join(f"{n} {status}" for status, n in counts.items()))
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    """The checks, the counts and the exit code as a JSON document."""
    return json.dumps(
        {
            "checks": [check.as_dict() for check in checks],
            "counts": _counts(checks),
            "exit_code": exit_code(checks),
        },
        indent=2,
    )


def _counts(checks: Sequence[Check]) -> dict[str, int]:
    return {s: sum(c.status == s for c in checks) for s in ("FAIL", "WARN", "OK", "SKIP")}


# Error text as python-gssapi gives it: "Major (851968): Unspecified GSS failure.  Minor
# code may provide more information, Minor (2529639053): <what MIT says>", and pykrb5's
# "<what MIT says> -1765328189". The numbers (com_err codes: seven digits and more) mean
# nothing to a reader; MIT's words say it all.
_GSS_MAJOR = re.compile(r"\bMajor \(\d+\): ")
_GSS_MINOR = re.compile(r",?\s*\bMinor \(\d+\): ")
_GSS_FILLER = re.compile(
    r"Unspecified GSS failure\.\s+Minor code may provide more information:\s*", re.IGNORECASE
)
_RAW_CODE = re.compile(r"\s*\(-?\d{7,}\)|\s+-\d{7,}\b")


def _plain(text: str) -> str:
    """``text`` on one line, without raw error numbers."""
    text = _GSS_MINOR.sub(": ", _GSS_MAJOR.sub("", text))
    text = _RAW_CODE.sub("", _GSS_FILLER.sub("", text))
    return " ".join(text.split())


@dataclasses.dataclass(frozen=True)
class _Krb5Conf:
    """Which krb5.conf files libkrb5 reads (``KRB5_CONFIG`` or ``/etc/krb5.conf``)."""

    searched: tuple[str, ...]
    found: tuple[str, ...]
    from_env: bool

    @classmethod
    def find(cls) -> _Krb5Conf:
        env = os.environ.get("KRB5_CONFIG")
        searched = tuple(p for p in env.split(":") if p) if env else ("/etc/krb5.conf",)
        found = tuple(p for p in searched if os.path.isfile(p) and os.access(p, os.R_OK))
        return cls(searched, found, bool(env))

    @property
    def where(self) -> str:
        """The file to edit, and where its name came from."""
        path = (self.found or self.searched or ("/etc/krb5.conf",))[0]
        return f"{path} (KRB5_CONFIG)" if self.from_env else path


# -- the keytab ------------------------------------------------------------------------


def _keytab_checks(
    report: KeytabReport,
    service: str,
    hostname: str | None,
    realm: str | None,
    hostnames: Sequence[str] = (),
) -> Iterator[Check]:
    where = report.path or report.name
    if report.problem:
        yield Check("FAIL", "keytab", f"{where} {report.problem}", _keytab_advice(report))
    else:
        yield Check("OK", "keytab", f"{where} is readable by {_user(os.geteuid())}", _as_root())
    yield _permissions(report)
    if report.problem:
        unread = "no keys to look at: the keytab is unusable (see keytab)"
        yield Check("SKIP", "principals", unread)
        yield Check("SKIP", "spn", unread)
        yield Check("SKIP", "enctypes", unread)
        return
    yield Check("OK", "principals", _describe_entries(report))
    ours = report.ours(service, hostname)
    missing = [h for h in hostnames if not report.ours(service, h)]
    if ours and missing:
        yield Check(
            "FAIL",
            "spn",
            f"holds {', '.join(ours)} but no key for "
            + ", ".join(_wanted(service, h, realm) for h in missing),
            f"extract {service}/{missing[0]}@{realm or 'REALM'} into this keytab ({_EXTRACT}), "
            "or drop that name from 'hostnames'",
        )
    elif ours:
        for more in hostnames:
            ours += report.ours(service, more)
        anyhost = "" if hostname else f" (no hostname given: any {service}/ key is accepted)"
        yield Check("OK", "spn", f"holds {', '.join(ours)}{anyhost}")
    else:
        yield Check(
            "FAIL",
            "spn",
            f"holds no key for {_wanted(service, hostname, realm)}; "
            f"it holds {', '.join(report.principals())}",
            f"extract {service}/{hostname or 'HOST'}@{realm or 'REALM'} into this keytab "
            f"({_EXTRACT}), or pass the --service/--hostname it was made for",
        )
    yield _enctypes(report, ours)


def _wanted(service: str, hostname: str | None, realm: str | None) -> str:
    """The principal(s) :meth:`KeytabReport.ours` looks for, in words: it takes any realm."""
    if hostname is None:
        return f"{service}/ on any host, in any realm"
    if realm is None:
        return f"{service}/{hostname} in any realm"
    return f"{service}/{hostname}@{realm} (nor in any other realm)"


def _keytab_advice(report: KeytabReport) -> str:
    path = shlex.quote(report.path or report.name)
    problem = report.problem or ""
    if problem == "does not exist":
        return f"pass --keytab PATH (or set KRB5_KTNAME), or create it ({_EXTRACT})"
    if problem.startswith("is not readable"):
        return (
            "run doctor as the server's user, and let that user alone read it: "
            f"chown USER {path} && chmod 600 {path}"
        )
    if problem == "holds no keys":
        return f"extract the service key into it ({_EXTRACT})"
    return f"check that it is a keytab: klist -k {path}"


def _permissions(report: KeytabReport) -> Check:
    if report.path is None:
        return Check("SKIP", "permissions", f"{report.name} is not a file: no mode to check")
    try:
        st = os.stat(report.path)
    except OSError as err:
        return Check(
            "SKIP", "permissions", f"no file to check: {report.path}: {err.strerror or err}"
        )
    if not stat.S_ISREG(st.st_mode):
        return Check("SKIP", "permissions", f"{report.path} is not a regular file (see keytab)")
    path = report.path
    mode = stat.S_IMODE(st.st_mode)
    owner = _user(st.st_uid)
    group = f"group {_group(st.st_gid)}"
    who = " and ".join(name for name, bits in ((group, 0o060), ("others", 0o006)) if mode & bits)
    if not who:
        return Check("OK", "permissions", f"mode {mode:04o}, owner {owner}: only the owner")
    can = "read and write" if mode & 0o022 and mode & 0o044 else "read" if mode & 0o044 else "write"
    # Whoever reads the keys can pose as the service and make tickets naming any user;
    # whoever writes them can put in keys of their own and do the same.
    return Check(
        "FAIL",
        "permissions",
        f"mode {mode:04o}, owner {owner}: {who} can {can} the service keys, "
        "and with them log in to this service as any user",
        f"chmod 600 {shlex.quote(path)}, owned by the server's user "
        f"(chown USER {shlex.quote(path)}); if others had a copy, give the service new keys "
        "(MIT: ktadd without -norandkey; AD: reset the account's password) and extract again",
    )


def _describe_entries(report: KeytabReport) -> str:
    held: dict[str, dict[int, list[str]]] = {}
    for entry in report.entries:
        held.setdefault(entry.principal, {}).setdefault(entry.kvno, []).append(entry.enctype)
    parts = [
        f"{principal} "
        + "; ".join(f"kvno {kvno} ({', '.join(types)})" for kvno, types in sorted(kvnos.items()))
        for principal, kvnos in sorted(held.items())
    ]
    more = len(parts) - _SHOWN_PRINCIPALS
    shown = "; ".join(parts[:_SHOWN_PRINCIPALS]) + (f"; and {more} more" if more > 0 else "")
    return f"{len(report.entries)} keys: {shown}"


def _enctypes(report: KeytabReport, ours: list[str]) -> Check:
    # The newest kvno of each principal is what the KDC uses now; older keys only decrypt
    # tickets issued before a rotation.
    wanted = set(ours) or set(report.principals())
    newest: dict[str, int] = {}
    for entry in report.entries:
        if entry.principal in wanted:
            newest[entry.principal] = max(newest.get(entry.principal, 0), entry.kvno)
    types: dict[str, set[str]] = {p: set() for p in newest}
    for entry in report.entries:
        if newest.get(entry.principal) == entry.kvno:
            types[entry.principal].add(entry.enctype)
    weak_only = sorted(p for p, ts in types.items() if ts and all(_WEAK.match(t) for t in ts))
    shown = ", ".join(sorted(set().union(*types.values())))
    if not weak_only:
        return Check("OK", "enctypes", f"current keys: {shown}")
    return Check(
        "WARN",
        "enctypes",
        f"{', '.join(weak_only)} {'has' if len(weak_only) == 1 else 'have'} only weak keys "
        f"({shown}): DES and RC4 are deprecated "
        "and disabled by hardened clients and KDCs; an RC4-only keytab is what Windows' "
        "ktpass and Samba's exportkeytab give by default, and fails once the domain "
        "issues AES tickets for the account",
        "ask for AES keys, then extract again. MIT: cpw -randkey -e "
        "aes256-cts-hmac-sha1-96:normal,aes128-cts-hmac-sha1-96:normal. Windows AD: set "
        "msDS-SupportedEncryptionTypes to 24 on the service account (Set-ADUser SVC "
        "-KerberosEncryptionType AES128,AES256), reset its password, then ktpass ... "
        "/crypto AES256-SHA1 /ptype KRB5_NT_PRINCIPAL. Samba: ldbmodify the account's "
        "msDS-SupportedEncryptionTypes: 24, samba-tool user setpassword SVC, then "
        "samba-tool domain exportkeytab",
    )


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _as_root() -> str:
    if os.geteuid() != 0:
        return ""
    return "doctor runs as root, who reads any file: run it as the server's user to be sure"


# -- krb5.conf, the realm, the KDC -------------------------------------------------------


def _config_checks(
    realm: str | None, report: KeytabReport, service: str, hostname: str | None, conf: _Krb5Conf
) -> list[Check]:
    checks = []
    source = " (from KRB5_CONFIG)" if conf.from_env else ""
    if conf.found:
        checks.append(Check("OK", "krb5.conf", f"{', '.join(conf.found)}{source}"))
    else:
        checks.append(
            Check(
                "WARN",
                "krb5.conf",
                f"no readable krb5.conf: looked at {', '.join(conf.searched)}{source}; "
                "libkrb5 falls back to DNS and built-in defaults",
                "create /etc/krb5.conf with [libdefaults] default_realm and the realm's kdc, "
                "or point KRB5_CONFIG at one",
            )
        )
    default = default_realm()
    keytab_realms = sorted({p.rpartition("@")[2] for p in report.ours(service, hostname)})
    if realm and default and realm != default:
        checks.append(
            Check(
                "WARN",
                "realm",
                f"--realm {realm}, but krb5's default realm is {default}",
                f"fine if users log in from several realms; else set default_realm = {realm}",
            )
        )
    elif realm or default:
        how = "krb5's default realm" if default else "given; krb5 has no default realm"
        checks.append(Check("OK", "realm", f"{realm or default} ({how})"))
    else:
        # KerberosGuard raises ConfigurationError here: no realm for Basic users, and no
        # realm whose users may log in.
        example = keytab_realms[0] if keytab_realms else "EXAMPLE.COM"
        checks.append(
            Check(
                "FAIL",
                "realm",
                f"no realm: no --realm given and no default_realm in {conf.where}; "
                "the server refuses to start without one",
                f"set default_realm = {example} in [libdefaults] of {conf.where}, or the "
                f"application's kerberos['realm'] setting (here: --realm {example})",
            )
        )
    target = realm or default or (keytab_realms[0] if keytab_realms else None)
    if target is not None:
        checks.append(_kdc_check(target, _profile_kdcs(conf.found, target), conf))
    else:
        checks.append(
            Check(
                "SKIP",
                "kdc",
                "no realm to look up the KDC for: no --realm, no default_realm, "
                "no key for the service in the keytab",
            )
        )
    return checks


def _profile_kdcs(files: Sequence[str], realm: str) -> list[str]:
    """The ``kdc =`` values for ``realm`` in krb5.conf files (and the files they include).

    pykrb5 has no profile API; the syntax is simple enough: ``[realms]``, then
    ``REALM = { ... }`` with ``kdc = host[:port]`` relations at its first level.
    """
    kdcs: list[str] = []
    seen: set[str] = set()

    def parse(path: str, depth: int) -> None:
        if path in seen or depth > 8:
            return
        seen.add(path)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        section, current, level = "", "", 0
        for raw in lines:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            word, _, rest = line.partition(" ")
            if level == 0 and word in ("include", "includedir"):
                for name in _included(word, rest.strip()):
                    parse(name, depth + 1)
                continue
            if level == 0 and line.startswith("["):
                section = line[1:].partition("]")[0].strip()
                continue
            if line.startswith("}"):
                level = max(0, level - 1)
                continue
            key, _, value = line.partition("=")
            key, value = key.strip().rstrip("*").strip(), value.strip()
            if value.startswith("{"):
                level += 1
                current = key if level == 1 else current
            elif section == "realms" and level == 1 and current == realm and key == "kdc":
                kdcs.append(value.strip('"'))

    for path in files:
        parse(path, 0)
    return kdcs


def _included(directive: str, target: str) -> list[str]:
    if directive == "include":
        return [target]
    try:
        names = sorted(os.listdir(target))
    except OSError:
        return []
    # MIT's rule: names of letters, digits, "-" and "_", or ending in ".conf".
    return [
        os.path.join(target, n) for n in names if re.fullmatch(r"[\w-]+", n) or n.endswith(".conf")
    ]


def _kdc_endpoint(value: str) -> tuple[str, str, int]:
    """``(transport, host, port)`` of a ``kdc =`` value: ``tcp/``, ``udp/``, ``https``."""
    if value.startswith(("https://", "http://")):  # MS-KKDCP proxy
        url = urlsplit(value)
        return "https", url.hostname or "", url.port or 443
    transport = "any"
    if value[:4].lower() in ("tcp/", "udp/"):
        transport, value = value[:3].lower(), value[4:]
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, ""
    return transport, host, int(port) if port.isdigit() else _KDC_PORT


def _kdc_check(realm: str, kdcs: list[str], conf: _Krb5Conf | None = None) -> Check:
    where = (conf or _Krb5Conf.find()).where
    if not kdcs:
        return Check(
            "WARN",
            "kdc",
            f"krb5.conf names no kdc for {realm}: libkrb5 looks in DNS "
            f"(_kerberos._tcp.{realm} SRV records), which doctor does not check",
            f"add {realm} = {{ kdc = HOST:PORT }} to the [realms] section of {where}, "
            "or check those SRV records",
        )
    up: list[str] = []
    down: list[str] = []
    udp: list[str] = []
    closed: list[int] = []
    for value in kdcs:
        transport, host, port = _kdc_endpoint(value)
        if transport == "udp":
            udp.append(value)
            continue
        start = time.monotonic()
        try:
            socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT).close()
        except OSError as err:
            down.append(f"{host}:{port} ({_plain(err.strerror or str(err))})")
            closed.append(port)
        else:
            up.append(f"{host}:{port} ({(time.monotonic() - start) * 1000:.0f} ms)")
    probe = "a TCP connect, no request sent"
    if up and not down:
        return Check("OK", "kdc", f"{realm}: connected to {', '.join(up)} ({probe})")
    if up:
        return Check(
            "WARN",
            "kdc",
            f"{realm}: connected to {', '.join(up)}, not to {', '.join(down)}",
            f"one KDC down halves the failover: check that it runs and that firewalls let "
            f"TCP port {_ports(closed)} through",
        )
    if down:
        return Check(
            "FAIL",
            "kdc",
            f"{realm}: could not connect to any KDC: {', '.join(down)} ({probe})",
            f"check that a KDC runs there and that firewalls let TCP port {_ports(closed)} "
            f"through; if the address is wrong, correct kdc = in the [realms] section of "
            f"{where}",
        )
    return Check(
        "SKIP",
        "kdc",
        f"{realm}: only udp/ KDCs are configured ({', '.join(udp)}); doctor probes TCP only",
        "the end-to-end check (after kinit) shows whether the KDC answers",
    )


def _ports(ports: list[int]) -> str:
    return ", ".join(map(str, sorted(set(ports))))


# -- the URL browsers use ----------------------------------------------------------------


def _url_host(url: str) -> str | None:
    host = urlsplit(url if "//" in url else f"//{url}").hostname
    return host.rstrip(".").lower() if host else None


def canonical_name(host: str) -> str:
    """The host's DNS canonical name (CNAMEs followed), as browsers and MIT build SPNs.

    MIT clients may also look the address up again (``rdns``, on by default); that reverse
    name is not checked here.
    """
    info = socket.getaddrinfo(host, None, flags=socket.AI_CANONNAME)
    return (info[0][3] or host).rstrip(".").lower()


def _url_check(
    host: str | None, report: KeytabReport, service: str, realm: str | None = None
) -> tuple[Check, str | None]:
    if not host:
        advice = "pass a full URL: --url https://www.example.com/"
        return Check("FAIL", "url", "the URL has no host name", advice), None
    try:
        canonical = canonical_name(host)
    except (OSError, UnicodeError) as err:
        return (
            Check(
                "FAIL",
                "url",
                f"{host} does not resolve ({getattr(err, 'strerror', None) or err})",
                "browsers build the SPN from the name DNS gives them: fix DNS for it first",
            ),
            None,
        )
    spn = f"{service}/{canonical}"
    via = f" ({host} is {canonical} in DNS)" if canonical != host else ""
    if report.problem is not None:
        return (
            Check(
                "SKIP",
                "url",
                f"browsers will ask for {spn}{via}; not compared with the keytab, which "
                "could not be read (see keytab)",
            ),
            None,
        )
    if report.ours(service, canonical):
        check = Check("OK", "url", f"browsers will ask for {spn}{via}: the keytab holds it")
    elif canonical != host and report.ours(service, host):
        check = Check(
            "WARN",
            "url",
            f"{host} is {canonical} in DNS: browsers and MIT clients canonicalise and "
            f"ask for {spn}, the keytab holds {service}/{host} only",
            f"add {spn} to the KDC and the keytab, or make {host} an A record, not a CNAME",
        )
    else:
        check = Check(
            "FAIL",
            "url",
            f"browsers will ask for {spn}{via}, which the keytab does not hold",
            f"create {spn}@{realm or 'REALM'} on the KDC and extract it into the keytab "
            f"({_EXTRACT})",
        )
    return check, canonical


# -- the end-to-end check ----------------------------------------------------------------

# Why the KDC refused us a service ticket (tornado_kerb._gss reason words) -> what to do.
_TICKET_ADVICE = {
    "unknown-service": "create the principal on the KDC (MIT: addprinc -randkey; AD: setspn "
    "-S on the service account), then extract it into the keytab",
    "clock-skew": "synchronise this host's clock with the KDC's (NTP)",
}


def _ticket_advice(reason: str, realm: str, conf: _Krb5Conf) -> str:
    if reason == "unknown-realm":
        # MIT: "Cannot find KDC for realm": no kdc line for it and none in DNS.
        return (
            f"tell libkrb5 where {realm}'s KDC is: add {realm} = {{ kdc = HOST:PORT }} to "
            f"the [realms] section of {conf.where}"
        )
    if reason == "kdc-unreachable":
        return (
            f"no KDC of {realm} answered: check that it runs, and the kdc lines in the "
            f"[realms] section of {conf.where} (see the kdc check)"
        )
    return _TICKET_ADVICE.get(reason, "see the KDC's log for this request")


def _no_end_to_end(why: str, advice: str = "") -> list[Check]:
    return [
        Check("SKIP", "end-to-end", f"not run: {why}", advice),
        Check(
            "SKIP",
            "clock",
            "not measured: the KDC's clock is read from the end-to-end check's ticket",
        ),
    ]


def _end_to_end(
    report: KeytabReport,
    service: str,
    spns: list[str],
    conf: _Krb5Conf,
    acceptor: Callable[[str], Acceptor] | None = None,
) -> list[Check]:
    ctx = krb5.init_context()
    cache_name = krb5.cc_default_name(ctx).decode(errors="replace")
    client, tgts, why = None, [], "it holds none"
    try:
        cache = krb5.cc_default(ctx)
        client = cache.principal
        now = time.time()
        tgts = [c for c in cache if _is_tgt(c) and c.times.endtime > now]
    except krb5.Krb5Error as err:
        why = str(err)
    if client is None or not tgts:
        return [
            *_no_end_to_end(
                f"no valid ticket-granting ticket in {cache_name} ({why})",
                f"run kinit as any user of {spns[0].rpartition('@')[2]}, then doctor again: "
                "it gets a service ticket for the SPN and accepts it with the keytab",
            ),
            *([_account(report, spns[0].rpartition("@")[2])] if acceptor is None else []),
        ]
    checks = []
    skew: int | None = None
    refused_for_skew = False
    domain = ""
    for spn in spns:
        check, measured, reason, pac_domain = _ticket_round_trip(
            ctx, client, tgts, report, service, spn, conf, acceptor
        )
        checks.append(check)
        skew = measured if skew is None else skew
        refused_for_skew = refused_for_skew or reason == "clock-skew"
        domain = domain or pac_domain
    checks.append(_clock(skew, refused_for_skew))
    if acceptor is None:
        checks.append(_account(report, spns[0].rpartition("@")[2], domain, tried=True))
    return checks


def _account(report: KeytabReport, realm: str, domain: str = "", *, tried: bool = False) -> Check:
    """Whether the keytab holds the account's own name, which Active Directory needs for a
    TGT of the service's own (group names, constrained delegation): it gives none to an SPN.
    ``domain``: the NetBIOS domain in the PAC of the ticket accepted, if any (AD);
    ``tried``: a ticket was asked for, so an empty ``domain`` means no AD."""
    if report.problem:
        return Check("SKIP", "account", "no keys to look at: the keytab is unusable (see keytab)")
    spns = [p for p in report.principals() if "/" in p and p.endswith(f"@{realm}")]
    try:
        account = find_client_principal(report.name, realm, spns[0] if spns else None)
    except ConfigurationError as err:
        return Check("WARN", "account", str(err), "set service_account to the right one")
    if account is not None:
        return Check(
            "OK",
            "account",
            f"holds {account}, the account's own name: the service's own TGT (group names, "
            "constrained delegation) comes from it",
        )
    if not tried:
        return Check(
            "SKIP",
            "account",
            "no account name (svc@REALM) in the keytab; whether the KDC is an Active "
            "Directory, which needs one, is told by the end-to-end check's ticket",
        )
    if not domain:
        return Check(
            "OK",
            "account",
            "no account name (svc@REALM) in the keytab, and the KDC is no Active Directory "
            "(no logon info in the ticket's PAC): a TGT of our own is asked for as the SPN",
        )
    return Check(
        "WARN",
        "account",
        f"tickets come from Active Directory (domain {domain}), and the keytab holds no account "
        f"name of {realm}: AD gives no TGT to an SPN, so group names and constrained "
        "delegation (s4u2proxy) cannot work",
        f"add the account's own name (SVC@{realm}, or HOST$@{realm}) to the keytab: msktutil "
        "does so, ktpass needs a second run with /princ SVC@REALM, samba-tool domain "
        "exportkeytab --principal=SVC; or set service_account",
    )


def _is_tgt(creds: krb5.Creds) -> bool:
    return creds.server is not None and bytes(creds.server.name or b"").startswith(b"krbtgt/")


def _ticket_round_trip(
    ctx: krb5.Context,
    client: krb5.Principal,
    tgts: list[krb5.Creds],
    report: KeytabReport,
    service: str,
    spn: str,
    conf: _Krb5Conf,
    acceptor: Callable[[str], Acceptor] | None = None,
) -> tuple[Check, int | None, str | None, str]:
    """Get a fresh ticket for ``spn`` and accept it as the server would: the KDC's current
    key must be in the keytab. Also returns the KDC's clock minus ours in seconds, why
    the KDC refused the ticket (a :mod:`tornado_kerb._gss` reason word), and the NetBIOS
    domain in the ticket's PAC (Active Directory; empty for other KDCs)."""
    memory = krb5.cc_new_unique(ctx, b"MEMORY")
    try:
        krb5.cc_initialize(ctx, memory, client)
        for tgt in tgts:
            krb5.cc_store_cred(ctx, memory, tgt)
        store: dict[bytes | str, bytes | str] = {"ccache": b"MEMORY:" + (memory.name or b"")}
        asked = int(time.time())
        try:
            initiator = gssapi.SecurityContext(
                name=gssapi.Name(spn, gssapi.NameType.kerberos_principal),
                creds=gssapi.Credentials(usage="initiate", store=store),
                usage="initiate",
                mech=gssapi.MechType.kerberos,
            )
            token = initiator.step()
        except GSSError as err:
            failed = translate(err, "ticket")
            advice = _ticket_advice(failed.reason, spn.rpartition("@")[2], conf)
            detail = f"the KDC gave no ticket for {spn}: {_mech_message(failed.detail)}"
            return Check("FAIL", "end-to-end", detail, advice), None, failed.reason, ""
        kdc_time = _kdc_time(memory, spn)
        skew = None if kdc_time is None else kdc_time - asked
        host = spn.partition("/")[2].rpartition("@")[0]
        try:
            ours = Acceptor(report.name, service, host) if acceptor is None else acceptor(host)
            accepted = ours.accept(token)
            if accepted.output_token:
                initiator.step(accepted.output_token)  # mutual authentication, as browsers do
        except (KerberosError, GSSError) as err:
            return _refused(report, spn, err), skew, None, ""
        accepted_check = f"a fresh ticket for {spn} was accepted with the keytab"
        if acceptor is not None:
            accepted_check = f"a fresh ticket for {spn} was accepted through GSS-Proxy"
        claims = accepted.claims
        domain = claims.logon_domain if isinstance(claims, Claims) else ""
        if claims is not None and not isinstance(claims, Claims):
            domain = read_claims(claims, accepted.principal).logon_domain
        return Check("OK", "end-to-end", accepted_check), skew, None, domain
    finally:
        krb5.cc_destroy(ctx, memory)


def _kdc_time(memory: krb5.CCache, spn: str) -> int | None:
    # A TGS reply's starttime is the KDC's clock at issue (authtime is the TGT's).
    for creds in memory:
        if not _is_tgt(creds) and creds.server is not None:
            if bytes(creds.server.name or b"").decode(errors="replace") == spn:
                start = int(creds.times.starttime)
                return start or None
    return None


def _refused(report: KeytabReport, spn: str, err: KerberosError | GSSError) -> Check:
    message = _mech_message(getattr(err, "detail", None) or str(err))
    kvnos = sorted({e.kvno for e in report.entries if e.principal == spn})
    held = f" (keytab: kvno {', '.join(map(str, kvnos))})" if kvnos else ""
    if "kvno" in message or "key version" in message.lower():
        advice = f"the KDC's key for {spn} has moved on: extract it again ({_EXTRACT} -r)"
    elif "enctype" in message:
        advice = f"the keytab lacks the enctype the KDC uses for {spn}: extract it again"
    elif "integrity" in message.lower():
        advice = (
            f"the keytab holds another key for {spn} under the same kvno (another KDC, or a "
            "reset password): extract it again"
        )
    else:
        advice = "compare the keytab (klist -ek) with the KDC (kvno SPN after kinit)"
    return Check(
        "FAIL", "end-to-end", f"the keytab refused a ticket for {spn}: {message}{held}", advice
    )


def _mech_message(detail: str) -> str:
    # "Major (…): Unspecified GSS failure. … Minor (…): <what MIT really says>"
    match = re.search(r"Minor \(\d+\): (.*)", detail)
    return _plain(match.group(1) if match else detail)


def _clock(skew: int | None, refused_for_skew: bool) -> Check:
    if skew is None:
        if refused_for_skew:
            return Check(
                "FAIL", "clock", "the KDC refused us for clock skew", _TICKET_ADVICE["clock-skew"]
            )
        return Check(
            "SKIP",
            "clock",
            "not measured: the KDC gave no fresh service ticket to read its time from "
            "(see end-to-end)",
        )
    ahead = "ahead of" if skew > 0 else "behind"
    detail = f"the KDC's clock is {abs(skew)} s {ahead} ours (±1 s)"
    if not skew:
        detail = "the KDC's clock agrees with ours (±1 s)"
    if abs(skew) <= _FAIR_SKEW:
        return Check("OK", "clock", detail)
    status: Status = "WARN" if abs(skew) < _MAX_SKEW else "FAIL"
    return Check(
        status,
        "clock",
        f"{detail}; Kerberos allows {_MAX_SKEW} s by default",
        _TICKET_ADVICE["clock-skew"],
    )
