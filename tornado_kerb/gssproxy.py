"""GSS-Proxy: accepting tickets without ever holding the keytab.

With the ``gssproxy`` setting the keytab belongs to GSS-Proxy, a root daemon that accepts
on our behalf over a unix socket: a bug in the app (or a Jupyter kernel of the server's
account) cannot read the key and mint tickets for any user to us. libgssapi sends our
calls there through GSS-Proxy's interposer plug-in, which the *process's environment*
turns on: ``GSS_USE_PROXY=yes`` (and ``GSSPROXY_SOCKET`` for a socket other than the
system one), read by libgssapi once, at its first call. A library must not set the
environment of a process that serves requests, and setting it late does nothing, so this
module only checks that it was set, and fails closed when it was not.

Credentials are acquired naming a keytab that does not exist (and a private memory
cache): through the proxy the name is ignored (the daemon uses its own), while any path
that does not go through the proxy (the interposer missing, ``GSSPROXY_BEHAVIOR``
falling back to local) finds no key, so nothing here can ever read a keytab of its own.

Nothing here imports Tornado.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping

from .errors import ConfigurationError, GSSProxyUnavailable

__all__ = ["DEFAULT_SOCKET", "NO_KEYTAB", "STORE", "GSSProxy"]

#: The system daemon's socket (Debian, Fedora), when ``GSSPROXY_SOCKET`` is not set.
DEFAULT_SOCKET = "/var/lib/gssproxy/default.sock"
#: The keytab named when acquiring through the proxy: one that never exists.
NO_KEYTAB = "FILE:/nonexistent/tornado_kerb/keys-are-gssproxy-s"
#: The credential store acquisitions name: that keytab, and a private memory cache for
#: the handle GSS-Proxy's interposer keeps (without one it uses the process's default
#: cache, and fails when that is not the app's to write: measured).
STORE: dict[bytes | str, bytes | str] = {
    "keytab": NO_KEYTAB,
    "ccache": "MEMORY:tornado_kerb-gssproxy",
}
_TRUE = frozenset({"1", "yes", "true", "on"})
_LOCAL = frozenset({"LOCAL_ONLY", "LOCAL_FIRST"})
_PROBE_TIMEOUT = 1.0


class GSSProxy:
    """The GSS-Proxy this process accepts through: where its socket is, and whether the
    environment really sends libgssapi there.

    ``setting`` is the ``gssproxy`` setting: ``True`` (the socket ``GSSPROXY_SOCKET``
    names, else :data:`DEFAULT_SOCKET`) or a socket path, which must be the one
    ``GSSPROXY_SOCKET`` names. Raises :class:`~tornado_kerb.ConfigurationError` when the
    environment does not match.
    """

    def __init__(self, setting: bool | str, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        use = env.get("GSS_USE_PROXY", "")
        if use.lower() not in _TRUE:
            raise ConfigurationError(
                "kerberos setting 'gssproxy': the process must start with GSS_USE_PROXY=yes "
                "in its environment (systemd: Environment=GSS_USE_PROXY=yes), or libgssapi "
                "never asks GSS-Proxy" + (f" (it is {use!r})" if use else "")
            )
        behavior = env.get("GSSPROXY_BEHAVIOR", "")
        if behavior.upper() in _LOCAL:
            raise ConfigurationError(
                f"kerberos setting 'gssproxy': GSSPROXY_BEHAVIOR={behavior} asks libgssapi "
                "to use a local keytab first: unset it, or set REMOTE_ONLY"
            )
        named = env.get("GSSPROXY_SOCKET")
        if isinstance(setting, str) and setting != (named or DEFAULT_SOCKET):
            raise ConfigurationError(
                f"kerberos setting 'gssproxy' names the socket {setting}, but libgssapi "
                f"uses {named or DEFAULT_SOCKET}: start the process with "
                f"GSSPROXY_SOCKET={setting}"
            )
        #: The daemon's unix socket.
        self.socket = named or DEFAULT_SOCKET

    def probe(self) -> None:
        """Raise :class:`~tornado_kerb.GSSProxyUnavailable` unless something listens on
        the socket (asked only after a failure, and at start-up: never per request)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(_PROBE_TIMEOUT)
        try:
            sock.connect(self.socket)
        except OSError as err:
            why = {
                errno.ENOENT: "no socket there: is gssproxy running?",
                errno.ECONNREFUSED: "nothing listens on the socket: gssproxy has stopped",
                errno.EACCES: f"permission denied to uid {os.geteuid()}",
            }.get(err.errno or 0, err.strerror or str(err))
            raise GSSProxyUnavailable(self.socket, why) from None
        finally:
            sock.close()
