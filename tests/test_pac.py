"""tornado_kerb.pac against Samba's own NDR code, and under fuzzing.

The oracle (``tests/pac_oracle.py``) runs in the system Python, which has Debian's
python3-samba: it packs PACs from JSON descriptions and decodes PACs, a whole batch per
run. Without it these tests fail with the install hint, unless ``TORNADO_KERB_NO_AD=1``
asks to skip the ones that need it.

Properties run on hypothesis's derandomized examples (no example database is written);
each example of an oracle test is a batch, so the module starts about 35 short processes
and runs in about 7 s.

``/usr/bin/python3 tests/pac_oracle.py show HEX`` prints Samba's reading of any PAC, for
instance one from a real domain controller, to compare with ours.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import statistics
import struct
import subprocess
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import require
from tornado_kerb.pac import (
    MAX_SIDS,
    ClientInfo,
    LogonInfo,
    PacError,
    UpnDnsInfo,
    canonical_sid,
    is_sid,
    parse_client_info,
    parse_logon_info,
    parse_pac,
    parse_upn_dns_info,
    sid_from_bytes,
    sid_to_bytes,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
ORACLE = ROOT / "tests" / "pac_oracle.py"
SYSTEM_PYTHON = "/usr/bin/python3"

PROPERTY = settings(max_examples=300, deadline=None, database=None, derandomize=True)
# One oracle run per example: few examples, each a batch. No shrinking: each step would
# run the oracle again (minutes); the failing assertion names its case instead.
BATCHES = settings(
    max_examples=6,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

LOGON, CLIENT, UPN = 1, 10, 12
PARSERS: dict[int, Callable[[bytes], object]] = {
    LOGON: parse_logon_info,
    CLIENT: parse_client_info,
    UPN: parse_upn_dns_info,
}
STRINGS = (
    "account_name",
    "full_name",
    "logon_script",
    "profile_path",
    "home_directory",
    "home_drive",
    "logon_server",
    "logon_domain",
)
SE_GROUP_ENABLED, SE_GROUP_USE_FOR_DENY_ONLY = 0x4, 0x10
LOGON_RESOURCE_GROUPS = 0x200


# --- The oracle -----------------------------------------------------------------------


def samba_missing() -> str | None:
    """Why the oracle cannot run here, or None."""
    try:
        run = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import samba.dcerpc.krb5pac, samba.ndr"],
            capture_output=True,
            timeout=60,
        )
    except OSError as exc:
        return f"{SYSTEM_PYTHON}: {exc}"
    if run.returncode:
        return f"{SYSTEM_PYTHON} cannot import samba"
    return None


@pytest.fixture(scope="module")
def samba_oracle() -> None:
    """Samba's NDR in the system Python is the reference for these tests: a machine
    without it fails them, unless ``TORNADO_KERB_NO_AD=1`` asks to skip them."""
    require(samba_missing(), "TORNADO_KERB_NO_AD", module=False)


def oracle(mode: str, batch: list[Any]) -> list[Any]:
    run = subprocess.run(
        [SYSTEM_PYTHON, str(ORACLE), mode],
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    answer: list[Any] = json.loads(run.stdout)
    assert len(answer) == len(batch)
    return answer


def build(batch: list[dict[str, Any]]) -> list[bytes]:
    return [bytes.fromhex(blob) for blob in oracle("build", batch)]


# --- SIDs as the tests write them (MS-DTYP 2.4.2.1), independently of the decoder ----


def sid_text(authority: int, subs: list[int]) -> str:
    head = str(authority) if authority < 1 << 32 else f"0x{authority:012x}"
    return "-".join([f"S-1-{head}", *map(str, subs)])


def sid_binary(authority: int, subs: list[int]) -> bytes:
    return (
        bytes([1, len(subs)]) + authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)
    )


def normal_sid(text: str | None) -> str | None:
    """A SID as Samba prints it ("S-1-0xffffffff-..."), written as the tests write it."""
    if text is None:
        return None
    match = re.fullmatch(r"S-1-(?:0x([0-9a-f]+)|([0-9]+))((?:-[0-9]+)*)", text)
    assert match is not None, text
    authority = int(match[1], 16) if match[1] else int(match[2])
    return sid_text(authority, [int(s) for s in match[3].split("-")[1:]])


# --- Descriptions (the oracle's JSON) and what the decoder must make of them -----------

u32 = st.integers(0, 2**32 - 1)
authorities = st.one_of(st.sampled_from([0, 1, 5, 16, 18]), st.integers(0, 2**48 - 1))


def sids(max_subs: int = 15) -> st.SearchStrategy[str]:
    return st.builds(sid_text, authorities, st.lists(u32, max_size=max_subs))


domain_sids = st.one_of(
    st.builds(lambda a, b, c: f"S-1-5-21-{a}-{b}-{c}", u32, u32, u32), sids(max_subs=14)
)
attributes = st.one_of(st.sampled_from([7, 3, 0, 0x10, 0x17, 0x20000007]), u32)
# Any text but NUL (Samba's strings are C strings) and lone surrogates (not UTF-16).
names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
)
optional_names = st.none() | names


def rid_lists(max_size: int = 40) -> st.SearchStrategy[list[list[int]]]:
    return st.lists(st.tuples(u32, attributes).map(list), max_size=max_size)


@st.composite
def logon_descriptions(draw: st.DrawFn) -> dict[str, Any]:
    resource_groups = draw(rid_lists(20))
    return {
        **{name: draw(optional_names) for name in STRINGS},
        "domain_sid": draw(domain_sids),
        "rid": draw(u32),
        "primary_gid": draw(u32),
        "user_flags": draw(st.one_of(st.sampled_from([0, 0x20, 0x200, 0x220]), u32)),
        "acct_flags": draw(u32),
        "groups": draw(rid_lists()),
        "extra_sids": draw(
            st.lists(st.tuples(sids() | st.none(), attributes).map(list), max_size=20)
        ),
        "resource_domain_sid": draw(domain_sids if resource_groups else st.none() | domain_sids),
        "resource_groups": resource_groups,
    }


@st.composite
def upn_descriptions(draw: st.DrawFn) -> dict[str, Any]:
    flags = draw(st.one_of(st.sampled_from([0, 1, 2, 3]), u32))
    upn = {"upn": draw(optional_names), "dns_domain": draw(optional_names), "flags": flags}
    if flags & 2:
        upn.update(sam_name=draw(optional_names), sid=draw(sids()))
    return upn


descriptions = st.fixed_dictionaries(
    {
        "logon": logon_descriptions() | st.none(),
        "upn": upn_descriptions() | st.none(),
        "client": st.none()
        | st.fixed_dictionaries({"name": names, "time": st.integers(0, 2**64 - 1)}),
        "signatures": st.booleans(),
    }
).filter(lambda desc: any(desc.values()))  # a PAC of no buffers is refused


def expected_logon(desc: dict[str, Any]) -> dict[str, Any]:
    """What :class:`LogonInfo` says for a description: the SIDs of GroupIds, ExtraSids
    (null ones skipped) and, with UserFlags' resource-groups bit, ResourceGroupIds; the
    primary group first, then the enabled and not deny-only ones, each once."""
    domain = desc["domain_sid"]
    entries = [(f"{domain}-{rid}", attrs) for rid, attrs in desc["groups"]]
    entries += [(sid, attrs) for sid, attrs in desc["extra_sids"] if sid is not None]
    if desc["user_flags"] & LOGON_RESOURCE_GROUPS and desc["resource_domain_sid"] is not None:
        resource = desc["resource_domain_sid"]
        entries += [(f"{resource}-{rid}", attrs) for rid, attrs in desc["resource_groups"]]
    primary = f"{domain}-{desc['primary_gid']}"
    groups = [primary]
    for sid, attrs in entries:
        if attrs & SE_GROUP_ENABLED and not attrs & SE_GROUP_USE_FOR_DENY_ONLY:
            if sid not in groups:
                groups.append(sid)
    return {
        "user_sid": f"{domain}-{desc['rid']}",
        "domain_sid": domain,
        "logon_domain": desc["logon_domain"] or "",
        "account_name": desc["account_name"] or "",
        "full_name": desc["full_name"] or "",
        "logon_server": desc["logon_server"] or "",
        "primary_group": primary,
        "groups": tuple(groups),
        "group_attributes": tuple(entries),
        "user_flags": desc["user_flags"],
        "user_account_control": desc["acct_flags"],
    }


def expected_upn(desc: dict[str, Any]) -> dict[str, Any]:
    extended = bool(desc["flags"] & 2)
    return {
        "upn": desc["upn"] or "",
        "dns_domain": desc["dns_domain"] or "",
        "upn_constructed": bool(desc["flags"] & 1),
        "sam_account_name": (desc["sam_name"] or "") if extended else None,
        "sid": desc["sid"] if extended else None,
    }


def expected_client(desc: dict[str, Any]) -> dict[str, Any]:
    return {"client_id": desc["time"], "name": desc["name"]}


EXPECTED = {
    LOGON: ("logon", expected_logon),
    UPN: ("upn", expected_upn),
    CLIENT: ("client", expected_client),
}


def fields(decoded: object) -> dict[str, Any]:
    assert isinstance(decoded, LogonInfo | UpnDnsInfo | ClientInfo)
    return dict(vars(decoded))


def samba_view(decoded: dict[str, Any]) -> dict[str, Any]:
    """Samba's decoding of a buffer, with its SIDs written as the tests write them."""
    out = dict(decoded)
    for key in ("domain_sid", "resource_domain_sid", "sid"):
        if key in out:
            out[key] = normal_sid(out[key])
    if "extra_sids" in out:
        out["extra_sids"] = [[normal_sid(sid), attrs] for sid, attrs in out["extra_sids"]]
    return out


def check_against(desc: dict[str, Any], blob: bytes, samba: dict[str, Any]) -> None:
    """Samba packed ``blob`` from ``desc``: Samba reads it back as ``desc``, splits it as
    parse_pac does, and each decoded buffer says what ``desc`` says."""
    assert samba["error"] is None
    buffers = parse_pac(blob)
    assert buffers == {kind: bytes.fromhex(data) for kind, _, data in samba["raw"]}
    for kind, (key, expected) in EXPECTED.items():
        if desc[key] is None:
            assert kind not in buffers
            continue
        assert samba_view(samba[key]) | desc[key] == samba_view(samba[key])
        assert fields(PARSERS[kind](buffers[kind])) == expected(desc[key])


# --- Samba packs, we decode ------------------------------------------------------------


@BATCHES
@given(batch=st.lists(descriptions, min_size=25, max_size=25))
def test_samba_packs_we_decode(samba_oracle: None, batch: list[dict[str, Any]]) -> None:
    blobs = build(batch)
    for desc, blob, theirs in zip(
        batch, blobs, oracle("decode", [b.hex() for b in blobs]), strict=True
    ):
        try:
            check_against(desc, blob, theirs)
        except (AssertionError, PacError) as exc:
            raise AssertionError(f"{json.dumps(desc, ensure_ascii=False)}: {exc!r}") from exc


def dc_like(groups: int, extra: int = 1, resource: int = 0, **logon: Any) -> dict[str, Any]:
    """A description shaped like a domain controller's PAC."""
    domain = "S-1-5-21-3623811015-3361044348-30300820"
    desc = {
        "logon": {
            **{name: None for name in STRINGS},
            "account_name": "élodie",
            "full_name": "Élodie Ærøskøbing-Łódź 😀",
            "logon_domain": "SAMBA",
            "logon_server": "DC1",
            "domain_sid": domain,
            "rid": 1103,
            "primary_gid": 513,
            "user_flags": 0x20 | (LOGON_RESOURCE_GROUPS if resource else 0),
            "acct_flags": 0x10,
            "groups": [[513, 7]] + [[10000 + i, 7] for i in range(groups - 1)] if groups else [],
            "extra_sids": [["S-1-18-1", 7]] + [[f"S-1-5-21-1-2-3-{i}", 7] for i in range(extra - 1)]
            if extra
            else [],
            "resource_domain_sid": "S-1-5-21-7-8-9" if resource else None,
            "resource_groups": [[20000 + i, 0x20000007] for i in range(resource)],
            **logon,
        },
        "upn": {
            "upn": "élodie@samba.test",
            "dns_domain": "SAMBA.TEST",
            "flags": 2,
            "sam_name": "élodie",
            "sid": f"{domain}-1103",
        },
        "client": {"name": "élodie", "time": 133_000_000_000_000_000},
        "signatures": True,
    }
    return desc


SIZES = {
    "no groups": dc_like(0, extra=0),
    "one group": dc_like(1),
    "300 groups": dc_like(300),
    "1000 groups": dc_like(1000),
    "the limit": dc_like(MAX_SIDS, extra=MAX_SIDS, resource=MAX_SIDS),
    "1000 extra SIDs": dc_like(5, extra=1000),
    "300 resource groups": dc_like(5, resource=300),
}


@pytest.fixture(scope="module")
def sized(samba_oracle: None) -> dict[str, bytes]:
    """The PACs of SIZES, and one past the limit, packed by Samba in one run."""
    batch = {**SIZES, "past the limit": dc_like(MAX_SIDS + 1)}
    return dict(zip(batch, build(list(batch.values())), strict=True))


def test_sizes(sized: dict[str, bytes]) -> None:
    blobs = [sized[name] for name in SIZES]
    for (name, desc), blob, theirs in zip(
        SIZES.items(), blobs, oracle("decode", [b.hex() for b in blobs]), strict=True
    ):
        check_against(desc, blob, theirs)
        info = parse_logon_info(parse_pac(blob)[LOGON])
        assert len(info.group_attributes) == sum(
            len(desc["logon"][key]) for key in ("groups", "extra_sids", "resource_groups")
        ), name
    with pytest.raises(PacError, match=f"more than {MAX_SIDS}"):
        parse_logon_info(parse_pac(sized["past the limit"])[LOGON])


def test_300_groups_decode_well_under_a_millisecond(sized: dict[str, bytes]) -> None:
    buffer = parse_pac(sized["300 groups"])[LOGON]
    assert len(parse_logon_info(buffer).groups) == 301  # the 300 and S-1-18-1
    runs = []
    for _ in range(200):
        start = time.perf_counter()
        parse_logon_info(buffer)
        runs.append(time.perf_counter() - start)
    assert statistics.median(runs) < 0.001


def test_groups_are_what_grants(samba_oracle: None) -> None:
    """The primary group first; disabled and deny-only groups only in group_attributes;
    resource groups only with UserFlags' bit; each SID once."""
    domain, resource = "S-1-5-21-1-2-3", "S-1-5-21-7-8-9"
    logon = {
        **{name: None for name in STRINGS},
        "domain_sid": domain,
        "rid": 1103,
        "primary_gid": 1500,
        "acct_flags": 0,
        "groups": [[513, 7], [1104, 0], [1105, 3], [1106, 0x17], [513, 7]],
        "extra_sids": [["S-1-18-1", 7], [None, 7], [f"{domain}-513", 7], ["S-1-5-32-544", 0x10]],
        "resource_domain_sid": resource,
        "resource_groups": [[1000, 0x20000007]],
    }
    flagged, unflagged = build(
        [{"logon": {**logon, "user_flags": flags}} for flags in (0x220, 0x20)]
    )
    info = parse_logon_info(parse_pac(flagged)[LOGON])
    assert info.groups == (f"{domain}-1500", f"{domain}-513", "S-1-18-1", f"{resource}-1000")
    assert [sid for sid, _ in info.group_attributes] == [
        f"{domain}-513", f"{domain}-1104", f"{domain}-1105", f"{domain}-1106", f"{domain}-513",
        "S-1-18-1", f"{domain}-513", "S-1-5-32-544", f"{resource}-1000",
    ]  # fmt: skip
    assert info.user_sid == f"{domain}-1103"
    info = parse_logon_info(parse_pac(unflagged)[LOGON])
    assert info.groups == (f"{domain}-1500", f"{domain}-513", "S-1-18-1")


def test_resource_groups_need_their_domain(samba_oracle: None) -> None:
    (blob,) = build([dc_like(2, resource=1, resource_domain_sid=None)])
    with pytest.raises(PacError, match="without ResourceGroupDomainSid"):
        parse_logon_info(parse_pac(blob)[LOGON])


@pytest.mark.parametrize("key", ["domain_sid", "resource_domain_sid"])
def test_domain_sids_leave_room_for_a_rid(samba_oracle: None, key: str) -> None:
    """A SID holds 15 sub-authorities: a domain SID of 15 has no room for the RIDs."""
    fourteen, fifteen = (sid_text(5, list(range(21, 21 + n))) for n in (14, 15))
    blobs = build([dc_like(2, resource=1, **{key: sid}) for sid in (fourteen, fifteen)])
    info = parse_logon_info(parse_pac(blobs[0])[LOGON])
    rid = 1103 if key == "domain_sid" else 20000  # the user's, or the resource group's
    assert f"{fourteen}-{rid}" in (info.user_sid, *info.groups)
    with pytest.raises(PacError, match="RPC_SID"):
        parse_logon_info(parse_pac(blobs[1])[LOGON])


# --- SIDs ---------------------------------------------------------------------------


@PROPERTY
@given(authorities, st.lists(u32, max_size=15))
def test_sid_round_trip(authority: int, subs: list[int]) -> None:
    text = sid_text(authority, subs)
    assert sid_to_bytes(text) == sid_binary(authority, subs)
    assert sid_from_bytes(sid_binary(authority, subs)) == text
    assert is_sid(text) and canonical_sid(text.lower()) == text


@BATCHES
@given(st.lists(st.tuples(authorities, st.lists(u32, max_size=15)), min_size=200, max_size=200))
def test_sids_agree_with_samba(samba_oracle: None, batch: list[tuple[int, list[int]]]) -> None:
    texts = [sid_text(authority, subs) for authority, subs in batch]
    for text, theirs in zip(texts, oracle("sids", texts), strict=True):
        assert theirs is not None, text
        assert sid_to_bytes(text).hex() == theirs[1]
        assert sid_from_bytes(bytes.fromhex(theirs[1])) == text == normal_sid(theirs[0])
        assert canonical_sid(theirs[0]) == text


def test_sid_spellings() -> None:
    assert canonical_sid("s-1-5-021") == "S-1-5-21"
    assert canonical_sid("S-1-0xffffffff-7") == "S-1-4294967295-7"  # as Samba prints it
    assert canonical_sid("S-1-4294967296-7") == "S-1-0x000100000000-7"
    assert canonical_sid("S-1-5") == "S-1-5"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "S-1",
        "S-1-",
        "S-1-5-",
        "S-2-5-21",
        "S-1--5",
        "S-1-5--21",
        "S-1-5-+21",
        "S-1-5-2_1",
        "S-1-5-21 ",
        " S-1-5-21",
        "S-1-5-21\n",
        "S-1-5-\u0661",  # an Arabic-Indic digit: int() would take it
        "S-1-5-4294967296",
        "S-1-281474976710656-1",
        "S-1-0x1000000000000-1",
        "S-1-0x-1",
        "S-1-5" + "-1" * 16,
        "S-1-5-99999999999",
    ],
)
def test_sid_strings_refused(text: str) -> None:
    assert not is_sid(text)
    with pytest.raises(PacError):
        sid_to_bytes(text)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x00\x00\x00\x00\x00\x00",  # 7 bytes
        b"\x02\x00" + bytes(6),  # revision 2
        b"\x01\x01" + bytes(6),  # one sub-authority announced, none there
        b"\x01\x00" + bytes(6) + bytes(4),  # a sub-authority too many
        b"\x01\x10" + bytes(6) + bytes(64),  # 16 sub-authorities
    ],
)
def test_sid_bytes_refused(data: bytes) -> None:
    with pytest.raises(PacError):
        sid_from_bytes(data)


# --- Fuzzing -------------------------------------------------------------------------


BASES = {
    "typical": dc_like(5, resource=2),
    "names everywhere": dc_like(
        3, **{name: f"{name} ✓ \U0001f600" for name in STRINGS}, user_flags=0x220
    ),
    # The six first strings null and no names: the deferred part starts with GroupIds,
    # at a known place (see LAYOUT).
    "bare": dc_like(
        2, resource=1, logon_server=None, logon_domain=None, account_name=None, full_name=None
    ),
    "no groups": dc_like(0, extra=0),
}
# Offsets in the "bare" logon-info buffer: the NDR headers (16), the top pointer (4),
# KERB_VALIDATION_INFO's 216-byte fixed part (MS-PAC 2.5), then the deferred data.
LAYOUT = {
    "object length": 8,
    "top pointer": 16,
    "EffectiveName": 68,  # Length, MaximumLength, Buffer
    "GroupCount": 128,
    "GroupIds": 132,
    "UserFlags": 136,
    "LogonDomainId": 172,
    "SidCount": 216,
    "ExtraSids": 220,
    "ResourceGroupDomainSid": 224,
    "ResourceGroupCount": 228,
    "ResourceGroupIds": 232,
    "GroupIds array": 236,  # MaximumCount, then 2 x (RelativeId, Attributes)
    "LogonDomainId SID": 256,  # MaximumCount, Revision, SubAuthorityCount, ...
    "ExtraSids array": 284,  # MaximumCount, then (pointer, attributes)
}
# 216 + 20 + GroupIds (4 + 16) + LogonDomainId (4 + 8 + 16) + ExtraSids (4 + 8 + 4 + 8 + 4)
# + ResourceGroupDomainSid (4 + 8 + 16) + ResourceGroupIds (4 + 8) - 16, padded to 8.
BARE_OBJECT_LENGTH = 336
POINTERS = (
    "top pointer",
    "GroupIds",
    "LogonDomainId",
    "ExtraSids",
    "ResourceGroupDomainSid",
    "ResourceGroupIds",
)


@functools.cache
def base_pacs() -> dict[str, bytes]:
    """BASES packed by Samba, once (a function, not only a fixture, so that hypothesis
    does not print them with each failing example)."""
    return dict(zip(BASES, build(list(BASES.values())), strict=True))


@pytest.fixture(scope="module")
def bases(samba_oracle: None) -> dict[str, bytes]:
    return base_pacs()


@pytest.fixture(scope="module")
def bare(bases: dict[str, bytes]) -> bytes:
    """The "bare" logon-info buffer, its layout checked against its description."""
    buffer = parse_pac(bases["bare"])[LOGON]
    desc = BASES["bare"]["logon"]

    def u32_at(name: str, extra: int = 0) -> int:
        value: int = struct.unpack_from("<I", buffer, LAYOUT[name] + extra)[0]
        return value

    assert u32_at("object length") == len(buffer) - 16 == BARE_OBJECT_LENGTH
    assert u32_at("GroupCount") == u32_at("GroupIds array") == len(desc["groups"])
    assert u32_at("UserFlags") == desc["user_flags"]
    assert u32_at("SidCount") == u32_at("ExtraSids array") == len(desc["extra_sids"])
    assert u32_at("ResourceGroupCount") == len(desc["resource_groups"])
    assert all(u32_at(name) for name in POINTERS)
    sid = sid_to_bytes(desc["domain_sid"])
    assert buffer[LAYOUT["LogonDomainId SID"] :].startswith(struct.pack("<I", sid[1]) + sid)
    return buffer


def decode_all(blob: bytes) -> dict[int, object]:
    """Everything this module decodes in a whole PAC (raises only PacError, we claim)."""
    buffers = parse_pac(blob)
    return {kind: PARSERS[kind](data) for kind, data in buffers.items() if kind in PARSERS}


def outcome(parse: Callable[[bytes], object], data: bytes) -> object:
    """What ``parse`` makes of ``data``: a result, or the PacError (any other exception
    fails the test)."""
    try:
        return parse(data)
    except PacError as exc:
        return exc


def test_truncations_at_every_byte(bases: dict[str, bytes]) -> None:
    for name, blob in bases.items():
        whole = decode_all(blob)
        offsets = struct.unpack_from(f"<{4 * len(parse_pac(blob))}I", blob, 8)
        last_end = max(offsets[i + 2] + offsets[i + 1] for i in range(0, len(offsets), 4))
        for cut in range(len(blob)):
            got = outcome(decode_all, blob[:cut])
            # The last buffer's padding may go, nothing else.
            assert got == whole if cut >= last_end else isinstance(got, PacError), (name, cut)
        for kind, buffer in parse_pac(blob).items():
            if kind not in PARSERS:
                continue
            for cut in range(len(buffer)):
                got = outcome(PARSERS[kind], buffer[:cut])
                if kind == UPN and not isinstance(got, PacError):
                    assert got == whole[kind], (name, kind, cut)  # only padding cut
                else:
                    assert isinstance(got, PacError), (name, kind, cut)
            if kind != UPN:  # whose strings are found by offset, with padding allowed
                longer = buffer + "ABCD".encode("utf-16-le")
                assert isinstance(outcome(PARSERS[kind], longer), PacError), (name, kind)


@PROPERTY
@given(
    which=st.sampled_from(list(BASES)),
    flips=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 7)), min_size=1, max_size=8),
    alone=st.booleans(),
)
def test_bit_flips(
    bases: dict[str, bytes], which: str, flips: list[tuple[int, int]], alone: bool
) -> None:
    """Flipped bits in a whole PAC or in a lone logon-info buffer: a decoding or a
    PacError, nothing else (outcome() lets nothing else through)."""
    data = bytearray(parse_pac(bases[which])[LOGON] if alone else bases[which])
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    outcome(parse_logon_info if alone else decode_all, bytes(data))


@PROPERTY
@given(
    data=st.binary(max_size=600), header=st.sampled_from([b"", b"\x01\x10\x08\x00\xcc\xcc\xcc\xcc"])
)
def test_random_bytes(data: bytes, header: bytes) -> None:
    for parse in (parse_pac, *PARSERS.values(), sid_from_bytes):
        outcome(parse, header + data)


def patched(buffer: bytes, changes: dict[int, int]) -> bytes:
    """``buffer`` with 32-bit little-endian values at the given offsets."""
    out = bytearray(buffer)
    for offset, value in changes.items():
        struct.pack_into("<I", out, offset, value)
    return bytes(out)


L = LAYOUT
HUGE = 0xFFFFFFFF
HOSTILE = {
    "GroupCount huge": {L["GroupCount"]: HUGE},
    "GroupCount and its MaximumCount huge": {L["GroupCount"]: HUGE, L["GroupIds array"]: HUGE},
    "GroupCount at the limit, no data": {L["GroupCount"]: MAX_SIDS, L["GroupIds array"]: MAX_SIDS},
    "SidCount and its MaximumCount huge": {L["SidCount"]: HUGE, L["ExtraSids array"]: HUGE},
    "GroupIds null with groups": {L["GroupIds"]: 0},
    "ExtraSids null with SIDs": {L["ExtraSids"]: 0},
    "no KERB_VALIDATION_INFO": {L["top pointer"]: 0},
    "no LogonDomainId": {L["LogonDomainId"]: 0},
    "object length huge": {L["object length"]: 0xFFFFFFF8},
    "object length short": {L["object length"]: BARE_OBJECT_LENGTH - 8},
    "object length unaligned": {L["object length"]: BARE_OBJECT_LENGTH + 4},
    "big-endian": {0: 0x00080001},  # 01 00 08 00: the endianness byte 0x00
    "NDR version 2": {0: 0x00081002},
    "EffectiveName Length without Buffer": {L["EffectiveName"]: 0x000A000A},
    "EffectiveName Buffer without its data": {L["EffectiveName"] + 4: 0x00020000},
    "EffectiveName Length past MaximumLength": {L["EffectiveName"]: 0x0002000A},
    "LogonDomainId of 255 sub-authorities": {
        L["LogonDomainId SID"]: 255,
        L["LogonDomainId SID"] + 4: 0xFF01,
    },
    "LogonDomainId of 15 sub-authorities": {
        L["LogonDomainId SID"]: 15,
        L["LogonDomainId SID"] + 4: 0x0F01,
    },
    "LogonDomainId of revision 2": {L["LogonDomainId SID"] + 4: 0x0402},
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_fields(bare: bytes, name: str) -> None:
    hostile = patched(bare, HOSTILE[name])
    assert hostile != bare
    tracemalloc.start()
    try:
        with pytest.raises(PacError):
            parse_logon_info(hostile)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, name  # nothing sized by a hostile count


@pytest.mark.parametrize("name", STRINGS)
def test_every_string_is_utf16(bases: dict[str, bytes], name: str) -> None:
    """Samba refuses a PAC with a lone surrogate in any of its strings, so do we, in
    the strings LogonInfo leaves out too."""
    buffer = parse_pac(bases["names everywhere"])[LOGON]
    text = BASES["names everywhere"]["logon"][name].encode("utf-16-le")
    assert buffer.count(text) == 1
    broken = text.replace(
        "\U0001f600".encode("utf-16-le"), "\ud83dA".encode("utf-16-le", "surrogatepass")
    )
    with pytest.raises(PacError, match="not UTF-16"):
        parse_logon_info(buffer.replace(text, broken))


def test_referent_ids_are_opaque(bare: bytes) -> None:
    """NDR's unique pointers: only null or not matters, so one referent ID for all (as
    if the pointers aliased) decodes the same; a sequential decoder cannot loop."""
    decoded = parse_logon_info(bare)
    for referent in (1, 0x00020000, HUGE):
        same = patched(bare, {LAYOUT[name]: referent for name in POINTERS})
        assert parse_logon_info(same) == decoded


def test_memory_follows_the_input(sized: dict[str, bytes]) -> None:
    buffer = parse_pac(sized["the limit"])[LOGON]
    tracemalloc.start()
    try:
        info = parse_logon_info(buffer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(info.group_attributes) == 3 * MAX_SIDS
    assert peak < 40 * len(buffer)


# --- The PAC's buffer list (MS-PAC 2.3, 2.4), by hand ----------------------------------


def pac_of(entries: list[tuple[int, int, int]], body: bytes) -> bytes:
    """A PACTYPE of (type, size, offset) entries, then ``body`` after the list."""
    header = struct.pack("<II", len(entries), 0)
    for kind, size, offset in entries:
        header += struct.pack("<IIQ", kind, size, offset)
    return header + body


def laid_out(buffers: list[tuple[int, bytes]]) -> bytes:
    """Buffers one after the other, each padded to 8, as Windows, MIT and Samba do."""
    offset = 8 + 16 * len(buffers)
    entries, body = [], b""
    for kind, data in buffers:
        entries.append((kind, len(data), offset + len(body)))
        body += data + bytes(-len(data) % 8)
    return pac_of(entries, body)


def test_buffer_list() -> None:
    buffers = [(1, b"a" * 13), (99, b""), (12, b"b" * 8), (100, b"c")]
    assert parse_pac(laid_out(buffers)) == dict(buffers)
    # Two empty buffers at the same place, and one at the very end.
    assert parse_pac(pac_of([(1, 8, 56), (2, 0, 64), (3, 0, 64)], bytes(8))) == {
        1: bytes(8),
        2: b"",
        3: b"",
    }


@pytest.mark.parametrize(
    ("entries", "body", "message"),
    [
        ([], b"", "0 buffers"),
        ([(1, 8, 40)] * 2, bytes(8), "given twice"),
        ([(1, 8, 28)], bytes(12), "unaligned"),
        ([(1, 8, 16)], bytes(8), "outside"),  # into the buffer list
        ([(1, 16, 24)], bytes(8), "outside"),  # past the end
        ([(1, 1, 2**64 - 8)], bytes(8), "outside"),
        ([(1, 8, 40), (2, 8, 40)], bytes(8), "overlap"),
        ([(1, 16, 40), (2, 0, 48)], bytes(16), "overlap"),  # an empty buffer inside another
        ([(1, 8, 32)], bytes(16), "outside its buffers"),  # 8 bytes before it
        ([(1, 8, 24)], bytes(16), "outside its buffers"),  # 8 bytes after it
    ],
)
def test_buffer_list_refused(
    entries: list[tuple[int, int, int]], body: bytes, message: str
) -> None:
    with pytest.raises(PacError, match=message):
        parse_pac(pac_of(entries, body))


def test_buffer_list_limits() -> None:
    with pytest.raises(PacError, match="version"):
        parse_pac(struct.pack("<II", 1, 1) + struct.pack("<IIQ", 1, 0, 24))
    with pytest.raises(PacError, match="buffers"):
        parse_pac(struct.pack("<II", HUGE, 0) + bytes(64))
    with pytest.raises(PacError, match="257 buffers"):
        parse_pac(laid_out([(kind, b"") for kind in range(257)]))
    assert len(parse_pac(laid_out([(kind, b"x") for kind in range(256)]))) == 256


# --- Against Samba, on broken PACs -----------------------------------------------------


def mutations() -> st.SearchStrategy[list[tuple[str, list[tuple[int, int]]]]]:
    flips = st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 7)), min_size=1, max_size=3)
    return st.lists(st.tuples(st.sampled_from(list(BASES)), flips), min_size=300, max_size=300)


def assert_agrees_with_samba(blob: bytes) -> dict[int, object]:
    """Samba and we decode ``blob``, a whole PAC (a domain controller's ``urn:mspac:``
    attribute, say), and read the same; our decoding. For a test against a real DC::

        info = assert_agrees_with_samba(pac_bytes)[1]
    """
    (theirs,) = oracle("decode", [blob.hex()])
    assert theirs["error"] is None, theirs["error"]
    assert parse_pac(blob) == {kind: bytes.fromhex(data) for kind, _, data in theirs["raw"]}
    ours = decode_all(blob)
    for kind, decoded in ours.items():
        key, expected = EXPECTED[kind]
        assert fields(decoded) == expected(samba_view(theirs[key])), key
    return ours


def test_samba_decodes_the_bases(bases: dict[str, bytes]) -> None:
    for (name, desc), theirs in zip(
        BASES.items(), oracle("decode", [bases[name].hex() for name in BASES]), strict=True
    ):
        check_against(desc, bases[name], theirs)
    ours = assert_agrees_with_samba(bases["typical"])
    assert fields(ours[LOGON]) == expected_logon(BASES["typical"]["logon"])


@BATCHES
@given(batch=mutations())
def test_broken_pacs_against_samba(
    samba_oracle: None, batch: list[tuple[str, list[tuple[int, int]]]]
) -> None:
    """Bit flips in Samba-made PACs, decoded by both: we never accept what Samba
    refuses (its split of the PAC, each buffer we decode on its own), and where both
    accept, both read the same. We refuse more than Samba: a PAC version other than 0,
    bytes outside the buffers, odd string lengths, SIDs of a revision other than 1, NULs
    in names, a flag-S UPN_DNS_INFO without its SID."""
    bases = base_pacs()
    blobs = []
    for which, flips in batch:
        data = bytearray(bases[which])
        for position, bit in flips:
            data[position % len(data)] ^= 1 << bit
        blobs.append(bytes(data))
    answers = oracle("decode", [b.hex() for b in blobs])
    for case, blob, theirs in zip(batch, blobs, answers, strict=True):
        buffers = outcome(parse_pac, blob)
        if isinstance(buffers, PacError):
            continue
        assert isinstance(buffers, dict)
        assert theirs["raw"] is not None, case
        assert buffers == {kind: bytes.fromhex(data) for kind, _, data in theirs["raw"]}
        for kind, (key, expected) in EXPECTED.items():
            if kind not in buffers:
                continue
            ours = outcome(PARSERS[kind], buffers[kind])
            if isinstance(ours, PacError):
                continue
            assert "error" not in theirs[key], (case, kind, theirs[key])
            assert fields(ours) == expected(samba_view(theirs[key])), (case, kind)


def test_oracle_show_mode(bases: dict[str, bytes]) -> None:
    """What the lead runs on a real DC's PAC: JSON and Samba's own dump."""
    run = subprocess.run(
        [SYSTEM_PYTHON, str(ORACLE), "show", "-"],
        input=bases["typical"].hex(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    decoded, dump = run.stdout.split("\n}\n", 1)
    assert json.loads(decoded + "}")["logon"]["account_name"] == "élodie"
    assert "PAC_LOGON_INFO" in dump
