"""Who may in, guard-wide: realms, principals, groups (from an AD PAC) and authentication
indicators. The handler's own ``authorize`` comes after, in the guard.

Nothing here imports Tornado; group names reach it as SIDs already resolved (see
:mod:`tornado_kerb.directory`).
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Mapping

from .claims import Claims
from .errors import ConfigurationError
from .pac import canonical_sid, is_sid
from .reasons import Reason
from .settings import KerberosSettings

__all__ = ["Policy", "group_key"]

log = logging.getLogger(__name__)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def group_key(name: str) -> str:
    """How ``in_group`` finds a group name resolved at start-up: ASCII letters without
    case, as people write them (``EXAMPLE\\Web`` for ``example\\web``), anything else as
    is (``casefold()`` would make "Straße" the name of another group, "strasse")."""
    return name.translate(_ASCII_LOWER)


class Policy:
    """The guard-wide checks, decided from the settings once.

    ``realm``: the guard's own realm (the default for ``realms``).
    """

    def __init__(self, settings: KerberosSettings, realm: str | None) -> None:
        s = settings
        #: Realms whose users may log in; ``None`` means any realm.
        self.realms: frozenset[str] | None
        if s.realms == "*":
            self.realms = None
        elif s.realms:
            self.realms = frozenset(s.realms)
        elif realm:
            self.realms = frozenset({realm})
        else:
            raise ConfigurationError(
                "no realm may log in: set kerberos['realm'] or ['realms'], or default_realm "
                "in krb5.conf"
            )
        principals = s.allowed_principals
        self._exact = frozenset(p for p in principals or () if not _is_pattern(p))
        self._patterns = tuple(p for p in principals or () if _is_pattern(p))
        self._check_principals = principals is not None
        self._indicators = (
            None if s.required_indicators is None else frozenset(s.required_indicators)
        )
        #: Group names (as configured, and casefolded) to SIDs: filled by
        #: :meth:`set_names`, which the directory calls at start-up and on refresh.
        self._names: Mapping[str, str] = {}
        self._lock = threading.Lock()
        self._allowed_groups = s.allowed_groups
        #: Group SIDs a user must be in one of; ``None``: no group check.
        self.groups: frozenset[str] | None = None
        #: Whether the checks need the ticket's claims (groups, indicators).
        self.needs_claims = self._indicators is not None or s.allowed_groups is not None
        #: Names in ``allowed_groups`` and ``group_names`` that are not SIDs: the
        #: directory must resolve them.
        self.names = tuple(
            dict.fromkeys(g for g in (*(s.allowed_groups or ()), *s.group_names) if not is_sid(g))
        )
        if not self.names:
            self.set_names({})

    def set_names(self, resolved: Mapping[str, str]) -> None:
        """Take the directory's answer for :attr:`names` (name → SID). Every name must be
        there: a group check that silently lost a name would keep its members out, or
        worse, would be skipped."""
        missing = [n for n in self.names if n not in resolved]
        if missing:
            raise ConfigurationError(
                f"kerberos setting 'allowed_groups'/'group_names': group {missing[0]!r} not "
                "found in the directory"
            )
        names: dict[str, str] = {}
        for name in self.names:
            sid = canonical_sid(resolved[name])
            if names.setdefault(group_key(name), sid) != sid:
                raise ConfigurationError(
                    f"kerberos setting 'allowed_groups'/'group_names': {name!r} and another "
                    "name that differs only in case are different groups: write one as a SID"
                )
        groups = None
        if self._allowed_groups is not None:
            groups = frozenset(
                names[group_key(g)] if group_key(g) in names else canonical_sid(g)
                for g in self._allowed_groups
            )
        with self._lock:
            self._names, self.groups = names, groups

    def sid_of(self, name: str) -> str | None:
        """The SID of a group name resolved at start-up, else ``None``."""
        return self._names.get(group_key(name))

    def named_sids(self) -> frozenset[str]:
        """The SIDs the settings name: what a session cookie keeps when it cannot keep
        all of a user's groups."""
        return frozenset(self._names.values()) | (self.groups or frozenset())

    def refusal(self, principal: str) -> Reason | None:
        """The checks on the name: why ``principal`` may not log in, or ``None``."""
        realm = principal.rpartition("@")[2]
        if self.realms is not None and realm not in self.realms:
            return "foreign-realm"
        if self._check_principals and not self._allowed(principal):
            return "forbidden"
        return None

    def claims_refusal(self, claims: Claims) -> Reason | None:
        """The checks on the ticket's claims: ``weak-authentication`` without a required
        indicator, ``not-in-group`` outside every allowed group, else ``None``."""
        if self._indicators is not None and self._indicators.isdisjoint(claims.indicators):
            return "weak-authentication"
        groups = self.groups
        if self._allowed_groups is not None:
            if groups is None or groups.isdisjoint(claims.groups):
                return "not-in-group"
        return None

    def _allowed(self, principal: str) -> bool:
        if principal in self._exact:
            return True
        # Case matters in Kerberos names: fnmatchcase, never fnmatch.
        return any(fnmatch.fnmatchcase(principal, pattern) for pattern in self._patterns)


def _is_pattern(principal: str) -> bool:
    return any(c in principal for c in "*?[")
