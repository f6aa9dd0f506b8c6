"""Samba's own NDR code as an oracle for tornado_kerb.pac: build PACs, decode PACs.

Runs with the *system* Python, which has Debian's python3-samba (``apt-get install
python3-samba``); it imports nothing from this project. JSON in on stdin, JSON out on
stdout, one batch per run::

    /usr/bin/python3 tests/pac_oracle.py build  < descriptions.json   # -> ["<hex PAC>", ...]
    /usr/bin/python3 tests/pac_oracle.py decode < blobs.json          # -> [description, ...]
    /usr/bin/python3 tests/pac_oracle.py sids   < strings.json        # -> [[str, hex], ...]
    /usr/bin/python3 tests/pac_oracle.py show HEX                     # one PAC, for a person

``show`` (``-`` or no argument reads the hex from stdin) prints Samba's decoding of a real
PAC, for instance the ``urn:mspac:`` attribute of a ticket from a domain controller, as
the JSON description and as Samba's own ``ndr_print`` dump.

A description (every key optional but ``logon``'s SIDs)::

    {"logon": {"domain_sid": "S-1-5-21-1-2-3", "rid": 1103, "primary_gid": 513,
               "account_name": "alice", "full_name": "Alice", "logon_domain": "SAMBA",
               "logon_server": "DC1", "logon_script": null, "profile_path": null,
               "home_directory": null, "home_drive": null,
               "user_flags": 32, "acct_flags": 16,
               "groups": [[513, 7]], "extra_sids": [["S-1-18-1", 7]],
               "resource_domain_sid": null, "resource_groups": []},
     "upn": {"upn": "alice@samba.test", "dns_domain": "SAMBA.TEST", "flags": 2,
             "sam_name": "alice", "sid": "S-1-5-21-1-2-3-1103"},
     "client": {"name": "alice", "time": 0},
     "signatures": true, "buffers": [[99, "00ff"]]}

Strings are ``null`` for an absent (NULL) string and ``""`` for an empty one; an extra SID
may be ``null``. ``buffers`` adds raw buffers of types Samba does not know (not 1-18).

``decode`` answers each blob with what Samba makes of it: ``"raw"``, each buffer's type,
size and bytes as PAC_DATA_RAW splits the PAC (``null`` and ``"raw_error"`` if it cannot);
``"error"``, why PAC_DATA cannot decode the whole PAC (or ``null``); and ``"logon"``,
``"upn"``, ``"client"``: each of those buffers decoded on its own, as a description (SIDs
as Samba prints them) or ``{"error": "..."}``. ``sids`` answers each SID string with
Samba's string and binary (NDR) forms, or ``null``.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

from samba.dcerpc import krb5pac, lsa, netlogon, samr, security
from samba.ndr import ndr_pack, ndr_print, ndr_unpack

_STRINGS = (
    ("account_name", lsa.String),
    ("full_name", lsa.String),
    ("logon_script", lsa.String),
    ("profile_path", lsa.String),
    ("home_directory", lsa.String),
    ("home_drive", lsa.String),
    ("logon_server", lsa.StringLarge),
    ("logon_domain", lsa.StringLarge),
)
_HMAC_SHA1_96_AES256 = 16
# The buffers the tests compare, by type, and their key in a description.
_COMPARED = {
    krb5pac.PAC_TYPE_LOGON_INFO: "logon",
    krb5pac.PAC_TYPE_UPN_DNS_INFO: "upn",
    krb5pac.PAC_TYPE_LOGON_NAME: "client",
}


def _rids(pairs: list[list[int]]) -> samr.RidWithAttributeArray:
    array = samr.RidWithAttributeArray()
    rids = []
    for rid, attributes in pairs:
        entry = samr.RidWithAttribute()
        entry.rid = rid
        entry.attributes = attributes
        rids.append(entry)
    array.rids = rids
    array.count = len(rids)
    return array


def _logon_info(desc: dict[str, Any]) -> krb5pac.PAC_LOGON_INFO_CTR:
    base = netlogon.netr_SamBaseInfo()
    for name, kind in _STRINGS:
        value = kind()
        value.string = desc.get(name)
        setattr(base, name, value)
    base.domain_sid = security.dom_sid(desc["domain_sid"])
    base.rid = desc.get("rid", 1103)
    base.primary_gid = desc.get("primary_gid", 513)
    base.user_flags = desc.get("user_flags", 0)
    base.acct_flags = desc.get("acct_flags", 0)
    base.groups = _rids(desc.get("groups", []))
    info3 = netlogon.netr_SamInfo3()
    info3.base = base
    sids = []
    for sid, attributes in desc.get("extra_sids", []):
        entry = netlogon.netr_SidAttr()
        entry.sid = None if sid is None else security.dom_sid(sid)
        entry.attributes = attributes
        sids.append(entry)
    info3.sids = sids
    info3.sidcount = len(sids)
    resource = krb5pac.PAC_DOMAIN_GROUP_MEMBERSHIP()
    domain = desc.get("resource_domain_sid")
    resource.domain_sid = None if domain is None else security.dom_sid(domain)
    resource.groups = _rids(desc.get("resource_groups", []))
    info = krb5pac.PAC_LOGON_INFO()
    info.info3 = info3
    info.resource_groups = resource
    ctr = krb5pac.PAC_LOGON_INFO_CTR()
    ctr.info = info
    return ctr


def _upn_dns_info(desc: dict[str, Any]) -> krb5pac.PAC_UPN_DNS_INFO:
    upn = krb5pac.PAC_UPN_DNS_INFO()
    upn.upn_name = desc.get("upn")
    upn.dns_domain_name = desc.get("dns_domain")
    upn.flags = desc.get("flags", 0)
    if upn.flags & krb5pac.PAC_UPN_DNS_FLAG_HAS_SAM_NAME_AND_SID:
        ex = krb5pac.PAC_UPN_DNS_INFO_SAM_NAME_AND_SID()
        ex.samaccountname = desc.get("sam_name")
        sid = desc.get("sid")
        ex.objectsid = None if sid is None else security.dom_sid(sid)
        upn.ex = ex
    return upn


def _buffer(kind: int, info: Any) -> krb5pac.PAC_BUFFER:
    buffer = krb5pac.PAC_BUFFER()
    buffer.type = kind
    buffer.info = info
    return buffer


def build(desc: dict[str, Any]) -> bytes:
    """A PAC, packed by Samba, from a description."""
    buffers = []
    if desc.get("logon") is not None:
        buffers.append(_buffer(krb5pac.PAC_TYPE_LOGON_INFO, _logon_info(desc["logon"])))
    if desc.get("client") is not None:
        name = krb5pac.PAC_LOGON_NAME()
        name.account_name = desc["client"]["name"]
        name.logon_time = desc["client"].get("time", 0)
        buffers.append(_buffer(krb5pac.PAC_TYPE_LOGON_NAME, name))
    if desc.get("upn") is not None:
        buffers.append(_buffer(krb5pac.PAC_TYPE_UPN_DNS_INFO, _upn_dns_info(desc["upn"])))
    if desc.get("signatures"):
        for kind in (krb5pac.PAC_TYPE_SRV_CHECKSUM, krb5pac.PAC_TYPE_KDC_CHECKSUM):
            signature = krb5pac.PAC_SIGNATURE_DATA()
            signature.type = _HMAC_SHA1_96_AES256
            signature.signature = bytes(12)
            buffers.append(_buffer(kind, signature))
    for kind, payload in desc.get("buffers", []):
        blob = krb5pac.DATA_BLOB_REM()
        blob.remaining = bytes.fromhex(payload)
        buffers.append(_buffer(kind, blob))
    pac = krb5pac.PAC_DATA()
    pac.version = 0
    pac.buffers = buffers
    pac.num_buffers = len(buffers)
    return bytes(ndr_pack(pac))


def _sid(sid: Any) -> str | None:
    return None if sid is None else str(sid)


def _pairs(array: Any) -> list[list[int]]:
    return [[entry.rid, entry.attributes] for entry in (array.rids or [])[: array.count]]


def _describe(buffer: Any) -> tuple[str, dict[str, Any]] | None:
    """The description of one decoded buffer of a type the tests compare."""
    if buffer.type == krb5pac.PAC_TYPE_LOGON_INFO:
        info = buffer.info.info
        base = info.info3.base
        logon: dict[str, Any] = {name: getattr(base, name).string for name, _ in _STRINGS}
        logon.update(
            domain_sid=_sid(base.domain_sid),
            rid=base.rid,
            primary_gid=base.primary_gid,
            user_flags=base.user_flags,
            acct_flags=base.acct_flags,
            groups=_pairs(base.groups),
            extra_sids=[
                [_sid(entry.sid), entry.attributes]
                for entry in (info.info3.sids or [])[: info.info3.sidcount]
            ],
            resource_domain_sid=_sid(info.resource_groups.domain_sid),
            resource_groups=_pairs(info.resource_groups.groups),
        )
        return "logon", logon
    if buffer.type == krb5pac.PAC_TYPE_UPN_DNS_INFO:
        upn = buffer.info
        entry = {"upn": upn.upn_name, "dns_domain": upn.dns_domain_name, "flags": upn.flags}
        if upn.flags & krb5pac.PAC_UPN_DNS_FLAG_HAS_SAM_NAME_AND_SID:
            entry.update(sam_name=upn.ex.samaccountname, sid=_sid(upn.ex.objectsid))
        return "upn", entry
    if buffer.type == krb5pac.PAC_TYPE_LOGON_NAME:
        return "client", {"name": buffer.info.account_name, "time": buffer.info.logon_time}
    return None


def _alone(kind: int, data: bytes) -> Any:
    """One buffer decoded on its own: Samba decodes a buffer only inside a PAC, so wrap
    it in a PAC of one buffer (padded to 8, as Samba expects)."""
    header = struct.pack("<IIIIQ", 1, 0, kind, len(data), 24)
    return ndr_unpack(krb5pac.PAC_DATA, header + data + bytes(-len(data) % 8)).buffers[0]


def decode(blob: bytes) -> dict[str, Any]:
    """Samba's reading of a whole PAC: how PAC_DATA_RAW splits it (``raw``), whether
    PAC_DATA decodes it (``error``), and each compared buffer decoded on its own."""
    out: dict[str, Any] = {"raw": None, "error": None}
    try:
        ndr_unpack(krb5pac.PAC_DATA, blob)
    except Exception as exc:  # Samba raises RuntimeError, and more on odd input
        out["error"] = _error(exc)
    try:
        raw = ndr_unpack(krb5pac.PAC_DATA_RAW, blob)
    except Exception as exc:
        out["raw_error"] = _error(exc)
        return out
    out["raw"] = []
    for buffer in raw.buffers:
        data = bytes(buffer.info.remaining[: buffer.ndr_size]) if buffer.info else b""
        out["raw"].append([buffer.type, buffer.ndr_size, data.hex()])
        if buffer.type not in _COMPARED:
            continue
        try:
            described = _describe(_alone(buffer.type, data))
        except Exception as exc:
            described = (_COMPARED[buffer.type], {"error": _error(exc)})
        if described is not None:
            out[described[0]] = described[1]
    return out


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _sid_forms(text: str) -> list[str] | None:
    try:
        sid = security.dom_sid(text)
    except Exception:  # TypeError or ValueError, by version
        return None
    return [str(sid), bytes(ndr_pack(sid)).hex()]


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else ""
    if mode == "build":
        json.dump([build(desc).hex() for desc in json.load(sys.stdin)], sys.stdout)
    elif mode == "decode":
        json.dump([decode(bytes.fromhex(text)) for text in json.load(sys.stdin)], sys.stdout)
    elif mode == "sids":
        json.dump([_sid_forms(text) for text in json.load(sys.stdin)], sys.stdout)
    elif mode == "show":
        text = argv[2] if len(argv) > 2 and argv[2] != "-" else sys.stdin.read()
        blob = bytes.fromhex("".join(text.split()))
        print(json.dumps(decode(blob), indent=2, ensure_ascii=False))
        try:
            print(ndr_print(ndr_unpack(krb5pac.PAC_DATA, blob)))
        except RuntimeError as exc:
            print(f"Samba cannot decode the whole PAC: {exc}")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
