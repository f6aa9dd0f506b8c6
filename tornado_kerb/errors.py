"""Exceptions raised by tornado_kerb.

GSSAPI and krb5 errors are translated into these in one place (:mod:`tornado_kerb._gss`);
the messages are meant for the server log, never for the response body.
"""

from __future__ import annotations

from .reasons import Reason


class KerberosError(Exception):
    """Base class for every error tornado_kerb raises."""


class ConfigurationError(KerberosError, ValueError):
    """The ``kerberos`` application settings are invalid."""


class DirectoryUnavailable(ConfigurationError):
    """The directory (a domain controller, or its KDC) could not be reached: try later."""


class KeytabError(KerberosError):
    """The service keytab is missing, unreadable or holds no usable key."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"keytab {path}: {why}")
        self.path = path
        self.why = why


class GSSProxyUnavailable(KeytabError):
    """GSS-Proxy (``gssproxy``), which holds our keytab, is not answering on its socket."""

    def __init__(self, socket: str, why: str) -> None:
        KerberosError.__init__(self, f"GSS-Proxy at {socket}: {why}")
        self.path = socket
        self.why = why


class LoginError(KerberosError):
    """A login did not succeed; ``reason`` is a short word for the log, ``detail`` more."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class AuthenticationFailed(LoginError):
    """The client's credentials were not accepted (the answer is 401)."""


class KDCUnavailable(LoginError):
    """A password could not be checked: no KDC answered, or too many logins wait (503)."""


class StoreUnavailable(KDCUnavailable):
    """The shared store (``store``, Redis) did not answer: password logins, which it
    counts, fail closed (503) until it does."""

    def __init__(self, detail: str) -> None:
        super().__init__("store-unavailable", detail)


class TooManyAttempts(LoginError):
    """Too many failed password logins for this user or from this address (429); the KDC
    was not asked. ``retry_after``: seconds until one may be tried again."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("too-many-attempts", f"retry after {retry_after}s")
        self.retry_after = retry_after


class Forbidden(LoginError):
    """The user is authenticated but not allowed here (the answer is 403)."""

    def __init__(self, reason: Reason, principal: str) -> None:
        super().__init__(reason, principal)
        self.principal = principal


class NoCredentials(KerberosError):
    """There are no credentials to act as the user: the client delegated none."""


class DelegationRefused(NoCredentials):
    """The KDC would not give us a ticket to ``target`` as the user (constrained
    delegation refused, or credentials that cannot reach it)."""

    def __init__(self, target: str, why: str) -> None:
        super().__init__(f"cannot act as the user towards {target}: {why}")
        self.target = target
        self.why = why


class LocalNameError(KerberosError):
    """krb5 could not map a principal to a local name (a broken ``auth_to_local`` rule)."""
