"""The ``store`` setting (issue 18): guessing limits and ended sessions shared by processes.

The same contract runs against :class:`MemoryStore` (one process) and :class:`RedisStore`
(a real ``redis-server``, private to the module, emptied between tests); then what only a
shared store does: two stores (as two processes would hold) meeting one limit and seeing
each other's ended sessions, and Redis going away and coming back. Windows slide on the
real clock (Redis's ``TIME`` for Redis): a one-second window, waited out by polling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from tests.conftest import require
from tornado_kerb import KerberosSettings
from tornado_kerb.errors import ConfigurationError, StoreUnavailable
from tornado_kerb.limits import LoginLimitOptions
from tornado_kerb.store import MemoryStore, RedisStore, Store, make_store, redact_url
from tornado_kerb.testing.redis import PrivateRedis, redis_available

T = TypeVar("T")
PREFIX = "tornado_kerb:"
WAIT = 15.0  # seconds a test waits for the subscriber before failing


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateRedis]:
    """One redis-server for the module (Redis is a core path: missing, the run fails,
    unless TORNADO_KERB_NO_REDIS=1 skips these tests)."""
    require(redis_available(), "TORNADO_KERB_NO_REDIS", module=False)
    with PrivateRedis() as redis_server:
        yield redis_server


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


@dataclasses.dataclass
class Limits:
    """A store driven as the guard drives it, from one event loop."""

    store: Store
    runner: asyncio.Runner

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def begin(self, principal: str, address: str, attempt: str = "") -> int | None:
        return self.run(self.store.begin(principal, address, attempt))

    def end(
        self,
        principal: str,
        address: str,
        *,
        failed: bool,
        proven: bool = False,
        name: str = "",
        attempt: str = "",
    ) -> None:
        store = self.store
        self.run(
            store.end(principal, address, failed=failed, proven=proven, name=name, attempt=attempt)
        )

    def attempt(
        self,
        principal: str,
        address: str,
        *,
        failed: bool = False,
        proven: bool = False,
        name: str = "",
    ) -> int | None:
        """One password login: begin(), and if let through, end() with what the KDC said."""
        attempt = os.urandom(8).hex()
        wait = self.begin(principal, address, attempt)
        if wait is None:
            self.end(principal, address, failed=failed, proven=proven, name=name, attempt=attempt)
        return wait

    def fail(self, principal: str, address: str, name: str = "") -> None:
        assert self.attempt(principal, address, failed=True, name=name) is None

    def end_sessions(self, principal: str) -> float:
        return self.run(self.store.end_sessions(principal))


Make = Callable[..., Limits]


@pytest.fixture
def redis_stores(server: PrivateRedis, runner: asyncio.Runner) -> Iterator[Make]:
    """``make(limits=None, url=server.url, **options)``: RedisStores closed at the end."""
    server.client().flushall()
    made: list[Store] = []

    def make(limits: LoginLimitOptions | None = None, url: str = "", **options: Any) -> Limits:
        options.setdefault("keep_for", 3600)
        store = RedisStore(url or server.url, limits, **options)
        made.append(store)
        return Limits(store, runner)

    yield make
    for store in made:
        store.close()


@pytest.fixture(params=["memory", "redis"])
def stores(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Make:
    """Each contract test runs against both stores."""
    if request.param == "redis":
        make: Make = request.getfixturevalue("redis_stores")
        return make
    return lambda limits=None: Limits(MemoryStore(limits), runner)


def options(**kwargs: int) -> LoginLimitOptions:
    return LoginLimitOptions(**kwargs)


def shared(limits: Limits) -> RedisStore:
    assert isinstance(limits.store, RedisStore)
    return limits.store


# -- the contract, both stores ---------------------------------------------------------------


def test_over_the_user_limit_the_answer_is_a_retry_after(stores: Make) -> None:
    s = stores(options(per_principal=2, per_address=100, window=600))
    s.fail("alice", "192.0.2.1")
    assert s.attempt("alice", "192.0.2.2") is None  # one failure: still let through
    s.fail("alice", "192.0.2.2")
    wait = s.attempt("alice", "192.0.2.3")  # from anywhere
    assert wait is not None and 595 <= wait <= 600
    assert s.attempt("bob", "192.0.2.1") is None  # others are not locked out by it


def test_over_the_address_limit_every_name_waits_and_ipv6_counts_by_64(stores: Make) -> None:
    s = stores(options(per_principal=100, per_address=3, window=600))
    for name in ("u1", "u2", "u3"):
        s.fail(name, "192.0.2.9")
    wait = s.attempt("newcomer", "192.0.2.9")
    assert wait is not None and 595 <= wait <= 600
    assert s.attempt("newcomer", "192.0.2.10") is None
    for name, address in (("v1", "2001:db8::1"), ("v2", "2001:db8::2"), ("v3", "2001:db8::f:3")):
        s.fail(name, address)
    wait = s.attempt("v4", "2001:db8::beef")
    assert wait is not None and 595 <= wait <= 600
    assert s.attempt("v4", "2001:db8:0:1::1") is None  # the next /64


def test_attempts_at_the_kdc_count_until_they_end(stores: Make) -> None:
    s = stores(options(per_principal=2, per_address=3, window=600))
    for _ in range(3):  # ends without a begin never count below zero
        s.end("alice", "198.51.100.1", failed=False)
    assert s.begin("alice", "198.51.100.1") is None
    assert s.begin("alice", "198.51.100.2") is None
    assert s.begin("alice", "198.51.100.3") == 0  # two at the KDC: wait for one, ask again
    s.end("alice", "198.51.100.1", failed=True)
    assert s.begin("alice", "198.51.100.3") == 0  # one failure, one still at the KDC
    s.end("alice", "198.51.100.2", failed=False)  # the KDC did not answer: no count
    assert s.attempt("alice", "198.51.100.3", failed=True) is None
    wait = s.begin("alice", "198.51.100.4")  # two failures now: locked, with a time
    assert wait is not None and wait >= 595
    # An address's attempts at the KDC fill its limit: a second is the answer (as the
    # in-process limits have always said).
    for name in ("b", "c", "d"):
        assert s.begin(name, "198.51.100.5") is None
    assert s.begin("e", "198.51.100.5") == 1


def test_a_proven_password_forgives_only_failures_typed_as_that_name(stores: Make) -> None:
    # "Alice@R" and "alice@R" are one user to the limits (folded), two accounts on MIT:
    # the attacker who owns Alice must not lift the limit on alice by proving her own.
    s = stores(options(per_principal=2, window=600))
    s.fail("alice", "203.0.113.1", name="alice@R")
    assert s.attempt("alice", "203.0.113.2", proven=True, name="Alice@R") is None
    s.fail("alice", "203.0.113.1", name="alice@R")
    assert s.begin("alice", "203.0.113.3") == pytest.approx(600, abs=2)  # still counted
    # alice's own password forgives her own failures.
    s2 = stores(options(per_principal=2, window=600))
    s2.fail("bob", "203.0.113.1", name="bob@R")
    assert s2.attempt("bob", "203.0.113.2", proven=True, name="bob@R") is None
    s2.fail("bob", "203.0.113.1", name="bob@R")
    assert s2.begin("bob", "203.0.113.3") is None


def test_an_attempt_never_ended_runs_out_on_a_busy_key(redis_stores: Make) -> None:
    # A process that crashed between begin() and end(): its attempts stop counting after
    # pending_for, even while other logins from that address keep the key alive (a busy
    # NAT or proxy address would otherwise stay short of slots for as long as it is busy).
    s = redis_stores(options(per_principal=50, per_address=3, window=60), pending_for=1)
    address = "192.0.2.50"
    assert s.begin("crashed1", address) is None
    assert s.begin("crashed2", address) is None
    deadline = time.monotonic() + 10
    while True:
        assert s.attempt("carol", address) is None  # a login that ends, keeping it busy
        let_in = [name for name in ("x", "y", "z") if s.begin(name, address, name) is None]
        for name in let_in:
            s.end(name, address, failed=False, attempt=name)
        if len(let_in) == 3:
            break  # the two leaked attempts have run out (on Redis's clock, not ours)
        assert time.monotonic() < deadline, "the leaked attempts never ran out"


def test_a_proven_password_forgives_the_user_not_the_address(stores: Make) -> None:
    s = stores(options(per_principal=2, per_address=3, window=600))
    s.fail("alice", "203.0.113.1")
    assert s.attempt("alice", "203.0.113.9", proven=True) is None
    s.fail("alice", "203.0.113.1")
    assert s.attempt("alice", "203.0.113.8") is None  # one failure since the good one
    s.fail("alice", "203.0.113.1")
    assert s.attempt("alice", "203.0.113.8")  # two since: locked
    assert s.attempt("bob", "203.0.113.1")  # three from that address, forgiven or not


def test_the_window_slides(stores: Make) -> None:
    s = stores(options(per_principal=2, per_address=100, window=1))
    s.fail("alice", "192.0.2.1")
    s.fail("alice", "192.0.2.1")
    assert s.attempt("alice", "192.0.2.2") == 1
    deadline = time.monotonic() + 5
    while s.attempt("alice", "192.0.2.2") is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a clock (Redis's, for Redis), not synchronising
    assert s.attempt("alice", "192.0.2.2") is None


def test_without_limits_every_login_goes_through(stores: Make) -> None:
    s = stores(None)
    for _ in range(20):
        s.fail("alice", "192.0.2.1")
    assert s.store.limits is None


def test_ending_sessions_records_now_and_never_goes_back(stores: Make) -> None:
    s = stores(options())
    assert s.store.not_before("alice@KRBTEST.COM") == 0.0 and not s.store.ended
    before = time.time()
    ended = s.end_sessions("alice@KRBTEST.COM")
    assert s.store.ended
    assert before <= ended <= time.time()
    assert s.store.not_before("alice@KRBTEST.COM") == ended  # at once, here
    assert s.store.not_before("ALICE@KRBTEST.COM") == 0.0  # the exact principal
    assert s.store.not_before("bob@KRBTEST.COM") == 0.0
    again = s.end_sessions("alice@KRBTEST.COM")
    assert again >= ended and s.store.not_before("alice@KRBTEST.COM") == again


# -- only shared: two stores, as two processes hold them ---------------------------------------


def test_two_stores_meet_one_limit(redis_stores: Make) -> None:
    limits = options(per_principal=2, per_address=100, window=600)
    one, two = redis_stores(limits), redis_stores(limits)
    assert one.store.shared and two.store.shared
    one.fail("alice", "192.0.2.1")
    two.fail("alice", "192.0.2.2")
    assert one.attempt("alice", "192.0.2.3") and two.attempt("alice", "192.0.2.3")
    # Attempts at the KDC from another process count too.
    assert one.begin("bob", "192.0.2.1") is None
    assert two.begin("bob", "192.0.2.2") is None
    assert one.begin("bob", "192.0.2.3") == 0
    two.end("bob", "192.0.2.2", failed=False)
    assert one.begin("bob", "192.0.2.3") is None


def test_keys_hold_no_user_input_and_expire(redis_stores: Make, server: PrivateRedis) -> None:
    s = redis_stores(options(per_principal=5, window=60), pending_for=30)
    s.fail("alice", "192.0.2.77")
    assert s.begin("alice", "192.0.2.77") is None  # left at the KDC
    s.end_sessions("alice@KRBTEST.COM")
    redis = server.client()
    keys = redis.keys("*")
    assert len(keys) == 5  # failures and in-flight of each, the not-before
    assert not any("alice" in key or "192.0.2" in key for key in keys)
    for key in keys:
        ttl = redis.pttl(key)
        limit = 3600 if ":nb:" in key else 30 if key.endswith(":n") else 60
        assert 0 < ttl <= limit * 1000, key
    # Bounded: a key keeps its newest `limit` failures, even from ends without a begin
    # (or a limit lowered between deployments).
    redis.flushall()
    for _ in range(8):
        s.end("mallory", "192.0.2.78", failed=True)
    sizes = sorted(redis.zcard(key) for key in redis.keys("*"))
    assert sizes == [5, 8]  # the user's limit; the address's (50) is not reached


def test_sessions_ended_by_one_store_are_ended_in_the_other(
    redis_stores: Make, server: PrivateRedis
) -> None:
    one, two = redis_stores(options()), redis_stores(options())
    other = shared(two)
    assert other.synced.wait(WAIT)
    assert not other.ended
    ended = one.end_sessions("alice@KRBTEST.COM")
    assert other.wait_for("alice@KRBTEST.COM", ended, WAIT)
    assert other.ended
    assert other.not_before("alice@KRBTEST.COM") == ended
    # Principals are taken whole, spaces and all; an older time never wins.
    server.client().publish(f"{PREFIX}nb", "1.0 alice@KRBTEST.COM")
    spaced = one.end_sessions("mary ann@KRBTEST.COM")
    assert other.wait_for("mary ann@KRBTEST.COM", spaced, WAIT)
    assert other.not_before("alice@KRBTEST.COM") == ended
    # A store started later (a new process) loads what was recorded before it.
    late = shared(redis_stores(options()))
    assert late.wait_loaded(1, WAIT)
    assert late.not_before("alice@KRBTEST.COM") == ended
    assert late.not_before("mary ann@KRBTEST.COM") == spaced


def test_any_event_loop_and_none_left_open(redis_stores: Make) -> None:
    s = redis_stores(options(per_principal=5, window=600))
    s.fail("alice", "192.0.2.1")
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Loops made and closed one after another (as Tornado's tests make them)...
        for _ in range(3):
            assert asyncio.run(s.store.begin("alice", "192.0.2.1")) is None
            asyncio.run(s.store.end("alice", "192.0.2.1", failed=True))
        # ...and one running in another thread meanwhile, left at the KDC.
        answer: list[int | None] = []
        thread = threading.Thread(
            target=lambda: answer.append(asyncio.run(s.store.begin("alice", "192.0.2.1")))
        )
        thread.start()
        thread.join(WAIT)
        assert answer == [None]
        # The runner's loop, used before them, still has its client; all counted as one.
        assert s.begin("alice", "192.0.2.1") == 0  # four failures and one at the KDC
        gc.collect()
    unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not unclosed, [str(w.message) for w in unclosed]


# -- Redis going away and coming back ---------------------------------------------------------


class Logged(logging.Handler):
    """Records from tornado_kerb.store, and an event per message fragment awaited."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def count(self, fragment: str) -> int:
        return sum(fragment in r.getMessage() for r in self.records)

    def wait_for(self, fragment: str, count: int = 1) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.count(fragment) >= count, WAIT)


@pytest.fixture
def logged() -> Iterator[Logged]:
    handler = Logged()
    logger = logging.getLogger("tornado_kerb.store")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_redis_down_logins_fail_closed_sessions_keep_working_and_it_comes_back(
    runner: asyncio.Runner, logged: Logged
) -> None:
    require(redis_available(), "TORNADO_KERB_NO_REDIS", module=False)
    limits = options(per_principal=2)
    with PrivateRedis() as own:
        first = Limits(RedisStore(own.url, limits, keep_for=3600), runner)
        second = Limits(RedisStore(own.url, limits, keep_for=3600), runner)
        watcher = shared(second)
        try:
            assert watcher.synced.wait(WAIT)
            ended = first.end_sessions("alice@KRBTEST.COM")  # first's pool: one connection
            assert watcher.wait_for("alice@KRBTEST.COM", ended, WAIT)
            loads = watcher.loads

            own.stop()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as refused:
                second.begin("alice", "192.0.2.1")
            assert time.monotonic() - started < 1.0  # a 503 at once, not after retries
            assert refused.value.reason == "store-unavailable"
            second.end("alice", "192.0.2.1", failed=True)  # logged, not raised
            assert logged.count("was not recorded") == 1
            # Sessions keep their answers; an ending still counts here, and says so.
            assert watcher.not_before("alice@KRBTEST.COM") == ended
            with pytest.raises(StoreUnavailable):
                second.end_sessions("carol@KRBTEST.COM")
            assert watcher.not_before("carol@KRBTEST.COM") > 0
            assert logged.wait_for(": lost (", 2)  # both subscribers, once each

            own.start()  # empty: nothing was saved
            assert watcher.wait_loaded(loads + 1, WAIT)
            assert logged.wait_for(": back;", 2)
            # The same stores work again: first through a pooled connection Redis closed.
            assert first.attempt("alice", "192.0.2.1", failed=True) is None
            assert second.attempt("alice", "192.0.2.1", failed=True) is None
            assert first.begin("alice", "192.0.2.2")  # the two count together again
            # What the mirror had stays, though Redis restarted empty.
            assert watcher.not_before("alice@KRBTEST.COM") == ended
            later = first.end_sessions("bob@KRBTEST.COM")
            assert watcher.wait_for("bob@KRBTEST.COM", later, WAIT)
            assert logged.count(": lost (") == 2  # once per outage, not per retry
        finally:
            first.store.close()
            second.store.close()


def test_a_redis_that_hangs_answers_503_within_the_timeouts_the_url_sets(
    runner: asyncio.Runner, logged: Logged
) -> None:
    require(redis_available(), "TORNADO_KERB_NO_REDIS", module=False)
    with PrivateRedis() as own:
        # The URL's timeouts, not the store's default (2 s).
        url = f"{own.url}?socket_timeout=0.25&socket_connect_timeout=0.25"
        s = Limits(RedisStore(url, options(), keep_for=60), runner)
        try:
            assert s.attempt("alice", "192.0.2.1", failed=True) is None
            own.pause()
            try:
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match="Timeout"):
                    s.begin("alice", "192.0.2.1")
                assert 0.25 <= time.monotonic() - started < 1.5
            finally:
                own.resume()
            assert s.attempt("alice", "192.0.2.1") is None
        finally:
            s.store.close()


def test_what_was_ended_while_a_store_was_cut_off_reaches_it_on_reconnection(
    server: PrivateRedis, redis_stores: Make, logged: Logged
) -> None:
    admin = server.client()
    # A user of its own, so that Redis can refuse this store alone while others go on.
    admin.execute_command("ACL", "SETUSER", "cutoff", "on", ">cutoff-pw", "~*", "&*", "+@all")
    try:
        cut = shared(
            redis_stores(options(), url=f"redis://cutoff:cutoff-pw@{server.host}:{server.port}/0")
        )
        other = redis_stores(options())
        assert cut.wait_loaded(1, WAIT)
        admin.execute_command("ACL", "SETUSER", "cutoff", "off")
        admin.execute_command("CLIENT", "KILL", "USER", "cutoff")
        ended = other.end_sessions("dave@KRBTEST.COM")  # published while it hears nothing
        assert logged.wait_for(": lost (")
        assert cut.not_before("dave@KRBTEST.COM") == 0.0
        admin.execute_command("ACL", "SETUSER", "cutoff", "on")
        assert cut.wait_for("dave@KRBTEST.COM", ended, WAIT)  # loaded on reconnection
        assert cut.loads >= 2
    finally:
        admin.execute_command("ACL", "DELUSER", "cutoff")


def test_no_password_in_logs_or_errors(
    runner: asyncio.Runner, logged: Logged, caplog: pytest.LogCaptureFixture
) -> None:
    require(redis_available(), "TORNADO_KERB_NO_REDIS", module=False)
    secret = "s3cret-Pa55-word-for-the-log-test"
    caplog.set_level(logging.DEBUG)  # redis-py's own loggers too
    with PrivateRedis(password=secret) as locked:
        good = Limits(RedisStore(locked.url, options(), keep_for=60), runner)
        wrong_url = f"redis://:{secret}-not@{locked.host}:{locked.port}/0?password={secret}x"
        wrong = Limits(RedisStore(wrong_url, options(), keep_for=60), runner)
        errors: list[str] = [repr(good.store), repr(wrong.store)]
        try:
            assert good.attempt("alice", "192.0.2.1", failed=True) is None
            with pytest.raises(StoreUnavailable) as refused:
                wrong.begin("alice", "192.0.2.1")
            errors.append(str(refused.value))
            assert logged.wait_for(": lost (")  # the wrong one's subscriber
            locked.stop()
            good.end("alice", "192.0.2.1", failed=True)
            with pytest.raises(StoreUnavailable) as down:
                good.end_sessions("alice@KRBTEST.COM")
            errors.append(str(down.value))
            assert logged.wait_for(": lost (", 2)
        finally:
            good.store.close()
            wrong.store.close()
    assert logged.count("was not recorded") == 1
    texts = errors + [caplog.text] + [r.getMessage() for r in caplog.records]
    assert not [text for text in texts if secret in text]


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("rediss://user:p%40ss@h/0") == "rediss://user:***@h/0"
    assert redact_url("redis://onlyname@h") == "redis://***@h"
    assert redact_url("unix:///run/redis.sock?db=1&password=x%26y") == (
        "unix:///run/redis.sock?db=1&password=***"
    )
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    # Unencoded / # ? in the password (base64 secrets hold "/"): urlsplit() finds no user
    # part in those, nor in a scheme typo; everything before the last "@" goes anyway.
    assert redact_url("redis://:s3cr/et@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("redis://:a#b@h/0") == "redis://:***@h/0"
    assert redact_url("redis://:a?b@h/0") == "redis://:***@h/0"
    assert "pw" not in redact_url("redis:/:pw@h")


def test_a_url_redis_py_cannot_parse_does_not_show_its_password() -> None:
    for url in ("redis://:s3cr3t/pw@127.0.0.1:6379/0", "redis://:s3cr3t#pw@127.0.0.1:6379/0"):
        with pytest.raises(ConfigurationError, match="percent-encode") as info:
            make_store(url, None, keep_for=60)
        assert "s3cr3t" not in str(info.value)


def test_a_bad_store_setting_does_not_show_its_password() -> None:
    for url in ("Redis://:s3cr3tpw@h/0", "redis:/:s3cr3tpw@h", "rediss//:s3cr3tpw@h"):
        with pytest.raises(ConfigurationError) as info:
            KerberosSettings(store=url)
        assert "s3cr3tpw" not in str(info.value)


# -- the setting -----------------------------------------------------------------------------


def test_make_store_takes_what_it_says_and_refuses_typos(server: PrivateRedis) -> None:
    assert isinstance(make_store(None, None, keep_for=60), MemoryStore)
    memory = make_store("memory", options(), keep_for=60)
    assert isinstance(memory, MemoryStore) and not memory.shared
    assert make_store(memory, options(), keep_for=60) is memory
    shared = make_store(server.url, options(), keep_for=60)
    try:
        assert isinstance(shared, RedisStore) and shared.shared
    finally:
        shared.close()
    for typo in ("redis:/x", "memroy", "Memory", "REDIS://h", "", 1, True, {"url": "x"}):
        with pytest.raises(ConfigurationError, match="'store'"):
            make_store(typo, None, keep_for=60)
    with pytest.raises(ConfigurationError, match="not a Redis URL") as bad:
        make_store("redis://:hunter2@h:port/0", None, keep_for=60)
    assert "hunter2" not in str(bad.value)


def test_without_redis_py_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if not installed
    assert isinstance(make_store("memory", None, keep_for=60), MemoryStore)
    with pytest.raises(ConfigurationError, match=r"pip install tornado_kerb\[redis\]"):
        make_store("redis://localhost/0", None, keep_for=60)


def test_memory_not_befores_are_bounded() -> None:
    store = MemoryStore(None, keep_for=60)
    now = time.time()
    store._not_before.update({f"old{n}@R": now - 61 for n in range(9_000)})
    store._not_before.update({f"new{n}@R": now - 59 for n in range(1_000)})
    asyncio.run(store.end_sessions("last@R"))  # the 10,001st: those past keep_for go
    assert len(store._not_before) == 1_001 and store.not_before("old0@R") == 0.0
    assert store.not_before("new0@R") == now - 59 and store.not_before("last@R") >= now


def test_a_store_given_as_an_object_counts_what_the_settings_say() -> None:
    # A Store built without the settings' limits would quietly count nothing.
    from tornado_kerb import KerberosGuard

    with pytest.raises(ConfigurationError, match="'login_limits' says"):
        KerberosGuard({"basic": False, "store": MemoryStore(None)})
    same = MemoryStore(LoginLimitOptions())
    guard = KerberosGuard({"basic": False, "store": same})
    try:
        assert guard.store is same
    finally:
        guard.close()
