"""The settings reference cannot drift from the code.

docs/settings.md lists every key of :class:`tornado_kerb.KerberosSettings` in one table,
and the options of ``session``, ``basic_cache``, ``login_form`` and ``login_limits`` in
tables of their own. These tests parse those Markdown tables and compare them with the
dataclasses: a field added, removed or given a new default without the reference following
fails here. They also run the settings dict the page shows.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import re

import pytest

from tornado_kerb import ConfigurationError, KerberosSettings
from tornado_kerb.limits import LoginLimitOptions
from tornado_kerb.session import BasicCacheOptions, SessionOptions
from tornado_kerb.settings import LoginFormOptions

PAGE = pathlib.Path(__file__).resolve().parent.parent / "settings.md"

# --- settings
KERBEROS = {
    "keytab": "/etc/tornado/http.keytab",
    "hostname": "www.example.com",
    # A signed cookie after each fresh login; on TLS the __Host- prefix is the safer name.
    "session": {"name": "__Host-session", "max_age": 3600},
    # Remember proven Basic passwords (as keyed hashes) for five minutes.
    "basic_cache": {"ttl": 300},
    # Below the domain's lockout threshold.
    "login_limits": {"per_principal": 5, "window": 900},
    # nginx on the same host terminates TLS (start Tornado with xheaders=True too).
    "trusted_proxies": ["127.0.0.1"],
}
# --- end settings


def table(heading: str) -> dict[str, list[str]]:
    """The first Markdown table under ``heading``: first column (without its backticks)
    → the row's cells."""
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break  # the next section: the table is over
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if set(cells[0]) <= set("-:| ") or cells[0] in ("key", "option"):
            continue  # the separator and the header
        assert len(cells) == 3, f"a row of three cells under {heading!r}: {line[:80]}"
        key = cells[0].strip("`")
        assert key not in rows, f"{key} appears twice under {heading!r}"
        rows[key] = cells
    assert rows, f"no table under {heading!r} in {PAGE}"
    return rows


def documented_default(cell: str) -> object:
    """The value of the first code span of a default cell (`None`, `"HTTP"`, `()`…)."""
    match = re.match(r"`([^`]*)`", cell)
    assert match, f"a default cell must start with the value in backticks: {cell!r}"
    return ast.literal_eval(match.group(1))


def test_every_setting_has_a_row_and_every_row_is_a_setting() -> None:
    fields = [f.name for f in dataclasses.fields(KerberosSettings)]
    rows = table("## Every key")
    assert sorted(set(fields) - set(rows)) == [], "settings missing from docs/settings.md"
    assert sorted(set(rows) - set(fields)) == [], "rows in docs/settings.md that are no setting"


def test_the_table_shows_each_settings_default() -> None:
    rows = table("## Every key")
    for field in dataclasses.fields(KerberosSettings):
        assert documented_default(rows[field.name][1]) == field.default, field.name


@pytest.mark.parametrize(
    ("heading", "options"),
    [
        ("### `session`", SessionOptions),
        ("### `basic_cache`", BasicCacheOptions),
        ("### `login_form`", LoginFormOptions),
        ("### `login_limits`", LoginLimitOptions),
    ],
)
def test_nested_options_match_their_dataclass(heading: str, options: type) -> None:
    rows = table(heading)
    fields = {f.name: f.default for f in dataclasses.fields(options)}
    assert sorted(rows) == sorted(fields)
    for name, default in fields.items():
        assert documented_default(rows[name][1]) == default, f"{heading} {name}"


def test_the_example_settings_are_valid() -> None:
    settings = KerberosSettings.from_mapping(KERBEROS)
    assert settings.session == SessionOptions(name="__Host-session", max_age=3600)
    assert settings.basic_cache == BasicCacheOptions(ttl=300)
    assert settings.login_limits == LoginLimitOptions(per_principal=5, window=900)
    assert settings.trusted_proxies == ("127.0.0.1",)


def test_a_typo_is_refused_with_the_near_miss() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'basic_cache'"):
        KerberosSettings.from_mapping({**KERBEROS, "basic_cahce": True})
    with pytest.raises(ConfigurationError, match="kdc_workers"):
        KerberosSettings(kdc_workers=0)  # built by hand: checked too
