"""Splitting an ``Authorization`` header into scheme and credentials."""

from __future__ import annotations

import base64
import binascii

from .errors import AuthenticationFailed


def split_authorization(value: str) -> tuple[str, str]:
    """``"Negotiate YII…"`` → ``("negotiate", "YII…")``; the scheme is lower-cased."""
    scheme, _, rest = value.strip().partition(" ")
    return scheme.lower(), rest.strip()


def decode_base64(data: str) -> bytes:
    """Strict base64 (RFC 4648 alphabet, padding required); raises ``malformed``."""
    try:
        return base64.b64decode(data.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise AuthenticationFailed("malformed", "credentials are not base64") from None
