"""``required_indicators``: tickets must say how the user logged in (issue 16).

A real MIT KDC sets an authentication indicator for SPAKE pre-authentication
(``spake_preauth_indicator``), the way FreeIPA marks OTP and smart-card logins: ``strong``
must pre-authenticate (``+requires_preauth``) and gets the indicator; ``weak`` does not.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import k5test
import pytest
import requests
import tornado.web

from tests.clients import basic_header, negotiate_header, spnego_token
from tests.conftest import TLS, ServeFn, Server
from tornado_kerb import KerberosAuthMixin, authenticated
from tornado_kerb.testing import realm_environment, start_realm

INDICATOR = "spake-ind"
JSON = {"Accept": "application/json"}


@dataclasses.dataclass
class Spake:
    k5: k5test.K5Realm
    keytab: str
    #: ccaches of a user whose ticket carries the indicator, and of one whose does not.
    strong: str
    weak: str
    password: str

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"keytab": self.keytab, "hostname": "localhost", "realm": self.k5.realm, **extra}


@pytest.fixture(scope="module")
def spake() -> Iterator[Spake]:
    krb5_conf = {"libdefaults": {"spake_preauth_groups": "edwards25519"}}
    kdc_conf = {"realms": {"$realm": {"spake_preauth_indicator": INDICATOR}}}
    k5 = start_realm(krb5_conf=krb5_conf, kdc_conf=kdc_conf, get_creds=False)
    try:
        with realm_environment(k5.env):
            keytab = os.path.join(k5.tmpdir, "http.keytab")
            k5.addprinc("HTTP/localhost")
            k5.extract_keytab("HTTP/localhost", keytab)
            password = "Str0ng-and-long"
            k5.run_kadminl(["addprinc", "-pw", password, "+requires_preauth", "strong"])
            k5.addprinc("weak", password)
            ccaches = {}
            for name in ("strong", "weak"):
                ccaches[name] = os.path.join(k5.tmpdir, f"{name}.ccache")
                k5.kinit(name, password, ["-c", ccaches[name]])
            yield Spake(k5, keytab, ccaches["strong"], ccaches["weak"], password)
    finally:
        k5.stop()


class Whoami(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        user = self.current_user
        self.write({"principal": user.principal, "indicators": list(user.indicators)})


def start(serve: ServeFn, spake: Spake, **extra: Any) -> Server:
    return serve([("/", Whoami)], spake.settings(**extra), https=True, cookie_secret="s" * 32)


def get(server: Server, tls: TLS, **headers: str) -> requests.Response:
    return requests.get(server.url("/"), headers={**JSON, **headers}, verify=tls.ca, timeout=30)


def negotiate(ccache: str) -> str:
    return negotiate_header(spnego_token(ccache=ccache))


def test_a_ticket_with_the_indicator_gets_in_and_shows_it(
    serve: ServeFn, spake: Spake, tls: TLS
) -> None:
    server = start(serve, spake, required_indicators=[INDICATOR])
    response = get(server, tls, Authorization=negotiate(spake.strong))
    assert response.status_code == 200, response.text
    assert response.json()["indicators"] == [INDICATOR]


def test_a_ticket_without_it_gets_403_weak_authentication(
    serve: ServeFn, spake: Spake, tls: TLS
) -> None:
    server = start(serve, spake, required_indicators=[INDICATOR, "otp"])
    response = get(server, tls, Authorization=negotiate(spake.weak))
    assert response.status_code == 403
    assert response.json()["reason"] == "weak-authentication"
    # Another indicator does not stand in for the one required.
    other = start(serve, spake, required_indicators=["otp"])
    assert get(other, tls, Authorization=negotiate(spake.strong)).status_code == 403


def test_without_the_setting_any_ticket_does(serve: ServeFn, spake: Spake, tls: TLS) -> None:
    server = start(serve, spake)
    response = get(server, tls, Authorization=negotiate(spake.weak))
    assert response.status_code == 200, response.text
    assert response.json()["indicators"] == []


def test_a_basic_password_login_carries_the_indicator_of_its_pre_authentication(
    serve: ServeFn, spake: Spake, tls: TLS
) -> None:
    server = start(serve, spake, required_indicators=[INDICATOR])
    strong = get(server, tls, Authorization=basic_header("strong", spake.password))
    assert strong.status_code == 200, strong.text
    assert strong.json()["indicators"] == [INDICATOR]
    weak = get(server, tls, Authorization=basic_header("weak", spake.password))
    assert weak.status_code == 403
    assert weak.json()["reason"] == "weak-authentication"


def test_a_basic_cache_hit_keeps_the_indicator_of_the_login(
    serve: ServeFn, spake: Spake, tls: TLS
) -> None:
    server = start(serve, spake, required_indicators=[INDICATOR], basic_cache=True)
    header = basic_header("strong", spake.password)
    assert get(server, tls, Authorization=header).status_code == 200
    again = get(server, tls, Authorization=header)
    assert again.status_code == 200, again.text
    assert again.json()["indicators"] == [INDICATOR]


def test_a_session_keeps_the_indicator_and_is_checked_against_the_setting(
    serve: ServeFn, spake: Spake, tls: TLS
) -> None:
    server = start(serve, spake, required_indicators=[INDICATOR], session=True)
    login = get(server, tls, Authorization=negotiate(spake.strong))
    assert login.status_code == 200
    cookie = login.headers["Set-Cookie"].split(";", 1)[0]
    again = get(server, tls, Cookie=cookie)
    assert again.status_code == 200, again.text
    assert again.json()["indicators"] == [INDICATOR]
    # The same cookie where the settings ask for an indicator the login did not have:
    # no session, a fresh login is asked for (and would get 403).
    stricter = start(serve, spake, required_indicators=["otp"], session=True)
    assert get(stricter, tls, Cookie=cookie).status_code == 401
