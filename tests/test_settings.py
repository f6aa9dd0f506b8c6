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
