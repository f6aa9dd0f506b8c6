"""The Microsoft PAC: a strict decoder of the parts an acceptor needs, and SIDs.

An Active Directory KDC puts a PAC (Privilege Attribute Certificate, MS-PAC) in every
service ticket: the user's SID, groups, names. MIT's GSSAPI verifies its signatures while
accepting and hands the buffers out as name attributes (``urn:mspac:`` is the whole PAC,
``urn:mspac:logon-info`` the KERB_VALIDATION_INFO buffer, ``urn:mspac:upn-dns-info``...).
Decode only values that GSSAPI reports ``authenticated``: this module checks structure,
never signatures.

Everything here is pure standard library (no Tornado) and refuses what it does not
understand: every malformed input raises :class:`PacError`, and nothing else, whatever
the bytes. Limits:
at most :data:`MAX_SIDS` entries in each SID or RID array, 15 sub-authorities in a SID,
:data:`MAX_BUFFERS` buffers in a PAC, little-endian NDR only. Sizes are checked against
the input before anything is allocated, so memory stays proportional to the input.

Example, after a context is complete (``name = ctx.initiator_name``)::

    value = gssapi.raw.get_name_attribute(name, b"urn:mspac:logon-info")
    if value.authenticated:
        info = parse_logon_info(value.values[0])
        info.user_sid, info.groups  # "S-1-5-21-...-1103", ("S-1-5-21-...-513", ...)
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .errors import KerberosError

__all__ = [
    "CLIENT_INFO",
    "LOGON_INFO",
    "MAX_BUFFERS",
    "MAX_SIDS",
    "SE_GROUP_ENABLED",
    "SE_GROUP_USE_FOR_DENY_ONLY",
    "UPN_DNS_INFO",
    "ClientInfo",
    "LogonInfo",
    "PacError",
    "UpnDnsInfo",
    "canonical_sid",
    "is_sid",
    "parse_client_info",
    "parse_logon_info",
    "parse_pac",
    "parse_upn_dns_info",
    "sid_from_bytes",
    "sid_to_bytes",
]


class PacError(KerberosError, ValueError):
    """A PAC, one of its buffers, or a SID is malformed or outside this decoder's limits."""


#: PAC buffer types (MS-PAC 2.4, ``ulType``).
LOGON_INFO = 1
CLIENT_INFO = 10
UPN_DNS_INFO = 12

#: Most buffers in one PAC (real ones hold about ten).
MAX_BUFFERS = 256
#: Most entries in each of GroupIds, ExtraSids and ResourceGroupIds. Windows caps a token
#: at 1,024 SIDs; the largest Kerberos ticket Windows accepts (MaxTokenSize 65,535) holds
#: at most 8,191 RIDs.
MAX_SIDS = 4096
_MAX_SUB_AUTHORITIES = 15

#: Group attributes (MS-PAC 2.2.1, MS-DTYP 2.4.2.4) that decide :attr:`LogonInfo.groups`.
SE_GROUP_ENABLED = 0x00000004
SE_GROUP_USE_FOR_DENY_ONLY = 0x00000010
# UserFlags (MS-PAC 2.5): the ResourceGroupIds are meant to be read.
_LOGON_RESOURCE_GROUPS = 0x00000200

_PACTYPE = struct.Struct("<II")
_PAC_INFO_BUFFER = struct.Struct("<IIQ")
_COMMON_HEADER = struct.Struct("<BBHI")
_PRIVATE_HEADER = struct.Struct("<II")
_U32 = struct.Struct("<I")
_SID_HEAD = struct.Struct("<IBB6s")  # NDR conformance, Revision, SubAuthorityCount, authority
_STRING_HEAD = struct.Struct("<III")  # MaximumCount, Offset, ActualCount
_UPN_DNS = struct.Struct("<HHHHI")
_UPN_DNS_SAM_SID = struct.Struct("<HHHH")
_CLIENT_INFO = struct.Struct("<QH")

# KERB_VALIDATION_INFO's fixed part in NDR (MS-PAC 2.5), 216 bytes. Each "HHI" is an
# RPC_UNICODE_STRING (Length, MaximumLength, Buffer pointer); skipped: the FILETIMEs,
# LogonCount, BadPasswordCount, session keys, SubAuthStatus, the logon statistics.
_KERB_VALIDATION_INFO = struct.Struct(
    "<48x"  # LogonTime .. PasswordMustChange
    "HHI"  # EffectiveName
    "HHI"  # FullName
    "HHIHHIHHIHHI"  # LogonScript, ProfilePath, HomeDirectory, HomeDirectoryDrive
    "4x"  # LogonCount, BadPasswordCount
    "IIII"  # UserId, PrimaryGroupId, GroupCount, GroupIds
    "I16x"  # UserFlags, UserSessionKey
    "HHIHHI"  # LogonServer, LogonDomainName
    "I8x"  # LogonDomainId, Reserved1
    "I4x16x8x"  # UserAccountControl, SubAuthStatus, two FILETIMEs, FailedILogonCount, Reserved3
    "II"  # SidCount, ExtraSids
    "III"  # ResourceGroupDomainSid, ResourceGroupCount, ResourceGroupIds
)

# MS-DTYP 2.4.2.1, plus what Samba prints: "0x" authorities of 1 to 12 hex digits.
_SID_STRING = re.compile(r"[Ss]-1-(?:([0-9]{1,15})|0[xX]([0-9a-fA-F]{1,12}))((?:-[0-9]{1,10})*)")


@dataclass(frozen=True)
class LogonInfo:
    """The identity in a KERB_VALIDATION_INFO (PAC buffer type 1).

    ``groups`` is what an access check would count: the primary group, then each SID of
    GroupIds, ExtraSids and (when UserFlags says so) ResourceGroupIds whose attributes are
    enabled and not deny-only, de-duplicated in that order. ``group_attributes`` lists
    every one of those SIDs as the PAC does, with its attributes, for a policy that
    wants more (deny rules, for instance, should match disabled groups too).
    """

    user_sid: str
    domain_sid: str
    logon_domain: str
    account_name: str
    full_name: str
    logon_server: str
    primary_group: str
    groups: tuple[str, ...]
    group_attributes: tuple[tuple[str, int], ...]
    user_flags: int
    user_account_control: int


@dataclass(frozen=True)
class UpnDnsInfo:
    """UPN_DNS_INFO (PAC buffer type 12): the UPN, the DNS domain, and with flag S
    the account name and SID (``None`` without it)."""

    upn: str
    dns_domain: str
    upn_constructed: bool
    sam_account_name: str | None
    sid: str | None


@dataclass(frozen=True)
class ClientInfo:
    """PAC_CLIENT_INFO (PAC buffer type 10): the client's name and the ticket's
    authentication time (a FILETIME: 100 ns units since 1601)."""

    client_id: int
    name: str


def parse_pac(data: bytes) -> dict[int, bytes]:
    """Split a whole PAC (PACTYPE, ``urn:mspac:``) into its buffers by ``ulType``.

    Refuses a version other than 0, no buffers or more than :data:`MAX_BUFFERS`,
    a type given twice, offsets not a multiple of 8, buffers that reach past the end,
    into the header, or into each other, and bytes that belong to no buffer (beyond
    the padding to a multiple of 8 after each). Zero-length buffers are allowed.
    """
    data = bytes(data)
    if len(data) < _PACTYPE.size:
        raise PacError("PAC shorter than its header")
    count, version = _PACTYPE.unpack_from(data)
    if version != 0:
        raise PacError(f"PAC version {version}, not 0")
    if not 0 < count <= MAX_BUFFERS:
        raise PacError(f"PAC with {count} buffers")
    header_end = _PACTYPE.size + count * _PAC_INFO_BUFFER.size
    if header_end > len(data):
        raise PacError("PAC shorter than its buffer list")
    buffers: dict[int, bytes] = {}
    spans = []
    for i in range(count):
        kind, size, offset = _PAC_INFO_BUFFER.unpack_from(data, _PACTYPE.size + i * 16)
        if kind in buffers:
            raise PacError(f"PAC buffer type {kind} given twice")
        if offset % 8:
            raise PacError(f"PAC buffer type {kind} at an unaligned offset")
        if offset < header_end or offset + size > len(data):
            raise PacError(f"PAC buffer type {kind} outside the PAC")
        buffers[kind] = data[offset : offset + size]
        spans.append((offset, offset + size))
    # Every byte after the list belongs to one buffer, but for the padding to a multiple
    # of 8 after each: what Windows, MIT and Samba write, and Samba checks.
    position = header_end
    for start, end in sorted(spans):
        if start < position:
            raise PacError("PAC buffers overlap")
        if start - position >= 8:
            raise PacError("PAC with bytes outside its buffers")
        position = end
    if len(data) - position >= 8:
        raise PacError("PAC with bytes outside its buffers")
    return buffers


def parse_logon_info(data: bytes) -> LogonInfo:
    """Decode a KERB_VALIDATION_INFO buffer (``urn:mspac:logon-info``).

    The buffer is NDR type serialisation version 1 (MS-RPCE 2.2.6): an 8-byte common
    header (version 1, little-endian, length 8), an 8-byte private header whose object
    length must be a multiple of 8 and cover the rest of the buffer exactly, then a
    unique pointer to the structure. Its fixed part is followed by the pointed-to data
    in field order (MS-RPCE 2.2.6 and C706 14.3.12: embedded pointers are deferred).

    ExtraSids count whatever UserFlags says; ResourceGroupIds only with its "H" bit
    (0x200), as Samba reads them. A null ExtraSids entry is skipped, as Samba does.
    """
    data = bytes(data)
    if len(data) < 16:
        raise PacError("logon info shorter than its NDR headers")
    version, endian, header_length, _ = _COMMON_HEADER.unpack_from(data)
    if version != 1 or header_length != 8:
        raise PacError("logon info is not NDR type serialisation version 1")
    if endian != 0x10:
        # 0x00 would be big-endian NDR: no Windows DC writes it; refuse, never guess.
        raise PacError("logon info is not little-endian NDR")
    object_length, _ = _PRIVATE_HEADER.unpack_from(data, 8)
    if object_length % 8 or 16 + object_length != len(data):
        raise PacError("logon info length disagrees with its NDR header")
    ndr = _Ndr(data, 16)
    if ndr.u32() == 0:
        raise PacError("logon info without a KERB_VALIDATION_INFO")
    (
        *strings,
        user_rid,
        primary_rid,
        group_count,
        group_ptr,
        user_flags,
        server_length,
        server_size,
        server_ptr,
        domain_length,
        domain_size,
        domain_ptr,
        domain_sid_ptr,
        account_control,
        sid_count,
        sids_ptr,
        resource_sid_ptr,
        resource_count,
        resource_ptr,
    ) = ndr.unpack(_KERB_VALIDATION_INFO)

    # The deferred data, in the order of the pointers in the fixed part.
    account_name = ndr.string(strings[0], strings[1], strings[2])
    full_name = ndr.string(strings[3], strings[4], strings[5])
    for i in range(6, 18, 3):  # LogonScript .. HomeDirectoryDrive: checked, not kept
        ndr.string(strings[i], strings[i + 1], strings[i + 2], keep=False)
    group_rids = ndr.rid_array(group_count, group_ptr)
    logon_server = ndr.string(server_length, server_size, server_ptr)
    logon_domain = ndr.string(domain_length, domain_size, domain_ptr)
    if domain_sid_ptr == 0:
        raise PacError("logon info without LogonDomainId")
    domain_sid = ndr.sid(domain=True)
    extra_sids = ndr.sid_array(sid_count, sids_ptr)
    resource_sid = ndr.sid(domain=True) if resource_sid_ptr else None
    resource_rids = ndr.rid_array(resource_count, resource_ptr)
    ndr.finish()

    if resource_rids and resource_sid is None:
        raise PacError("ResourceGroupIds without ResourceGroupDomainSid")
    entries = [(f"{domain_sid}-{rid}", attributes) for rid, attributes in group_rids]
    entries += extra_sids
    # Samba reads resource groups only with this flag; Windows sets it whenever it
    # fills them (MS-PAC 2.5, "H").
    if resource_sid is not None and user_flags & _LOGON_RESOURCE_GROUPS:
        entries += [(f"{resource_sid}-{rid}", attributes) for rid, attributes in resource_rids]
    primary_group = f"{domain_sid}-{primary_rid}"
    granted = dict.fromkeys([primary_group])
    for sid, attributes in entries:
        if attributes & SE_GROUP_ENABLED and not attributes & SE_GROUP_USE_FOR_DENY_ONLY:
            granted[sid] = None
    return LogonInfo(
        user_sid=f"{domain_sid}-{user_rid}",
        domain_sid=domain_sid,
        logon_domain=logon_domain,
        account_name=account_name,
        full_name=full_name,
        logon_server=logon_server,
        primary_group=primary_group,
        groups=tuple(granted),
        group_attributes=tuple(entries),
        user_flags=user_flags,
        user_account_control=account_control,
    )


def parse_upn_dns_info(data: bytes) -> UpnDnsInfo:
    """Decode a UPN_DNS_INFO buffer (``urn:mspac:upn-dns-info``, MS-PAC 2.10).

    Flag U (1) says the UPN was constructed from the account name (the account has no
    userPrincipalName); flag S (2) adds the sAMAccountName and the SID. Offsets are from
    the start of the buffer; each string must lie inside it and after the fixed fields.
    """
    data = bytes(data)
    if len(data) < _UPN_DNS.size:
        raise PacError("UPN_DNS_INFO shorter than its header")
    upn_length, upn_offset, dns_length, dns_offset, flags = _UPN_DNS.unpack_from(data)
    header = _UPN_DNS.size
    if flags & 2:
        if len(data) < header + _UPN_DNS_SAM_SID.size:
            raise PacError("UPN_DNS_INFO shorter than its extended header")
        sam_length, sam_offset, sid_length, sid_offset = _UPN_DNS_SAM_SID.unpack_from(data, header)
        header += _UPN_DNS_SAM_SID.size
    upn = _text(_relative(data, upn_offset, upn_length, header))
    dns = _text(_relative(data, dns_offset, dns_length, header))
    sam = sid = None
    if flags & 2:
        sam = _text(_relative(data, sam_offset, sam_length, header))
        sid = sid_from_bytes(_relative(data, sid_offset, sid_length, header))
    return UpnDnsInfo(
        upn=upn, dns_domain=dns, upn_constructed=bool(flags & 1), sam_account_name=sam, sid=sid
    )


def parse_client_info(data: bytes) -> ClientInfo:
    """Decode a PAC_CLIENT_INFO buffer (``urn:mspac:client-info``, MS-PAC 2.7)."""
    data = bytes(data)
    if len(data) < _CLIENT_INFO.size:
        raise PacError("PAC_CLIENT_INFO shorter than its header")
    client_id, length = _CLIENT_INFO.unpack_from(data)
    if _CLIENT_INFO.size + length != len(data):
        raise PacError("PAC_CLIENT_INFO length disagrees with its NameLength")
    return ClientInfo(client_id=client_id, name=_text(data[_CLIENT_INFO.size :]))


def sid_from_bytes(data: bytes) -> str:
    """A binary SID (MS-DTYP 2.4.2.2; LDAP's objectSid) as a string, ``S-1-5-21-...``.

    The identifier authority is decimal below 2**32 and ``0x`` with 12 hex digits from
    there, as Windows writes it (MS-DTYP 2.4.2.1).
    """
    data = bytes(data)
    if len(data) < 8:
        raise PacError("SID shorter than 8 bytes")
    revision, count = data[0], data[1]
    if revision != 1:
        raise PacError(f"SID revision {revision}, not 1")
    if count > _MAX_SUB_AUTHORITIES:
        raise PacError(f"SID with {count} sub-authorities")
    if len(data) != 8 + 4 * count:
        raise PacError("SID length disagrees with its SubAuthorityCount")
    return _sid_string(data[2:8], struct.unpack_from(f"<{count}I", data, 8))


def sid_to_bytes(sid: str) -> bytes:
    """The binary form of a SID string; accepts ``s-1-…``, decimal authorities below 2**48
    and ``0x`` authorities of up to 12 hex digits, at most 15 sub-authorities."""
    match = _SID_STRING.fullmatch(sid)
    if match is None:
        raise PacError(f"not a SID: {sid!r}")
    decimal, hexadecimal, tail = match.groups()
    authority = int(decimal) if decimal is not None else int(hexadecimal, 16)
    subs = [int(part) for part in tail.split("-")[1:]]
    if authority >= 1 << 48 or len(subs) > _MAX_SUB_AUTHORITIES or any(s >> 32 for s in subs):
        raise PacError(f"SID out of range: {sid!r}")
    return (
        bytes([1, len(subs)]) + authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)
    )


def is_sid(sid: str) -> bool:
    """Whether :func:`sid_to_bytes` accepts ``sid``."""
    try:
        sid_to_bytes(sid)
    except PacError:
        return False
    return True


def canonical_sid(sid: str) -> str:
    """``sid`` as :func:`sid_from_bytes` writes it (``s-1-5-021`` → ``S-1-5-21``): compare
    configured SIDs with the PAC's in this form."""
    return sid_from_bytes(sid_to_bytes(sid))


def _sid_string(authority: bytes, subs: tuple[int, ...]) -> str:
    value = int.from_bytes(authority, "big")
    head = f"S-1-{value}" if value < 1 << 32 else f"S-1-0x{value:012x}"
    return "-".join([head, *map(str, subs)])


def _text(raw: bytes, keep: bool = True) -> str:
    """UTF-16LE text, strictly (Samba refuses lone surrogates too); a kept one without NULs."""
    try:
        text = raw.decode("utf-16-le")
    except UnicodeDecodeError:
        raise PacError("string is not UTF-16") from None
    if not keep:
        return ""
    if "\x00" in text:
        # A NUL would let "admin\0..." read as "admin" to whoever uses C strings.
        raise PacError("string with a NUL character")
    return text


def _relative(data: bytes, offset: int, length: int, header: int) -> bytes:
    if length == 0:
        return b""
    if length % 2:
        raise PacError("UPN_DNS_INFO field of an odd length")
    if offset < header or offset + length > len(data):
        raise PacError("UPN_DNS_INFO field outside the buffer")
    return data[offset : offset + length]


class _Ndr:
    """A cursor over little-endian NDR (transfer syntax NDR 2.0, 32-bit pointers)."""

    __slots__ = ("data", "end", "pos", "start")

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.start = start  # alignment is relative to the stream's start (a multiple of 8)
        self.pos = start
        self.end = len(data)

    def _need(self, size: int) -> int:
        pos = self.pos
        if size > self.end - pos:
            raise PacError("logon info truncated")
        self.pos = pos + size
        return pos

    def align4(self) -> None:
        self.pos += -(self.pos - self.start) % 4
        if self.pos > self.end:
            raise PacError("logon info truncated")

    def u32(self) -> int:
        value: int = _U32.unpack_from(self.data, self._need(4))[0]
        return value

    def unpack(self, layout: struct.Struct) -> tuple[int, ...]:
        return layout.unpack_from(self.data, self._need(layout.size))

    def conformance(self, expected: int) -> None:
        """An NDR conformant array's MaximumCount, which must equal its size_is field."""
        self.align4()
        if self.u32() != expected:
            raise PacError("NDR array size disagrees with its count")

    def string(self, length: int, size: int, pointer: int, keep: bool = True) -> str:
        """The deferred buffer of an RPC_UNICODE_STRING: a conformant varying array of
        UTF-16 code units, [size_is(MaximumLength/2), length_is(Length/2)]."""
        if length % 2 or length > size:
            raise PacError("RPC_UNICODE_STRING with a bad Length")
        if pointer == 0:
            if length:
                raise PacError("RPC_UNICODE_STRING with a Length and no Buffer")
            return ""
        self.align4()
        maximum, offset, actual = self.unpack(_STRING_HEAD)
        if maximum != size // 2 or offset != 0 or actual != length // 2:
            raise PacError("RPC_UNICODE_STRING counts disagree with its lengths")
        raw = self.data[self._need(length) : self.pos]
        return _text(raw, keep)

    def sid(self, domain: bool = False) -> str:
        """A deferred RPC_SID: a conformant structure, so its SubAuthorityCount comes
        twice (hoisted as the conformance, then in place). A ``domain`` SID gets RIDs
        appended, so it may hold one sub-authority fewer."""
        self.align4()
        conformance, revision, count, authority = _SID_HEAD.unpack_from(
            self.data, self._need(_SID_HEAD.size)
        )
        if revision != 1 or count > _MAX_SUB_AUTHORITIES - domain or conformance != count:
            raise PacError("malformed RPC_SID")
        subs = struct.unpack_from(f"<{count}I", self.data, self._need(4 * count))
        return _sid_string(authority, subs)

    def rid_array(self, count: int, pointer: int) -> list[tuple[int, int]]:
        """A deferred array of GROUP_MEMBERSHIP (RelativeId, Attributes)."""
        if pointer == 0:
            if count:
                raise PacError("group count without a group array")
            return []
        if count > MAX_SIDS:
            raise PacError(f"{count} groups, more than {MAX_SIDS}")
        self.conformance(count)
        values = struct.unpack_from(f"<{2 * count}I", self.data, self._need(8 * count))
        return list(zip(values[::2], values[1::2], strict=True))

    def sid_array(self, count: int, pointer: int) -> list[tuple[str, int]]:
        """Deferred KERB_SID_AND_ATTRIBUTES: the (pointer, attributes) pairs, then the
        SIDs they point to, in order. Null SIDs are skipped, as Samba does."""
        if pointer == 0:
            if count:
                raise PacError("SidCount without ExtraSids")
            return []
        if count > MAX_SIDS:
            raise PacError(f"{count} extra SIDs, more than {MAX_SIDS}")
        self.conformance(count)
        values = struct.unpack_from(f"<{2 * count}I", self.data, self._need(8 * count))
        return [(self.sid(), values[i + 1]) for i in range(0, 2 * count, 2) if values[i]]

    def finish(self) -> None:
        """What follows the data must be the padding to a multiple of 8, nothing more."""
        if self.end - self.pos >= 8:
            raise PacError("logon info with unread data")
