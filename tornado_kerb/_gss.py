"""The one place where GSSAPI errors become tornado_kerb errors.

Minor codes from the krb5 mechanism are MIT ``com_err`` codes, reported unsigned. Codes that
pass through SPNEGO are renumbered per process by MIT's mechglue, so for tokens accepted via
SPNEGO only the message text says what went wrong; it feeds the log's reason word and nothing
else (every Negotiate failure is a 401 whatever its reason).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Literal

from gssapi.raw.exceptions import BadChannelBindingsError, DuplicateTokenError
from gssapi.raw.misc import GSSError

from .errors import AuthenticationFailed, KDCUnavailable, KeytabError
from .reasons import Reason

_KRB5 = 0x96C73A00  # ERROR_TABLE_BASE_krb5 (-1765328384) as an unsigned minor code

# KDC answers during a Basic login (AS and TGS exchanges), by code offset.
_PASSWORD_REASONS: dict[int, Reason] = {
    6: "unknown-user",  # KDC_ERR_C_PRINCIPAL_UNKNOWN
    7: "unknown-service",  # KDC_ERR_S_PRINCIPAL_UNKNOWN: our SPN is not in the KDC
    18: "revoked",  # KDC_ERR_CLIENT_REVOKED: disabled or locked out
    23: "password-expired",  # KDC_ERR_KEY_EXP
    24: "bad-password",  # KDC_ERR_PREAUTH_FAILED (principal requires preauth)
    31: "bad-password",  # KRB5KRB_AP_ERR_BAD_INTEGRITY (reply did not decrypt)
    37: "clock-skew",  # KRB5KRB_AP_ERR_SKEW
    154: "unknown-realm",  # KRB5_REALM_UNKNOWN
}
_KDC_UNREACHABLE = {156}  # KRB5_KDC_UNREACH
# The same, in MIT's words: through GSS-Proxy's interposer (as through SPNEGO) mechglue
# renumbers the minor codes, and only the text is left.
_PASSWORD_MESSAGES: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern), offset)
    for pattern, offset in (
        (r"cannot contact any kdc", 156),
        (r"client\b.*not found in kerberos database", 6),  # "Client 'x@R' not found..."
        (r"server\b.*not found in kerberos database", 7),
        (r"credentials have been revoked", 18),
        (r"password has expired", 23),
        (r"preauthentication failed", 24),
        (r"decrypt integrity check failed", 31),
        (r"clock skew too great", 37),
        (r"cannot find kdc for", 154),
    )
)

# Message fragments of MIT's krb5 error table, for tokens that came through SPNEGO.
_ACCEPT_REASONS: tuple[tuple[str, Reason], ...] = (
    # The two most common deployment mistakes, in MIT's current words.
    ("but not with enctype", "wrong-enctype"),  # "kvno 1 found in keytab but not with …"
    ("not found in keytab", "stale-keytab"),  # "kvno 2 not found in keytab; … out of date"
    ("does not match server principal", "wrong-service"),  # a name the keytab also holds
    ("replay", "replay"),
    ("expired", "expired"),
    ("skew", "clock-skew"),
    ("not yet valid", "not-yet-valid"),
    ("wrong principal", "wrong-service"),
    ("no key table entry", "wrong-service"),
    ("cannot find key", "wrong-service"),
    ("key version", "wrong-kvno"),
    ("integrity", "bad-key"),
    ("malformed", "malformed"),
    ("unsupported mechanism", "unsupported-mechanism"),
    ("invalid token", "malformed"),
)

Stage = Literal["accept", "password", "ticket"]


def describe(err: GSSError) -> str:
    """The error's GSS and mechanism messages on one line, for the log."""
    return " ".join(str(err).split())


def _offset(err: GSSError) -> int:
    minor = int(err.min_code or 0)
    if _KRB5 <= minor < _KRB5 + 256:
        return minor - _KRB5
    text = describe(err).lower()
    for pattern, offset in _PASSWORD_MESSAGES:
        if pattern.search(text):
            return offset
    return -1


def reason_for(err: GSSError, stage: Stage) -> Reason:
    """A short word for the log saying why ``stage`` failed."""
    # python-gssapi's classes first (they survive SPNEGO's renumbering), text last.
    if isinstance(err, BadChannelBindingsError):
        return "bad-bindings"
    if isinstance(err, DuplicateTokenError):
        return "replay"
    if stage != "accept":
        reason = _PASSWORD_REASONS.get(_offset(err))
        if reason:
            return reason
    text = describe(err).lower()
    for fragment, word in _ACCEPT_REASONS:
        if fragment in text:
            return word
    return "rejected"


def mechanism_message(detail: str) -> str:
    """MIT's own one-line reason from :func:`describe`'s text (after the minor code)."""
    return detail.rpartition("): ")[2] or detail


def translate(err: GSSError, stage: Stage) -> AuthenticationFailed | KDCUnavailable:
    """Our exception for ``err``, raised during ``stage``.

    ``accept`` errors come from a client's token; ``password`` and ``ticket`` errors come
    from the KDC during a Basic login, where "no KDC answered" is our problem (503) and
    everything else is the client's (401).
    """
    detail = describe(err)
    if stage != "accept" and _offset(err) in _KDC_UNREACHABLE:
        return KDCUnavailable("kdc-unreachable", detail)
    return AuthenticationFailed(reason_for(err, stage), detail)


def keytab_error(keytab: str, err: GSSError) -> KeytabError:
    """Our exception for acceptor credentials that could not be acquired from ``keytab``."""
    return KeytabError(keytab, describe(err))


@contextlib.contextmanager
def translated(stage: Stage) -> Iterator[None]:
    """Raise :func:`translate`'s exception for a :class:`GSSError` raised in the block."""
    try:
        yield
    except GSSError as err:
        raise translate(err, stage) from None
