"""Group names to SIDs over LDAP, against a real Samba AD DC, bound as the service's own
account with a TGT from its keytab (never the process's default credentials)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping

import gssapi
import krb5
import pytest

from tornado_kerb.directory import Directory, GroupSids, find_client_principal, is_sid_like
from tornado_kerb.errors import ConfigurationError
from tornado_kerb.testing import realm_environment
from tornado_kerb.testing.samba import SambaRealm

# Names unique to this run: the DC is shared by the session.
TAG = secrets.token_hex(3)


@pytest.fixture(autouse=True)
def _samba_env(samba: SambaRealm) -> Iterator[None]:
    # Where the test's own clients (and MIT inside the directory's thread) find the KDC;
    # KRB5CCNAME is the DC's default user's ticket, which the directory must NOT use.
    with realm_environment(samba.env):
        yield


@pytest.fixture(scope="module")
def directory(samba: SambaRealm) -> Iterator[Directory]:
    d = Directory(
        keytab=samba.keytab,
        client_principal=f"{samba.service_account}@{samba.realm}",
        realm=samba.realm,
        ldap_url=samba.ldap_url,
    )
    yield d
    d.close()


@pytest.fixture(scope="module")
def group(samba: SambaRealm) -> tuple[str, str]:
    name = f"dirweb{TAG}"
    return name, samba.add_group(name)


def other_directory(samba: SambaRealm, **kwargs: object) -> Directory:
    args: dict[str, object] = {
        "keytab": samba.keytab,
        "client_principal": f"{samba.service_account}@{samba.realm}",
        "realm": samba.realm,
        "ldap_url": samba.ldap_url,
        **kwargs,
    }
    return Directory(**args)  # type: ignore[arg-type]


def closed_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def sam(samba: SambaRealm, tool: str, *args: str, ldif: str | None = None) -> None:
    """Change the DC's database behind its back, as an administrator would (ldb tools)."""
    subprocess.run(
        [tool, "-H", os.path.join(samba.directory, "private", "sam.ldb"), *args],
        input=ldif,
        text=True,
        check=True,
        capture_output=True,
        env={"PATH": os.environ["PATH"], "LC_ALL": "C"},
    )


def group_dn(samba: SambaRealm, name: str) -> str:
    return f"CN={name},CN=Users,{samba.base_dn}"


# -- names ------------------------------------------------------------------------------


def test_every_name_form_resolves_to_the_groups_sid(
    samba: SambaRealm, directory: Directory, group: tuple[str, str]
) -> None:
    name, sid = group
    names = [
        f"{samba.domain}\\{name}",
        f"{samba.domain.lower()}\\{name.upper()}",  # AD compares both case-insensitively
        f"{name}@{samba.dns_domain}",
        f"{name}@{samba.dns_domain.upper()}.",
        name,
        f" {name} ",
    ]
    assert directory.resolve(names) == dict.fromkeys(names, sid)
    assert sid.startswith(samba.domain_sid + "-")


def test_a_group_with_a_space_and_filter_characters(
    samba: SambaRealm, directory: Directory
) -> None:
    # "*" would match every account if it went into the filter unescaped.
    name = f"web (x){TAG}"
    sid = samba.add_group(name)
    assert directory.resolve([name, f"{samba.domain}\\{name}"]) == {
        name: sid,
        f"{samba.domain}\\{name}": sid,
    }
    with pytest.raises(ConfigurationError, match="no such group"):
        directory.resolve([f"web*{TAG}"])


def test_sids_pass_through_validated_without_asking_the_directory(samba: SambaRealm) -> None:
    # Nothing listens there: SIDs alone must not need the directory.
    nowhere = other_directory(samba, ldap_url=f"ldap://127.0.0.1:{closed_port()}")
    try:
        given = ["S-1-5-32-544", "s-1-5-21-1-2-3-0500", f"{samba.domain_sid}-512"]
        assert nowhere.resolve(given) == {
            "S-1-5-32-544": "S-1-5-32-544",
            "s-1-5-21-1-2-3-0500": "S-1-5-21-1-2-3-500",
            f"{samba.domain_sid}-512": f"{samba.domain_sid}-512",
        }
        with pytest.raises(ConfigurationError, match=r"'S-1-5-x': not a valid SID"):
            nowhere.resolve(["S-1-5-32-544", "S-1-5-x"])
        with pytest.raises(ConfigurationError, match="not a valid SID"):
            nowhere.resolve([f"S-1-5-21-{2**32}"])  # a sub-authority is 32 bits
    finally:
        nowhere.close()
    assert is_sid_like("s-1-5-32-544")
    assert not is_sid_like("S-Team")


def test_unresolvable_names_raise_naming_each_of_them(
    samba: SambaRealm, directory: Directory, group: tuple[str, str]
) -> None:
    name, _ = group
    bad = [
        f"nosuch{TAG}",
        f"OTHERDOM\\{name}",
        f"{name}@other.example",
        samba.user.partition("@")[0],  # a user, not a group
        "DC1$",  # a computer
        f"{samba.domain}\\",
    ]
    with pytest.raises(ConfigurationError) as raised:
        directory.resolve([name, *bad])
    message = str(raised.value)
    for each in bad:
        assert repr(each) in message
    assert repr(name) not in message
    assert samba.ldap_url in message  # which directory said no
    assert "is a user, not a group" in message
    assert "is a computer, not a group" in message
    assert f"domain OTHERDOM is not this directory's {samba.domain}" in message
    # lookup() answers instead of raising, for the refresh.
    found, missing = directory.lookup([name, f"nosuch{TAG}"])
    assert list(found) == [name]
    assert list(missing) == [f"nosuch{TAG}"]


def test_the_netbios_domain_is_learned_from_the_directory(
    samba: SambaRealm, directory: Directory
) -> None:
    assert samba.domain != samba.realm.split(".")[0]  # not guessable from the realm
    assert directory.netbios_domain() == samba.domain
    assert directory.dns_domain() == samba.dns_domain


def test_a_base_dn_below_the_domain_still_finds_the_domain(
    samba: SambaRealm, group: tuple[str, str]
) -> None:
    name, sid = group
    d = other_directory(samba, base_dn=f"CN=Users,{samba.base_dn}")
    try:
        assert d.netbios_domain() == samba.domain
        assert d.resolve([f"{samba.domain}\\{name}"]) == {f"{samba.domain}\\{name}": sid}
    finally:
        d.close()


# -- credentials ------------------------------------------------------------------------


def test_binds_as_the_service_from_the_keytab_not_the_default_ccache(
    samba: SambaRealm, directory: Directory, group: tuple[str, str]
) -> None:
    # The environment's default cache holds another user's ticket.
    default = os.environ["KRB5CCNAME"]
    assert str(gssapi.Credentials(usage="initiate").name) == samba.user
    with open(default, "rb") as cache:
        before = cache.read()

    assert directory.whoami() == f"{samba.domain}\\{samba.service_account}"
    directory.resolve([group[0]])

    # Nothing of ours went into the user's cache (no ldap/ ticket), the environment and
    # this thread's default credentials are as they were.
    with open(default, "rb") as cache:
        assert cache.read() == before
    assert os.environ["KRB5CCNAME"] == default
    assert str(gssapi.Credentials(usage="initiate").name) == samba.user


def test_concurrent_callers_share_one_worker(directory: Directory, group: tuple[str, str]) -> None:
    results: list[dict[str, str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(directory.resolve([group[0]])))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [{group[0]: group[1]}] * 4


def test_find_client_principal(samba: SambaRealm, tmp_path: os.PathLike[str]) -> None:
    account = f"{samba.service_account}@{samba.realm}"
    assert find_client_principal(samba.keytab, samba.realm) == account  # beside HTTP/localhost
    assert find_client_principal(samba.keytab, "OTHER.REALM") is None

    ctx = krb5.init_context()
    source = list(krb5.kt_resolve(ctx, samba.keytab.encode()))

    def keytab(name: str, keep: set[bytes | None]) -> str:
        path = os.path.join(tmp_path, name)
        kt = krb5.kt_resolve(ctx, f"FILE:{path}".encode())
        for entry in source:
            if entry.principal.name in keep:
                krb5.kt_add_entry(ctx, kt, entry.principal, entry.kvno, entry.timestamp, entry.key)
        return path

    spns = {e.principal.name for e in source if b"/" in (e.principal.name or b"")}
    assert spns
    assert find_client_principal(keytab("spn.keytab", spns), samba.realm) is None

    second = samba.add_service(f"dirsvc{TAG}", [f"HTTP/dir{TAG}.{samba.dns_domain}"])
    both = keytab("both.keytab", {e.principal.name for e in source})
    for entry in krb5.kt_resolve(ctx, second.encode()):
        kt = krb5.kt_resolve(ctx, f"FILE:{both}".encode())
        krb5.kt_add_entry(ctx, kt, entry.principal, entry.kvno, entry.timestamp, entry.key)
    with pytest.raises(ConfigurationError, match="several account names"):
        find_client_principal(both, samba.realm)


# -- the directory or the KDC unreachable at start-up ------------------------------------


def test_no_kdc_is_an_error_naming_the_directory(
    samba: SambaRealm, tmp_path: os.PathLike[str], group: tuple[str, str]
) -> None:
    with open(samba.krb5_conf) as conf:
        text = conf.read()
    kdc = f"kdc = {samba.host_ip}:88"
    assert kdc in text
    broken = os.path.join(tmp_path, "krb5.conf")
    with open(broken, "w") as conf:
        conf.write(text.replace(kdc, f"kdc = 127.0.0.1:{closed_port()}"))
    d = other_directory(samba)
    try:
        with realm_environment({"KRB5_CONFIG": broken}):
            with pytest.raises(ConfigurationError) as raised:
                d.resolve([group[0]])
        assert samba.ldap_url in str(raised.value)
        assert "no KDC answered" in str(raised.value)
        # The same object works once the KDC is back: nothing was cached from the failure.
        assert d.resolve([group[0]]) == {group[0]: group[1]}
    finally:
        d.close()


def test_no_domain_controller_is_an_error_naming_it(
    samba: SambaRealm, group: tuple[str, str]
) -> None:
    url = f"ldap://{samba.host_ip}:{closed_port(samba.host_ip)}"
    d = other_directory(samba, ldap_url=url)
    try:
        with pytest.raises(ConfigurationError, match=f"directory {url} .*Can't contact"):
            d.resolve([group[0]])
    finally:
        d.close()


def test_a_bind_the_kdc_refuses_is_an_error_with_the_reason(
    samba: SambaRealm, group: tuple[str, str]
) -> None:
    # The DC's own address written as IPv4-mapped IPv6: the connection reaches it, but the
    # service name asked for (ldap/::ffff:…) is no principal of the realm.
    url = f"ldap://[::ffff:{samba.host_ip}]"
    d = other_directory(samba, ldap_url=url)
    try:
        with pytest.raises(ConfigurationError, match="not found in Kerberos database"):
            d.resolve([group[0]])
    finally:
        d.close()


def test_a_principal_missing_from_the_keytab_is_named(samba: SambaRealm) -> None:
    d = other_directory(samba, client_principal=samba.user)
    try:
        with pytest.raises(ConfigurationError, match=f"holds no key for {samba.user}"):
            d.resolve(["anything"])
    finally:
        d.close()


def test_a_silent_domain_controller_times_out(samba: SambaRealm, group: tuple[str, str]) -> None:
    # Accepts the connection (on the DC's address: its ldap/ name is a real principal)
    # and never answers the bind.
    with socket.socket() as silent:
        silent.bind((samba.host_ip, 0))
        silent.listen()
        url = f"ldap://{samba.host_ip}:{silent.getsockname()[1]}"
        d = other_directory(samba, ldap_url=url, timeout=0.5)
        try:
            started = time.monotonic()
            with pytest.raises(ConfigurationError, match=r"no answer within 0\.5s"):
                d.resolve([group[0]])
            assert time.monotonic() - started < 5
        finally:
            d.close()


def test_urls_other_than_ldap_are_refused(samba: SambaRealm) -> None:
    for url in ("ldaps://dc1.example.com", "ldap://dc1/DC=x", "http://dc1", "ldap://"):
        with pytest.raises(ConfigurationError, match="ldap://host"):
            other_directory(samba, ldap_url=url)


def test_without_python_ldap_the_error_says_what_to_install(
    samba: SambaRealm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault this machine cannot produce for real: python-ldap is installed.
    monkeypatch.setitem(sys.modules, "ldap", None)
    with pytest.raises(ConfigurationError, match=r"tornado_kerb\[ad\]"):
        other_directory(samba)


def test_a_closed_directory_says_so(samba: SambaRealm) -> None:
    d = other_directory(samba)
    d.close()
    with pytest.raises(ConfigurationError, match="closed"):
        d.resolve(["anything"])


# -- keeping names current --------------------------------------------------------------


def test_start_up_fails_for_an_unknown_group(directory: Directory, group: tuple[str, str]) -> None:
    with pytest.raises(ConfigurationError, match=f"'nosuch{TAG}'"):
        GroupSids(directory, [group[0], f"nosuch{TAG}"], start=False)


def test_a_distribution_group_is_refused_it_is_never_in_a_ticket(
    samba: SambaRealm, directory: Directory
) -> None:
    samba.add_group(f"dist{TAG}", security=False)
    with pytest.raises(ConfigurationError, match="distribution group"):
        directory.resolve([f"dist{TAG}"])


def test_names_are_matched_by_the_directory_not_by_python_s_case_folding(
    samba: SambaRealm, directory: Directory
) -> None:
    # casefold() makes "Straße" "strasse" and the ligature "ﬁn" "fin": other groups here.
    sharp, plain = samba.add_group(f"Straße{TAG}"), samba.add_group(f"strasse{TAG}")
    liga, fin = samba.add_group(f"ﬁn{TAG}"), samba.add_group(f"fin{TAG}")
    assert len({sharp, plain, liga, fin}) == 4
    found = directory.resolve([f"Straße{TAG}", f"strasse{TAG}", f"ﬁn{TAG}", f"FIN{TAG}"])
    assert found == {
        f"Straße{TAG}": sharp,
        f"strasse{TAG}": plain,
        f"ﬁn{TAG}": liga,
        f"FIN{TAG}": fin,
    }


def test_refresh_follows_a_recreated_group_and_keeps_a_vanished_ones_sid(
    samba: SambaRealm, directory: Directory, caplog: pytest.LogCaptureFixture
) -> None:
    recreated, renamed = f"dirre{TAG}", f"dirmv{TAG}"
    old_sid = samba.add_group(recreated)
    kept_sid = samba.add_group(renamed)
    seen: list[Mapping[str, str]] = []
    names = GroupSids(
        directory, [recreated, renamed, "S-1-5-32-544"], on_change=seen.append, start=False
    )
    assert seen == [{recreated: old_sid, renamed: kept_sid, "S-1-5-32-544": "S-1-5-32-544"}]
    assert names.refresh() is False  # nothing changed: no call
    assert len(seen) == 1

    sam(samba, "ldbdel", group_dn(samba, recreated))
    new_sid = samba.add_group(recreated)
    assert new_sid != old_sid
    sam(
        samba,
        "ldbmodify",
        ldif=f"dn: {group_dn(samba, renamed)}\nchangetype: modify\nreplace: sAMAccountName\n"
        f"sAMAccountName: {renamed}x\n",
    )
    with caplog.at_level(logging.WARNING, logger="tornado_kerb.directory"):
        assert names.refresh() is True
    assert names.mapping == {
        recreated: new_sid,
        renamed: kept_sid,  # renamed away: the group still exists, its SID still counts
        "S-1-5-32-544": "S-1-5-32-544",
    }
    assert seen[-1] == names.mapping
    logged = caplog.text
    assert f"group '{recreated}' is now {new_sid} (was {old_sid})" in logged
    assert f"group '{renamed}' no longer resolves" in logged
    assert f"keeping its last known SID {kept_sid}" in logged


def test_refresh_keeps_everything_when_the_directory_is_unreachable(
    samba: SambaRealm,
    directory: Directory,
    group: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = GroupSids(directory, [group[0]], start=False)
    nowhere = other_directory(samba, ldap_url=f"ldap://127.0.0.1:{closed_port()}")
    names.directory = nowhere
    try:
        with caplog.at_level(logging.WARNING, logger="tornado_kerb.directory"):
            assert names.refresh() is False
        assert names.mapping == {group[0]: group[1]}
        assert "not refreshed, keeping their last SIDs" in caplog.text
        assert "Can't contact LDAP server" in caplog.text
    finally:
        nowhere.close()


def test_the_background_thread_refreshes_on_its_interval(
    samba: SambaRealm, directory: Directory
) -> None:
    name = f"dirbg{TAG}"
    first = samba.add_group(name)
    changed = threading.Event()
    latest: list[Mapping[str, str]] = []

    def on_change(mapping: Mapping[str, str]) -> None:
        latest.append(mapping)
        if mapping[name] != first:
            changed.set()

    names = GroupSids(directory, [name], refresh_interval=0.1, on_change=on_change)
    try:
        sam(samba, "ldbdel", group_dn(samba, name))
        second = samba.add_group(name)
        assert changed.wait(30), "no refresh saw the recreated group"
        assert latest[-1] == {name: second}
        assert names.mapping == {name: second}
    finally:
        names.close()
    assert not names._thread.is_alive()


def test_a_missing_sasl_gssapi_plugin_says_which_package(
    samba: SambaRealm, tmp_path: os.PathLike[str]
) -> None:
    # Cyrus SASL loads its plug-ins once per process, from SASL_PATH: an empty one, in a
    # process of its own, is a machine without the GSSAPI plug-in.
    script = (
        "import sys\n"
        "from tornado_kerb.directory import Directory\n"
        "from tornado_kerb.errors import ConfigurationError\n"
        "d = Directory(keytab=sys.argv[1], client_principal=sys.argv[2], realm=sys.argv[3],"
        " ldap_url=sys.argv[4])\n"
        "try:\n"
        "    d.resolve(['anything'])\n"
        "except ConfigurationError as err:\n"
        "    print(err)\n"
    )
    account = f"{samba.service_account}@{samba.realm}"
    result = subprocess.run(
        [sys.executable, "-c", script, samba.keytab, account, samba.realm, samba.ldap_url],
        env={**os.environ, "SASL_PATH": os.fspath(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "no mechanism available" in result.stdout
    assert "libsasl2-modules-gssapi-mit" in result.stdout
