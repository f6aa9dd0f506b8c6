"""What a ticket says of its user beyond the name: groups (from an AD PAC) and
authentication indicators (MIT, FreeIPA), read from the name GSSAPI accepted.

Only attributes GSSAPI marks *authenticated* count: the KDC signed them. Nothing here
imports Tornado.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Collection, Iterable

import gssapi.raw
from gssapi.raw.misc import GSSError

from .pac import PacError, is_sid, parse_logon_info

__all__ = ["Claims", "decode_groups", "encode_groups", "read_claims"]

log = logging.getLogger(__name__)

_LOGON_INFO = b"urn:mspac:logon-info"
_INDICATORS = b"auth-indicators"
_DELTA = re.compile(r"[0-9a-z]{1,7}")


@dataclasses.dataclass(frozen=True)
class Claims:
    """A login's groups and authentication indicators."""

    #: Group SIDs from the PAC's logon info: primary group, domain groups, extra SIDs,
    #: resource groups. Empty without a PAC (MIT realms).
    groups: frozenset[str] = frozenset()
    #: Authentication indicators the KDC set on the ticket (``otp``, ``pkinit``…).
    indicators: tuple[str, ...] = ()
    #: The PAC's NetBIOS domain and account name (``""`` without a PAC).
    logon_domain: str = ""
    account_name: str = ""
    #: ``False`` when a session cookie could keep only some of the login's groups: the
    #: ones the guard's settings name (see :func:`encode_groups`).
    complete: bool = True


NONE = Claims()


def read_claims(name: gssapi.raw.Name, principal: str = "") -> Claims:
    """The claims on an accepted initiator name. A PAC that cannot be read gives no
    groups and a log line, never an exception: a user without groups is simply let in
    nowhere that needs one."""
    try:
        attrs = gssapi.raw.inquire_name(name, mech_name=True, attrs=True).attrs or ()
    except GSSError as err:
        log.info("cannot inquire the ticket of %s: %s", principal, err.gen_message())
        return NONE
    groups: frozenset[str] = frozenset()
    domain = account = ""
    indicators: tuple[str, ...] = ()
    if _LOGON_INFO in attrs:
        value = _authenticated(name, _LOGON_INFO, principal)
        if value:
            try:
                info = parse_logon_info(value[0])
            except PacError as err:
                log.warning("unreadable PAC logon info for %s (no groups): %s", principal, err)
            else:
                groups = frozenset(info.groups)
                domain, account = info.logon_domain, info.account_name
    if _INDICATORS in attrs:
        values = _authenticated(name, _INDICATORS, principal)
        indicators = tuple(v.decode("utf-8", "replace") for v in values)
    if not groups and not indicators and not domain:
        return NONE
    return Claims(groups, indicators, domain, account)


def _authenticated(name: gssapi.raw.Name, attr: bytes, principal: str) -> list[bytes]:
    try:
        result = gssapi.raw.get_name_attribute(name, attr)
    except GSSError as err:
        log.info("cannot read %s of %s: %s", attr.decode(), principal, err.gen_message())
        return []
    if not result.authenticated:
        # Unsigned: anyone could have put it there.
        log.info("ignoring unauthenticated %s of %s", attr.decode(), principal)
        return []
    return list(result.values)


# -- in a session cookie -----------------------------------------------------------------

#: Longest group list a session cookie carries: browsers drop cookies over 4096 bytes,
#: and Tornado's signed format base64-encodes the payload (4/3) and adds ~100 bytes.
GROUPS_BUDGET = 2600


def encode_groups(groups: Collection[str], keep: Collection[str] = ()) -> str:
    """The groups, compactly: SIDs sharing a prefix (the domain SID) as
    ``prefix:rid.rid…``, relative IDs as base-36 deltas of the sorted list, prefixes
    joined by ``;``. 300 groups of one domain take about 900 characters.

    Over :data:`GROUPS_BUDGET` (a user in a thousand groups), only the groups in
    ``keep`` (the ones the guard's settings name) are written, after a ``!`` saying the
    list is incomplete."""
    text = _encode(groups)
    if len(text) <= GROUPS_BUDGET:
        return text
    return "!" + _encode(set(groups) & set(keep))


def _encode(groups: Iterable[str]) -> str:
    by_prefix: dict[str, list[int]] = {}
    for sid in groups:
        prefix, _, rid = sid.rpartition("-")
        by_prefix.setdefault(prefix, []).append(int(rid))
    parts = []
    for prefix in sorted(by_prefix):
        last = 0
        deltas = []
        for value in sorted(set(by_prefix[prefix])):
            deltas.append(_base36(value - last))
            last = value
        parts.append(f"{prefix}:{'.'.join(deltas)}")
    return ";".join(parts)


def decode_groups(text: str) -> tuple[frozenset[str], bool] | None:
    """``(groups, complete)`` from :func:`encode_groups`' text, or ``None`` when it is
    malformed (the cookie is signed, so only a bug or a leaked secret gets here)."""
    complete = not text.startswith("!")
    text = text if complete else text[1:]
    if not text:
        return frozenset(), complete
    groups = set()
    try:
        for part in text.split(";"):
            prefix, colon, rids = part.partition(":")
            if not colon or not is_sid(prefix + "-0"):
                return None
            value = 0
            for delta in rids.split("."):
                if not _DELTA.fullmatch(delta):
                    return None
                value += int(delta, 36)
                groups.add(f"{prefix}-{value}")
    except ValueError:
        return None
    return frozenset(groups), complete


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out
