"""Limits on failed password logins, per principal and per client address.

Active Directory locks an account after a few bad passwords: a stranger hammering our
sign-in form or Basic would lock real users out, and guess at passwords meanwhile. Over a
limit the answer is 429 with ``Retry-After`` and the KDC is not asked. Sliding windows,
bounded memory (the least recently failed keys go first). Nothing here imports Tornado.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time

from .errors import ConfigurationError

__all__ = ["LoginLimitOptions", "LoginLimits", "principal_key"]


@dataclasses.dataclass(frozen=True)
class LoginLimitOptions:
    """The ``login_limits`` setting: ``True`` (the default) for these, or a dict of them."""

    #: Failed password logins per user name in ``window`` seconds: below AD's usual
    #: lockout threshold (5 to 10), so that we refuse before the domain locks the account.
    per_principal: int = 5
    #: Failed password logins per client address in ``window`` seconds: well above the
    #: per-user limit, since an office behind one NAT address shares it.
    per_address: int = 50
    #: The sliding window, in seconds.
    window: int = 900
    #: Most user names and addresses remembered, each (the least recently failed go).
    entries: int = 10_000

    def __post_init__(self) -> None:
        for key in ("per_principal", "per_address", "window", "entries"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"kerberos setting 'login_limits': {key} must be an integer >= 1, not {value!r}"
                )


def principal_key(principal: str) -> str:
    r"""The user a login names (a principal as Basic's parser makes it: ``alice@REALM``,
    or an enterprise name ``alice\@example.com@REALM``), for counting: the name alone, case
    folded. ``ALICE``, ``EXAMPLE\alice`` and ``alice@example.com`` are one account to AD,
    so one count (stricter for MIT's case-sensitive names, never looser)."""
    return principal.split("\\@", 1)[0].partition("@")[0].casefold()


class _Window:
    """Failure times of one key, newest last; at most ``limit`` of them."""

    __slots__ = ("times",)

    def __init__(self, limit: int) -> None:
        self.times: collections.deque[float] = collections.deque(maxlen=limit)


class LoginLimits:
    """Counts failed password logins; thread-safe."""

    def __init__(self, opts: LoginLimitOptions) -> None:
        self.opts = opts
        self._lock = threading.Lock()
        self._principals: collections.OrderedDict[str, _Window] = collections.OrderedDict()
        self._addresses: collections.OrderedDict[str, _Window] = collections.OrderedDict()

    def retry_after(self, principal: str, address: str) -> int | None:
        """``None`` when a password login of ``principal`` from ``address`` may be tried;
        else the seconds until it may (for ``Retry-After``)."""
        now = time.monotonic()
        with self._lock:
            waits = [
                self._wait(self._principals, principal, self.opts.per_principal, now),
                self._wait(self._addresses, address, self.opts.per_address, now),
            ]
        wait = max(w for w in waits if w is not None) if any(waits) else None
        return None if wait is None else max(1, math.ceil(wait))

    def failed(self, principal: str, address: str) -> None:
        """Count a refused password (a wrong one, an unknown or locked user)."""
        now = time.monotonic()
        with self._lock:
            self._count(self._principals, principal, self.opts.per_principal, now)
            self._count(self._addresses, address, self.opts.per_address, now)

    def succeeded(self, principal: str) -> None:
        """A good password: that user's failures are forgiven (the address's are not)."""
        with self._lock:
            self._principals.pop(principal, None)

    def _wait(
        self,
        table: collections.OrderedDict[str, _Window],
        key: str,
        limit: int,
        now: float,
    ) -> float | None:
        window = table.get(key)
        if window is None or len(window.times) < limit:
            return None
        # Full: the oldest of the last `limit` failures must leave the window first.
        wait = window.times[0] + self.opts.window - now
        return wait if wait > 0 else None

    def _count(
        self,
        table: collections.OrderedDict[str, _Window],
        key: str,
        limit: int,
        now: float,
    ) -> None:
        window = table.get(key)
        if window is None:
            window = table[key] = _Window(limit)
            while len(table) > self.opts.entries:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        window.times.append(now)
