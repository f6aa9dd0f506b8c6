"""The guard: any handler, realms, allowed principals, authorization, local names, acting
as the user. Real KDC, real tokens, a real Tornado server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import gssapi
import pytest
import requests
import tornado.web

from tests.clients import DELEGATE, MUTUAL, curl, negotiate_header, spnego_token
from tests.conftest import Realm, ServeFn, Server, User, make_realm
from tornado_kerb import (
    KerberosAuthMixin,
    KerberosGuard,
    KerberosUser,
    NoCredentials,
    authenticated,
)

SETTINGS = {"hostname": "localhost", "realm": "KRBTEST.COM"}


def settings(realm: Realm, **extra: Any) -> dict[str, Any]:
    return {"keytab": realm.keytab, **SETTINGS, **extra}


def header(ccache: str | None = None, *, delegate: bool = False) -> dict[str, str]:
    flags = MUTUAL | DELEGATE if delegate else MUTUAL
    return {"Authorization": negotiate_header(spnego_token(ccache=ccache, flags=flags))}


def get(server: Server, path: str, ca: str, **kwargs: Any) -> requests.Response:
    return requests.get(server.url(path), verify=ca, timeout=30, **kwargs)


def challenges(response: requests.Response) -> list[str]:
    return list(response.raw.headers.getlist("WWW-Authenticate"))


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tornado_kerb")


def describe(user: KerberosUser) -> dict[str, Any]:
    return {"principal": user.principal, "username": user.username, "mechanism": user.mechanism}


class Who(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        self.write(describe(self.current_user))


# -- the guard from handlers that do not inherit the mixin --------------------------------


class PlainPrepare(tornado.web.RequestHandler):
    """Authenticates in prepare() with a guard handed in: no mixin anywhere."""

    def initialize(self, guard: KerberosGuard) -> None:
        self.guard = guard

    async def prepare(self) -> None:
        await self.guard.authenticate(self)

    def get(self) -> None:
        self.write(describe(self.current_user))


class PlainDecorated(tornado.web.RequestHandler):
    """@authenticated on a plain handler finds the application's guard."""

    @authenticated
    def get(self) -> None:
        self.write(describe(self.current_user))


def test_guard_serves_plain_handlers(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    guard = KerberosGuard(settings(realm))
    try:
        handlers = [
            (r"/prepare", PlainPrepare, {"guard": guard}),
            (r"/decorated", PlainDecorated),
            (r"/mixin", Who),
        ]
        server = serve(handlers, guard, https=True)
        for path in ("/prepare", "/decorated", "/mixin"):
            refused = get(server, path, tls.ca)
            assert refused.status_code == 401, path
            assert challenges(refused)[0] == "Negotiate"
            assert challenges(refused)[1].startswith("Basic realm=")
            ok = get(server, path, tls.ca, headers=header())
            assert ok.status_code == 200, path
            assert ok.json() == {
                "principal": realm.user,
                "username": "user",
                "mechanism": "negotiate",
            }
            assert challenges(ok)[0].startswith("Negotiate ")  # mutual authentication
            basic = get(server, path, tls.ca, auth=("user", realm.password))
            assert basic.json()["mechanism"] == "basic"
        guard.close()  # the KDC threads stop: Basic answers 503, Negotiate needs none
        after = get(server, "/prepare", tls.ca, auth=("user", realm.password))
        assert after.status_code == 503
        assert get(server, "/prepare", tls.ca, headers=header()).status_code == 200
    finally:
        guard.close()  # idempotent


def test_one_guard_per_application_kept_on_the_application(realm: Realm) -> None:
    one = tornado.web.Application([], kerberos=settings(realm))
    two = tornado.web.Application([], kerberos=settings(realm))
    guard = KerberosGuard.for_application(one)
    try:
        assert KerberosGuard.for_application(one) is guard
        other = KerberosGuard.for_application(two)
        assert other is not guard
        other.close()
        explicit = KerberosGuard(settings(realm))
        given = tornado.web.Application([], kerberos=explicit)
        assert KerberosGuard.for_application(given) is explicit
        explicit.close()
    finally:
        guard.close()


class OwnSettings(KerberosAuthMixin, tornado.web.RequestHandler):
    """The documented get_kerberos_settings() override keeps working."""

    def get_kerberos_settings(self) -> Any:
        from tornado_kerb import KerberosSettings

        return KerberosSettings(**self.settings["elsewhere"])

    @authenticated
    def get(self) -> None:
        self.write(describe(self.current_user))


class DenyAll(KerberosGuard):
    def authorize(self, user: KerberosUser, handler: Any) -> Any:
        return None  # not even False: a subclass that forgot to return must fail closed


class SameSettings(Who):
    def get_kerberos_settings(self) -> Any:
        return super().get_kerberos_settings()


def test_a_guard_subclass_is_honoured_and_fails_closed(
    serve: ServeFn, realm: Realm, tls: Any
) -> None:
    guard = DenyAll(settings(realm))
    try:
        server = serve([(r"/", Who), (r"/same", SameSettings)], guard)
        for path in ("/", "/same"):
            assert get(server, path, tls.ca, headers=header()).status_code == 403, path
    finally:
        guard.close()


def test_overridden_settings_get_their_own_guard(realm: Realm, tls: Any) -> None:
    app = tornado.web.Application([(r"/", OwnSettings)], elsewhere=settings(realm))
    server = Server(app, None)
    try:
        assert get(server, "/", tls.ca).status_code == 401
        assert get(server, "/", tls.ca, headers=header()).json()["principal"] == realm.user
        (guard,) = app._tornado_kerb_guards.values()  # type: ignore[attr-defined]
        assert guard.settings.realm == "KRBTEST.COM"
        guard.close()
    finally:
        server.stop()


# -- realms and allowed principals: 403 ---------------------------------------------------


@pytest.mark.parametrize("https", [False, True])
def test_user_of_another_realm_gets_403_without_a_challenge(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture, https: bool
) -> None:
    server = serve([(r"/", Who)], settings(realm, realms=["OTHER.ORG"]), https=https)
    response = get(server, "/", tls.ca, headers=header())
    assert response.status_code == 403
    assert "not allowed" in response.text
    # No challenge to retry with, but the server still proves itself (mutual auth).
    (mutual,) = challenges(response)
    assert mutual.startswith("Negotiate ") and len(mutual) > len("Negotiate ")
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert f"Kerberos login forbidden (foreign-realm) for {realm.user}" in "\n".join(infos)
    if https:  # Basic names of other realms never reach the KDC: 401, as before
        before = realm.proxy.exchanges
        basic = get(server, "/", tls.ca, auth=("user@OTHER.ORG", "whatever"))
        assert basic.status_code == 401
        assert realm.proxy.exchanges == before


@pytest.fixture(scope="module")
def partner(realm: Realm) -> Iterator[dict[str, str]]:
    """A second realm, PARTNER.ORG, that KRBTEST.COM trusts: its users get real
    cross-realm tickets for our HTTP/localhost. Yields the client environment of
    user@PARTNER.ORG."""
    other = make_realm(realm="PARTNER.ORG", create_host=False)
    try:
        # The cross-realm key: the same principal and password in both KDCs.
        cross, secret = "krbtgt/KRBTEST.COM@PARTNER.ORG", "cross-realm-secret"
        other.addprinc(cross, secret)
        realm.k5.addprinc(cross, secret)
        conf = {
            "realms": {"KRBTEST.COM": {"kdc": f"127.0.0.1:{realm.k5.portbase}"}},
            "domain_realm": {"localhost": "KRBTEST.COM"},
        }
        env = other.special_env("cross", False, krb5_conf=conf)
        yield {"KRB5_CONFIG": env["KRB5_CONFIG"], "KRB5CCNAME": other.ccache}
    finally:
        other.stop()


def partner_curl(server: Server, partner: dict[str, str]) -> tuple[int, str]:
    # The partner's environment goes to curl only: the server in this process must keep
    # reading our realm's krb5.conf.
    status, _, body = curl(server.url("/"), "--negotiate", "-u", ":", env=partner)
    return status, body


@pytest.mark.parametrize(
    ("realms", "status", "username"),
    [
        (None, 403, None),  # default: our realm only
        (["KRBTEST.COM", "PARTNER.ORG"], 200, "user"),  # listed: the realm is stripped
        ("*", 200, "user@PARTNER.ORG"),  # any trusted realm: kept whole, cannot collide
    ],
)
def test_cross_realm_users(
    serve: ServeFn,
    realm: Realm,
    partner: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    realms: Any,
    status: int,
    username: str | None,
) -> None:
    server = serve([(r"/", Who)], settings(realm, realms=realms))
    got, body = partner_curl(server, partner)
    assert got == status, body
    if status == 403:
        assert "forbidden (foreign-realm) for user@PARTNER.ORG" in caplog.text
    else:
        assert '"principal": "user@PARTNER.ORG"' in body
        assert f'"username": "{username}"' in body


def test_any_realm_with_star(serve: ServeFn, realm: Realm, tls: Any) -> None:
    server = serve([(r"/", Who)], settings(realm, realms="*"))
    assert get(server, "/", tls.ca, headers=header()).status_code == 200


@pytest.mark.parametrize(
    ("allowed", "status"),
    [
        (["user@KRBTEST.COM"], 200),
        (["*@KRBTEST.COM"], 200),
        (["us?r@KRBTEST.COM", "nobody@KRBTEST.COM"], 200),
        (["USER@KRBTEST.COM"], 403),  # Kerberos names are case-sensitive
        (["svc-*@KRBTEST.COM"], 403),
        (["user@KRBTEST.COM.evil"], 403),
    ],
)
def test_allowed_principals_by_negotiate_and_basic(
    serve: ServeFn, realm: Realm, tls: Any, allowed: list[str], status: int
) -> None:
    server = serve([(r"/", Who)], settings(realm, allowed_principals=allowed), https=True)
    negotiate = get(server, "/", tls.ca, headers=header())
    basic = get(server, "/", tls.ca, auth=("user", realm.password))
    assert (negotiate.status_code, basic.status_code) == (status, status)
    if status == 403:
        assert not [c for c in challenges(basic) if c.startswith("Basic")]


class Authorizing(KerberosAuthMixin, tornado.web.RequestHandler):
    """kerberos_authorize: sync, async, and a hook that forgot to return."""

    async def kerberos_authorize(self, user: KerberosUser) -> bool:  # type: ignore[override]
        await asyncio.sleep(0)  # a real coroutine: the verdict arrives later
        return self.get_argument("verdict") == "yes"

    @authenticated
    def get(self) -> None:
        self.write(describe(self.current_user))


class ForgetfulAuthorizer(Who):
    def kerberos_authorize(self, user: KerberosUser) -> Any:
        pass  # returns None: must not let anybody in


def test_kerberos_authorize_may_be_async_and_fails_closed(
    serve: ServeFn, realm: Realm, tls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(
        [(r"/async", Authorizing), (r"/none", ForgetfulAuthorizer)], settings(realm), https=True
    )
    assert get(server, "/async?verdict=yes", tls.ca, headers=header()).status_code == 200
    assert get(server, "/async?verdict=no", tls.ca, headers=header()).status_code == 403
    basic = get(server, "/async?verdict=no", tls.ca, auth=("user", realm.password))
    assert basic.status_code == 403
    assert get(server, "/none", tls.ca, headers=header()).status_code == 403
    assert f"Kerberos login forbidden (forbidden) for {realm.user}" in caplog.text


# -- local names --------------------------------------------------------------------------


class CustomNames(Who):
    def kerberos_local_name(self, principal: str) -> str:
        return "u-" + principal.partition("@")[0]


def test_local_names_follow_auth_to_local_and_can_be_overridden(
    serve: ServeFn, realm: Realm, tls: Any, tmp_path: Any
) -> None:
    service = "svc/web@KRBTEST.COM"
    realm.k5.addprinc(service, "svc-password")
    ccache = os.path.join(tmp_path, "svc.ccache")
    realm.k5.kinit(service, "svc-password", flags=["-c", ccache])
    server = serve([(r"/", Who), (r"/custom", CustomNames)], settings(realm, realms="*"))
    as_user = get(server, "/", tls.ca, headers=header()).json()
    as_service = get(server, "/", tls.ca, headers=header(ccache)).json()
    custom = get(server, "/custom", tls.ca, headers=header()).json()
    assert as_user["username"] == "user"  # MIT's DEFAULT rule
    assert as_service["username"] == "svc_web"  # RULE:[2:$1_$2@$0] in the realm's krb5.conf
    assert custom["username"] == "u-user"


def test_local_name_fallbacks(realm: Realm) -> None:
    guard = KerberosGuard(settings(realm, realms=["KRBTEST.COM", "PARTNER.ORG"]))
    try:
        assert guard.local_name("alice@KRBTEST.COM") == "alice"
        assert guard.local_name("bob/admin@KRBTEST.COM") == "bob/admin"  # no rule: stripped
        assert guard.local_name("carol@PARTNER.ORG") == "carol"  # a listed realm
        assert guard.local_name("dave@STRANGER.NET") == "dave@STRANGER.NET"  # kept whole
    finally:
        guard.close()
    anywhere = KerberosGuard(settings(realm, realms="*"))
    try:
        # auth_to_local_names maps "dave" whatever the realm (MIT looks up the bare
        # name): only our realm's dave may become david.
        assert anywhere.local_name("dave@KRBTEST.COM") == "david"
        assert anywhere.local_name("dave@PARTNER.ORG") == "dave@PARTNER.ORG"
    finally:
        anywhere.close()


# -- acting as the user -------------------------------------------------------------------

kept: list[KerberosUser] = []


def default_identity(target: str) -> dict[str, Any]:
    """Runs in the run_as_user thread: who are the default credentials, can they act?"""
    creds = gssapi.Credentials(usage="initiate")  # no name: the thread's default cache
    name = gssapi.Name(target, gssapi.NameType.hostbased_service)
    token = gssapi.SecurityContext(name=name, usage="initiate").step()
    return {"as": str(creds.name), "ticket": bool(token), "ccname": os.environ.get("KRB5CCNAME")}


class ActAs(KerberosAuthMixin, tornado.web.RequestHandler):
    pair: threading.Barrier | None = None

    @authenticated
    async def get(self) -> None:
        kept.append(self.current_user)
        try:
            result = await self.run_as_user(self.work)
        except NoCredentials as err:
            self.set_status(409)
            result = {"error": type(err).__name__}
        self.write(result)

    def work(self) -> dict[str, Any]:
        if self.pair is not None:
            # Two calls are inside acting_as at once before either looks: interleaved.
            before = str(gssapi.Credentials(usage="initiate").name)
            self.pair.wait(timeout=30)
            return {**default_identity("host@localhost"), "before": before}
        return default_identity("host@localhost")


def test_run_as_user_acts_as_the_user_and_forgets_after_the_request(
    serve: ServeFn, realm: Realm, tls: Any
) -> None:
    kept.clear()
    server = serve([(r"/", ActAs)], settings(realm), https=True)
    delegated = get(server, "/", tls.ca, headers=header(delegate=True))
    assert delegated.json() == {
        "as": realm.user,
        "ticket": True,
        "ccname": os.environ["KRB5CCNAME"],
    }
    basic = get(server, "/", tls.ca, auth=("user", realm.password))
    assert basic.json()["as"] == realm.user
    refused = get(server, "/", tls.ca, headers=header())
    assert (refused.status_code, refused.json()) == (409, {"error": "NoCredentials"})
    # The requests are over: a user object kept past its request holds no credentials.
    assert len(kept) == 3
    assert all(user.delegated_credentials is None for user in kept)


async def in_a_coroutine() -> str:
    return default_identity("host@localhost")["as"]


def returns_a_coroutine() -> Any:
    return in_a_coroutine()


class ActAsync(ActAs):
    @authenticated
    async def get(self) -> None:
        fn = in_a_coroutine if self.get_argument("kind") == "async" else returns_a_coroutine
        try:
            await self.run_as_user(fn)  # type: ignore[arg-type]
        except TypeError as err:
            self.write({"refused": str(err)})


def test_run_as_user_refuses_coroutines(serve: ServeFn, realm: Realm, tls: Any) -> None:
    # A coroutine would run on the IOLoop after the user's cache is gone, as somebody else.
    server = serve([(r"/", ActAsync)], settings(realm))
    for kind in ("async", "returns"):
        response = get(server, f"/?kind={kind}", tls.ca, headers=header(delegate=True))
        assert "plain function" in response.json()["refused"], kind


def test_concurrent_users_each_act_as_themselves(
    serve: ServeFn, realm: Realm, alice: User, tls: Any
) -> None:
    ActAs.pair = threading.Barrier(2)
    try:
        server = serve([(r"/", ActAs)], settings(realm))
        users = [(realm.user, None), (alice.principal, alice.ccache)] * 20
        # Headers are made here: the ticket caches are the clients', not the server's.
        requests_ = [(who, header(ccache, delegate=True)) for who, ccache in users]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda r: get(server, "/", tls.ca, headers=r[1]), requests_))
    finally:
        ActAs.pair = None
    # KRB5CCNAME (the process environment) names the first user's cache all along: alice
    # acted as alice anyway, through her own thread's default.
    env_ccache = os.environ["KRB5CCNAME"]
    for (who, _), response in zip(users, responses, strict=True):
        assert response.status_code == 200
        assert response.json() == {"as": who, "before": who, "ticket": True, "ccname": env_ccache}


def test_a_broken_auth_to_local_rule_fails_closed(
    serve: ServeFn,
    realm: Realm,
    tls: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A rule whose substitution is cut short: krb5 cannot map anybody with it.
    broken = {"realms": {"$realm": {"auth_to_local": ["RULE:[1:$$1@$$0](.*)s/@.*"]}}}
    env = realm.k5.special_env("broken-rule", False, krb5_conf=broken)
    monkeypatch.setenv("KRB5_CONFIG", env["KRB5_CONFIG"])
    server = serve([(r"/", Who)], settings(realm))  # a new server thread reads the new conf
    response = get(server, "/", tls.ca, headers=header())
    assert response.status_code == 503
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("failing closed" in message for message in errors)
