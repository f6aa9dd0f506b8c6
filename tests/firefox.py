"""Headless Firefox ESR as a Kerberos (SPNEGO/Negotiate) client, for tests.

    run_firefox(url, profile_dir, ca_pem, realm.env, out_png)

loads ``url`` in a headless Firefox ESR that trusts ``ca_pem`` (a development CA), uses
the Kerberos ticket cache named by ``env["KRB5CCNAME"]`` (and ``KRB5_CONFIG``) for
Negotiate on ``localhost``, writes a PNG screenshot of the loaded page to ``out_png``
and returns once Firefox has exited. Raises ``FirefoxError`` on failure/timeout.

Measured with Debian firefox-esr 153.7.0esr, as root, no display, no outside network:
0.55-0.85 s a run with a fresh profile, 401 then 200 via Negotiate at the server, Firefox
exits by itself and leaves no process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox") or "firefox-esr"
CERTUTIL = shutil.which("certutil") or "certutil"  # Debian package libnss3-tools
CA_NICKNAME = "tornado_kerb-dev-ca"


class FirefoxError(RuntimeError):
    pass


def _js(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# Kerberos prefs: trusted-uris is a comma-separated list of URL prefixes or host suffixes;
# "localhost" matches http and https on any port. delegation-uris makes Firefox forward
# the user's TGT (the server then gets delegated_credentials).
NEGOTIATE_PREFS = {
    "network.negotiate-auth.trusted-uris": "localhost",
    "network.negotiate-auth.delegation-uris": "localhost",  # -> delegated_credentials
    "network.negotiate-auth.allow-non-fqdn": True,
    "network.negotiate-auth.allow-proxies": False,
    "network.automatic-ntlm-auth.trusted-uris": "",
}

# Keep Firefox quiet: no first-run pages, telemetry, studies, updates, safe browsing,
# captive-portal probes, DoH, prefetch, OCSP. MOZ_DISABLE_NONLOCAL_CONNECTIONS (below)
# stops what no pref can (remote settings) and keeps it on loopback.
QUIET_PREFS = {
    "network.proxy.type": 0,
    "network.trr.mode": 5,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "app.normandy.enabled": False,
    "app.update.disabledForTesting": True,
    "extensions.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "security.OCSP.enabled": 0,
}


def prepare_profile(
    profile_dir: str | os.PathLike,
    ca_pem: str | os.PathLike | None,
    extra_prefs: Mapping[str, object] | None = None,
) -> Path:
    """Create/refresh a profile: user.js and an NSS cert DB trusting ca_pem for TLS."""
    profile = Path(profile_dir)
    profile.mkdir(parents=True, exist_ok=True)
    prefs = {**NEGOTIATE_PREFS, **QUIET_PREFS, **(extra_prefs or {})}
    (profile / "user.js").write_text(
        "".join(f"user_pref({_js(k)}, {_js(v)});\n" for k, v in prefs.items())
    )
    if ca_pem is not None:
        trust_ca(profile, ca_pem)
    return profile


def trust_ca(nssdb: Path, ca_pem: str | os.PathLike) -> None:
    """Make the NSS database in directory ``nssdb`` (created if need be) trust ``ca_pem``
    for TLS servers: what Firefox profiles and Chromium's ~/.pki/nssdb both read."""
    db = f"sql:{nssdb}"
    if not (nssdb / "cert9.db").exists():
        subprocess.run(
            [CERTUTIL, "-N", "-d", db, "--empty-password"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    # "C,," = trusted CA for TLS server certificates (not e-mail, not code signing).
    subprocess.run(
        [CERTUTIL, "-A", "-d", db, "-n", CA_NICKNAME, "-t", "C,,", "-i", str(ca_pem)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def firefox_env(profile: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Environment for Firefox: the caller's env (KRB5_CONFIG, KRB5CCNAME...) plus isolation."""
    home = profile / "home"  # Firefox writes ~/.cache, ~/.config/mozilla, ~/Downloads
    home.mkdir(exist_ok=True)
    child = {**os.environ, **env}
    for var in (
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "DBUS_SESSION_BUS_ADDRESS",
        "XAUTHORITY",
        "MOZ_NO_REMOTE",
        "MOZ_LOG",
        "MOZ_LOG_FILE",
    ):
        child.pop(var, None)
    child.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_RUNTIME_DIR=str(home / "run"),
        MOZ_HEADLESS="1",
        MOZ_CRASHREPORTER_DISABLE="1",
        # Necko refuses any non-loopback connection (prints FATAL ERROR on stderr)
        # and this also lets services.settings.server be overridden. krb5 traffic to
        # the KDC is libkrb5's own and is unaffected.
        MOZ_DISABLE_NONLOCAL_CONNECTIONS="1",
    )
    (home / "run").mkdir(mode=0o700, exist_ok=True)
    require_realm_env(child, FirefoxError, "Firefox")
    return child


def require_realm_env(env: Mapping[str, str], error: type[Exception], browser: str) -> None:
    """Refuse to start a browser that would use the system's krb5 instead of the realm's."""
    for var in ("KRB5_CONFIG", "KRB5CCNAME"):
        if var not in env:
            raise error(f"{var} missing from env: {browser} would use the system krb5")


def run_firefox(
    url: str,
    profile_dir: str | os.PathLike,
    ca_pem: str | os.PathLike | None,
    env: Mapping[str, str],
    out_png: str | os.PathLike,
    *,
    timeout: float = 60,
    window_size: tuple[int, int] | None = None,
    extra_prefs: Mapping[str, object] | None = None,
) -> None:
    """Load url in headless Firefox ESR, screenshot to out_png, return when Firefox exited.

    env must name the realm (k5test: realm.env; needs KRB5_CONFIG and KRB5CCNAME).
    Raises FirefoxError on timeout (the whole Firefox process group is killed), on a
    non-zero exit, or if no PNG was written.

    A 401 is NOT an error here: when Negotiate is not attempted or fails, Firefox renders
    the 401 body (no Basic prompt in --screenshot mode) and exits 0. Assert on what the
    server saw (record principal/mechanism in the handler), not only on the return.
    One profile per concurrently running Firefox (profiles are locked while in use);
    reusing a profile sequentially is fine (and faster: ~0.3 s instead of ~0.6 s).
    Firefox stores the HTTP/localhost service ticket (and, with delegation, a forwarded
    TGT request hits the KDC) in the ccache named by env["KRB5CCNAME"].
    """
    profile = prepare_profile(profile_dir, ca_pem, extra_prefs)
    out = Path(out_png).resolve()
    out.unlink(missing_ok=True)
    cmd = [FIREFOX, "--headless", "--no-remote", "--profile", str(profile)]
    if window_size:
        cmd += ["--window-size", f"{window_size[0]},{window_size[1]}"]
    cmd += ["--screenshot", str(out), url]
    proc = subprocess.Popen(
        cmd,
        env=firefox_env(profile, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own process group: kill content processes too
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        output, _ = proc.communicate()
        raise FirefoxError(
            f"firefox did not finish within {timeout}s. --screenshot never fires on a "
            f"network error page: untrusted certificate (server logs TLSV1_ALERT_UNKNOWN_CA), "
            f"connection refused, or a server that never answers:\n"
            f"{output.decode(errors='replace')[-4000:]}"
        ) from None
    finally:
        _kill_group(proc)  # reap anything left in the group, even after a clean exit
    text = output.decode(errors="replace")
    if proc.returncode != 0:
        raise FirefoxError(f"firefox exited with {proc.returncode}:\n{text[-4000:]}")
    if not out.exists() or out.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise FirefoxError(f"firefox wrote no screenshot to {out}:\n{text[-4000:]}")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
