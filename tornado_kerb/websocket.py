"""WebSockets: a socket lives no longer than the login that opened it.

The guard authenticates the upgrade request like any other (guard the handler's ``get``:
the 401 comes before the upgrade, never after). A WebSocket then outlives its request,
so the guard also arranges for it to be closed, with code 1008 (policy violation), when
the user's ticket (or session) ends, or when the user's sessions are ended everywhere
(``logout(everywhere=True)``, ``end_sessions()``: looked at every few seconds); the
``websocket_expiry`` setting turns that off.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any

import tornado.ioloop
import tornado.websocket

from .session import Ended
from .user import KerberosUser

__all__ = ["close_when_login_ends"]

log = logging.getLogger(__name__)

#: The close code: RFC 6455's "policy violation".
EXPIRED = 1008
#: Seconds between looks at whether the user's sessions were ended everywhere.
ENDED_CHECK = 5.0


def close_when_login_ends(
    handler: tornado.websocket.WebSocketHandler,
    user: KerberosUser,
    ended: Ended | None = None,
) -> None:
    """Close ``handler``'s socket with :data:`EXPIRED` when ``user``'s login ends, or,
    with ``ended`` (the guard's store), once the user's sessions were ended after the
    socket opened (looked at every :data:`ENDED_CHECK` seconds).

    The timers start when the socket opens and are cancelled when it closes; they hold
    the handler weakly. Wraps the instance's ``open`` and ``on_close`` (not the class's),
    so handlers that override them without ``super()`` are covered too.
    """
    ends = user.expires_at
    if ends is None and ended is None:
        return
    # Only a weak reference and the class's methods in the closures: no reference cycle
    # through the instance's __dict__.
    ref = weakref.ref(handler)
    cls = type(handler)

    def opening(*args: Any, **kwargs: Any) -> Any:
        opened = ref()
        if opened is None:
            return None
        del opened.__dict__["open"]
        if ends is not None:
            loop = tornado.ioloop.IOLoop.current()
            timer = loop.call_later(max(0.0, ends - time.time()), _expire, ref, user.principal)
            opened._tornado_kerb_expiry = timer  # type: ignore[attr-defined]
        if ended is not None:
            since = time.time()
            check = tornado.ioloop.PeriodicCallback(
                lambda: _if_ended(ref, user.principal, ended, since), ENDED_CHECK * 1000
            )
            check.start()
            opened._tornado_kerb_ended = check  # type: ignore[attr-defined]
        return cls.open(opened, *args, **kwargs)

    def closing() -> None:
        closed = ref()
        if closed is None:
            return
        closed.__dict__.pop("on_close", None)
        timer = closed.__dict__.pop("_tornado_kerb_expiry", None)
        if timer is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(timer)
        check = closed.__dict__.pop("_tornado_kerb_ended", None)
        if check is not None:
            check.stop()
        cls.on_close(closed)

    handler.open = opening
    handler.on_close = closing  # type: ignore[method-assign]


def _expire(
    ref: weakref.ReferenceType[tornado.websocket.WebSocketHandler],
    principal: str,
    why: str = "the login ended",
) -> None:
    handler = ref()
    if handler is None or handler.ws_connection is None:
        return
    log.info("closing the WebSocket of %s: %s", principal, why)
    handler.close(EXPIRED, "login expired")


def _if_ended(
    ref: weakref.ReferenceType[tornado.websocket.WebSocketHandler],
    principal: str,
    ended: Ended,
    since: float,
) -> None:
    # A dict lookup every ENDED_CHECK seconds per open socket, once anybody's were ended.
    if ended.ended and ended.not_before(principal) > since:
        _expire(ref, principal, "the user's sessions were ended")
