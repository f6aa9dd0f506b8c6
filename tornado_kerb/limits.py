"""Limits on failed password logins, per principal and per client address.

Active Directory locks an account after a few bad passwords: a stranger hammering our
sign-in form or Basic would lock real users out, and guess at passwords meanwhile. Over a
limit the answer is 429 with ``Retry-After`` and the KDC is not asked. Sliding windows,
bounded memory (the least recently failed keys go first). Nothing here imports Tornado.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import math
import threading
import time
import unicodedata

from .errors import ConfigurationError

__all__ = ["LoginLimitOptions", "LoginLimits", "address_key", "principal_key"]


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
    name = principal.split("\\@", 1)[0].partition("@")[0]
    # AD compares names without width or case: "ａｌｉｃｅ" is alice too.
    return unicodedata.normalize("NFKC", name).casefold()


class _Window:
    """Failure times of one key, newest last (at most ``limit`` of them), each with the
    name it was typed as, and the attempts of that key the KDC is answering now."""

    __slots__ = ("pending", "times")

    def __init__(self, limit: int) -> None:
        self.times: collections.deque[tuple[float, str]] = collections.deque(maxlen=limit)
        self.pending = 0


class LoginLimits:
    """Counts failed password logins; thread-safe.

    An attempt counts from the moment it is let through (:meth:`begin`) until the KDC
    has answered (:meth:`end`): guesses sent all at once cannot slip past the limit while
    the first ones are still at the KDC. When the tables are full, keys that are locked
    are the last to be forgotten, so a flood of other names cannot wipe a user's count.
    """

    def __init__(self, opts: LoginLimitOptions) -> None:
        self.opts = opts
        self._lock = threading.Lock()
        self._principals: collections.OrderedDict[str, _Window] = collections.OrderedDict()
        self._addresses: collections.OrderedDict[str, _Window] = collections.OrderedDict()

    def begin(self, principal: str, address: str) -> int | None:
        """Let a password login of ``principal`` from ``address`` go to the KDC (``None``;
        call :meth:`end` when it has answered), or refuse it: the seconds until one may
        be tried (for ``Retry-After``), or ``0`` when only that user's attempts still at
        the KDC fill the limit (wait for one of them to end, then ask again)."""
        now = time.monotonic()
        opts = self.opts
        host_key = address_key(address)
        with self._lock:
            # Looked up, not added: a refused attempt must not make room in the tables
            # by pushing a locked name out.
            user = self._principals.get(principal)
            host = self._addresses.get(host_key)
            user_wait = self._wait(user, opts.per_principal, now)
            host_wait = self._wait(host, opts.per_address, now)
            if host_wait is not None:
                return max(1, math.ceil(host_wait))
            if user_wait is not None:
                return max(1, math.ceil(user_wait)) if user_wait > 0 else 0
            user = self._window(self._principals, principal, opts.per_principal, now)
            host = self._window(self._addresses, host_key, opts.per_address, now)
            user.pending += 1
            host.pending += 1
            return None

    def end(
        self, principal: str, address: str, *, failed: bool, proven: bool = False, name: str = ""
    ) -> None:
        """The attempt :meth:`begin` let through is over: a refused password (``failed``:
        a wrong one, an unknown or locked user) counts; a ``proven`` one forgives the
        user's failures typed as that very ``name`` (the principal as typed; not the
        address's, nor those of another account whose name folds the same, "Alice" on
        MIT); neither (the KDC did not answer) just ends."""
        now = time.monotonic()
        opts = self.opts
        with self._lock:
            user = self._window(self._principals, principal, opts.per_principal, now)
            host = self._window(self._addresses, address_key(address), opts.per_address, now)
            user.pending = max(0, user.pending - 1)
            host.pending = max(0, host.pending - 1)
            if failed:
                user.times.append((now, name))
                host.times.append((now, name))
            elif proven:
                kept = [(t, typed) for t, typed in user.times if typed != name]
                user.times.clear()
                user.times.extend(kept)

    def _wait(self, window: _Window | None, limit: int, now: float) -> float | None:
        if window is None:
            return None
        recent = [t for t, _ in window.times if t > now - self.opts.window]
        if len(recent) + window.pending < limit:
            return None
        if len(recent) < limit:
            return 0.0  # attempts at the KDC now: they decide, in a moment
        return recent[-limit] + self.opts.window - now

    def _window(
        self,
        table: collections.OrderedDict[str, _Window],
        key: str,
        limit: int,
        now: float,
    ) -> _Window:
        window = table.get(key)
        if window is not None:
            table.move_to_end(key)
            return window
        window = table[key] = _Window(limit)
        if len(table) > self.opts.entries:
            self._forget_one(table, limit, now)
        return window

    def _forget_one(
        self, table: collections.OrderedDict[str, _Window], limit: int, now: float
    ) -> None:
        # The oldest key that is not locked (nor at the KDC); a locked one only when the
        # first ones checked all are: memory stays bounded either way.
        oldest = next(iter(table))
        for checked, (key, window) in enumerate(table.items()):
            if checked >= _SCAN or key == next(reversed(table)):
                break
            if window.pending == 0 and self._wait(window, limit, now) is None:
                del table[key]
                return
        del table[oldest]


_SCAN = 256  # keys looked at for one to forget, before the oldest goes anyway


def address_key(address: str) -> str:
    """Whom an address stands for: itself (IPv4), or its /64 (IPv6, where one client
    holds a whole /64 and could spread its guesses over it). An IPv4-mapped IPv6 address
    (``::ffff:192.0.2.7``, from a dual-stack socket or proxy) is the IPv4 address: its
    /64 would be every IPv4 client at once."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
