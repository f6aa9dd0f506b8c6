"""HTTP Basic with a Kerberos password, proven kpass-style against our own keytab.

A KDC that answers "password OK" proves nothing by itself: anyone who can answer in its
place (a spoofed KDC) would let everyone in. So the password's TGT is used to get a ticket
for *our* service, and that ticket must be accepted with our keytab, whose key only the
real KDC shares with us. Nothing here imports Tornado; every call may block on the KDC and
belongs in a worker thread.
"""

from __future__ import annotations

import re
import time
from typing import NamedTuple

import gssapi
import gssapi.raw
import krb5

from ._gss import translated
from ._header import decode_base64
from .claims import NONE, Claims, read_claims
from .errors import AuthenticationFailed
from .negotiate import Accepted, Acceptor

__all__ = ["NameForms", "default_realm", "parse_basic", "parse_user", "prove_password"]

_MAX_USER = 256
_MAX_PASSWORD = 1024
# One regex search, not a generator per character: this runs on every Basic request.
# C0, DEL and C1 (U+0080-U+009F: CSI is a terminal escape, NEL a line break).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# GSS_KRB5_NT_ENTERPRISE_NAME (MIT >= 1.17): "user@suffix", realm after a second "@".
_ENTERPRISE = gssapi.OID.from_int_seq("1.2.840.113554.1.2.2.6")


def default_realm() -> str | None:
    """krb5's default realm (``default_realm`` in krb5.conf), or ``None`` if there is none."""
    try:
        return krb5.get_default_realm(krb5.init_context()).decode()
    except krb5.Krb5Error:
        return None


class NameForms(NamedTuple):
    """The Active Directory forms of a Basic user name (``netbios_domain``,
    ``upn_suffixes``). With either set, every Basic name goes to the KDC as an enterprise
    name, which it maps to the account and canonicalises (``Alice`` ends as ``alice``)."""

    #: The NetBIOS domain name of ``DOMAIN\\user``; ``None``: that form is refused.
    netbios: str | None = None
    #: UPN suffixes accepted in ``user@suffix``, lower case.
    suffixes: frozenset[str] = frozenset()

    @property
    def enterprise(self) -> bool:
        return self.netbios is not None or bool(self.suffixes)


_MIT = NameForms()


def parse_basic(credentials: str, realm: str, forms: NameForms = _MIT) -> tuple[str, str]:
    """Decode ``Basic <base64(user:password)>`` into ``(principal, password)``.

    A bare user name gets ``@realm``; a name in any other realm is refused here, before
    the KDC sees it, or a client could make the server send AS requests (and DNS lookups)
    to a KDC of its choosing. With :class:`NameForms` (Active Directory), ``DOMAIN\\user``
    and ``user@suffix`` are accepted too, and the principal is an enterprise name
    (``user\\@suffix@REALM``, krb5's own spelling) that our realm's KDC maps. Raises
    :class:`AuthenticationFailed`.
    """
    raw = decode_base64(credentials)
    try:
        text = raw.decode("utf-8")  # RFC 7617's charset="UTF-8", what browsers send
    except UnicodeDecodeError:
        raise AuthenticationFailed("malformed", "credentials are not UTF-8") from None
    user, colon, password = text.partition(":")
    if not colon:
        raise AuthenticationFailed("malformed", "no user name")
    return parse_user(user, password, realm, forms)


def parse_user(user: str, password: str, realm: str, forms: NameForms = _MIT) -> tuple[str, str]:
    """``(principal, password)`` for a user name and password as typed (Basic's, or the
    sign-in form's); the checks and name forms of :func:`parse_basic`."""
    if not user:
        raise AuthenticationFailed("malformed", "no user name")
    if not password:
        raise AuthenticationFailed("empty-password")
    if len(user) > _MAX_USER or len(password) > _MAX_PASSWORD:
        raise AuthenticationFailed("malformed", "credentials too long")
    if _CONTROL.search(user) or _CONTROL.search(password):
        raise AuthenticationFailed("malformed", "control character in credentials")
    if forms.netbios is not None and user.count("\\") == 1:
        domain, _, user = user.partition("\\")
        if domain.casefold() != forms.netbios.casefold():
            raise AuthenticationFailed("foreign-realm", "a NetBIOS domain other than ours")
        if "@" in user:
            raise AuthenticationFailed("malformed", "bad user name")
    # "/" would name a service instance, "\\" escapes krb5's separators: neither belongs
    # in a user name typed into a browser.
    if "/" in user or "\\" in user:
        raise AuthenticationFailed("malformed", "'/' or '\\' in user name")
    name, at, user_realm = user.rpartition("@")
    if not at:
        name, user_realm = user, realm
    if not name or "@" in name:
        raise AuthenticationFailed("malformed", "bad user name")
    if forms.enterprise:
        # The realm in any case, or a UPN suffix: the KDC finds the account (AD's
        # implicit UPN is user@dns.domain) and says its canonical name.
        suffix = user_realm.lower()
        if suffix != realm.lower() and suffix not in forms.suffixes:
            raise AuthenticationFailed("foreign-realm", "a UPN suffix not ours")
        return f"{name}\\@{suffix}@{realm}", password
    if user_realm != realm:
        # Not quoted: whatever was typed there may be a password.
        raise AuthenticationFailed("foreign-realm", f"a realm other than {realm}")
    return f"{name}@{realm}", password


def prove_password(principal: str, password: str, acceptor: Acceptor) -> Accepted:
    """Prove ``password`` for ``principal``; blocks on two KDC round trips.

    Returns the user as our keytab saw them, with the password's credentials (a TGT in a
    private memory cache, freed with the object) as ``delegated_credentials``. Raises
    :class:`AuthenticationFailed` (reason ``kdc-not-trusted`` when the KDC accepted the
    password but its ticket failed our keytab), :class:`KDCUnavailable` or
    :class:`KeytabError`.
    """
    service = gssapi.Name(acceptor.service_principal(), gssapi.NameType.kerberos_principal)
    with translated("password"):
        if "\\@" in principal:
            # An enterprise name (see parse_basic): krb5 asks the KDC to canonicalise it.
            user, _, realm = principal.rpartition("@")
            name = gssapi.Name(f"{user.replace(chr(92), '')}@{realm}", _ENTERPRISE)
        else:
            name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
        acquired = gssapi.raw.acquire_cred_with_password(
            name, password.encode("utf-8"), usage="initiate", mechs=[gssapi.MechType.kerberos]
        )
        creds = gssapi.Credentials(acquired.creds)
        lifetime = acquired.lifetime
    with translated("ticket"):
        initiator = gssapi.SecurityContext(
            name=service, creds=creds, usage="initiate", mech=gssapi.MechType.kerberos, flags=0
        )
        token = initiator.step()
    if not token:
        raise AuthenticationFailed("rejected", "no AP-REQ for our service")
    try:
        accepted = acceptor.accept(token)
    except AuthenticationFailed as err:
        if err.reason == "bad-name":
            raise
        raise AuthenticationFailed("kdc-not-trusted", err.detail) from None
    expires = time.time() + lifetime if lifetime is not None else accepted.expires_at
    principal, found = accepted.principal, accepted.claims
    claims = found if isinstance(found, Claims) or found is None else read_claims(found, principal)
    claims = claims or NONE
    as_typed, _, realm = principal.rpartition("@")
    account = claims.account_name
    if account and account != as_typed and account.casefold() == as_typed.casefold():
        # AD matches names without case and leaves the ticket's as typed ("ALICE"): its
        # PAC, which the KDC signed, spells the account. Off the IOLoop, so it is free.
        principal = f"{account}@{realm}"
    # Through GSS-Proxy the password's credentials may be the daemon's handle, which a
    # thread's credential cache cannot hold (see Acceptor._step): not kept.
    kept = creds if acceptor.proxy is None else None
    return Accepted(principal, None, kept, expires, "password", False, claims)
