"""krb5_aname_to_localname through ctypes, against a real k5test realm's krb5.conf.

No KDC is needed: the mapping reads only krb5.conf. A krb5 context reads KRB5_CONFIG once,
when it is made, and the module keeps one context per thread, so every mapping here runs
in a thread of its own: a test never sees a context made for another test's krb5.conf.
"""

from __future__ import annotations

import concurrent.futures
import gc
import random
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import k5test
import pytest

from tornado_kerb import _localname
from tornado_kerb._localname import aname_to_localname
from tornado_kerb.errors import KerberosError, LocalNameError

T = TypeVar("T")

# k5test fills the file through string.Template: "$$" is a literal "$", and each list item
# becomes one "auth_to_local = ..." line, in order.
RULES = [
    "RULE:[2:$$1_$$2@$$0](.*@KRBTEST\\.COM)s/@.*//",
    "RULE:[1:$$1@$$0](.*@OTHER\\.ORG)s/@.*/_other/",
    "DEFAULT",
]

EXPECTED = {
    "alice@KRBTEST.COM": "alice",  # DEFAULT
    "svc/web@KRBTEST.COM": "svc_web",  # first rule
    "bob@OTHER.ORG": "bob_other",  # second rule
    "dave@KRBTEST.COM": "david",  # auth_to_local_names
    "carol@ELSEWHERE.NET": None,  # nothing matches
    "alice/admin@KRBTEST.COM": "alice_admin",  # the first rule catches any two parts
}


@pytest.fixture(scope="module")
def k5() -> Iterator[k5test.K5Realm]:
    realm = k5test.K5Realm(
        portbase=random.choice(range(20000, 32000, 10)),
        create_kdb=False,
        krb5_conf={
            "realms": {"$realm": {"auth_to_local": RULES, "auth_to_local_names": {"dave": "david"}}}
        },
    )
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in realm.env.items():
                mp.setenv(key, value)
            yield realm
    finally:
        realm.stop()


def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a new thread (so with a new krb5 context) and return or raise its result."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def use_conf(k5: k5test.K5Realm, mp: pytest.MonkeyPatch, name: str, conf: Any) -> None:
    """Point KRB5_CONFIG at a second krb5.conf of the realm (its defaults plus ``conf``)."""
    mp.setenv("KRB5_CONFIG", k5.special_env(name, False, krb5_conf=conf)["KRB5_CONFIG"])


def test_rendered_rules(k5: k5test.K5Realm) -> None:
    with open(k5.env["KRB5_CONFIG"]) as conf:
        text = conf.read()
    assert "\tauth_to_local = RULE:[2:$1_$2@$0](.*@KRBTEST\\.COM)s/@.*//\n" in text
    assert "\tauth_to_local = DEFAULT\n" in text


@pytest.mark.parametrize(("principal", "local"), EXPECTED.items())
def test_mapping(k5: k5test.K5Realm, principal: str, local: str | None) -> None:
    assert in_thread(aname_to_localname, principal) == local


def test_names_ignore_the_realm(k5: k5test.K5Realm) -> None:
    # MIT looks auth_to_local_names up by the name without its realm: pinned here because
    # it surprises (dave of any realm becomes david).
    assert in_thread(aname_to_localname, "dave@ELSEWHERE.NET") == "david"


def test_no_realm_means_default_realm(k5: k5test.K5Realm) -> None:
    assert in_thread(aname_to_localname, "alice") == "alice"


@pytest.mark.parametrize(
    "principal",
    ["", "a@b@c", "trailing\\", "alice\0@OTHER.ORG", "@KRBTEST.COM", "\udcff@KRBTEST.COM"],
)
def test_unparseable_is_an_error(k5: k5test.K5Realm, principal: str) -> None:
    with pytest.raises(LocalNameError):
        in_thread(aname_to_localname, principal)


def test_error_is_a_kerberos_error() -> None:
    assert issubclass(LocalNameError, KerberosError)


def test_too_long(k5: k5test.K5Realm) -> None:
    with pytest.raises(LocalNameError, match="longer than"):
        in_thread(aname_to_localname, "a" * 2000 + "@KRBTEST.COM")


def test_without_auth_to_local(k5: k5test.K5Realm) -> None:
    with pytest.MonkeyPatch.context() as mp:
        use_conf(k5, mp, "plain", None)
        assert in_thread(aname_to_localname, "alice@KRBTEST.COM") == "alice"
        assert in_thread(aname_to_localname, "alice/admin@KRBTEST.COM") is None
        # DEFAULT lets a second component through only when it is the realm itself.
        assert in_thread(aname_to_localname, "alice/KRBTEST.COM@KRBTEST.COM") == "alice"
        assert in_thread(aname_to_localname, "bob@OTHER.ORG") is None


def test_broken_rule(k5: k5test.K5Realm) -> None:
    with pytest.MonkeyPatch.context() as mp:
        use_conf(k5, mp, "broken", {"realms": {"$realm": {"auth_to_local": "RULE:[1:$$1"}}})
        with pytest.raises(LocalNameError):
            in_thread(aname_to_localname, "alice@KRBTEST.COM")


def test_unknown_rule_type(k5: k5test.K5Realm) -> None:
    with pytest.MonkeyPatch.context() as mp:
        use_conf(k5, mp, "unknown", {"realms": {"$realm": {"auth_to_local": "NOSUCH:x"}}})
        with pytest.raises(LocalNameError):
            in_thread(aname_to_localname, "alice@KRBTEST.COM")


def test_unreadable_krb5_conf(k5: k5test.K5Realm, tmp_path: Any) -> None:
    bad = tmp_path / "krb5.conf"
    bad.write_text("[libdefaults\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KRB5_CONFIG", str(bad))
        with pytest.raises(LocalNameError, match="krb5_init_context"):
            in_thread(aname_to_localname, "alice@KRBTEST.COM")


def test_concurrent_threads_agree(k5: k5test.K5Realm) -> None:
    cases = list(EXPECTED.items()) * 50
    barrier = threading.Barrier(8)

    def work(seed: int) -> list[tuple[str, str | None]]:
        mine = cases[:]
        random.Random(seed).shuffle(mine)
        barrier.wait()
        return [(principal, aname_to_localname(principal)) for principal, _ in mine]

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(8)))
    for result in results:
        assert sorted(result, key=str) == sorted(cases, key=str)


def test_context_per_thread_reused_and_freed(k5: k5test.K5Realm) -> None:
    def two_calls() -> tuple[weakref.ref[Any], bool]:
        aname_to_localname("alice@KRBTEST.COM")
        first = _localname._local.holder
        aname_to_localname("bob@OTHER.ORG")
        return weakref.ref(first), _localname._local.holder is first

    ref, reused = in_thread(two_calls)
    gc.collect()
    assert reused
    assert ref() is None  # the thread ended, so its context was freed
