"""Helpers for testing Kerberos-protected Tornado apps against a real, throwaway MIT realm.

Needs ``k5test`` (the ``test`` extra) and MIT krb5's KDC programs::

    realm = start_realm(krb5_conf={"libdefaults": {"forwardable": "true"}})
    try:
        ...
    finally:
        realm.stop()
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["random_portbase", "realm_environment", "start_realm"]

# Below Linux's ephemeral port range (32768+), where servers bound to port 0 land.
_PORTS = range(20000, 32000, 10)

# Client settings that make "HTTP@localhost" mean HTTP/localhost whatever DNS says.
_LIBDEFAULTS = {"dns_canonicalize_hostname": "false", "rdns": "false"}


def random_portbase() -> int:
    """A random k5test port base (k5test uses the ten ports from there)."""
    return random.choice(_PORTS)  # noqa: S311 - spreading ports, not a secret


def start_realm(*, attempts: int = 5, **kwargs: Any) -> Any:
    """Start a ``k5test.K5Realm`` on a random port base; call ``.stop()`` when done.

    k5test's fixed default port base makes two realms (or two test runs) collide, and a
    port already in use makes ``krb5kdc`` exit: each attempt takes a new random base.
    ``krb5_conf`` is merged over settings that keep host names as typed.
    """
    import k5test  # the test extra; not needed to serve

    conf = dict(kwargs.pop("krb5_conf", None) or {})
    conf["libdefaults"] = {**_LIBDEFAULTS, **conf.get("libdefaults", {})}
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return k5test.K5Realm(portbase=random_portbase(), krb5_conf=conf, **kwargs)
        except Exception as err:  # k5test raises a bare Exception when a daemon fails
            last = err
    raise RuntimeError(f"could not start a KDC in {attempts} attempts: {last}")


@contextlib.contextmanager
def realm_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Put a realm's environment (``KRB5_CONFIG``, ``KRB5CCNAME``…) into ``os.environ`` for
    the block, then put ``os.environ`` back exactly as it was. For tests only: a server
    never changes the process environment."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
