"""The authenticated user handed to request handlers as ``current_user``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import gssapi
import gssapi.raw

from .claims import NONE, Claims, read_claims
from .errors import ConfigurationError
from .pac import canonical_sid, is_sid

__all__ = ["KerberosUser"]

Mechanism = Literal["negotiate", "basic"]
#: What ``delegated_credentials`` hold: a TGT the client forwarded, the evidence for
#: constrained delegation (S4U2Proxy), a TGT from a Basic password, or nothing.
CredentialKind = Literal["forwarded", "constrained", "password", "none"]


@dataclasses.dataclass(frozen=True)
class KerberosUser:
    """Who made the request and how they proved it.

    ``principal`` (``alice@EXAMPLE.COM``), ``username`` (the local name, ``alice``),
    ``realm``, ``mechanism`` (``"negotiate"`` or ``"basic"``), ``expires_at`` (Unix time in
    seconds, when known: the end of the user's ticket), ``from_session`` (a session
    cookie let them in), ``channel_bound`` (the token was bound to this TLS connection).

    ``delegated_credentials`` is set when the handler may act as the user downstream
    (``credential_kind`` says how): the client delegated a ticket (Negotiate: the browser
    must be told to delegate, and the user's ticket must be forwardable, ``kinit -f``),
    the user gave a password (Basic), or constrained delegation (the ``s4u2proxy``
    setting, where the KDC allows it). They live as long as the request that brought
    them: once it finishes the guard drops them, and ``delegated_credentials`` reads
    ``None`` even on a user object kept elsewhere.

    ``groups`` (Active Directory: the group SIDs in the ticket's PAC) and ``indicators``
    (MIT, FreeIPA: how the user got the ticket) come from the KDC-signed ticket; a session
    user keeps those of the login. :meth:`in_group` takes a SID or a group name the
    guard resolved at start-up (``allowed_groups``, ``group_names``).
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
    #: The local name (``alice`` for ``alice@EXAMPLE.COM``): krb5.conf's ``auth_to_local``
    #: mapping, else the principal without its realm. Empty means "derive it that way".
    username: str = ""
    #: The login came from a session cookie, not from this request: there are no
    #: credentials to act with (``run_as_user`` needs a request with a fresh login, or
    #: constrained delegation with protocol transition: the ``s4u2proxy`` setting).
    from_session: bool = False
    #: What ``delegated_credentials`` hold: ``"forwarded"`` (the client delegated its
    #: TGT: any service), ``"constrained"`` (S4U2Proxy: only the services the KDC allows
    #: us), ``"password"`` (a Basic login's TGT) or ``"none"``. Reads ``"none"`` once the
    #: request has finished and the credentials are dropped.
    credential_kind: CredentialKind = dataclasses.field(default="none", compare=False)
    #: The Negotiate token was bound to this TLS connection (channel bindings, RFC 5929):
    #: it cannot have been replayed through another TLS channel.
    channel_bound: bool = False
    # The claims, or the accepted GSS name to read them from on first use (a fresh login
    # that nothing asked about pays nothing); and the guard's group-name lookup.
    _claims: Claims | gssapi.raw.Name | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    _sid_of: Callable[[str], str | None] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.username:
            object.__setattr__(
                self, "username", self.principal.rpartition("@")[0] or self.principal
            )

    @property
    def realm(self) -> str:
        """The principal's realm (empty when the name carries none)."""
        return self.principal.rpartition("@")[2] if "@" in self.principal else ""

    @property
    def claims(self) -> Claims:
        """Groups and authentication indicators, as the KDC signed them."""
        claims = self._claims
        if isinstance(claims, Claims):
            return claims
        claims = NONE if claims is None else read_claims(claims, self.principal)
        object.__setattr__(self, "_claims", claims)
        return claims

    @property
    def groups(self) -> frozenset[str]:
        """The user's group SIDs (``S-1-5-21-…-1104``) from the ticket's PAC: primary
        group, domain groups, extra SIDs and resource groups. Empty without a PAC (MIT
        realms)."""
        return self.claims.groups

    @property
    def indicators(self) -> tuple[str, ...]:
        """The ticket's authentication indicators (``otp``, ``pkinit``…), set by MIT and
        FreeIPA KDCs for how the user got it."""
        return self.claims.indicators

    def in_group(self, group: str) -> bool:
        """Whether the user is in ``group``: a SID, or a name (``DOMAIN\\web``,
        ``web@example.com``, ``web``) the guard resolved at start-up from
        ``allowed_groups`` or ``group_names``; any other name raises
        :class:`~tornado_kerb.ConfigurationError` rather than answer ``False``."""
        sid = canonical_sid(group) if is_sid(group) else None
        if sid is None:
            sid = self._sid_of(group) if self._sid_of is not None else None
            if sid is None:
                raise ConfigurationError(
                    f"group {group!r} was not resolved at start-up: list it in the kerberos "
                    "setting 'group_names' (or 'allowed_groups'), or pass its SID"
                )
        return sid in self.claims.groups

    def _forget_credentials(self) -> None:
        # The user object may outlive its request (an app keeps it somewhere): the
        # credentials must not, so the guard drops them when the request finishes.
        object.__setattr__(self, "delegated_credentials", None)
        object.__setattr__(self, "credential_kind", "none")
