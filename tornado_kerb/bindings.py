"""TLS channel bindings of type ``tls-server-end-point`` (RFC 5929) for the acceptor.

A token bound to our TLS channel carries a hash of *our* certificate: replayed through
another TLS connection (a man in the middle with a certificate of its own), it fails the
accept. The hash is the certificate's own signature hash, except that MD5 and SHA-1 become
SHA-256 (RFC 5929, section 4.1). Nothing here imports Tornado.
"""

from __future__ import annotations

import hashlib
import ssl

import gssapi.raw

__all__ = ["certificate_hash", "server_end_point"]

_PREFIX = b"tls-server-end-point:"

# Signature algorithm OIDs (DER content octets) and the hash RFC 5929 picks for them.
_SHA256, _SHA384, _SHA512 = "sha256", "sha384", "sha512"
_HASHES: dict[bytes, str] = {
    bytes.fromhex("2a864886f70d010104"): _SHA256,  # md5WithRSAEncryption -> SHA-256
    bytes.fromhex("2a864886f70d010105"): _SHA256,  # sha1WithRSAEncryption -> SHA-256
    bytes.fromhex("2a864886f70d01010b"): _SHA256,  # sha256WithRSAEncryption
    bytes.fromhex("2a864886f70d01010c"): _SHA384,  # sha384WithRSAEncryption
    bytes.fromhex("2a864886f70d01010d"): _SHA512,  # sha512WithRSAEncryption
    bytes.fromhex("2a8648ce3d0401"): _SHA256,  # ecdsa-with-SHA1 -> SHA-256
    bytes.fromhex("2a8648ce3d040302"): _SHA256,  # ecdsa-with-SHA256
    bytes.fromhex("2a8648ce3d040303"): _SHA384,  # ecdsa-with-SHA384
    bytes.fromhex("2a8648ce3d040304"): _SHA512,  # ecdsa-with-SHA512
}


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """The DER element at ``at``: (tag, start of its content, end of its content)."""
    tag = der[at]
    length = der[at + 1]
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    end = start + length
    if end > len(der):
        raise ValueError("truncated DER")
    return tag, start, end


def certificate_hash(der: bytes) -> bytes:
    """The RFC 5929 hash of a DER certificate.

    Signature algorithms without a single hash of their own (RSASSA-PSS, Ed25519), for
    which RFC 5929 leaves the binding undefined, get SHA-256, as OpenSSL-based clients do.
    """
    # Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    _, start, _ = _element(der, 0)
    _, _, tbs_end = _element(der, start)
    _, alg_start, _ = _element(der, tbs_end)
    tag, oid_start, oid_end = _element(der, alg_start)
    if tag != 0x06:
        raise ValueError("no signature algorithm OID in the certificate")
    name = _HASHES.get(der[oid_start:oid_end], _SHA256)
    return hashlib.new(name, der).digest()


def server_end_point(pem_path: str) -> gssapi.raw.ChannelBindings:
    """Channel bindings for the server certificate in ``pem_path`` (the first one there,
    which is the server's own in a certificate chain file)."""
    with open(pem_path) as pem:
        text = pem.read()
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    if begin not in text:
        raise ValueError(f"{pem_path}: no PEM certificate")
    first = text[text.index(begin) : text.index(end, text.index(begin)) + len(end)]
    der = ssl.PEM_cert_to_DER_cert(first)
    return gssapi.raw.ChannelBindings(application_data=_PREFIX + certificate_hash(der))
