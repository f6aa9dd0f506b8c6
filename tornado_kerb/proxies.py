"""Which scheme and client address a request really has, behind reverse proxies or not.

Basic and the sign-in form take passwords only over TLS, session cookies are ``Secure`` on
TLS, and the guessing limits count client addresses: all of it must not believe a client
that *says* it came over HTTPS, or from another address. So ``X-Forwarded-Proto`` (or
``X-Scheme``) and ``X-Real-IP`` (or ``X-Forwarded-For``), as Tornado's ``xheaders=True``
reads them into ``request.protocol`` and ``request.remote_ip``, count only from the peers
in ``trusted_proxies``; from any other peer the connection's own scheme and address do.

Tornado keeps the connection's own address and scheme, before ``xheaders`` rewrites them,
only in private attributes of the request's connection context (``_orig_remote_ip``,
``_orig_protocol``, Tornado 6); we read those, falling back to ``remote_ip`` and
``protocol`` where a context lacks them (a request built by hand).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import tornado.httputil

from .errors import ConfigurationError

__all__ = ["Proxies"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_PEERS = 4096  # peers remembered as trusted or not (cleared when full)


class Proxies:
    """The ``trusted_proxies`` setting: addresses or networks (``"10.0.0.0/8"``)."""

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        nets: list[Network] = []
        for item in trusted:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigurationError(
                    f"kerberos setting 'trusted_proxies': {item!r} is not an address or "
                    "network ('10.0.0.5', '10.0.0.0/8', '::1')"
                ) from None
        self._nets = tuple(nets)
        self._peers: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._nets)

    def scheme(self, request: tornado.httputil.HTTPServerRequest) -> str:
        """``https`` or ``http``: the connection's, or a trusted proxy's word for it."""
        # On every guarded request: one attribute chain, no call, when nothing is trusted.
        try:
            own: str = request.connection.context._orig_protocol  # type: ignore[union-attr]
        except AttributeError:
            own = request.protocol
        if not self._nets or not self._trusted(request):
            return own
        # A trusted proxy: Tornado's xheaders has read its X-Forwarded-Proto (or X-Scheme)
        # into request.protocol already (without xheaders, nothing is read: its own).
        return request.protocol

    def client(self, request: tornado.httputil.HTTPServerRequest) -> str:
        """The client's address: the connection's peer, or what a trusted proxy says."""
        own = _own(request, "_orig_remote_ip", request.remote_ip or "")
        if not self._nets or not self._trusted(request):
            return own
        # Tornado's xheaders put the proxy's X-Real-IP (or X-Forwarded-For hop) there.
        return request.remote_ip or own

    def _trusted(self, request: tornado.httputil.HTTPServerRequest) -> bool:
        peer = _own(request, "_orig_remote_ip", request.remote_ip or "")
        # ipaddress costs microseconds a request: a proxy's few addresses are remembered.
        known = self._peers.get(peer)
        if known is None:
            try:
                address = ipaddress.ip_address(peer)
            except ValueError:
                known = False
            else:
                known = any(address in net for net in self._nets)
            if len(self._peers) >= _PEERS:
                self._peers.clear()
            self._peers[peer] = known
        return known


def _own(request: tornado.httputil.HTTPServerRequest, attr: str, default: str) -> str:
    context = getattr(request.connection, "context", None)
    value = getattr(context, attr, None)
    return value if isinstance(value, str) and value else default
