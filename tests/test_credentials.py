"""Acting as a user in one thread: per-thread default caches, never the environment."""

from __future__ import annotations

import concurrent.futures
import os
import threading

import gssapi
import krb5
import pytest

from tests.conftest import Realm, User
from tornado_kerb import NoCredentials
from tornado_kerb.credentials import acting_as, call_as


def default_name() -> str:
    return str(gssapi.Credentials(usage="initiate").name)


def ticket_for_host() -> bool:
    target = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)
    return bool(gssapi.SecurityContext(name=target, usage="initiate").step())


def creds_of(ccache: str | None) -> gssapi.Credentials:
    store = {"ccache": ccache or os.environ["KRB5CCNAME"]}
    return gssapi.Credentials(usage="initiate", store=store)


def test_eight_threads_two_users_all_inside_at_once(realm: Realm, alice: User) -> None:
    users = [(realm.user, creds_of(None)), (alice.principal, creds_of(alice.ccache))] * 4
    everyone_inside = threading.Barrier(len(users), timeout=30)
    env_before = dict(os.environ)

    def work(who: str, creds: gssapi.Credentials) -> tuple[str, str, str, bool, str]:
        with acting_as(creds) as ccache:
            # Every thread holds its user's cache as its default at this point.
            everyone_inside.wait()
            inside = default_name()
            ticket = ticket_for_host()
        return who, inside, default_name(), ticket, ccache

    with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
        results = list(pool.map(lambda u: work(*u), users))
    for who, inside, after, ticket, _ in results:
        assert inside == who
        assert ticket
        assert after == realm.user  # back to the environment's cache, whoever it was
    assert len({ccache for *_, ccache in results}) == len(users)  # private, never shared
    assert dict(os.environ) == env_before


def test_cache_is_destroyed_and_default_restored_when_fn_raises(realm: Realm, alice: User) -> None:
    seen: list[str] = []

    def boom() -> None:
        seen.append(default_name())
        raise ValueError("the app's own error")

    with pytest.raises(ValueError, match="the app's own error"):
        call_as(creds_of(alice.ccache), boom)
    assert seen == [alice.principal]
    assert default_name() == realm.user

    with acting_as(creds_of(alice.ccache)) as name:
        pass
    ctx = krb5.init_context()
    with pytest.raises(krb5.Krb5Error):
        krb5.cc_get_principal(ctx, krb5.cc_resolve(ctx, name.encode()))


def test_credentials_that_cannot_act_raise_our_exception(realm: Realm) -> None:
    # Acceptor credentials from a keytab hold no ticket to initiate with.
    keytab_only = gssapi.Credentials(usage="accept", store={"keytab": realm.keytab})
    with pytest.raises(NoCredentials, match="cannot be used"):
        call_as(keytab_only, default_name)
    assert default_name() == realm.user  # the thread is left as it was
