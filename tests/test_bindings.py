"""TLS channel bindings (RFC 5929 tls-server-end-point) with a real KDC, a real TLS server,
a python-gssapi initiator and requests-gssapi."""

from __future__ import annotations

import base64
import ssl
from typing import Any

import gssapi
import gssapi.raw
import pytest
import requests
import requests_gssapi
import tornado.web
from cryptography import x509

from tests.clients import MUTUAL, SPNEGO
from tests.conftest import TLS, Realm, ServeFn, Server
from tornado_kerb import ConfigurationError, KerberosAuthMixin, KerberosGuard, authenticated
from tornado_kerb.bindings import certificate_hash


class Bound(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        user = self.current_user
        self.write({"principal": user.principal, "bound": user.channel_bound})


def start(serve: ServeFn, realm: Realm, tls: TLS, mode: str, https: bool = True) -> Server:
    settings = {
        "keytab": realm.keytab,
        "hostname": "localhost",
        "channel_binding": mode,
        "tls_certificate": tls.cert,
    }
    return serve([(r"/", Bound)], settings, https=https)


def cert_der(tls: TLS) -> bytes:
    with open(tls.cert) as pem:
        return ssl.PEM_cert_to_DER_cert(pem.read())


def token(bindings: bytes | None) -> str:
    cb = None if bindings is None else gssapi.raw.ChannelBindings(application_data=bindings)
    ctx = gssapi.SecurityContext(
        name=gssapi.Name("HTTP@localhost", gssapi.NameType.hostbased_service),
        usage="initiate",
        mech=SPNEGO,
        flags=MUTUAL,
        channel_bindings=cb,
    )
    return "Negotiate " + base64.b64encode(ctx.step()).decode()


def ours(tls: TLS) -> bytes:
    return b"tls-server-end-point:" + certificate_hash(cert_der(tls))


def get(server: Server, tls: TLS, authorization: str) -> requests.Response:
    headers = {"Authorization": authorization}
    return requests.get(server.url("/"), headers=headers, verify=tls.ca, timeout=30)


def test_our_hash_is_the_one_clients_compute(tls: TLS) -> None:
    # What requests-gssapi (and curl) hash: the certificate's own signature hash.
    cert = x509.load_der_x509_certificate(cert_der(tls))
    assert cert.signature_hash_algorithm is not None
    assert certificate_hash(cert_der(tls)) == cert.fingerprint(cert.signature_hash_algorithm)


@pytest.mark.parametrize("mode", ["allow", "require"])
def test_a_bound_token_is_accepted_and_the_user_says_so(
    serve: ServeFn, realm: Realm, tls: TLS, mode: str
) -> None:
    response = get(start(serve, realm, tls, mode), tls, token(ours(tls)))
    assert response.status_code == 200, response.text
    assert response.json() == {"principal": realm.user, "bound": True}


@pytest.mark.parametrize("mode", ["allow", "require"])
def test_a_token_bound_to_another_channel_is_refused(
    serve: ServeFn, realm: Realm, tls: TLS, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A man in the middle's TLS channel: another certificate, another hash.
    other = b"tls-server-end-point:" + b"\x00" * 32
    response = get(start(serve, realm, tls, mode), tls, token(other))
    assert response.status_code == 401
    assert "(bad-bindings)" in caplog.text


def test_an_unbound_token_passes_allow_and_says_so(serve: ServeFn, realm: Realm, tls: TLS) -> None:
    response = get(start(serve, realm, tls, "allow"), tls, token(None))
    assert response.status_code == 200
    assert response.json()["bound"] is False


def test_require_refuses_an_unbound_token(
    serve: ServeFn, realm: Realm, tls: TLS, caplog: pytest.LogCaptureFixture
) -> None:
    response = get(start(serve, realm, tls, "require"), tls, token(None))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Negotiate")
    assert "(unbound)" in caplog.text


def test_require_on_plain_http_refuses_even_a_bound_token(
    serve: ServeFn, realm: Realm, tls: TLS, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(serve, realm, tls, "require", https=False)
    response = requests.get(
        server.url("/"), headers={"Authorization": token(ours(tls))}, timeout=30
    )
    assert response.status_code == 401  # there is no channel to bind to
    assert "(unbound)" in caplog.text


def test_off_ignores_bindings(serve: ServeFn, realm: Realm, tls: TLS) -> None:
    other = b"tls-server-end-point:" + b"\x00" * 32
    response = get(start(serve, realm, tls, "off"), tls, token(other))
    assert response.status_code == 200
    assert response.json()["bound"] is False


def test_requests_gssapi_with_bindings_passes_require_without_them_it_is_refused(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    server = start(serve, realm, tls, "require")
    bound = requests_gssapi.HTTPSPNEGOAuth(channel_bindings="tls-server-end-point")
    response = requests.get(server.url("/"), auth=bound, verify=tls.ca, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"principal": realm.user, "bound": True}
    plain = requests_gssapi.HTTPSPNEGOAuth()
    response = requests.get(server.url("/"), auth=plain, verify=tls.ca, timeout=30)
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"channel_binding": "require"}, "needs 'tls_certificate'"),
        ({"channel_binding": "sometimes"}, "must be one of off, allow, require"),
        ({"tls_certificate": "/nonexistent.pem"}, "tls_certificate"),
    ],
)
def test_settings_that_cannot_work_are_refused(
    realm: Realm, settings: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        KerberosGuard({"keytab": realm.keytab, **settings})


def test_require_turns_basic_and_session_cookies_off(
    serve: ServeFn, realm: Realm, tls: TLS
) -> None:
    # A password or a cookie is not bound to the channel: a man in the middle with a
    # certificate of its own would collect either.
    settings = {
        "keytab": realm.keytab,
        "hostname": "localhost",
        "realm": "KRBTEST.COM",
        "channel_binding": "require",
        "tls_certificate": tls.cert,
        "session": True,
    }
    server = serve([(r"/", Bound)], settings, https=True)  # no cookie_secret needed: off
    password = requests.get(
        server.url("/"), auth=("user", realm.password), verify=tls.ca, timeout=30
    )
    assert password.status_code == 401
    assert password.headers["WWW-Authenticate"] == "Negotiate"  # no Basic offered
    bound = get(server, tls, token(ours(tls)))
    assert bound.status_code == 200
    assert "Set-Cookie" not in bound.headers
