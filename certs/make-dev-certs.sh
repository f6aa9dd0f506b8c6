#!/usr/bin/env bash
# Make development TLS certificates for tornado_kerb: a local CA and a
# certificate for "localhost" signed by it.
#
#   certs/make-dev-certs.sh [--force] [OUTDIR]
#
# OUTDIR defaults to the directory this script lives in. Writes ca.pem,
# ca.key, localhost.pem and localhost.key; nothing else is left behind.
# If localhost.pem, localhost.key and ca.pem already exist it does nothing
# unless --force is given.
#
# DEVELOPMENT ONLY: never use these certificates or this CA in production.
set -euo pipefail

usage() {
    echo "usage: $0 [--force] [OUTDIR]"
    echo "  Makes ca.pem, ca.key, localhost.pem, localhost.key in OUTDIR"
    echo "  (default: the directory this script is in); --force remakes them."
}

force=0
if [[ $# -gt 0 && "$1" == "--force" ]]; then
    force=1
    shift
fi
if [[ $# -gt 0 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    usage
    exit 0
fi
if [[ $# -gt 0 && "$1" == -* ]]; then
    echo "$0: unknown option: $1" >&2
    usage >&2
    exit 2
fi
if [[ $# -gt 1 ]]; then
    usage >&2
    exit 2
fi

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
outdir="${1:-$script_dir}"

command -v openssl >/dev/null 2>&1 || {
    echo "$0: openssl not found; install it (Debian: apt-get install openssl)" >&2
    exit 1
}

if [[ $force -eq 0 && -f "$outdir/localhost.pem" && -f "$outdir/localhost.key" && -f "$outdir/ca.pem" ]]; then
    echo "Development certificates already exist in $outdir (use --force to remake them)."
    exit 0
fi

mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

ca_days=3650     # ~10 years
server_days=825  # browsers refuse server certificates valid for longer

# Our own minimal config, so nothing depends on the system openssl.cnf.
cat >"$tmp/req.cnf" <<'EOF'
[req]
distinguished_name = req_dn
prompt = no
[req_dn]
CN = placeholder
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

cat >"$tmp/server.ext" <<'EOF'
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF

# Keys: EC P-256, no passphrase, created with mode 0600.
(
    umask 077
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ca.key"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/localhost.key"
)

# CA certificate (self-signed).
openssl req -new -x509 -config "$tmp/req.cnf" -extensions v3_ca \
    -key "$tmp/ca.key" -sha256 -days "$ca_days" \
    -subj "/O=tornado_kerb development/CN=tornado_kerb development CA" \
    -out "$tmp/ca.pem"

# Server certificate for localhost, signed by the CA.
openssl req -new -config "$tmp/req.cnf" \
    -key "$tmp/localhost.key" -sha256 \
    -subj "/O=tornado_kerb development/CN=localhost" \
    -out "$tmp/localhost.csr"
openssl x509 -req -in "$tmp/localhost.csr" \
    -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
    -CAserial "$tmp/ca.srl" -CAcreateserial \
    -sha256 -days "$server_days" \
    -extfile "$tmp/server.ext" -extensions v3_server \
    -out "$tmp/localhost.pem" 2>"$tmp/x509.log" || {
    cat "$tmp/x509.log" >&2
    exit 1
}

# Check the chain (and that it is valid for a TLS server named localhost)
# before anything in OUTDIR is replaced.
if ! openssl verify -CAfile "$tmp/ca.pem" -purpose sslserver \
        -verify_hostname localhost "$tmp/localhost.pem" >"$tmp/verify.log" 2>&1; then
    cat "$tmp/verify.log" >&2
    echo "$0: openssl verify failed; nothing written to $outdir" >&2
    exit 1
fi

chmod 0600 "$tmp/ca.key" "$tmp/localhost.key"
chmod 0644 "$tmp/ca.pem" "$tmp/localhost.pem"
for f in ca.key localhost.key ca.pem localhost.pem; do
    mv -f "$tmp/$f" "$outdir/$f"
done

# Final check on the installed files.
if ! openssl verify -CAfile "$outdir/ca.pem" "$outdir/localhost.pem" >/dev/null; then
    echo "$0: openssl verify -CAfile $outdir/ca.pem $outdir/localhost.pem failed" >&2
    exit 1
fi

echo "Wrote development certificates (verified with openssl verify):"
echo "  $outdir/ca.pem         local CA certificate (trust this one)"
echo "  $outdir/ca.key         local CA private key"
echo "  $outdir/localhost.pem  server certificate for localhost, 127.0.0.1, ::1"
echo "  $outdir/localhost.key  server private key"
echo "Clients must trust ca.pem, e.g. curl --cacert $outdir/ca.pem https://localhost:PORT/"
