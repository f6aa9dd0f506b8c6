"""Groups and indicators in a session cookie: compact, exact, and within browsers' 4 KB."""

from __future__ import annotations

import random
import time

import tornado.web
from hypothesis import given
from hypothesis import strategies as st

from tornado_kerb.claims import GROUPS_BUDGET, Claims, decode_groups, encode_groups
from tornado_kerb.session import decode_session, encode_session

DOMAIN = "S-1-5-21-1004336348-1177238915-682003330"
SECRET = "s" * 43
sids = st.builds(
    lambda prefix, rid: f"{prefix}-{rid}",
    st.sampled_from([DOMAIN, "S-1-5-21-1-2-3", "S-1-5-32", "S-1-18"]),
    st.integers(0, 2**32 - 1),
)


@given(st.frozensets(sids, max_size=60))
def test_groups_round_trip(groups: frozenset[str]) -> None:
    assert decode_groups(encode_groups(groups)) == (groups, True)


@given(st.frozensets(sids, max_size=20), st.sets(st.text("0123456789abcdefz.;:-!S", max_size=12)))
def test_malformed_group_text_is_refused_or_read_never_raises(
    groups: frozenset[str], noise: set[str]
) -> None:
    text = encode_groups(groups)
    for junk in noise:
        decoded = decode_groups(text + junk)
        assert decoded is None or all(sid.startswith("S-1-") for sid in decoded[0])


def cookie_for(groups: frozenset[str], keep: frozenset[str] = frozenset()) -> bytes:
    claims = Claims(groups, ("otp",))
    payload = encode_session("alice@EXAMPLE.COM", "negotiate", time.time() + 600, claims, keep)
    # What SessionCookies.start() sets: Tornado's signed value, version 2.
    return tornado.web.create_signed_value(SECRET, "tornado_kerb_session", payload, version=2)


def test_a_user_in_300_groups_fits_in_a_cookie_with_every_group() -> None:
    rng = random.Random(16)
    rids = rng.sample(range(1100, 200_000), 300)
    groups = frozenset(f"{DOMAIN}-{rid}" for rid in rids) | {"S-1-18-1", "S-1-5-32-545"}
    signed = cookie_for(groups)
    assert len(b"tornado_kerb_session=" + signed) < 4096 - 200  # room for attributes
    payload = tornado.web.decode_signed_value(SECRET, "tornado_kerb_session", signed)
    assert payload is not None
    session = decode_session(payload, time.time())
    assert session is not None
    assert session.claims.groups == groups and session.claims.complete
    assert session.claims.indicators == ("otp",)


def test_over_the_budget_only_the_named_groups_are_kept_and_it_says_so() -> None:
    rng = random.Random(1000)
    groups = frozenset(
        f"S-1-5-21-{rng.randrange(2**32)}-{rng.randrange(2**32)}-{rng.randrange(2**32)}-1000"
        for _ in range(1000)
    )
    assert len(";".join(groups)) > GROUPS_BUDGET  # every one of them would not fit
    assert encode_groups(groups) == "!"  # none named: none kept
    named = sorted(groups)[:2]
    signed = cookie_for(groups, frozenset(named) | {"S-1-5-21-9-9-9-513"})
    assert len(b"tornado_kerb_session=" + signed) < 4096 - 200
    payload = tornado.web.decode_signed_value(SECRET, "tornado_kerb_session", signed)
    assert payload is not None
    session = decode_session(payload, time.time())
    assert session is not None
    # The groups the settings name, of those the user is in; flagged incomplete.
    assert session.claims.groups == frozenset(named)
    assert not session.claims.complete


def test_a_version_1_cookie_of_tornado_kerb_0_3_is_still_read() -> None:
    session = decode_session(b"1|n|%d|alice@EXAMPLE.COM" % (time.time() + 60), time.time())
    assert session is not None
    assert session.principal == "alice@EXAMPLE.COM"
    assert session.claims == Claims()


def test_principal_with_bars_survives() -> None:
    payload = encode_session("a|b@R", "basic", time.time() + 60, Claims(frozenset({DOMAIN + "-5"})))
    session = decode_session(payload.encode(), time.time())
    assert session is not None and session.principal == "a|b@R"
    assert session.claims.groups == {DOMAIN + "-5"}
