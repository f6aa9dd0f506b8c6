"""Kerberos single sign-on (SPNEGO/Negotiate, with a TLS-only Basic fallback) for Tornado."""

from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    DelegationRefused,
    DirectoryUnavailable,
    Forbidden,
    GSSProxyUnavailable,
    KDCUnavailable,
    KerberosError,
    KeytabError,
    LocalNameError,
    LoginError,
    NoCredentials,
    StoreUnavailable,
    TooManyAttempts,
)
from .guard import KerberosGuard
from .settings import KerberosSettings
from .user import KerberosUser
from .web import KerberosAuthMixin, authenticated, optional_login, public

__version__ = "0.4.0"

__all__ = [
    "AuthenticationFailed",
    "ConfigurationError",
    "DelegationRefused",
    "DirectoryUnavailable",
    "Forbidden",
    "GSSProxyUnavailable",
    "KDCUnavailable",
    "KerberosAuthMixin",
    "KerberosError",
    "KerberosGuard",
    "KerberosSettings",
    "KerberosUser",
    "KeytabError",
    "LocalNameError",
    "LoginError",
    "NoCredentials",
    "StoreUnavailable",
    "TooManyAttempts",
    "authenticated",
    "optional_login",
    "public",
]
