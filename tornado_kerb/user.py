"""The authenticated user handed to request handlers as ``current_user``."""

from __future__ import annotations

import dataclasses
from typing import Literal

import gssapi

__all__ = ["KerberosUser"]

Mechanism = Literal["negotiate", "basic"]


@dataclasses.dataclass(frozen=True)
class KerberosUser:
    """Who made the request and how they proved it.

    ``delegated_credentials`` is set when the handler may act as the user downstream: the
    client delegated a ticket (Negotiate), or the user gave a password (Basic). Treat it
    like the password itself: do not keep it beyond the request that needs it.
    """

    #: Full principal name, ``user@REALM``.
    principal: str
    #: ``"negotiate"`` (SPNEGO/Kerberos) or ``"basic"`` (password proven against the KDC).
    mechanism: Mechanism
    #: Credentials to act as the user, or ``None`` when the client delegated nothing.
    delegated_credentials: gssapi.Credentials | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    #: Unix time until which GSSAPI holds this login valid, when known: the end of the
    #: user's ticket (MIT adds its clock-skew allowance, 5 minutes by default).
    expires_at: float | None = None

    @property
    def username(self) -> str:
        """The principal without its realm (``alice`` for ``alice@EXAMPLE.COM``)."""
        return self.principal.rpartition("@")[0] or self.principal

    @property
    def realm(self) -> str:
        """The principal's realm (empty when the name carries none)."""
        return self.principal.rpartition("@")[2] if "@" in self.principal else ""
