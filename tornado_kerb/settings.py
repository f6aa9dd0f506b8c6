"""The ``kerberos`` application setting, validated once into a typed object."""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError

__all__ = ["KerberosSettings"]

_FORBIDDEN_IN_NAMES = set('/@"\\') | {chr(c) for c in range(0x21)} | {"\x7f"}


@dataclasses.dataclass(frozen=True)
class KerberosSettings:
    """Validated Kerberos settings; build it with :meth:`from_mapping`.

    Instances are immutable and hashable: the mixin keeps one set of acceptor credentials
    and one KDC thread pool per distinct settings object.
    """

    #: Path of the service keytab; ``None`` means the system default keytab.
    keytab: str | None = None
    #: Service name of the principal clients ask a ticket for (``HTTP/host@REALM``).
    service: str = "HTTP"
    #: Accept only ``service/hostname``; ``None`` accepts any principal in the keytab.
    hostname: str | None = None
    #: Realm appended to bare Basic user names and shown in the Basic challenge.
    realm: str | None = None
    #: Offer and accept Basic (only ever on TLS connections).
    basic: bool = True
    #: Threads that talk to the KDC for Basic logins.
    kdc_workers: int = 16
    #: Basic logins allowed to wait for a free KDC thread before answering 503.
    kdc_queue: int = 64
    #: Seconds sent in ``Retry-After`` when the KDC cannot be reached.
    retry_after: int = 30

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> KerberosSettings:
        """Validate ``Application.settings["kerberos"]`` (``None`` means all defaults).

        Raises :class:`~tornado_kerb.ConfigurationError` naming the key at fault.
        """
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"kerberos settings must be a dict, not {type(raw).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in raw:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                also = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigurationError(
                    f"unknown kerberos setting {key!r}{also}; known: {', '.join(known)}"
                )
        return cls(
            keytab=_keytab(raw.get("keytab")),
            service=_name("service", raw.get("service", "HTTP"), optional=False) or "HTTP",
            hostname=_name("hostname", raw.get("hostname"), optional=True),
            realm=_name("realm", raw.get("realm"), optional=True),
            basic=_flag("basic", raw.get("basic", True)),
            kdc_workers=_count("kdc_workers", raw.get("kdc_workers", 16), minimum=1),
            kdc_queue=_count("kdc_queue", raw.get("kdc_queue", 64), minimum=0),
            retry_after=_count("retry_after", raw.get("retry_after", 30), minimum=1),
        )


def _keytab(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(f"kerberos setting 'keytab' must be a path, not {value!r}")
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise ConfigurationError("kerberos setting 'keytab' must be a non-empty path")
    return path


def _name(key: str, value: object, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"kerberos setting {key!r} must be a non-empty string")
    bad = sorted(set(value) & _FORBIDDEN_IN_NAMES)
    if bad:
        raise ConfigurationError(
            f"kerberos setting {key!r} = {value!r} may not contain {''.join(bad)!r}"
        )
    return value


def _flag(key: str, value: object) -> bool:
    # A string such as "false" is truthy: refuse it rather than guess.
    if not isinstance(value, bool):
        raise ConfigurationError(f"kerberos setting {key!r} must be True or False")
    return value


def _count(key: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"kerberos setting {key!r} must be an integer >= {minimum}, not {value!r}"
        )
    return value
