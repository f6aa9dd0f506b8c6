"""Where state that several processes must agree on lives: the ``store`` setting.

Two things live there: the password-guessing counters of ``login_limits`` (a guesser
spreading guesses over four processes must meet one limit, not four), and, per principal,
a *not-before* time: sessions of that user issued before it are over ("sign out
everywhere"). :class:`MemoryStore` keeps both in this process (the default: right for one
process); :class:`RedisStore` keeps them in Redis, for several processes or hosts::

    store = make_store("redis://redis.internal:6379/0", LoginLimitOptions(), keep_for=86400)
    wait = await store.begin(principal_key("alice@EXAMPLE.COM"), "192.0.2.7")

Reading a not-before (:meth:`Store.not_before`, on every request that carries a session
cookie) never waits for the network: each process keeps a mirror of them, which a Redis
subscriber thread keeps current. The counters fail closed: when Redis does not answer,
:meth:`Store.begin` raises :class:`~tornado_kerb.StoreUnavailable` (password logins get a
503), while sessions already issued keep working from the mirror. Nothing here imports
Tornado; ``redis`` (redis-py, the ``[redis]`` extra) is imported only by :class:`RedisStore`.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import logging
import math
import os
import threading
import time
import urllib.parse
from collections.abc import AsyncGenerator, Coroutine
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, StoreUnavailable
from .limits import LoginLimitOptions, LoginLimits, address_key

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    from redis.commands.core import AsyncScript

__all__ = ["MemoryStore", "RedisStore", "Store", "make_store", "redact_url"]

log = logging.getLogger(__name__)

#: Not-befores remembered before the old ones (past ``keep_for``) are dropped.
_MIRROR_ENTRIES = 10_000


class Store(abc.ABC):
    """The counters of :class:`~tornado_kerb.limits.LoginLimits` and the per-principal
    not-before times, for one application (one guard). Subclasses may be given as the
    ``store`` setting; all methods are safe to call from any thread and event loop."""

    #: Whether other processes see this state (``False``: this process alone).
    shared: bool = False
    #: The ``login_limits`` counted (``None``: logins are not counted, :meth:`begin`
    #: lets every one through).
    limits: LoginLimitOptions | None = None
    #: Whether any principal's sessions were ended (:meth:`not_before` is not always 0):
    #: a request may skip the lookup until then.
    ended: bool = False

    @abc.abstractmethod
    async def begin(self, principal: str, address: str, attempt: str = "") -> int | None:
        """As :meth:`LoginLimits.begin <tornado_kerb.limits.LoginLimits.begin>`: let a
        password login of ``principal`` (already :func:`~tornado_kerb.limits.principal_key`-ed)
        from ``address`` (the client's IP as it is) go to the KDC (``None``; call
        :meth:`end` when it has answered), or refuse it: the seconds until one may be
        tried, or ``0`` when that user's attempts still at the KDC fill the limit.

        ``attempt``: a name for this attempt, unique, given to :meth:`end` too, so that
        only this attempt's in-flight count ends there (one a crashed process never ended
        runs out on its own).

        Raises :class:`~tornado_kerb.StoreUnavailable` when the store cannot be asked:
        logins are refused rather than let through uncounted."""

    @abc.abstractmethod
    async def end(
        self,
        principal: str,
        address: str,
        *,
        failed: bool,
        proven: bool = False,
        name: str = "",
        attempt: str = "",
    ) -> None:
        """As :meth:`LoginLimits.end <tornado_kerb.limits.LoginLimits.end>`: ``name`` is
        the principal as typed, whose failures alone a ``proven`` password forgives;
        ``attempt`` what :meth:`begin` was given. Never
        raises: when the store is down, a warning is logged and the attempt's in-flight
        count runs out on its own."""

    @abc.abstractmethod
    def not_before(self, principal: str) -> float:
        """The time (epoch seconds) before which sessions of ``principal`` (the exact
        principal, ``alice@EXAMPLE.COM``) were ended, or ``0.0``. A dictionary lookup,
        no I/O: fit for every request."""

    @abc.abstractmethod
    async def end_sessions(self, principal: str) -> float:
        """End every session of ``principal`` issued until now, in every process: record
        *not before now* (this process sees it at once) and return that time (a later one
        already recorded stays). Raises :class:`~tornado_kerb.StoreUnavailable` when it
        could not be recorded for the other processes."""

    def wait_ready(self, timeout: float) -> bool:
        """Wait until this process knows the sessions already ended (a shared store's
        first load); whether it does. Sessions are taken meanwhile (a store that is down
        must not log everybody out), so call it at start-up (:meth:`KerberosGuard.check
        <tornado_kerb.KerberosGuard.check>` does)."""
        return True

    @abc.abstractmethod
    def close(self) -> None:
        """Stop threads and close connections; calling it again does nothing."""


class MemoryStore(Store):
    """This process's state: the default ``store``, right when one process serves.

    Not-befores are kept for ``keep_for`` seconds (at least that long, once more than
    10,000 principals have one)."""

    shared = False

    def __init__(self, limits: LoginLimitOptions | None, *, keep_for: float = 86400.0) -> None:
        self.limits = limits
        self.keep_for = _positive("keep_for", keep_for)
        #: The counters themselves (``None`` without limits).
        self.counters = LoginLimits(limits) if limits is not None else None
        self._not_before: dict[str, float] = {}
        self._prune_at = _MIRROR_ENTRIES
        self._lock = threading.Lock()

    async def begin(self, principal: str, address: str, attempt: str = "") -> int | None:
        return None if self.counters is None else self.counters.begin(principal, address)

    async def end(
        self,
        principal: str,
        address: str,
        *,
        failed: bool,
        proven: bool = False,
        name: str = "",
        attempt: str = "",
    ) -> None:
        if self.counters is not None:
            self.counters.end(principal, address, failed=failed, proven=proven, name=name)

    def not_before(self, principal: str) -> float:
        return self._not_before.get(principal, 0.0)

    async def end_sessions(self, principal: str) -> float:
        with self._lock:
            when = max(time.time(), self._not_before.get(principal, 0.0))
            self._not_before[principal] = when
            self.ended = True
            if len(self._not_before) > self._prune_at:
                self._not_before = _recent(self._not_before, self.keep_for)
                self._prune_at = _next_prune(len(self._not_before))
            return when

    def close(self) -> None:
        pass


# -- Redis ------------------------------------------------------------------------------

# The counters, one script per call so that checking and counting are one step for every
# process. KEYS: the principal's failure times (a sorted set, scored by time) and attempts
# at the KDC (a counter), then the address's. Redis's clock, so that hosts agree.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""

_BEGIN = (
    _NOW
    + """
-- ARGV: per_principal, per_address, window (s), in-flight expiry (s), a unique member.
-- Attempts at the KDC are a sorted set too, scored by when each stops counting: one a
-- crashed process never ended runs out on its own, however busy its key stays.
local window = tonumber(ARGV[3])
local function wait(times, pending, limit)
  redis.call('ZREMRANGEBYSCORE', times, '-inf', string.format('%.6f', now - window))
  redis.call('ZREMRANGEBYSCORE', pending, '-inf', string.format('%.6f', now))
  local recent = redis.call('ZCARD', times)
  local inflight = redis.call('ZCARD', pending)
  if recent + inflight < limit then return nil end
  if recent < limit then return 0 end
  local oldest = redis.call('ZRANGE', times, -limit, -limit, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end
local user = wait(KEYS[1], KEYS[2], tonumber(ARGV[1]))
local host = wait(KEYS[3], KEYS[4], tonumber(ARGV[2]))
if host ~= nil then return math.max(1, math.ceil(host)) end
if user ~= nil then
  if user > 0 then return math.max(1, math.ceil(user)) end
  return 0
end
local until_ = tonumber(ARGV[4])
for _, pending in ipairs({KEYS[2], KEYS[4]}) do
  redis.call('ZADD', pending, string.format('%.6f', now + until_), ARGV[5])
  redis.call('PEXPIRE', pending, math.ceil(until_ * 1000))
end
return -1
"""
)

_END = (
    _NOW
    + """
-- ARGV: per_principal, per_address, window (s), failed, proven, a unique member, the tag
-- of the name as typed, the attempt begin() counted (none: the oldest at the KDC).
for _, pending in ipairs({KEYS[2], KEYS[4]}) do
  redis.call('ZREMRANGEBYSCORE', pending, '-inf', string.format('%.6f', now))
  if ARGV[8] ~= '' then redis.call('ZREM', pending, ARGV[8]) else redis.call('ZPOPMIN', pending) end
end
local tag = ARGV[7] .. ':'
if ARGV[4] == '1' then
  local score = string.format('%.6f', now)
  local expiry = math.ceil(tonumber(ARGV[3]) * 1000)
  for i, limit in ipairs({ARGV[1], ARGV[2]}) do
    local times = KEYS[2 * i - 1]
    redis.call('ZADD', times, score, tag .. ARGV[6])
    redis.call('ZREMRANGEBYRANK', times, 0, -tonumber(limit) - 1)
    redis.call('PEXPIRE', times, expiry)
  end
elseif ARGV[5] == '1' then
  -- A proven password forgives the failures typed as that very name, no others: "Alice"
  -- (another account, on MIT) proving her own must not lift the limit on "alice".
  for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if string.sub(member, 1, #tag) == tag then redis.call('ZREM', KEYS[1], member) end
  end
end
return 0
"""
)

# KEYS: the principal's not-before, "TIME PRINCIPAL". ARGV: time, principal, expiry (ms),
# channel. A later time already recorded stays: ending sessions is never undone.
_END_SESSIONS = """
local when = ARGV[1]
local old = redis.call('GET', KEYS[1])
if old then
  local space = string.find(old, ' ', 1, true)
  if space and (tonumber(string.sub(old, 1, space - 1)) or 0) > tonumber(when) then
    when = string.sub(old, 1, space - 1)
  end
end
local value = when .. ' ' .. ARGV[2]
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[4], value)
return when
"""

_PENDING_FOR = 120.0  # seconds an attempt counts as at the KDC when no end() comes
_TIMEOUT = 2.0  # socket and connect timeouts, unless the URL sets them
_BACKOFF = (0.1, 5.0)  # the subscriber's reconnection delays: first, most
_POLL = 1.0  # the subscriber looks at close() at least this often
#: The URL schemes of a Redis ``store`` (the settings check them too).
SCHEMES = ("redis://", "rediss://", "unix://")


class _LoopClient:
    """The asyncio client of one event loop, and its scripts."""

    __slots__ = ("begin", "client", "end", "end_sessions", "hook")

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.begin: AsyncScript = client.register_script(_BEGIN)
        self.end: AsyncScript = client.register_script(_END)
        self.end_sessions: AsyncScript = client.register_script(_END_SESSIONS)
        self.hook: AsyncGenerator[None, None] | None = None


async def _closed_with_loop(
    client: redis.asyncio.Redis, errors: tuple[type[BaseException], ...]
) -> AsyncGenerator[None, None]:
    """Closes ``client`` when its loop shuts down: asyncio.run() (and Runner, and so
    Tornado's IOLoop under them) closes every async generator started on a loop before
    closing it, while it still runs; connections left open after it is closed cannot be
    closed any more."""
    try:
        yield
    finally:
        try:
            await client.aclose()
        except errors:
            pass


class RedisStore(Store):
    """State in Redis, shared by every process given the same ``url`` and ``prefix``.

    ``url`` is redis-py's: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
    (TLS) or ``unix:///path/redis.sock?db=0``; timeouts are 2 seconds unless it sets
    ``socket_timeout`` / ``socket_connect_timeout``. ``keep_for``: how long a not-before
    must be remembered, the longest a session (or cached login) lives. Standalone Redis
    (or a Sentinel-managed primary's address), not Redis Cluster: a login's check spans
    the user's and the address's keys atomically.

    A daemon thread subscribes to the not-befores other processes record and keeps this
    process's mirror of them current. While Redis is down it keeps trying (0.1 s doubling
    to 5 s); the mirror keeps what it had, so sessions keep working, and on reconnection it
    subscribes and reloads, missing nothing recorded meanwhile. :attr:`synced` is set while
    subscribed and loaded.
    """

    shared = True

    def __init__(
        self,
        url: str,
        limits: LoginLimitOptions | None,
        *,
        keep_for: float,
        prefix: str = "tornado_kerb:",
        pending_for: float = _PENDING_FOR,
    ) -> None:
        try:
            import redis
            import redis.asyncio
            from redis.asyncio.retry import Retry as AsyncRetry
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ConfigurationError(
                "kerberos setting 'store': a Redis store needs redis-py "
                "(pip install tornado_kerb[redis])"
            ) from None
        self.limits = limits
        self.keep_for = _positive("keep_for", keep_for)
        self.pending_for = _positive("pending_for", pending_for)
        self.prefix = prefix
        self._url = url  # with its password: never logged (see where)
        #: The URL without its password, for log lines.
        self.where = redact_url(url)
        self._secrets = _secrets(url)
        self._redis = redis
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            OSError,
            asyncio.TimeoutError,
        )
        self._errors_or_closed: tuple[type[BaseException], ...] = (
            *self._errors,
            StoreUnavailable,
        )
        self._channel = f"{prefix}nb"
        options: dict[str, Any] = {
            "socket_timeout": _TIMEOUT,
            "socket_connect_timeout": _TIMEOUT,
            "decode_responses": True,
        }
        # One retry, at once, on a fresh connection: a connection that breaks under a
        # command (Redis restarted, a proxy dropped it) gets a second chance; a Redis
        # that hangs costs a login two timeouts, then the answer is 503.
        self._async_options = {
            **options,
            "retry": AsyncRetry(NoBackoff(), 1),
        }
        try:
            # The subscriber's client (its thread's, and the reload's): no retries,
            # errors come to the thread, which reconnects, resubscribes and reloads.
            self._sync = redis.Redis.from_url(
                url, **options, retry=Retry(NoBackoff(), 0), health_check_interval=30
            )
        except ValueError:
            raise ConfigurationError(
                f"kerberos setting 'store': not a Redis URL {self.where!r} (redis-py cannot "
                "parse it: percent-encode / # ? @ : in the password, as %2F %23 %3F %40 %3A)"
            ) from None  # its own words may quote a piece of the password
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._mirror: dict[str, float] = {}
        self._prune_at = _MIRROR_ENTRIES
        self._changed = threading.Condition()
        #: Set while the subscriber is subscribed and has loaded every not-before.
        self.synced = threading.Event()
        #: Times the subscriber has subscribed and loaded (it does so on each reconnection).
        self.loads = 0
        self._closing = threading.Event()
        self._pubsub: redis.client.PubSub | None = None
        self._thread = threading.Thread(
            target=self._subscribe, name="tornado_kerb-store", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"RedisStore({self.where!r}, prefix={self.prefix!r})"

    # -- counters ---------------------------------------------------------------------

    async def begin(self, principal: str, address: str, attempt: str = "") -> int | None:
        opts = self.limits
        if opts is None:
            return None
        scripts = await self._loop_client()
        try:
            wait = await scripts.begin(
                self._limit_keys(principal, address),
                [
                    opts.per_principal,
                    opts.per_address,
                    opts.window,
                    repr(self.pending_for),
                    attempt or os.urandom(8).hex(),
                ],
            )
        except self._errors as err:
            raise StoreUnavailable(self._describe(err)) from None
        wait = int(wait)
        return None if wait < 0 else wait

    async def end(
        self,
        principal: str,
        address: str,
        *,
        failed: bool,
        proven: bool = False,
        name: str = "",
        attempt: str = "",
    ) -> None:
        opts = self.limits
        if opts is None:
            return
        try:
            scripts = await self._loop_client()
            await scripts.end(
                self._limit_keys(principal, address),
                [
                    opts.per_principal,
                    opts.per_address,
                    opts.window,
                    int(failed),
                    int(proven),
                    os.urandom(8).hex(),  # failures at the same microsecond are two
                    _digest(name or principal)[:16],
                    attempt,
                ],
            )
        except self._errors_or_closed as err:
            # Uncounted: the attempt's in-flight count runs out after pending_for.
            log.warning(
                "store %s: the end of a login attempt was not recorded (%s); "
                "its in-flight count expires in %ds",
                self.where,
                self._describe(err),
                math.ceil(self.pending_for),
            )

    def _limit_keys(self, principal: str, address: str) -> list[str]:
        user = f"{self.prefix}lp:{_digest(principal)}"
        host = f"{self.prefix}la:{_digest(address_key(address))}"
        return [user, f"{user}:n", host, f"{host}:n"]

    # -- not-before -------------------------------------------------------------------

    def not_before(self, principal: str) -> float:
        return self._mirror.get(principal, 0.0)

    async def end_sessions(self, principal: str) -> float:
        when = time.time()
        # Here first: this process stops accepting them even if Redis does not answer.
        self._merge(principal, when)
        try:
            scripts = await self._loop_client()
            recorded = await scripts.end_sessions(
                [self._not_before_key(principal)],
                [repr(when), principal, _ms(self.keep_for), self._channel],
            )
        except self._errors_or_closed as err:
            raise StoreUnavailable(self._describe(err)) from None
        when = float(recorded)
        self._merge(principal, when)
        return when

    def wait_ready(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    def wait_for(self, principal: str, at_least: float, timeout: float) -> bool:
        """Wait until this process's mirror has a not-before of ``principal`` of at least
        ``at_least`` (``True``), or ``timeout`` seconds have passed (``False``)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._mirror.get(principal, 0.0) >= at_least, timeout
            )

    def wait_loaded(self, count: int, timeout: float) -> bool:
        """Wait until the subscriber has subscribed and loaded ``count`` times in all."""
        with self._changed:
            return self._changed.wait_for(lambda: self.loads >= count, timeout)

    def _not_before_key(self, principal: str) -> str:
        return f"{self.prefix}nb:{_digest(principal)}"

    def _merge(self, principal: str, when: float) -> None:
        with self._changed:
            if when > self._mirror.get(principal, 0.0):
                self._mirror[principal] = when
                self.ended = True
                if len(self._mirror) > self._prune_at:
                    # A new dictionary, swapped in: not_before() reads without the lock.
                    self._mirror = _recent(self._mirror, self.keep_for)
                    self._prune_at = _next_prune(len(self._mirror))
            self._changed.notify_all()

    def _apply(self, value: object) -> None:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        when, _, principal = text.partition(" ")
        try:
            seconds = float(when)
        except ValueError:
            log.debug("store %s: ignored a not-before that is not one", self.where)
            return
        if principal and math.isfinite(seconds):
            self._merge(principal, seconds)

    def _subscribe(self) -> None:
        """The subscriber thread: subscribe, then load (so that nothing recorded in
        between is missed), then apply what is published; on any error, again."""
        delay, down = _BACKOFF[0], False
        while not self._closing.is_set():
            try:
                with self._sync.pubsub() as pubsub:
                    with self._lock:
                        if self._closed:
                            return
                        self._pubsub = pubsub
                    self._listen(pubsub)
                    if down:
                        log.info("store %s: back; not-befores reloaded", self.where)
                    down, delay = False, _BACKOFF[0]
                    while not self._closing.is_set():
                        message = pubsub.get_message(timeout=_POLL)
                        if message is not None and message.get("type") == "message":
                            self._apply(message.get("data"))
            except self._errors as err:
                if self._closing.is_set():
                    break
                if not down:
                    log.warning(
                        "store %s: lost (%s); sessions ended elsewhere are not seen here "
                        "until it is back%s",
                        self.where,
                        self._describe(err),
                        "" if self.limits is None else ", password logins are refused",
                    )
                down = True
            except Exception:
                # Not a Redis error: a bug, ours or redis-py's. The thread must not die
                # (the mirror would silently stop), so it says so and starts over.
                log.exception("store %s: the subscriber failed", self.where)
                down = True
            finally:
                self.synced.clear()
                with self._lock:
                    self._pubsub = None
            self._closing.wait(delay)
            delay = min(delay * 2, _BACKOFF[1])

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        pubsub.subscribe(self._channel)
        deadline = time.monotonic() + _TIMEOUT
        while True:  # subscribed only once Redis says so
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message.get("type") == "subscribe":
                break
            if time.monotonic() >= deadline:
                raise self._redis.exceptions.TimeoutError("no answer to SUBSCRIBE")
        pattern = _glob_escape(f"{self.prefix}nb:") + "*"
        batch: list[str] = []
        for key in self._sync.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                self._load(batch)
                batch = []
        if batch:
            self._load(batch)
        with self._changed:
            self.loads += 1
            self.synced.set()
            self._changed.notify_all()

    def _load(self, keys: list[str]) -> None:
        for value in self._sync.mget(keys):
            if value is not None:
                self._apply(value)

    # -- connections ------------------------------------------------------------------

    async def _loop_client(self) -> _LoopClient:
        # redis.asyncio's connections belong to the loop that opened them; an
        # application may run several loops (tests do), so one client each.
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"store {self.where} is closed")
            client = self._clients.get(loop)
            if client is not None:
                return client
            for gone in [other for other in self._clients if other.is_closed()]:
                del self._clients[gone]  # a loop closed without asyncio.run's clean-up
            try:
                client = _LoopClient(
                    self._redis.asyncio.Redis.from_url(self._url, **self._async_options)
                )
            except ValueError as err:
                raise StoreUnavailable(self._describe(err)) from None
            self._clients[loop] = client
        # Started here, on its loop, so that the loop knows it (and holds it weakly:
        # the client holds it).
        client.hook = _closed_with_loop(client.client, self._errors)
        await client.hook.__anext__()
        return client

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients, self._clients = self._clients, {}
            pubsub = self._pubsub
        self._closing.set()
        if pubsub is not None and pubsub.connection is not None:
            # Wake the subscriber now, not at its next poll.
            sock = getattr(pubsub.connection, "_sock", None)
            if sock is not None:
                try:
                    sock.shutdown(2)  # socket.SHUT_RDWR
                except OSError:
                    pass
        if self._thread is not threading.current_thread():
            self._thread.join(_TIMEOUT + _POLL + 1)
        for loop, client in clients.items():
            if client.hook is not None:
                _close_on(loop, client.hook.aclose())
        self._sync.close()

    def _describe(self, err: BaseException) -> str:
        text = self._scrub(err)
        return f"{type(err).__name__}: {text}" if text else type(err).__name__

    def _scrub(self, err: BaseException) -> str:
        text = str(err)[:200]
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _close_on(loop: asyncio.AbstractEventLoop, closing: Coroutine[Any, Any, None]) -> None:
    """Run ``closing`` on ``loop``, as far as that can be done from here."""
    if loop.is_closed():
        closing.close()  # nothing runs there any more: its sockets close when collected
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(closing, loop)
    else:
        try:
            loop.run_until_complete(closing)
        except RuntimeError:  # another loop runs in this thread
            closing.close()


def make_store(value: object, limits: LoginLimitOptions | None, *, keep_for: float) -> Store:
    """The ``store`` setting: ``None`` or ``"memory"`` (this process), a Redis URL
    (``redis://``, ``rediss://``, ``unix://``), or a :class:`Store`. Anything else is a
    :class:`~tornado_kerb.ConfigurationError`: a typo must not quietly mean "this process
    only" on a deployment of several."""
    if value is None or value == "memory":
        return MemoryStore(limits, keep_for=keep_for)
    if isinstance(value, Store):
        if value.limits != limits:
            # Counting is the store's: a store built without the settings' limits would
            # quietly count nothing (or other limits than the settings say).
            raise ConfigurationError(
                f"kerberos setting 'store': the Store counts {value.limits!r}, but "
                f"'login_limits' says {limits!r}: build it with the same LoginLimitOptions"
            )
        return value
    if isinstance(value, str) and value.startswith(SCHEMES):
        return RedisStore(value, limits, keep_for=keep_for)
    shown = redact_url(value) if isinstance(value, str) else repr(value)
    raise ConfigurationError(
        "kerberos setting 'store' must be None or 'memory' (this process), a Redis URL "
        f"(redis://, rediss:// or unix://) or a Store, not {shown!r}"
    )


def redact_url(url: str) -> str:
    """``url`` without the password it may hold (in its user part or its query), for logs
    and errors. Worked on the raw text: a password with an unencoded ``/``, ``#`` or ``?``
    leaves no ``@`` in what :func:`urllib.parse.urlsplit` calls the host, and a typo in
    the scheme none at all, yet everything before the last ``@`` goes."""
    scheme, sep, rest = url.partition("://")
    head = f"{scheme}{sep}" if sep else ""
    rest = rest if sep else url
    if "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:***@{host}" if colon and "/" not in user else f"***@{host}"
    path, question, query = rest.partition("?")
    if question:
        query = "&".join(
            f"{pair.partition('=')[0]}=***" if "password" in pair.lower() else pair
            for pair in query.split("&")
        )
    return f"{head}{path}{question}{query}"


def _secrets(url: str) -> list[str]:
    """The passwords in ``url``, as written and as meant, longest first (from the raw
    text, as :func:`redact_url` finds them)."""
    rest = url.partition("://")[2] or url
    found = []
    if "@" in rest:
        userinfo = rest.rpartition("@")[0]
        found += [userinfo, userinfo.partition(":")[2]]
    for pair in rest.partition("?")[2].split("&"):
        name, _, value = pair.partition("=")
        if "password" in name.lower():
            found.append(value.partition("#")[0])
    found += [urllib.parse.unquote(value) for value in found]
    return sorted({value for value in found if value}, key=len, reverse=True)


def _digest(text: str) -> str:
    # Key names never hold what a client sent: no odd bytes or huge names in Redis's
    # keyspace, no user names in a SCAN's output.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"store: {name} must be a number of seconds > 0, not {value!r}")
    return float(value)


def _next_prune(size: int) -> int:
    # When to look for expired entries again: not at every addition once the table is past
    # _MIRROR_ENTRIES with recent ones (an admin ending 20,000 users' sessions made that
    # quadratic: measured), but when it has doubled.
    return max(_MIRROR_ENTRIES, 2 * size)


def _recent(table: dict[str, float], keep_for: float) -> dict[str, float]:
    cutoff = time.time() - keep_for
    return {principal: when for principal, when in table.items() if when >= cutoff}
