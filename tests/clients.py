"""Client-side helpers: raw SPNEGO tokens, and curl."""

from __future__ import annotations

import base64
import concurrent.futures
import os
import subprocess
from typing import Any

import gssapi
import requests

SPNEGO = gssapi.Mechanism.from_sasl_name("SPNEGO")
MUTUAL = gssapi.RequirementFlag.mutual_authentication
DELEGATE = gssapi.RequirementFlag.delegate_to_peer


def spnego_token(
    target: str = "HTTP@localhost",
    *,
    ccache: str | None = None,
    flags: int | None = None,
) -> bytes:
    """A fresh SPNEGO initiator token, from the default ccache or ``ccache``."""
    creds = gssapi.Credentials(usage="initiate", store={"ccache": ccache}) if ccache else None
    ctx = gssapi.SecurityContext(
        name=gssapi.Name(target, gssapi.NameType.hostbased_service),
        usage="initiate",
        mech=SPNEGO,
        creds=creds,
        flags=flags if flags is not None else MUTUAL,
    )
    token = ctx.step()
    assert token
    return token


def negotiate_header(token: bytes | None = None) -> str:
    return "Negotiate " + base64.b64encode(token or spnego_token()).decode()


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def curl(
    url: str, *args: str, ca: str | None = None, env: dict[str, str] | None = None
) -> tuple[int, dict[str, list[str]], str]:
    """Run curl (with ``env`` over this process's environment); return status, headers
    (lower-cased names, all values) and body."""
    cmd = ["curl", "-sS", "-D", "-", "--max-time", "30", *args]
    if ca:
        cmd += ["--cacert", ca]
    out = subprocess.run(
        [*cmd, url], check=True, capture_output=True, env={**os.environ, **(env or {})}
    ).stdout.decode()
    # With --negotiate curl prints the 401 and the final response: keep the last one.
    blocks = out.split("\r\n\r\n")
    status, headers, body = 0, {}, ""
    i = 0
    while i < len(blocks) and blocks[i].startswith("HTTP/"):
        lines = blocks[i].split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        i += 1
    body = "\r\n\r\n".join(blocks[i:])
    return status, headers, body


def get_concurrently(url: str, headers: list[dict[str, str]], workers: int = 8) -> list[Any]:
    """GET ``url`` once per entry of ``headers``, ``workers`` at a time; responses in order."""

    def fetch(header: dict[str, str]) -> requests.Response:
        return requests.get(url, headers=header, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fetch, headers))
