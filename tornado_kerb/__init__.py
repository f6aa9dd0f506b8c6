"""Kerberos single sign-on (SPNEGO/Negotiate, with a TLS-only Basic fallback) for Tornado."""

from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    KDCUnavailable,
    KerberosError,
    KeytabError,
    LoginError,
)
from .settings import KerberosSettings
from .user import KerberosUser
from .web import KerberosAuthMixin, authenticated, public

__version__ = "0.1.0"

__all__ = [
    "AuthenticationFailed",
    "ConfigurationError",
    "KDCUnavailable",
    "KerberosAuthMixin",
    "KerberosError",
    "KerberosSettings",
    "KerberosUser",
    "KeytabError",
    "LoginError",
    "authenticated",
    "public",
]
