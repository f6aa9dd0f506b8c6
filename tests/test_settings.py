"""Settings validation: typos and bad values fail loudly, once."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from tornado_kerb import ConfigurationError, KerberosSettings


def test_defaults() -> None:
    settings = KerberosSettings.from_mapping(None)
    assert settings == KerberosSettings()
    assert (settings.keytab, settings.service, settings.hostname) == (None, "HTTP", None)
    assert settings.basic is True


def test_full_settings() -> None:
    settings = KerberosSettings.from_mapping(
        {
            "keytab": pathlib.Path("/etc/http.keytab"),
            "service": "HTTP",
            "hostname": "www.example.com",
            "realm": "EXAMPLE.COM",
            "basic": False,
            "kdc_workers": 4,
        }
    )
    assert settings.keytab == "/etc/http.keytab"
    assert settings.hostname == "www.example.com"
    assert settings.basic is False
    assert hash(settings) == hash(KerberosSettings.from_mapping(settings.__dict__))


def test_typo_names_the_key_and_suggests() -> None:
    with pytest.raises(ConfigurationError, match=r"'keytba'.*did you mean 'keytab'"):
        KerberosSettings.from_mapping({"keytba": "/etc/http.keytab"})


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"keytab": 42}, "keytab"),
        ({"keytab": ""}, "keytab"),
        ({"service": ""}, "service"),
        ({"service": "HTTP/www"}, "service"),
        ({"hostname": "www example"}, "hostname"),
        ({"hostname": "www@EXAMPLE"}, "hostname"),
        ({"realm": 'EVIL" , Basic realm="x'}, "realm"),
        ({"basic": "false"}, "basic"),
        ({"basic": 1}, "basic"),
        ({"kdc_workers": 0}, "kdc_workers"),
        ({"kdc_workers": True}, "kdc_workers"),
        ({"kdc_queue": -1}, "kdc_queue"),
        ({"retry_after": "30"}, "retry_after"),
    ],
)
def test_bad_values_name_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError, match=repr(key)):
        KerberosSettings.from_mapping(raw)


def test_not_a_dict() -> None:
    with pytest.raises(ConfigurationError, match="must be a dict"):
        KerberosSettings.from_mapping(["keytab"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kdc_workers": 0},
        {"kdc_queue": -1},
        {"basic": "yes"},
        {"hostname": "www example"},
        {"realms": []},
        {"realms": ["GOOD.ORG", ""]},
        {"realms": ["A B"]},
        {"allowed_principals": []},
        {"allowed_principals": ["alice@X", 7]},
        {"allowed_principals": ["evil\n@X"]},
    ],
)
def test_hand_built_settings_are_validated_too(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=repr(next(iter(kwargs)))):
        KerberosSettings(**kwargs)


def test_lists_become_tuples_and_one_string_is_one_item() -> None:
    settings = KerberosSettings(
        realms=["EXAMPLE.COM", "PARTNER.ORG"], allowed_principals="*@EXAMPLE.COM"
    )
    assert settings.realms == ("EXAMPLE.COM", "PARTNER.ORG")
    assert settings.allowed_principals == ("*@EXAMPLE.COM",)
    assert KerberosSettings(realms="*").realms == "*"
    assert KerberosSettings(realms="EXAMPLE.COM").realms == ("EXAMPLE.COM",)
    hash(settings)  # still usable as a key


def test_from_mapping_takes_settings_as_they_are() -> None:
    settings = KerberosSettings(realm="EXAMPLE.COM")
    assert KerberosSettings.from_mapping(settings) is settings


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"session": "yes"}, "session"),
        ({"session": {"max_age": 0}}, "session"),
        ({"session": {"maxage": 60}}, "session"),
        ({"session": {"name": "bad name"}}, "session"),
        ({"session": {"path": "nope"}}, "session"),
        ({"session": {"http": "true"}}, "session"),
        ({"basic_cache": {"ttl": -1}}, "basic_cache"),
        ({"basic_cache": {"entries": 0}}, "basic_cache"),
        ({"basic_cache": 1}, "basic_cache"),
        ({"kdc_timeout": 0}, "kdc_timeout"),
        ({"kdc_timeout": "5"}, "kdc_timeout"),
    ],
)
def test_session_cache_and_timeout_values(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError, match=repr(key)):
        KerberosSettings.from_mapping(raw)


def test_session_and_cache_options() -> None:
    from tornado_kerb.session import BasicCacheOptions, SessionOptions

    settings = KerberosSettings.from_mapping(
        {"session": {"max_age": 600}, "basic_cache": True, "kdc_timeout": 2}
    )
    assert settings.session == SessionOptions(max_age=600)
    assert settings.basic_cache == BasicCacheOptions()
    assert settings.kdc_timeout == 2.0
    assert KerberosSettings(session=False).session is None
    hash(settings)
