"""Property tests of the header and cookie parsers, and the live fuzz at CI size.

The properties run on hypothesis's derandomized examples (no example database is
written); the live fuzz (:mod:`tests.fuzz`) uses a fixed seed, printed in every failure,
and ``python -m tests.fuzz --count 10000 --seed S`` reproduces a run at any size.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests import fuzz
from tests.conftest import TLS, Realm
from tornado_kerb._header import MAX_CREDENTIALS, decode_base64, split_authorization
from tornado_kerb.basic import parse_basic
from tornado_kerb.errors import AuthenticationFailed
from tornado_kerb.negotiate import parse_negotiate
from tornado_kerb.session import Session, decode_session, encode_session

PROPERTY = settings(max_examples=200, deadline=None, database=None, derandomize=True)
REALM = "KRBTEST.COM"
NTLM = b"NTLMSSP\x00"
# The library's own notion: C0 controls and DEL (what a browser never puts in a name).
C0_OR_DEL = re.compile("[\x00-\x1f\x7f]")

realms = st.sampled_from([REALM, "EXAMPLE.ORG", "A", "SUB.EXAMPLE-1.NET"])
# Text without controls or surrogates (C0, DEL and C1 are category Cc).
clean_text = st.characters(blacklist_categories=("Cc", "Cs"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def casings(word: str) -> st.SearchStrategy[str]:
    """``word`` with each letter in either case."""
    flips = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return flips.map(
        lambda up: "".join(c.upper() if u else c.lower() for c, u in zip(word, up, strict=True))
    )


schemes = st.sampled_from(["Negotiate", "Basic"]).flatmap(casings)
any_scheme = st.one_of(
    schemes,
    st.sampled_from(["Bearer", "NTLM", "Digest", "Kerberos", "", "N\xe9gotiate", "Negotiate,"]),
    # Letters whose lower case is, or looks like, ASCII: dotted and dotless i.
    st.sampled_from(["NEGOT\u0130ATE", "Negot\u0131ate", "BAS\u0130C", "bas\u0131c"]),
    st.text(max_size=12),
)
separators = st.sampled_from([" ", "  ", " " * 40, "\t", " \t", "", ",", " , "])
base64_text = st.binary(min_size=1, max_size=64).map(b64)
# What reaches split_authorization: Tornado's latin-1 text, and any text besides.
header_values = st.one_of(
    st.text(),
    st.binary().map(lambda raw: raw.decode("latin-1")),
    st.tuples(any_scheme, separators, st.one_of(base64_text, st.text())).map("".join),
    st.tuples(st.sampled_from(["", " ", "  "]), schemes, separators, base64_text).map("".join),
)


def refused(call: Callable[[], object], *reasons: str) -> AuthenticationFailed:
    """Assert that ``call()`` raises AuthenticationFailed with one of ``reasons``."""
    with pytest.raises(AuthenticationFailed) as info:
        call()
    assert info.value.reason in reasons, info.value
    return info.value


# -- split_authorization and decode_base64 --------------------------------------------------


@PROPERTY
@given(header_values)
def test_split_authorization_returns_a_scheme_or_refuses(value: str) -> None:
    try:
        scheme, credentials = split_authorization(value)
    except AuthenticationFailed as err:
        assert err.reason in ("malformed", "too-large")
        return
    assert isinstance(scheme, str) and isinstance(credentials, str)
    assert scheme == scheme.lower() and " " not in scheme
    assert credentials == credentials.strip(" ")
    if scheme in ("negotiate", "basic"):
        assert "," not in credentials
        # Only the ASCII spellings name a scheme (no "ı" or Kelvin sign lower-cases into one).
        assert value.strip(" ").partition(" ")[0].isascii()


@PROPERTY
@given(
    st.sampled_from(["Negotiate", "Basic"]).flatmap(casings),
    base64_text | st.just(""),
    st.sampled_from(["", " ", "   "]),
    st.integers(1, 50),
    st.sampled_from(["", " ", "    "]),
)
def test_any_casing_of_the_scheme_gives_the_lower_case_scheme(
    scheme: str, credentials: str, before: str, spaces: int, after: str
) -> None:
    value = f"{before}{scheme}{' ' * spaces}{credentials}{after}"
    assert split_authorization(value) == (scheme.lower(), credentials)


@PROPERTY
@given(schemes, base64_text, st.sampled_from(["", " "]), any_scheme, st.text(min_size=0))
def test_two_authorization_headers_are_malformed(
    first: str, credentials: str, space: str, second: str, more: str
) -> None:
    # Tornado's HTTPHeaders.get joins two Authorization headers with a comma.
    value = f"{first} {credentials},{space}{second} {more}"
    refused(lambda: split_authorization(value), "malformed")


@PROPERTY
@given(
    any_scheme.filter(lambda s: s.strip(" ") != "" and " " not in s.strip(" ")),
    st.integers(1, 5000),
    st.sampled_from(["A", "=", ",", "\xe9", "YII"]),
)
def test_credentials_over_the_limit_are_too_large(scheme: str, extra: int, fill: str) -> None:
    credentials = (fill * (MAX_CREDENTIALS + extra))[: MAX_CREDENTIALS + extra]
    refused(lambda: split_authorization(f"{scheme.strip(' ')} {credentials}"), "too-large")


def test_credentials_at_the_limit_are_not_too_large() -> None:
    assert split_authorization("Negotiate " + "A" * MAX_CREDENTIALS)[0] == "negotiate"


@PROPERTY
@given(st.one_of(st.text(), base64_text, st.binary().map(lambda raw: raw.decode("latin-1"))))
def test_decode_base64_returns_bytes_or_refuses(text: str) -> None:
    try:
        assert isinstance(decode_base64(text), bytes)
    except AuthenticationFailed as err:
        assert err.reason == "malformed"


@PROPERTY
@given(st.binary(max_size=2048))
def test_decode_base64_round_trips(data: bytes) -> None:
    assert decode_base64(b64(data)) == data


# -- parse_negotiate ----------------------------------------------------------------------


@PROPERTY
@given(
    st.one_of(
        st.text(),
        st.binary(max_size=256).map(b64),
        st.binary(max_size=64).map(lambda raw: b64(NTLM + raw)),
    )
)
def test_parse_negotiate_returns_a_token_or_refuses(credentials: str) -> None:
    try:
        token = parse_negotiate(credentials)
    except AuthenticationFailed as err:
        assert err.reason in ("malformed", "empty", "ntlm")
        return
    assert isinstance(token, bytes) and token and not token.startswith(NTLM)


@PROPERTY
@given(st.binary(min_size=1, max_size=4096).filter(lambda raw: not raw.startswith(NTLM)))
def test_parse_negotiate_round_trips(token: bytes) -> None:
    scheme, credentials = split_authorization(f"Negotiate {b64(token)}")
    assert scheme == "negotiate" and parse_negotiate(credentials) == token


# -- parse_basic ------------------------------------------------------------------------------

user_parts = st.one_of(
    st.text(),
    st.lists(st.sampled_from([*"ab@/\\:\x00\x1b\x7f\x85 \t.", REALM])).map("".join),
    st.sampled_from(["user", f"user@{REALM}", f"user@{REALM.lower()}", "@", f"@{REALM}"]),
)
basic_credentials = st.one_of(
    st.text(),
    st.binary(max_size=128).map(b64),
    st.tuples(user_parts, st.sampled_from([":", "", "::"]), st.text()).map(
        lambda t: b64("".join(t).encode("utf-8", "surrogatepass"))
    ),
)


@PROPERTY
@given(basic_credentials, realms)
@example(b64(b"user@EVIL.EXAMPLE:pw"), REALM)
@example(b64(b"a/b:pw"), REALM)
@example(b64(f"user@{REALM}@{REALM}:pw".encode()), REALM)
def test_parse_basic_returns_our_realms_user_or_refuses(credentials: str, realm: str) -> None:
    try:
        principal, password = parse_basic(credentials, realm)
    except AuthenticationFailed as err:
        assert err.reason in ("malformed", "empty-password", "foreign-realm")
        return
    name, at, principal_realm = principal.rpartition("@")
    assert at and principal_realm == realm, principal
    assert name and "@" not in name and "/" not in name and "\\" not in name, principal
    assert not C0_OR_DEL.search(principal), principal
    assert password and isinstance(password, str) and not C0_OR_DEL.search(password)


@PROPERTY
@given(
    st.text(clean_text, min_size=1, max_size=200).filter(lambda u: not set(u) & set(":/\\@")),
    st.text(clean_text, min_size=1, max_size=1024),
    realms,
    st.booleans(),
    st.sampled_from(["Basic", "basic"]) | casings("Basic"),
)
def test_basic_round_trips(
    user: str, password: str, realm: str, qualified: bool, scheme: str
) -> None:
    typed = f"{user}@{realm}" if qualified else user
    header = f"{scheme} {b64(f'{typed}:{password}'.encode())}"
    kind, credentials = split_authorization(header)
    assert kind == "basic"
    assert parse_basic(credentials, realm) == (f"{user}@{realm}", password)


def test_parse_basic_refuses_c1_control_characters() -> None:
    """Found by these properties (they passed then): C0 controls were refused, the C1
    controls U+0080-U+009F not. ``Basic dXPCm2VyOnB3`` (``"us\\x9ber:pw"``) went to the
    KDC and into the debug log. U+009B is CSI (a terminal escape, like ESC "["), U+0085
    a line break to ``str.splitlines``."""
    let_through = []
    for control in ("\x85", "\x9b", "\x80"):
        try:
            let_through.append(parse_basic(b64(f"us{control}er:pw".encode()), REALM))
        except AuthenticationFailed:
            pass
    assert not let_through, f"C1 controls in Basic user names pass: {let_through}"


# -- decode_session ---------------------------------------------------------------------------

session_like = st.tuples(
    st.sampled_from(["1", "2", "", "01"]) | st.text(max_size=3),
    st.sampled_from(["n", "b", "x", ""]),
    st.integers(-(10**12), 10**12).map(str) | st.text(max_size=12),
    st.text(max_size=40),
).map(lambda t: "|".join(t).encode("utf-8", "surrogatepass"))


@PROPERTY
@given(
    st.one_of(st.binary(), session_like),
    st.floats(min_value=0, max_value=2**40, allow_nan=False),
)
@example(b"1|n|" + b"9" * 5000 + b"|user@KRBTEST.COM", 0.0)
@example(b"1|n|99|\xff", 0.0)
def test_decode_session_returns_a_session_or_none(value: bytes, now: float) -> None:
    session = decode_session(value, now)
    if session is not None:
        assert isinstance(session.principal, str) and session.principal
        assert session.mechanism in ("negotiate", "basic")
        assert isinstance(session.expires_at, int) and session.expires_at > now


@PROPERTY
@given(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1),
    st.sampled_from(["negotiate", "basic"]),
    st.floats(min_value=0, max_value=2**40, allow_nan=False),
    st.integers(1, 10**9),
)
def test_session_payload_round_trips(
    principal: str, mechanism: str, now: float, lifetime: int
) -> None:
    expires = int(now) + lifetime
    payload = encode_session(principal, mechanism, expires).encode("utf-8")
    assert decode_session(payload, now) == Session(principal, mechanism, expires)  # type: ignore[arg-type]
    assert decode_session(payload, expires) is None  # expired at its own expiry


# -- the live fuzz ------------------------------------------------------------------------------


def test_the_log_checks_find_what_they_look_for() -> None:
    token = b64(bytes(range(256)))
    records = [
        ("tornado_kerb.guard", 20, f"refused: Negotiate {token[40:70]}…", ""),
        ("tornado.access", 30, "401 GET /whoami (127.0.0.1) 0.42ms", ""),
        ("app", 10, "login with pw=s3cret!", ""),
        ("tornado.application", 40, "Uncaught exception", "Traceback (most recent call last):"),
    ]
    secrets = {token: "token", "s3cret!": "the real password", b64(b"x" * 64): "cookie"}
    leaks = fuzz.find_leaks(records, secrets)
    assert [leak.split(":")[0] for leak in leaks] == ["token", "the real password"]
    assert len(fuzz.tracebacks(records)) == 1


SEED = 20251126
COUNT = 2000  # 1,000 per transport: about 5 s here


def test_live_fuzz(realm: Realm, tls: TLS) -> None:
    target = fuzz.Target(
        realm.keytab,
        realm.k5.realm,
        realm.user,
        realm.password,
        tls.cert,
        tls.key,
        tls.ca,
        os.path.join(realm.k5.tmpdir, "kdc.log"),
    )
    result = fuzz.run(target, COUNT, SEED)
    report = result.summary()
    assert result.passed, report
    total = result.total
    # The run did what it is for: all three answers came, valid logins among the 200s.
    assert total[200] and total[401] and total[400], report
    assert result.categories["final-valid-token"][200] == 2, report
    assert result.requests == COUNT + 2 and result.log_records > COUNT, report
