#!/usr/bin/env bash
# Install the system packages tornado_kerb's tests, demo and benchmark need (Debian/Ubuntu).
# Does nothing when everything is already there; uses sudo when not root.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have krb5kdc      || need+=(krb5-kdc)
have kadmin.local || need+=(krb5-admin-server)
have kinit        || need+=(krb5-user)
have krb5-config  || need+=(libkrb5-dev)
have curl         || need+=(curl)
have openssl      || need+=(openssl)
have gcc          || need+=(gcc)
have make         || need+=(make)
# python-ldap (group names over LDAP: the [ad] extra, and the tests) builds against
# libldap and Cyrus SASL.
[ -f /usr/include/ldap.h ]      || need+=(libldap-dev)
[ -f /usr/include/sasl/sasl.h ] || need+=(libsasl2-dev)
# Acting as the user down to a real database: PostgreSQL's server, and the system libpq
# that psycopg's pure-Python implementation loads (never psycopg[binary]: its bundled
# libkrb5 cannot see our per-thread credential caches).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
[ -e /usr/lib/x86_64-linux-gnu/libpq.so.5 ] || ldconfig -p 2>/dev/null | grep -q "libpq\.so\.5" \
  || need+=(libpq5)
# Constrained delegation (S4U2Proxy) needs MIT's LDAP database back end: the tests and
# the demo run a private slapd on a unix socket (never the system service).
have slapd        || need+=(slapd)
have ldapmodify   || need+=(ldap-utils)
[ -x /usr/sbin/kdb5_ldap_util ] || need+=(krb5-kdc-ldap)
# Active Directory: the tests run a private Samba DC (tornado_kerb/testing/samba.py), never
# the system service. samba-ad-dc only recommends samba-ad-provision, which holds the AD
# schema: without it nothing provisions. python3-samba (a dependency of samba) decodes PACs
# in the system python3 for the tests; the SASL GSSAPI module lets ldapsearch bind to the DC
# with Kerberos. None of these replaces or removes MIT krb5 (Samba's Heimdal is private to
# samba-libs; the SASL module is the MIT flavour). TORNADO_KERB_NO_AD=1 skips them.
ad=()
new_samba=0
if [ "${TORNADO_KERB_NO_AD:-}" != 1 ]; then
  have samba        || { ad+=(samba-ad-dc); new_samba=1; }
  [ -d /usr/share/samba/setup/ad-schema ] || ad+=(samba-ad-provision)
  have ldbsearch    || ad+=(ldb-tools)
  /usr/bin/python3 -c 'import samba.dcerpc.krb5pac' 2>/dev/null || ad+=(python3-samba)
  compgen -G "/usr/lib/*/sasl2/libgssapiv2.so*" >/dev/null || ad+=(libsasl2-modules-gssapi-mit)
  need+=("${ad[@]}")
fi
# gssapi and krb5 compile against Python's headers, and make creates a venv.
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
[ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] \
  || need+=(python3-dev)
# nginx in front of two Tornado processes: tests/test_nginx.py runs a private one (never the
# system service). TORNADO_KERB_NO_NGINX=1 skips those tests.
new_nginx=0
have nginx || { need+=(nginx-light); new_nginx=1; }
# The app never holding the keytab: tests/test_gssproxy.py runs a private GSS-Proxy daemon
# (the package also installs the interposer plug-in libgssapi loads); the shared store:
# tests run a private redis-server. Neither uses the system service.
# TORNADO_KERB_NO_GSSPROXY=1 and TORNADO_KERB_NO_REDIS=1 skip those tests.
[ -x /usr/sbin/gssproxy ] || need+=(gssproxy)
new_redis=0
have redis-server || { need+=(redis-server); new_redis=1; }
# The demo's browser tests: Firefox ESR, Chromium, and certutil to trust the development CA.
if [ "${TORNADO_KERB_NO_BROWSER:-}" != 1 ]; then
  have firefox-esr || need+=(firefox-esr)
  have chromium    || need+=(chromium)
  have certutil    || need+=(libnss3-tools)
fi

[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages (${need[*]}) and no apt-get: install MIT krb5 by hand" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${need[*]}"
# Without noninteractive, krb5-config asks for a default realm and an install with no
# terminal (CI) hangs. The KDC service is not started by the package on Debian's
# containers; k5test runs its own krb5kdc either way.
$sudo apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"

# Debian starts (or enables) smbd, nmbd, winbind, samba-ad-dc and nginx on install where
# services may start (not in containers with a policy-rc.d). A system samba-ad-dc would take
# ports 88 and 389 on every address, nginx port 80, redis 6379; the tests use none of them:
# stop and disable what this run just installed, never one the machine had before.
services=()
[ "$new_samba" = 1 ] && services+=(samba-ad-dc smbd nmbd winbind)
[ "$new_nginx" = 1 ] && services+=(nginx)
[ "$new_redis" = 1 ] && services+=(redis-server)
if [ ${#services[@]} -gt 0 ]; then
  for svc in "${services[@]}"; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
      $sudo "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
      $sudo update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
  done
fi
