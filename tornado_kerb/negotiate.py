"""SPNEGO/Kerberos acceptor: keytab checks, one set of acceptor credentials, token steps.

Nothing here imports Tornado; :class:`Acceptor` can serve any HTTP framework.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import NamedTuple

import gssapi
import gssapi.raw
from gssapi.raw.misc import GSSError

from ._gss import describe, keytab_error, translate
from ._header import decode_base64
from .claims import Claims, read_claims
from .delegation import ConstrainedDelegation
from .errors import AuthenticationFailed, GSSProxyUnavailable, KerberosError, KeytabError
from .gssproxy import NO_KEYTAB, STORE, GSSProxy
from .keytab import default_keytab, file_problem, inspect_keytab, keytab_path
from .user import CredentialKind

__all__ = ["Accepted", "Acceptor", "parse_negotiate"]

log = logging.getLogger(__name__)

# An NTLMSSP message inside Negotiate: Windows falls back to it when it has no ticket.
_NTLM_SIGNATURE = b"NTLMSSP\x00"
# GSS_C_CHANNEL_BOUND_FLAG (MIT >= 1.19): the initiator's bindings matched ours.
_CHANNEL_BOUND = 2048
# Refusals that mean "not this key": with several names, the next name's key is tried.
_ANOTHER_KEY = frozenset(
    {"wrong-service", "bad-key", "wrong-kvno", "wrong-enctype", "stale-keytab", "rejected"}
)
# GSS_KRB5_GET_CRED_IMPERSONATOR: whom constrained-delegation credentials act for us.
_IMPERSONATOR = gssapi.OID.from_int_seq("1.2.840.113554.1.2.2.5.14")


def parse_negotiate(credentials: str) -> bytes:
    """Decode the token of a ``Negotiate <base64>`` header; raises ``AuthenticationFailed``."""
    token = decode_base64(credentials)
    if not token:
        raise AuthenticationFailed("empty", "Negotiate header without a token")
    if token.startswith(_NTLM_SIGNATURE):
        raise AuthenticationFailed("ntlm", "client offered NTLM, not Kerberos")
    return token


class Accepted(NamedTuple):
    """The outcome of a complete acceptor step (a tuple: cheap on the hot path)."""

    principal: str
    #: Token for the client (mutual authentication), or ``None``.
    output_token: bytes | None
    delegated_credentials: gssapi.Credentials | None
    expires_at: float | None
    #: What ``delegated_credentials`` hold (see :class:`~tornado_kerb.KerberosUser`).
    credential_kind: CredentialKind = "none"
    #: The client bound its token to the TLS channel we passed bindings for.
    channel_bound: bool = False
    #: The accepted initiator name, to read groups and indicators from when asked (see
    #: :mod:`tornado_kerb.claims`), or claims already read.
    claims: Claims | gssapi.raw.Name | None = None


class Acceptor:
    """Accepts Kerberos tokens with the service keytab.

    Credentials are acquired on first use and then shared by every request and thread; MIT
    reads a file keytab on each accept, so keys added later (a rotated kvno) are used
    without a restart. If the keytab cannot be used, :meth:`accept` raises
    :class:`~tornado_kerb.KeytabError` and is tried again on the next call.
    """

    def __init__(
        self,
        keytab: str | None,
        service: str = "HTTP",
        hostname: str | None = None,
        *,
        s4u2proxy: bool = False,
        account: str | None = None,
        hostnames: tuple[str, ...] = (),
        gssproxy: GSSProxy | None = None,
        realm: str = "",
    ):
        #: The GSS-Proxy that holds our keys (``gssproxy``), or ``None``: the keytab.
        self.proxy = gssproxy
        # Through the proxy: a keytab that does not exist, so that nothing can read one.
        self.keytab = NO_KEYTAB if gssproxy is not None else keytab or default_keytab()
        self._realm = realm
        #: Several host names (``hostnames``): tickets for any of them are accepted, for
        #: no other name in the keytab; the request's ``Host`` picks whose key is tried
        #: first. Empty: the one ``hostname`` (or any ``service/`` key without it).
        self.hostnames = tuple(dict.fromkeys(((hostname,) if hostname else ()) + hostnames))
        if len(self.hostnames) < 2:
            self.hostnames = ()
        else:
            hostname = None  # delegation acts as one principal: the account's, or none
        #: Constrained delegation (S4U2Proxy): initiating credentials of our own, fetched
        #: in the background; ``None`` when the setting is off.
        self.delegation = (
            ConstrainedDelegation(self.keytab, service, hostname, account) if s4u2proxy else None
        )
        #: The keytab's file name (``FILE:`` stripped), or ``None`` for non-file keytabs
        #: and through GSS-Proxy.
        self.path = keytab_path(self.keytab) if gssproxy is None else None
        self._service = service
        self._hostname = hostname
        # "HTTP@" (no host) makes MIT accept HTTP/<any host> from the keytab and nothing
        # else: without a name it would accept a ticket for any key in it (host/, nfs/…).
        self._name = gssapi.Name(f"{service}@{hostname or ''}", gssapi.NameType.hostbased_service)
        #: Name users by the account their ticket's PAC names (Active Directory), not as
        #: the ticket spells them: costs a PAC read per login, so the guard turns it on
        #: only with AD settings. Enterprise names are mapped either way.
        self.canonical_names = False
        self._lock = threading.Lock()
        self._creds: gssapi.Credentials | None = None
        self._by_host: dict[str, gssapi.Credentials] = {}
        self._proxy_hosts: frozenset[str] = frozenset()
        self._principal = ""

    def credentials(self) -> gssapi.Credentials:
        """The shared acceptor credentials, acquired on first use."""
        creds = self._creds
        if creds is None:
            with self._lock:
                if self._creds is None:
                    self._creds = self._acquire()
                creds = self._creds
        return creds

    def service_principal(self) -> str:
        """A principal of ours from the keytab, for proving Basic passwords against."""
        self.credentials()
        return self._principal

    def accept(
        self,
        token: bytes,
        bindings: gssapi.raw.ChannelBindings | None = None,
        host: str | None = None,
    ) -> Accepted:
        """Run one acceptor step; the context must complete in this single step.

        With ``bindings`` a token bound to another channel fails (``bad-bindings``); one
        bound to none is accepted with ``channel_bound`` false (MIT >= 1.19). ``host``:
        the request's host name, whose key is tried first when there are several."""
        creds = self.credentials()
        if self.hostnames and self.proxy is None:
            return self._accept_any(token, bindings, host)
        return self._step(token, creds, bindings)

    def _check_target(self, context: gssapi.raw.SecurityContext) -> None:
        # GSS-Proxy accepts a ticket for any key in its keytab, whatever name we acquired
        # for (measured: host/ and other HTTP/ keys got in): the name is checked here.
        try:
            target = gssapi.raw.inquire_context(
                context,
                initiator_name=False,
                target_name=True,
                lifetime=False,
                mech=False,
                flags=False,
                locally_init=False,
                complete=False,
            ).target_name
            name = "" if target is None else gssapi.raw.display_name(target).name.decode()
        except (GSSError, UnicodeDecodeError):
            raise AuthenticationFailed("wrong-service", "no target name") from None
        spn, _, realm = name.rpartition("@")
        service, _, host = spn.partition("/")
        if (
            service != self._service
            or host.lower() not in self._proxy_hosts
            or (self._realm and realm != self._realm)
        ):
            raise AuthenticationFailed("wrong-service", f"a ticket for {name}, not ours")

    def _step(
        self,
        token: bytes,
        creds: gssapi.Credentials,
        bindings: gssapi.raw.ChannelBindings | None,
    ) -> Accepted:
        if self.delegation is not None:
            # Until our own TGT is there (or while the KDC is away): no constrained
            # delegation for this login, but a login all the same.
            creds = self.delegation.current() or creds
        try:
            # The raw call returns name, flags, lifetime and delegated credentials in one
            # go, and raises at once; the high-level SecurityContext may defer an error to
            # the next property read, and each read costs another inquiry (measured: the
            # whole accept is ~40% cheaper this way).
            result = gssapi.raw.accept_sec_context(
                token, acceptor_creds=creds, channel_bindings=bindings
            )
            if result.more_steps:
                raise AuthenticationFailed("continue-needed", "multi-step SPNEGO")
            if self.proxy is not None:
                self._check_target(result.context)
            name = gssapi.raw.display_name(result.initiator_name).name
        except GSSError as err:
            self._check_still_readable()
            raise translate(err, "accept") from None
        try:
            principal = name.decode()
        except UnicodeDecodeError:
            # Replacing bad bytes could make two principals look alike: refuse instead.
            raise AuthenticationFailed("bad-name", "principal is not UTF-8") from None
        claims: Claims | gssapi.raw.Name = result.initiator_name
        if self.canonical_names or "\\@" in principal:
            # AD leaves the client's name in the ticket as the client asked for it: any
            # case ("ALICE"), stray spaces, an enterprise name (user@upn.suffix). The PAC,
            # signed by the KDC, names the account: sessions, caches, allowed_principals,
            # the handler's own checks and the log all see that one name.
            claims = read_claims(result.initiator_name, principal)
            if claims.account_name:
                principal = f"{claims.account_name}@{principal.rpartition('@')[2]}"
            elif "\\@" in principal:
                # No PAC (the account has NO_AUTH_DATA_REQUIRED): nothing says whose UPN.
                raise AuthenticationFailed("bad-name", "an enterprise name no PAC maps")
        delegated = None
        kind: CredentialKind = "none"
        if (
            result.delegated_creds is not None
            and int(result.flags) & gssapi.RequirementFlag.delegate_to_peer
            # GSS-Proxy's handles cannot become a thread's credential cache: stored, they
            # leave a client library acting as the service itself (measured). Not kept.
            and self.proxy is None
        ):
            delegated = gssapi.Credentials(base=result.delegated_creds)
            kind = "forwarded"
            # With initiating credentials MIT hands back S4U2Proxy evidence when the client
            # forwarded nothing, and sets the delegate flag on it too: only the
            # impersonator (us) tells the two apart.
            if self.delegation is not None and gssapi.raw.inquire_cred_by_oid(
                delegated, _IMPERSONATOR
            ):
                kind = "constrained"
        # 0 is a ticket at its very end: expired now, not "never" (None means indefinite).
        expires = time.time() + result.lifetime if result.lifetime is not None else None
        bound = bindings is not None and bool(int(result.flags) & _CHANNEL_BOUND)
        return Accepted(principal, result.token, delegated, expires, kind, bound, claims)

    def _accept_any(
        self, token: bytes, bindings: gssapi.raw.ChannelBindings | None, host: str | None
    ) -> Accepted:
        # One set of credentials per name: MIT takes a ticket only for its acceptor's
        # name (or a name with the same key). The request's Host first, then the others.
        first = self._by_host.get((host or "").lower())
        tried = [first] if first is not None else []
        tried += [c for c in self._by_host.values() if c is not first]
        failure: KerberosError | None = None
        for creds in tried:
            try:
                return self._step(token, creds, bindings)
            except AuthenticationFailed as err:
                if err.reason not in _ANOTHER_KEY:
                    raise
                failure = failure or err
        raise failure or AuthenticationFailed("wrong-service", "no acceptor name")

    def _check_still_readable(self) -> None:
        # A keytab removed or made unreadable after start-up (or GSS-Proxy gone) fails
        # every accept: say so loudly instead of blaming each client.
        if self.proxy is not None:
            try:
                self.proxy.probe()
            except GSSProxyUnavailable:
                with self._lock:
                    self._creds = None  # acquired again once it is back
                raise
        elif self.path is not None and not os.access(self.path, os.R_OK):
            with self._lock:
                self._creds = None
            raise KeytabError(self.path, file_problem(self.path) or "cannot be read")

    def _acquire(self) -> gssapi.Credentials:
        if self.proxy is not None:
            return self._acquire_through_proxy(self.proxy)
        # Check first: krb5's own errors for a bad keytab name no file and no principal.
        report = inspect_keytab(self.keytab)
        self._principal = report.check(self._service, self._hostname)
        try:
            if self.hostnames:
                by_host = {}
                for host in self.hostnames:
                    report.check(self._service, host)  # each one: say which is missing
                    name = gssapi.Name(f"{self._service}@{host}", gssapi.NameType.hostbased_service)
                    by_host[host.lower()] = gssapi.Credentials(
                        name=name, usage="accept", store={"keytab": self.keytab}
                    )
                self._by_host = by_host
                creds = next(iter(by_host.values()))
            else:
                creds = gssapi.Credentials(
                    name=self._name, usage="accept", store={"keytab": self.keytab}
                )
        except GSSError as err:
            raise keytab_error(self.keytab, err) from None
        log.info("acceptor credentials acquired from keytab %s", self.keytab)
        return creds

    def _acquire_through_proxy(self, proxy: GSSProxy) -> gssapi.Credentials:
        # No keytab to list: the names are the settings' (one is required with gssproxy).
        # GSS-Proxy's credentials take a ticket for any key it holds, whatever the name
        # asked for: one set serves every host name, and _check_target picks the names.
        proxy.probe()
        hosts = self.hostnames or (str(self._hostname),)
        name = gssapi.Name(f"{self._service}@{hosts[0]}", gssapi.NameType.hostbased_service)
        try:
            creds = gssapi.Credentials(name=name, usage="accept", store=STORE)
        except GSSError as err:
            raise GSSProxyUnavailable(
                proxy.socket,
                f"no acceptor credentials ({describe(err)}): does gssproxy.conf have a "
                f"service for uid {os.geteuid()}?",
            ) from None
        self._proxy_hosts = frozenset(host.lower() for host in hosts)
        at = f"@{self._realm}" if self._realm else ""
        self._principal = f"{self._service}/{hosts[0]}{at}"
        log.info("acceptor credentials acquired through GSS-Proxy at %s", proxy.socket)
        return creds
