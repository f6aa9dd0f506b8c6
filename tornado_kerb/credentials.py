"""Acting as the user: their credentials become the default of one thread, for one call.

Recipes on the web set ``KRB5CCNAME`` in ``os.environ`` per request. The environment is
shared by every thread, so two concurrent requests act as whichever user wrote it last.
MIT krb5 keeps a default credential cache name *per thread* as well
(``gss_krb5_ccache_name``): :func:`acting_as` stores the user's credentials in a private
``MEMORY:`` cache, makes it the calling thread's default, and undoes both afterwards. Any
GSSAPI-using library called inside (libpq, requests-gssapi, ldap3, smbprotocol…) then
acts as the user, and nothing else in the process notices. Nothing here imports Tornado.
"""

from __future__ import annotations

import contextlib
import inspect
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import gssapi
import gssapi.raw
import krb5
from gssapi.raw.misc import GSSError

from ._gss import describe, translate
from .errors import DelegationRefused, KDCUnavailable, NoCredentials

__all__ = ["acting_as", "call_as", "reach"]

T = TypeVar("T")


@contextlib.contextmanager
def acting_as(creds: gssapi.Credentials) -> Iterator[str]:
    """Make ``creds`` the calling thread's default Kerberos credentials for the block.

    Yields the private cache's name. The cache is destroyed and the thread's default
    restored when the block ends, whether it returns or raises. Raises
    :class:`~tornado_kerb.NoCredentials` when ``creds`` cannot be stored (expired, say).
    Blocking: call it in a worker thread, never on the IOLoop.
    """
    # Unguessable: MEMORY caches are process-wide, found by name.
    name = f"MEMORY:tornado_kerb-{secrets.token_hex(16)}"
    try:
        try:
            creds.store(
                store={"ccache": name},
                usage="initiate",
                mech=gssapi.MechType.kerberos,
                overwrite=True,
            )
        except GSSError as err:  # expired, or not Kerberos credentials at all
            raise NoCredentials(f"the user's credentials cannot be used: {describe(err)}") from None
        # MIT's "previous" answer is the resolved default (never "none set"), so restoring
        # it would pin this pool thread to that name; None goes back to config/env.
        gssapi.raw.krb5_ccache_name(name.encode())
        yield name
    finally:
        gssapi.raw.krb5_ccache_name(None)
        _destroy(name)


def call_as(
    creds: gssapi.Credentials,
    fn: Callable[..., T],
    *args: Any,
    delegate_to: Iterable[str] = (),
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)`` with ``creds`` as this thread's default credentials.

    Before ``fn`` runs, a ticket to each service of ``delegate_to`` is fetched as the
    user (``"postgres@db.example.com"`` or ``"postgres/db.example.com@REALM"``) and kept
    in the user's cache for ``fn``; a service the KDC will not let us reach as the user
    raises :class:`~tornado_kerb.DelegationRefused` naming it, instead of an error from
    deep inside whatever client library ``fn`` uses.
    """
    targets = (delegate_to,) if isinstance(delegate_to, str) else delegate_to
    with acting_as(creds):
        for target in targets:
            reach(target)
        result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        # It would run later, elsewhere, with whatever credentials that thread has.
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise TypeError(f"{fn!r} returned an awaitable: acting as a user needs a plain function")
    return result


def reach(target: str) -> None:
    """Get a ticket to ``target`` with this thread's default credentials (cached there),
    or raise :class:`~tornado_kerb.DelegationRefused` saying why not."""
    if "/" in target or "@" not in target:
        name = gssapi.Name(target, gssapi.NameType.kerberos_principal)
    else:
        name = gssapi.Name(target, gssapi.NameType.hostbased_service)
    try:
        gssapi.SecurityContext(name=name, usage="initiate", mech=gssapi.MechType.kerberos).step()
    except GSSError as err:
        unreachable = translate(err, "ticket")
        if isinstance(unreachable, KDCUnavailable):  # the KDC's silence is not a refusal
            raise unreachable from None
        raise DelegationRefused(target, _why(err)) from None


def _why(err: GSSError) -> str:
    text = describe(err)
    if "fulfill requested option" in text or "KDC_ERR_BADOPTION" in text:
        # What MIT, AD and FreeIPA all answer when constrained delegation is refused.
        return (
            "the KDC refused constrained delegation (KDC_ERR_BADOPTION). Either this "
            "service may not delegate to that target (Active Directory: "
            "msDS-AllowedToDelegateTo; FreeIPA: a servicedelegationrule; MIT: "
            "krbAllowedToDelegateTo, LDAP back end only: MIT's default DB2 back end "
            "cannot do constrained delegation at all), or the user's ticket is not "
            "forwardable (for session users: protocol transition is not allowed, e.g. "
            "MIT's ok_to_auth_as_delegate), or the user may not be delegated at all (Active "
            "Directory: 'sensitive and cannot be delegated', Protected Users); resource-based "
            "delegation is set on the target instead (msDS-AllowedToActOnBehalfOfOtherIdentity)"
        )
    return text


def _destroy(name: str) -> None:
    ctx = krb5.init_context()
    try:
        krb5.cc_destroy(ctx, krb5.cc_resolve(ctx, name.encode()))
    except krb5.Krb5Error:  # never created (store failed): nothing to destroy
        pass
