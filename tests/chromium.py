"""Headless Chromium as a Kerberos (SPNEGO/Negotiate) client, for tests.

    dom = run_chromium(url, profile_dir, ca_pem, realm.env)

loads ``url`` in a headless Chromium that trusts ``ca_pem`` (a development CA), uses the
Kerberos ticket cache named by ``env["KRB5CCNAME"]`` (and ``KRB5_CONFIG``) for Negotiate
on ``localhost``, and returns the page's DOM once Chromium has exited (``page_json``
reads a JSON answer out of it). Raises ``ChromiumError`` on failure/timeout.

Two things a fresh Chromium profile needs, both kept under ``profile_dir``:

- ``Local State`` seeded with ``net.received_http_auth_negotiate_headers``: on Linux
  Chromium loads GSSAPI only once a profile has seen a Negotiate challenge, so an unseeded
  profile fails its first load (``ERR_INVALID_AUTH_CREDENTIALS`` over HTTPS, where the
  server also offers Basic) whatever the flags. The same file holds the allowlists
  (``auth.server_allowlist``; ``auth.negotiate_delegate_whitelist`` makes Chromium forward
  the user's TGT): this build ignores ``--auth-negotiate-delegate-allowlist``.
- an NSS database trusting the CA. Chromium reads ``$HOME/.pki/nssdb`` whatever
  ``--user-data-dir`` says, so Chromium runs with ``HOME`` set to ``profile_dir/home``:
  the real user's ``~/.pki`` is never touched.

Measured with Debian chromium 156.0.8078.108, as root, no display, no outside network:
1.3-2.2 s for the first run of a fresh profile, 0.65-1.0 s when reused; 401 then 200
via Negotiate at the server; Chromium exits by itself and leaves no process behind.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.firefox import require_realm_env, trust_ca

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CERTUTIL = shutil.which("certutil")  # Debian package libnss3-tools

# Quiet and local: no first-run work, no component or background downloads.
FLAGS = [
    "--headless",
    "--no-sandbox",  # root, and containers without user namespaces
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]


class ChromiumError(RuntimeError):
    pass


def chromium_missing() -> str | None:
    """Why Chromium cannot run here, or None."""
    if CHROMIUM is None:
        return "chromium is not installed"
    if CERTUTIL is None:
        return "certutil (libnss3-tools) is not installed"
    return None


def prepare_profile(
    profile_dir: str | os.PathLike[str],
    ca_pem: str | os.PathLike[str] | None,
    *,
    delegate: bool = True,
    allow: str = "localhost",
) -> Path:
    """Create/refresh a profile: a seeded ``Local State`` and an NSS db trusting ca_pem."""
    profile = Path(profile_dir)
    profile.mkdir(parents=True, exist_ok=True)
    path = profile / "Local State"
    # Chromium rewrites Local State on exit: merge into what it left.
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    state.setdefault("net", {})["received_http_auth_negotiate_headers"] = True
    auth = state.setdefault("auth", {})
    auth["server_allowlist"] = allow
    if delegate:
        auth["negotiate_delegate_whitelist"] = allow
    else:
        auth.pop("negotiate_delegate_whitelist", None)
    path.write_text(json.dumps(state))
    nssdb = profile / "home" / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    if ca_pem is not None:
        trust_ca(nssdb, ca_pem)
    return profile


def chromium_env(profile: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Environment for Chromium: the caller's env (KRB5_CONFIG, KRB5CCNAME...) plus a
    private HOME (its NSS db, ~/.config, ~/.cache)."""
    home = profile / "home"
    child = {**os.environ, **env}
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XAUTHORITY"):
        child.pop(var, None)
    child.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_RUNTIME_DIR=str(home / "run"),
    )
    (home / "run").mkdir(mode=0o700, parents=True, exist_ok=True)
    require_realm_env(child, ChromiumError, "Chromium")
    return child


def run_chromium(
    url: str,
    profile_dir: str | os.PathLike[str],
    ca_pem: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    *,
    timeout: float = 60,
    delegate: bool = True,
) -> str:
    """Load url in headless Chromium, return the DOM once Chromium has exited.

    env must name the realm (k5test: realm.env; needs KRB5_CONFIG and KRB5CCNAME).
    ``delegate=False`` leaves localhost out of the delegation allowlist (the default of a
    browser nobody configured). Raises ChromiumError on timeout (the whole process group
    is killed), on a non-zero exit, or when the page did not load: ``--dump-dom`` then
    prints nothing and still exits 0, the reason (``net::ERR_...``) is on stderr.
    One profile per concurrently running Chromium; reusing one sequentially is fine.
    """
    if CHROMIUM is None:
        raise ChromiumError("chromium is not installed (scripts/install-system-deps.sh)")
    profile = prepare_profile(profile_dir, ca_pem, delegate=delegate)
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
    proc = subprocess.Popen(
        cmd,
        env=chromium_env(profile, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # own process group: kill renderers and crashpad too
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise ChromiumError(f"chromium did not finish within {timeout}s:\n{_tail(err)}") from None
    finally:
        _kill_group(proc)  # reap anything left in the group, even after a clean exit
    dom = out.decode(errors="replace")
    if proc.returncode != 0:
        raise ChromiumError(f"chromium exited with {proc.returncode}:\n{_tail(err)}")
    failed = re.search(rb"Page load failed: (\S+)", err)
    if failed or not dom.strip():
        reason = failed.group(1).decode() if failed else "an empty DOM"
        raise ChromiumError(
            f"chromium did not load {url}: {reason}. ERR_CERT_AUTHORITY_INVALID: the CA is "
            "not in $HOME/.pki/nssdb; ERR_INVALID_AUTH_CREDENTIALS or "
            "ERR_UNSUPPORTED_AUTH_SCHEME: no Negotiate (Local State not seeded, host not "
            f"in the allowlist, no ticket in KRB5CCNAME):\n{_tail(err)}"
        )
    return dom


def page_json(dom: str) -> Any:
    """The JSON document Chromium shows for an ``application/json`` answer."""
    found = re.search(r"<pre[^>]*>(.*?)</pre>", dom, re.S)
    if found is None:
        raise ChromiumError(f"no JSON in the page:\n{dom[:2000]}")
    return json.loads(html.unescape(found.group(1)))


def _tail(err: bytes) -> str:
    # D-Bus complaints are noise without a session bus: leave them out of error messages.
    lines = [line for line in err.decode(errors="replace").splitlines() if "dbus" not in line]
    return "\n".join(lines)[-4000:]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
