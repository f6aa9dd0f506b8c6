"""Keytab inspection: can this process read it, what does it hold, is our key there.

Framework-free, and shared by the acceptor (a broken keytab fails closed with a reason),
the demo's start-up check and operators' tools::

    report = inspect_keytab("/etc/http.keytab")
    if report.problem:
        print(report.problem)
    for entry in report.entries:
        print(entry.principal, entry.kvno, entry.enctype)
"""

from __future__ import annotations

import dataclasses
import os

import krb5

from .errors import ConfigurationError, KeytabError

__all__ = ["KeytabEntry", "KeytabReport", "inspect_keytab", "wanted_prefix"]


@dataclasses.dataclass(frozen=True)
class KeytabEntry:
    """One key in a keytab."""

    #: ``HTTP/www.example.com@EXAMPLE.COM``
    principal: str
    #: Key version number; it must match the KDC's, or tickets fail to decrypt.
    kvno: int
    #: Encryption type name as krb5 spells it (``aes256-cts-hmac-sha1-96``).
    enctype: str


@dataclasses.dataclass(frozen=True)
class KeytabReport:
    """What :func:`inspect_keytab` found."""

    #: The keytab name as krb5 resolves it (``FILE:/etc/krb5.keytab``, or a bare path).
    name: str
    #: The file behind it, or ``None`` for keytabs that are not files (``MEMORY:``…).
    path: str | None
    #: Why the keytab cannot be used at all, or ``None``.
    problem: str | None
    entries: tuple[KeytabEntry, ...] = ()

    def principals(self) -> list[str]:
        """Distinct principals, sorted."""
        return sorted({entry.principal for entry in self.entries})

    def ours(self, service: str, hostname: str | None) -> list[str]:
        """Principals of ours (``service/hostname@…``, any host when ``hostname`` is None)."""
        prefix = wanted_prefix(service, hostname)
        return sorted({e.principal for e in self.entries if e.principal.startswith(prefix)})

    def check(self, service: str, hostname: str | None) -> str:
        """Our first principal; raises :class:`~tornado_kerb.KeytabError` saying why not."""
        if self.problem:
            raise KeytabError(self.path or self.name, self.problem)
        ours = self.ours(service, hostname)
        if not ours:
            held = ", ".join(self.principals())
            prefix = wanted_prefix(service, hostname)
            raise KeytabError(
                self.name, f"holds no key for {prefix}<realm>, in any realm (it holds {held})"
            )
        return ours[0]


def wanted_prefix(service: str, hostname: str | None) -> str:
    """The principal prefix we accept: ``HTTP/host@`` or, without a host, ``HTTP/``."""
    return f"{service}/{hostname}@" if hostname else f"{service}/"


def default_keytab() -> str:
    """krb5's default keytab name (``KRB5_KTNAME`` or ``default_keytab_name``)."""
    return str(krb5.kt_default_name(krb5.init_context()).decode())


def keytab_path(name: str) -> str | None:
    """The file behind a keytab name (``FILE:`` stripped), or ``None`` if it is no file."""
    kind, sep, rest = name.partition(":")
    if sep and kind.isalpha() and kind.isupper():
        return rest if kind in {"FILE", "WRFILE"} else None
    return name


def inspect_keytab(name: str | None = None) -> KeytabReport:
    """Read ``name`` (the default keytab when ``None``) and report; never raises for a
    keytab that is missing, unreadable, corrupt or empty: ``problem`` says so."""
    name = name or default_keytab()
    path = keytab_path(name)
    if path is not None:
        problem = file_problem(path)
        if problem:
            return KeytabReport(name, path, problem)
    ctx = krb5.init_context()
    try:
        raw = list(krb5.kt_resolve(ctx, name.encode()))
    except krb5.Krb5Error as err:
        # pykrb5 ends its message with the com_err number: MIT's words are enough.
        words = str(err).removesuffix(f" {err.err_code}")
        return KeytabReport(name, path, f"is not a usable keytab ({words})")
    entries = tuple(
        KeytabEntry(
            entry.principal.name.decode(errors="replace") if entry.principal.name else "",
            int(entry.kvno),
            _enctype_name(entry.key.enctype),
        )
        for entry in raw
    )
    if not entries:
        return KeytabReport(name, path, "holds no keys")
    return KeytabReport(name, path, None, entries)


def _enctype_name(enctype: int) -> str:
    try:
        return str(krb5.enctype_to_name(enctype))
    except krb5.Krb5Error:  # an enctype this libkrb5 does not know: show its number
        return str(enctype)


def file_problem(path: str) -> str | None:
    """Why ``path`` cannot be read as a keytab file, or ``None`` if it can be opened."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        return "does not exist"
    except IsADirectoryError:
        return "is a directory, not a keytab file"
    except PermissionError:
        return f"is not readable by this process (uid {os.geteuid()}): permission denied"
    except OSError as err:
        return f"cannot be opened: {err.strerror}"
    return None


def find_client_principal(keytab: str, realm: str, spn: str | None = None) -> str | None:
    """The account's own name in ``keytab``: its one-component principal in ``realm``
    (``svc@EXAMPLE.COM``, ``WEB$@EXAMPLE.COM``), beside whatever SPNs (``HTTP/…``) it holds.
    With ``spn``, only an account whose keys are that SPN's (in AD an account and its
    SPNs share one set of keys): a merged keytab may hold another account's name.

    ``None`` if there is none; :class:`~tornado_kerb.ConfigurationError` if there are
    several, or if the only one is not ``spn``'s account (say which one to use);
    :class:`~tornado_kerb.KeytabError` if the keytab cannot be read.
    """
    report = inspect_keytab(keytab)
    if report.problem:
        raise KeytabError(report.path or report.name, report.problem)
    accounts = sorted(
        {
            p
            for p in report.principals()
            if "/" not in p.partition("@")[0] and p.rpartition("@")[2] == realm
        }
    )
    if spn is not None and accounts:
        keys = _current_keys(keytab)
        theirs = [a for a in accounts if _same_keys(keys.get(a, {}), keys.get(spn, {}))]
        if not theirs:
            raise ConfigurationError(
                f"keytab {keytab} holds {', '.join(accounts)}, whose keys are not those of "
                f"{spn}: not its account (a merged keytab?); set service_account"
            )
        accounts = theirs
    if len(accounts) > 1:
        raise ConfigurationError(
            f"keytab {keytab} holds several account names ({', '.join(accounts)}): "
            "say which one is the service's own"
        )
    return accounts[0] if accounts else None


def _current_keys(keytab: str) -> dict[str, dict[int, bytes]]:
    """Each principal's keys of its newest kvno: enctype → key bytes."""
    newest: dict[str, tuple[int, dict[int, bytes]]] = {}
    for entry in krb5.kt_resolve(krb5.init_context(), keytab.encode()):
        name = entry.principal.name.decode(errors="replace") if entry.principal.name else ""
        kvno, keys = newest.get(name, (-1, {}))
        if entry.kvno > kvno:
            kvno, keys = int(entry.kvno), {}
        if entry.kvno == kvno:
            keys[int(entry.key.enctype)] = bytes(entry.key.data)
        newest[name] = (kvno, keys)
    return {name: keys for name, (_, keys) in newest.items()}


def _same_keys(a: dict[int, bytes], b: dict[int, bytes]) -> bool:
    common = a.keys() & b.keys()
    return bool(common) and all(a[enctype] == b[enctype] for enctype in common)
