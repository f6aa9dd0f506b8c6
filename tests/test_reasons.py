"""Stable outcome codes, the hook that counts them, and error logs once per change of state."""

from __future__ import annotations

import base64
import logging
from typing import Any, get_args

import pytest
import requests
import tornado.web

from tests.clients import negotiate_header
from tests.conftest import TLS, Realm, ServeFn, Server
from tornado_kerb import KerberosAuthMixin, KerberosGuard, authenticated
from tornado_kerb.reasons import OUTCOMES, Reason, outcome_for

COOKIE_SECRET = "test-only-cookie-secret-" + "r" * 32


@pytest.mark.parametrize("where", ["negotiate", "basic", "form", "", "authz", "kdc", "keytab"])
def test_every_reason_anywhere_has_a_stable_code(where: str) -> None:
    for reason in get_args(Reason):
        assert outcome_for(where, reason) in OUTCOMES, (where, reason)


class Counting(KerberosGuard):
    """What an app does to count outcomes (the README's Prometheus example, minus Prometheus)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, str | None, str | None]] = []

    def on_outcome(self, handler: Any, outcome: Any, mechanism: Any, principal: Any) -> None:
        assert handler.request.request_time() >= 0
        self.seen.append((outcome, mechanism, principal))


class Who(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        self.write(self.current_user.principal)


@pytest.fixture
def counted(serve: ServeFn, realm: Realm) -> Any:
    guards: list[Counting] = []

    def start(https: bool = False, **extra: Any) -> tuple[Server, Counting]:
        settings = {"keytab": realm.keytab, "hostname": "localhost", **extra}
        guard = Counting(settings)
        guards.append(guard)
        return serve([(r"/", Who)], guard, https=https, cookie_secret=COOKIE_SECRET), guard

    yield start
    for guard in guards:
        guard.close()


def get(server: Server, tls: TLS, **kwargs: Any) -> requests.Response:
    return requests.get(server.url("/"), verify=tls.ca, timeout=30, **kwargs)


def test_the_hook_sees_every_outcome(counted: Any, realm: Realm, tls: TLS) -> None:
    server, guard = counted(https=True, basic_cache=True, session=True)
    get(server, tls)
    first = get(server, tls, headers={"Authorization": negotiate_header()})
    cookie = {"Cookie": f"tornado_kerb_session={first.cookies['tornado_kerb_session']}"}
    get(server, tls, headers=cookie)
    get(server, tls, auth=("user", "not the password"))
    get(server, tls, auth=("user", realm.password))
    get(server, tls, auth=("user", realm.password))
    get(server, tls, headers={"Authorization": "Negotiate " + base64.b64encode(b"x" * 40).decode()})
    get(server, tls, headers={"Authorization": "Bearer abc"})
    assert guard.seen == [
        ("request.no-credentials", None, None),
        ("negotiate.ok", "negotiate", realm.user),
        ("session.ok", "negotiate", realm.user),
        ("basic.bad-password", "basic", realm.user),
        ("basic.ok", "basic", realm.user),
        ("basic.cached", "basic", realm.user),
        ("negotiate.malformed", "negotiate", None),
        ("request.unsupported-scheme", None, None),
    ]


def test_forbidden_and_kdc_down_have_their_codes(counted: Any, realm: Realm, tls: TLS) -> None:
    server, guard = counted(https=True, allowed_principals=["nobody@KRBTEST.COM"])
    get(server, tls, headers={"Authorization": negotiate_header()})
    realm.proxy.down = True
    get(server, tls, auth=("user", realm.password))
    assert guard.seen == [
        ("authz.forbidden", "negotiate", realm.user),
        ("kdc.unreachable", "basic", None),  # the KDC never said the name is real
    ]


def test_a_guard_that_does_not_count_pays_nothing(realm: Realm) -> None:
    assert KerberosGuard({"keytab": realm.keytab})._observed is False
    assert Counting({"keytab": realm.keytab})._observed is True


def test_the_kdc_being_down_is_an_error_once_then_back_up_is_said(
    serve: ServeFn, realm: Realm, tls: TLS, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"keytab": realm.keytab, "hostname": "localhost", "realm": "KRBTEST.COM"}
    server = serve([(r"/", Who)], settings, https=True)
    realm.proxy.down = True
    for _ in range(4):
        assert get(server, tls, auth=("user", realm.password)).status_code == 503
    errors = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and r.name.startswith("tornado_kerb")
    ]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "kdc-unreachable" in errors[0].getMessage()
    realm.proxy.down = False
    assert get(server, tls, auth=("user", realm.password)).status_code == 200
    assert any("work again (kdc)" in r.getMessage() for r in caplog.records)


def test_a_refusal_is_one_info_line_with_reason_address_and_principal(
    serve: ServeFn, realm: Realm, tls: TLS, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tornado_kerb")
    settings = {"keytab": realm.keytab, "hostname": "localhost", "realm": "KRBTEST.COM"}
    server = serve([(r"/", Who)], settings, https=True)
    assert get(server, tls, auth=("user", "a wrong password")).status_code == 401
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        f"Kerberos login refused (bad-password) for {realm.user} from 127.0.0.1"
    ]
    assert lines[0].levelno == logging.INFO
    assert "a wrong password" not in caplog.text


def test_an_unknown_basic_name_is_not_logged_it_may_be_a_password(
    serve: ServeFn, realm: Realm, tls: TLS, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tornado_kerb")
    settings = {"keytab": realm.keytab, "hostname": "localhost", "realm": "KRBTEST.COM"}
    server = serve([(r"/", Who)], settings, https=True)
    typed = "Hunter2IsMyPassword"  # typed into the name box
    assert get(server, tls, auth=(typed, "whatever")).status_code == 401
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("(unknown-user) from 127.0.0.1" in line for line in info)
    assert not any(typed in line for line in info)
