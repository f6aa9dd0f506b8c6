#!/usr/bin/env bash
# Install the peers `make bench` measures beside tornado_kerb (Debian/Ubuntu):
#   * Apache httpd with mod_auth_gssapi (Debian apache2, libapache2-mod-auth-gssapi),
#     authenticating in front of a plain Tornado backend;
#   * asgi-gssapi on uvicorn (PyPI), installed into the venv given as $1 (default .venv).
# Does nothing when everything is already there. Never fails the benchmark: a peer that
# cannot be installed is reported on one line, and bench/peers.py reports it as unavailable.
# Uses sudo when not root.
set -uo pipefail

venv="${1:-.venv}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# --- Apache httpd and mod_auth_gssapi -------------------------------------------------
apache_ok() {
  [ -x /usr/sbin/apache2 ] && [ -f /usr/lib/apache2/modules/mod_auth_gssapi.so ] \
    && [ -f /usr/lib/apache2/modules/mod_proxy_http.so ] \
    && [ -f /usr/lib/apache2/modules/mod_session_cookie.so ]
}

install_apache() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bench peers: no apt-get, skipping Apache httpd + mod_auth_gssapi"
    return 0
  fi
  echo "bench peers: installing apache2 libapache2-mod-auth-gssapi"
  # The benchmark runs Apache in the foreground with a config of its own; the packaged
  # service must not start. Container images usually ship a policy-rc.d that forbids
  # starting services (exit 101); where there is none, put one in place until this
  # script exits.
  local policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    # Removed on any exit, Ctrl-C included: left behind, it would stop every later
    # package on this machine from starting its service.
    trap '$sudo rm -f '"$policy" EXIT
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
  fi
  # Debian's package lists may be empty on a fresh machine: update once, only now that
  # something is actually missing.
  if $sudo apt-get update -q >/dev/null \
    && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      apache2 libapache2-mod-auth-gssapi >/dev/null; then
    :
  else
    echo "bench peers: apt-get could not install apache2/libapache2-mod-auth-gssapi;" \
      "the Apache peers will be reported as unavailable"
  fi
  # Belt and braces for machines with a real init system (where policy-rc.d may not be
  # consulted): the packaged service would hold port 80 and spend CPU during the rounds.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet apache2 2>/dev/null; then
    $sudo systemctl disable --now apache2 >/dev/null 2>&1 || true
    echo "bench peers: stopped and disabled the packaged apache2 service"
  fi
  return 0
}

apache_ok || install_apache
if apache_ok; then
  echo "bench peers: Apache httpd + mod_auth_gssapi available"
fi

# --- asgi-gssapi on uvicorn -------------------------------------------------------------
python="$venv/bin/python"
if [ ! -x "$python" ]; then
  echo "bench peers: no Python at $python, skipping asgi-gssapi + uvicorn"
  exit 0
fi
if ! "$python" -c 'import asgi_gssapi, uvicorn' >/dev/null 2>&1; then
  echo "bench peers: installing asgi-gssapi uvicorn into $venv"
  "$python" -m pip install -q asgi-gssapi uvicorn \
    || echo "bench peers: pip could not install asgi-gssapi/uvicorn;" \
      "that peer will be reported as unavailable"
fi
if "$python" -c 'import asgi_gssapi, uvicorn' >/dev/null 2>&1; then
  echo "bench peers: asgi-gssapi + uvicorn available"
fi
exit 0
