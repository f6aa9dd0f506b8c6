"""Every outcome of a login, as one stable, typed code: the one place that defines them.

``Reason`` is the short word an error carries (``bad-password``); ``Outcome`` is the
stable code an app counts (``basic.bad-password``): ``<where>.<what>``, where ``where`` is
``negotiate``, ``basic``, ``session``, ``request`` (the header itself), ``authz`` (a known
user not let in), ``kdc`` or ``keytab``. :meth:`KerberosGuard.on_outcome` receives them.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["OUTCOMES", "Outcome", "Reason", "outcome_for"]

Reason = Literal[
    # the request itself
    "no-credentials",
    "unsupported-scheme",
    "malformed",
    "too-large",
    "empty",
    "login-requested",
    "cross-site",
    # Negotiate tokens
    "ntlm",
    "continue-needed",
    "bad-name",
    "replay",
    "expired",
    "not-yet-valid",
    "clock-skew",
    "stale-keytab",
    "wrong-enctype",
    "wrong-service",
    "wrong-kvno",
    "bad-key",
    "unsupported-mechanism",
    "bad-bindings",
    "unbound",
    "rejected",
    # Basic
    "insecure-transport",
    "basic-not-offered",
    "empty-password",
    "bad-password",
    "unknown-user",
    "unknown-service",
    "unknown-realm",
    "revoked",
    "password-expired",
    "kdc-not-trusted",
    "too-many-attempts",
    # who may in
    "forbidden",
    "foreign-realm",
    "not-in-group",
    "weak-authentication",
    # the KDC and the keytab
    "kdc-unreachable",
    "kdc-busy",
    "kdc-timeout",
    "store-unavailable",
    "closed",
    "unusable",
]

Outcome = Literal[
    "negotiate.ok",
    "basic.ok",
    "basic.cached",
    "session.ok",
    "request.no-credentials",
    "request.unsupported-scheme",
    "request.malformed",
    "request.too-large",
    "request.login-requested",
    "request.cross-site",
    "negotiate.malformed",
    "negotiate.ntlm",
    "negotiate.replay",
    "negotiate.expired",
    "negotiate.clock-skew",
    "negotiate.stale-keytab",
    "negotiate.wrong-enctype",
    "negotiate.wrong-service",
    "negotiate.bad-bindings",
    "negotiate.unbound",
    "negotiate.bad-token",
    "basic.malformed",
    "basic.insecure-transport",
    "basic.not-offered",
    "basic.bad-password",
    "basic.unknown-user",
    "basic.revoked",
    "basic.password-expired",
    "basic.clock-skew",
    "basic.foreign-realm",
    "basic.kdc-not-trusted",
    "basic.rejected",
    "basic.too-many-attempts",
    "form.bad-password",
    "form.too-many-attempts",
    "form.malformed",
    "form.rejected",
    "authz.forbidden",
    "authz.foreign-realm",
    "authz.not-in-group",
    "authz.weak-authentication",
    "kdc.unreachable",
    "kdc.busy",
    "kdc.timeout",
    "kdc.closed",
    "store.unavailable",
    "keytab.unusable",
]

#: Every outcome code, for documentation and for pre-creating metric labels.
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

_REQUEST = {"no-credentials", "unsupported-scheme", "too-large", "login-requested", "cross-site"}
_NEGOTIATE = {
    "malformed", "ntlm", "replay", "expired", "clock-skew", "stale-keytab", "wrong-enctype",
    "wrong-service", "bad-bindings", "unbound",
}  # fmt: skip
_BASIC = {
    "malformed", "insecure-transport", "bad-password", "unknown-user", "revoked",
    "password-expired", "clock-skew", "foreign-realm", "kdc-not-trusted", "too-many-attempts",
}  # fmt: skip
_FORM = {"bad-password", "too-many-attempts", "malformed"}
_PASSWORD_REFUSED = {"unknown-user", "revoked", "password-expired", "empty-password"}
_AUTHZ = {"foreign-realm", "not-in-group", "weak-authentication"}
_KDC = {"kdc-unreachable": "kdc.unreachable", "kdc-busy": "kdc.busy",
        "kdc-timeout": "kdc.timeout", "closed": "kdc.closed",
        "store-unavailable": "store.unavailable"}  # fmt: skip


def outcome_for(where: str, reason: str) -> Outcome:
    """The stable code for a refusal: ``where`` is the scheme that was tried
    (``negotiate``, ``basic``, ``form``: the sign-in form, or empty for none), or
    ``authz``/``kdc``/``keytab``."""
    code: str
    if where == "authz":
        code = f"authz.{reason}" if reason in _AUTHZ else "authz.forbidden"
    elif reason in _KDC:
        code = _KDC[reason]
    elif where == "keytab" or reason == "unusable":
        code = "keytab.unusable"
    elif reason in _REQUEST or (reason == "malformed" and where not in ("negotiate", "basic")):
        code = f"request.{reason}"
    elif where == "negotiate":
        code = f"negotiate.{reason}" if reason in _NEGOTIATE else "negotiate.bad-token"
    elif where == "form":
        reason = "bad-password" if reason in _PASSWORD_REFUSED else reason
        code = f"form.{reason}" if reason in _FORM else "form.rejected"
    elif where == "basic":
        if reason == "basic-not-offered":
            code = "basic.not-offered"
        elif reason in _BASIC:
            code = f"basic.{reason}"
        else:
            code = "basic.rejected"
    else:
        code = "request.malformed"
    # Every (where, reason) pair lands in OUTCOMES: tests/test_reasons.py checks them all.
    return code  # type: ignore[return-value]
