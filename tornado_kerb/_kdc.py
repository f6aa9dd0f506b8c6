"""The KDC pool: the threads that prove Basic passwords, off the IOLoop.

A password proof blocks on two KDC round trips. :class:`KDCPool` runs it on a thread of
its own pool, bounds how many logins may wait for one (a flood of Basic logins gets 503s,
not an unbounded queue), and gives up on a KDC that does not answer in ``kdc_timeout``
seconds. Nothing here imports Tornado.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading

from .basic import prove_password
from .errors import KDCUnavailable
from .negotiate import Accepted, Acceptor

__all__ = ["KDCPool"]


class KDCPool:
    """``workers`` threads for KDC work, ``queue`` more logins allowed to wait for one."""

    def __init__(self, workers: int, queue: int, timeout: float) -> None:
        #: The threads; other blocking Kerberos work of the application may use them too.
        self.executor = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="tornado_kerb-kdc"
        )
        self._limit = workers + queue
        self._timeout = timeout
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Proofs handed to the threads and not yet returned by libkrb5."""
        return self._in_flight

    def close(self) -> None:
        """Stop the threads; waiting proofs are cancelled (503 ``closed``). Idempotent."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def prove(self, principal: str, password: str, acceptor: Acceptor) -> Accepted:
        """Prove ``password`` on a KDC thread; the IOLoop keeps serving meanwhile.

        Gives up after the timeout (:class:`~tornado_kerb.KDCUnavailable`, 503); the
        thread still counts against the limit until libkrb5 returns, so a hanging KDC
        cannot pile up threads without bound.
        """
        self._take_slot()
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Accepted] = loop.create_future()
        try:
            work = self.executor.submit(prove_password, principal, password, acceptor)
        except RuntimeError:  # the executor was shut down: close() was called
            self._release_slot()
            raise KDCUnavailable("closed", "the guard was closed") from None
        # One future, one timer and one wake-up of the loop per login (run_in_executor,
        # shield and wait_for cost three more turns of the loop: measured, on the IOLoop
        # thread that every other request needs).
        work.add_done_callback(functools.partial(self._proven, loop, outcome))
        timer = loop.call_later(self._timeout, _expire, outcome, self._timeout)
        try:
            return await outcome
        finally:
            timer.cancel()

    def _take_slot(self) -> None:
        with self._lock:
            if self._in_flight >= self._limit:
                raise KDCUnavailable("kdc-busy", "too many Basic logins waiting")
            self._in_flight += 1

    def _release_slot(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _proven(
        self,
        loop: asyncio.AbstractEventLoop,
        outcome: asyncio.Future[Accepted],
        work: concurrent.futures.Future[Accepted],
    ) -> None:
        # In the KDC thread, as libkrb5 returns (or at once for a login cancelled by
        # close()): only now is the slot free again.
        self._release_slot()
        try:
            loop.call_soon_threadsafe(_settle, outcome, work)
        except RuntimeError:  # the loop is gone: nobody waits for this login any more
            pass


def _settle(outcome: asyncio.Future[Accepted], work: concurrent.futures.Future[Accepted]) -> None:
    # On the IOLoop: hand the KDC thread's result to the waiting login, unless it timed out.
    if outcome.done():
        return
    if work.cancelled():
        outcome.set_exception(KDCUnavailable("closed", "the guard was closed"))
    elif (err := work.exception()) is not None:
        outcome.set_exception(err)
    else:
        outcome.set_result(work.result())


def _expire(outcome: asyncio.Future[Accepted], timeout: float) -> None:
    if not outcome.done():
        outcome.set_exception(KDCUnavailable("kdc-timeout", f"no answer within {timeout:g} s"))
