"""Splitting an ``Authorization`` header into scheme and credentials."""

from __future__ import annotations

import base64
import binascii

from .errors import AuthenticationFailed

# Active Directory tokens with large PACs reach ~48 kB (Windows' MaxTokenSize default),
# 64 kB in base64; anything longer is not a Kerberos token.
MAX_CREDENTIALS = 65536
_TOKEN68 = frozenset({"negotiate", "basic"})  # base64: a comma is never part of them


def split_authorization(value: str) -> tuple[str, str]:
    """``"Negotiate YII…"`` → ``("negotiate", "YII…")``; the scheme is lower-cased.

    RFC 7235: the scheme is case-insensitive and separated from its credentials by
    spaces (not tabs). Raises ``malformed`` for two ``Authorization`` headers (Tornado
    joins them with a comma, which neither token68 nor Basic ever holds: refusing beats
    "first wins") and ``too-large`` for credentials no Kerberos token reaches.
    """
    scheme, _, rest = value.strip(" ").partition(" ")
    if len(rest) > MAX_CREDENTIALS:
        raise AuthenticationFailed("too-large", f"credentials over {MAX_CREDENTIALS} bytes")
    scheme = scheme.lower()
    if "," in rest and scheme in _TOKEN68:
        raise AuthenticationFailed("malformed", "more than one Authorization header")
    return scheme, rest.strip(" ")


def decode_base64(data: str) -> bytes:
    """Strict base64 (RFC 4648 alphabet, padding required); raises ``malformed``."""
    try:
        return base64.b64decode(data.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise AuthenticationFailed("malformed", "credentials are not base64") from None
