"""What a new user tripped over: typos that failed open, silent defaults, a keytab out of
date or a wrong service name logged as a bare "rejected", no start-up check."""

from __future__ import annotations

import base64
import logging
import pydoc
import subprocess
from typing import Any

import gssapi
import pytest
import requests
import tornado.web

import tornado_kerb
from tests.clients import SPNEGO
from tests.conftest import TLS, Realm, ServeFn
from tornado_kerb import (
    ConfigurationError,
    KerberosAuthMixin,
    KerberosGuard,
    KeytabError,
    authenticated,
)
from tornado_kerb.testing import realm_environment


def negotiate() -> dict[str, str]:
    return {"Authorization": _token("HTTP@localhost")}


class Who(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("kerberos_requried", "kerberos_required"),
        ("kerberos_optinal", "kerberos_optional"),
        ("kerberos_authorise", "kerberos_authorize"),
    ],
)
def test_a_near_miss_of_our_names_is_refused_when_the_class_is_made(typo: str, meant: str) -> None:
    with pytest.raises(TypeError, match=f"did you mean '{meant}'"):
        type("Typo", (KerberosAuthMixin, tornado.web.RequestHandler), {typo: True})


def test_names_of_the_apps_own_are_left_alone() -> None:
    namespace = {"kerberos_realm_name": "EXAMPLE.COM", "kerberos_admins": ("alice",)}
    type("Mine", (KerberosAuthMixin, tornado.web.RequestHandler), namespace)


def test_a_missing_kerberos_setting_fails_closed_and_names_the_near_miss(
    serve: ServeFn, realm: Realm, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the app ran on defaults (the system keytab, any HTTP/ key) with a warning,
    # and allowed_principals, given under the misspelt name, was silently dropped.
    server = serve(
        [(r"/", Who)], None, kerbros={"keytab": realm.keytab, "allowed_principals": ["x@Y"]}
    )
    with realm_environment({"KRB5_KTNAME": realm.keytab}):
        response = requests.get(server.url("/"), headers=negotiate(), timeout=30)
    assert response.status_code == 500
    assert "user@" not in response.text
    (error,) = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ConfigurationError]
    assert "did you mean 'kerberos', not 'kerbros'?" in str(error.exc_info[1])


def test_an_empty_kerberos_setting_asks_for_the_defaults(serve: ServeFn, realm: Realm) -> None:
    server = serve([(r"/", Who)], {})
    with realm_environment({"KRB5_KTNAME": realm.keytab}):
        response = requests.get(server.url("/"), headers=negotiate(), timeout=30)
    assert response.status_code == 200
    assert response.text == f"user@{realm.k5.realm}"


def test_check_fails_at_start_up_not_at_the_first_user(realm: Realm, tmp_path: Any) -> None:
    KerberosGuard({"keytab": realm.keytab, "hostname": "localhost"}).check()
    broken = KerberosGuard({"keytab": str(tmp_path / "missing.keytab")})
    with pytest.raises(KeytabError, match="does not exist"):
        broken.check()
    elsewhere = KerberosGuard({"keytab": realm.keytab, "hostname": "www.example.com"})
    with pytest.raises(KeytabError, match=r"holds no key for HTTP/www\.example\.com@"):
        elsewhere.check()


def _token(target: str) -> str:
    name = gssapi.Name(target, gssapi.NameType.hostbased_service)
    ctx = gssapi.SecurityContext(name=name, usage="initiate", mech=SPNEGO)
    return "Negotiate " + base64.b64encode(ctx.step()).decode()


@pytest.fixture(scope="module")
def stale(realm: Realm, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A keytab for HTTP/stale.localhost whose key the KDC has since replaced."""
    keytab = str(tmp_path_factory.mktemp("stale") / "stale.keytab")
    realm.k5.addprinc("HTTP/stale.localhost")
    realm.k5.extract_keytab("HTTP/stale.localhost", keytab)
    realm.k5.run_kadminl("cpw -randkey HTTP/stale.localhost")
    return keytab


def test_a_stale_keytab_is_logged_in_mits_words(
    serve: ServeFn, realm: Realm, stale: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve([(r"/", Who)], {"keytab": stale, "hostname": "stale.localhost"})
    response = requests.get(
        server.url("/"), headers={"Authorization": _token("HTTP@stale.localhost")}, timeout=30
    )
    assert response.status_code == 401
    (line,) = [r for r in caplog.records if "(stale-keytab)" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert "the keytab is out of date" in line.getMessage()
    assert "kvno" in line.getMessage() and "not found in keytab" in line.getMessage()


@pytest.fixture(scope="module")
def aes128_only(realm: Realm, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A keytab for HTTP/enc.localhost holding its AES128 key only, while the KDC issues
    AES256 tickets (as an RC4-only keytab is, once AD issues AES tickets)."""
    tmp = tmp_path_factory.mktemp("enctype")
    full, partial = str(tmp / "all.keytab"), str(tmp / "aes128.keytab")
    realm.k5.run_kadminl(
        "addprinc -randkey -e aes256-cts:normal,aes128-cts:normal HTTP/enc.localhost"
    )
    realm.k5.extract_keytab("HTTP/enc.localhost", full)
    listed = realm.run("klist", "-ke", full).splitlines()
    entries = [line for line in listed if "HTTP/enc.localhost" in line]
    slot = next(i for i, line in enumerate(entries, 1) if "aes256" in line)
    commands = f"rkt {full}\ndelent {slot}\nwkt {partial}\nquit\n"
    subprocess.run(["ktutil"], input=commands, text=True, check=True, capture_output=True)
    assert "aes256" not in realm.run("klist", "-ke", partial)
    return partial


def test_a_keytab_without_the_ticket_s_key_type_is_logged_in_mits_words(
    serve: ServeFn, realm: Realm, aes128_only: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve([(r"/", Who)], {"keytab": aes128_only, "hostname": "enc.localhost"})
    response = requests.get(
        server.url("/"), headers={"Authorization": _token("HTTP@enc.localhost")}, timeout=30
    )
    assert response.status_code == 401
    (line,) = [r for r in caplog.records if "(wrong-enctype)" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert "the keytab lacks the key type the ticket uses" in line.getMessage()
    assert "not with enctype aes256-cts" in line.getMessage()


def test_a_wrong_service_name_is_logged_in_mits_words(
    serve: ServeFn, realm: Realm, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    keytab = str(tmp_path / "two.keytab")
    for host in ("one.localhost", "two.localhost"):
        realm.k5.addprinc(f"HTTP/{host}")
        realm.k5.extract_keytab(f"HTTP/{host}", keytab)
    server = serve([(r"/", Who)], {"keytab": keytab, "hostname": "one.localhost"})
    response = requests.get(
        server.url("/"), headers={"Authorization": _token("HTTP@two.localhost")}, timeout=30
    )
    assert response.status_code == 401
    (line,) = [r for r in caplog.records if "(wrong-service)" in r.getMessage()]
    assert "does not match server principal" in line.getMessage()


def test_basic_with_a_stale_keytab_says_so_not_only_spoofing(
    serve: ServeFn, realm: Realm, stale: str, tls: TLS, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"keytab": stale, "hostname": "stale.localhost", "realm": realm.k5.realm}
    server = serve([(r"/", Who)], settings, https=True)
    response = requests.get(
        server.url("/"), auth=("user", realm.password), verify=tls.ca, timeout=30
    )
    assert response.status_code == 401
    (line,) = [r for r in caplog.records if "(kdc-not-trusted)" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert "keytab out of date, or a KDC that is not ours" in line.getMessage()
    assert "not found in keytab" in line.getMessage()
    assert realm.password not in caplog.text


def test_help_shows_what_users_need() -> None:
    settings = pydoc.render_doc(tornado_kerb.KerberosSettings, renderer=pydoc.plaintext)
    for field in ("kdc_timeout", "s4u2proxy", "channel_binding", "websocket_expiry"):
        assert field in settings.split("Methods defined here")[0], field
    user = " ".join((tornado_kerb.KerberosUser.__doc__ or "").split())  # what help() shows
    assert "Unix time in seconds" in user
    assert "forwardable" in (tornado_kerb.KerberosUser.__doc__ or "")
    mixin = pydoc.render_doc(tornado_kerb.KerberosAuthMixin, renderer=pydoc.plaintext)
    assert "The default implementation does nothing" not in mixin
