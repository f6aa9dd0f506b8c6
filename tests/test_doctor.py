"""``python -m tornado_kerb doctor`` against the session's real realm, run as operators run it.

Principals of our own (``HTTP/*.doctor``) for every key these tests change: other modules
depend on ``HTTP/localhost`` as it is.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import get_args

import krb5
import pytest

from tests.conftest import ROOT, Realm
from tornado_kerb import doctor

LINE = re.compile(r"^(OK|WARN|FAIL|SKIP)\s+(\S+)\s+(.*)$")
# What a reader should never see: com_err codes (-1765328189, 2529639053) and GSS's
# "Major (…)"/"Minor (…)" prefixes. Ports (5 digits) and uids ("uid N") are fine.
RAW_NUMBER = re.compile(r"-\d{7,}|\(\d{7,}\)|\b(?:Major|Minor) \(")


def cli(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the doctor as operators do; every run, whatever it finds, says it in words."""
    result = subprocess.run(
        [sys.executable, "-m", "tornado_kerb", "doctor", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env if env is not None else dict(os.environ),
        timeout=60,
        check=False,
    )
    assert not RAW_NUMBER.search(result.stdout), result.stdout
    assert "…" not in result.stdout, result.stdout
    return result


def with_conf(path: pathlib.Path) -> dict[str, str]:
    """The environment with ``KRB5_CONFIG`` pointing at ``path`` (the realm's ticket cache
    stays: the end-to-end check runs, against whatever that krb5.conf says)."""
    return {**os.environ, "KRB5_CONFIG": str(path)}


def realm_conf(realm: Realm) -> str:
    return pathlib.Path(realm.k5.env["KRB5_CONFIG"]).read_text()


def complete(output: str) -> bool:
    """Every check is reported, in order (end-to-end once per SPN), whatever failed."""
    names = [m[2] for m in map(LINE.match, output.splitlines()) if m]
    return list(dict.fromkeys(names)) == list(get_args(doctor.CheckName))


def statuses(output: str) -> dict[str, str]:
    """``{check name: status}`` from the text report (the last of a name wins)."""
    found = {}
    for line in output.splitlines():
        match = LINE.match(line)
        if match:
            found[match[2]] = match[1]
    return found


def line_of(output: str, name: str) -> str:
    """The check's line and its advice line below it."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        match = LINE.match(line)
        if match and match[2] == name:
            advice = lines[i + 1] if i + 1 < len(lines) and not LINE.match(lines[i + 1]) else ""
            return f"{line}\n{advice}"
    raise AssertionError(f"no {name} check in:\n{output}")


def own_keytab(realm: Realm, principal: str, path: pathlib.Path) -> str:
    realm.k5.addprinc(principal)
    realm.k5.extract_keytab(principal, str(path))
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def good_keytab(realm: Realm, tmp_path: pathlib.Path) -> str:
    """A private copy of the shared HTTP/localhost keytab: tests may change its mode."""
    path = tmp_path / "http.keytab"
    shutil.copyfile(realm.keytab, path)
    path.chmod(0o600)
    return str(path)


def test_good_keytab_passes_everything(good_keytab: str) -> None:
    result = cli("--keytab", good_keytab, "--url", "http://localhost:8888/")
    assert result.returncode == 0, result.stdout + result.stderr
    found = statuses(result.stdout)
    assert set(found.values()) == {"OK"}, result.stdout
    assert list(found) == list(get_args(doctor.CheckName))  # every check, in order
    assert "HTTP/localhost@KRBTEST.COM kvno 1" in result.stdout
    assert result.stdout.rstrip().endswith("0 FAIL, 0 WARN, 12 OK, 0 SKIP")


def test_without_a_url_the_url_check_is_skipped_not_dropped(good_keytab: str) -> None:
    result = cli("--keytab", good_keytab, "--hostname", "localhost")
    assert result.returncode == 0, result.stdout  # a SKIP is no failure
    assert complete(result.stdout), result.stdout
    url = line_of(result.stdout, "url")
    assert url.startswith("SKIP") and "no --url given" in url and "-> pass --url" in url
    assert statuses(result.stdout)["end-to-end"] == "OK"
    assert result.stdout.rstrip().endswith("0 FAIL, 0 WARN, 11 OK, 1 SKIP")


def test_keytab_for_another_host_fails(realm: Realm, tmp_path: pathlib.Path) -> None:
    keytab = own_keytab(realm, "HTTP/elsewhere.doctor", tmp_path / "elsewhere.keytab")
    result = cli("--keytab", keytab, "--hostname", "localhost")
    assert result.returncode == 1
    assert complete(result.stdout), result.stdout
    spn = line_of(result.stdout, "spn")
    assert spn.startswith("FAIL")
    # The realm is named, in the finding and in what to extract.
    assert "holds no key for HTTP/localhost@KRBTEST.COM" in spn
    assert "it holds HTTP/elsewhere.doctor@KRBTEST.COM" in spn
    assert "-> extract HTTP/localhost@KRBTEST.COM into this keytab" in spn
    # Nothing to accept a ticket with: the end-to-end check says so instead of vanishing.
    end_to_end = line_of(result.stdout, "end-to-end")
    assert end_to_end.startswith("SKIP") and "no HTTP/localhost key in the keytab" in end_to_end
    assert line_of(result.stdout, "clock").startswith("SKIP")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_keytab_others_can_read_or_write_fails(good_keytab: str, mode: int) -> None:
    # Whoever reads the service key can make tickets naming any user; whoever writes it
    # can put in a key of their own: either is a way in as anyone, not a warning.
    os.chmod(good_keytab, mode)
    result = cli("--keytab", good_keytab, "--hostname", "localhost")
    assert result.returncode == 1, result.stdout
    permissions = line_of(result.stdout, "permissions")
    assert permissions.startswith("FAIL") and f"mode {mode:04o}" in permissions
    assert "as any user" in permissions
    assert f"-> chmod 600 {good_keytab}" in permissions
    assert statuses(result.stdout)["end-to-end"] == "OK"  # the key works: it is just exposed


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_keytab_only_the_owner_can_use_passes(good_keytab: str, mode: int) -> None:
    os.chmod(good_keytab, mode)
    [permissions] = [
        c for c in doctor.run(good_keytab, hostname="localhost") if c.name == "permissions"
    ]
    assert permissions.status == "OK" and "only the owner" in permissions.detail


def test_stale_kvno_fails_the_end_to_end_check(realm: Realm, tmp_path: pathlib.Path) -> None:
    keytab = own_keytab(realm, "HTTP/stale.doctor", tmp_path / "stale.keytab")
    fresh = {c.name: c.status for c in doctor.run(keytab, hostname="stale.doctor")}
    assert fresh["end-to-end"] == "OK"
    realm.k5.run_kadminl("cpw -randkey HTTP/stale.doctor")  # the KDC moves on to kvno 2
    result = cli("--keytab", keytab, "--hostname", "stale.doctor")
    assert result.returncode == 1
    found = statuses(result.stdout)
    assert found["spn"] == "OK"  # the keytab still looks right: only the KDC can tell
    assert found["end-to-end"] == "FAIL"
    end_to_end = line_of(result.stdout, "end-to-end")
    assert "kvno 2 not found in keytab" in end_to_end and "(keytab: kvno 1)" in end_to_end
    assert "key for HTTP/stale.doctor@KRBTEST.COM has moved on: extract it again" in end_to_end


def test_without_a_ticket_the_end_to_end_check_says_how(
    realm: Realm, good_keytab: str, tmp_path: pathlib.Path
) -> None:
    # A cache with a principal and no tickets, as after kdestroy and a failed kinit.
    ccache = f"FILE:{tmp_path / 'empty.ccache'}"
    ctx = krb5.init_context()
    client = krb5.parse_name_flags(ctx, realm.user.encode())
    krb5.cc_initialize(ctx, krb5.cc_resolve(ctx, ccache.encode()), client)
    result = cli("--keytab", good_keytab, env={**os.environ, "KRB5CCNAME": ccache})
    assert result.returncode == 0, result.stdout
    assert complete(result.stdout), result.stdout
    end_to_end = line_of(result.stdout, "end-to-end")
    assert end_to_end.startswith("SKIP") and "no valid ticket-granting ticket" in end_to_end
    assert "run kinit as any user of KRBTEST.COM, then doctor again" in end_to_end
    clock = line_of(result.stdout, "clock")
    assert clock.startswith("SKIP") and "end-to-end" in clock


def test_a_missing_ticket_cache_is_said_in_words(good_keytab: str, tmp_path: pathlib.Path) -> None:
    # pykrb5 reports this as "No credentials cache found (filename: …) -1765328189".
    ccache = tmp_path / "no-such.ccache"
    result = cli("--keytab", good_keytab, env={**os.environ, "KRB5CCNAME": f"FILE:{ccache}"})
    end_to_end = line_of(result.stdout, "end-to-end")
    assert end_to_end.startswith("SKIP")
    assert f"No credentials cache found (filename: {ccache})" in end_to_end
    assert "1765328" not in result.stdout


def test_json_carries_the_same_statuses(good_keytab: str) -> None:
    os.chmod(good_keytab, 0o640)
    result = cli("--keytab", good_keytab, "--hostname", "localhost", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    got = [(c["name"], c["status"]) for c in report["checks"]]
    expected = [(c.name, c.status) for c in doctor.run(good_keytab, hostname="localhost")]
    assert got == expected
    assert [name for name, _ in got] == list(get_args(doctor.CheckName))
    assert ("permissions", "FAIL") in got and ("url", "SKIP") in got
    assert report["counts"] == {"FAIL": 1, "WARN": 0, "OK": len(got) - 2, "SKIP": 1}
    assert report["exit_code"] == 1
    assert all(set(c) == {"status", "name", "detail", "advice"} for c in report["checks"])
    [url] = [c for c in report["checks"] if c["name"] == "url"]
    assert "no --url given" in url["detail"] and "--url" in url["advice"]


def test_weak_enctypes_only_warn(realm: Realm, tmp_path: pathlib.Path) -> None:
    realm.k5.run_kadminl("addprinc -randkey -e arcfour-hmac:normal HTTP/weak.doctor")
    keytab = str(tmp_path / "weak.keytab")
    realm.k5.extract_keytab("HTTP/weak.doctor", keytab)
    checks = {c.name: c for c in doctor.run(keytab, hostname="weak.doctor")}
    assert checks["enctypes"].status == "WARN"
    assert "HTTP/weak.doctor@KRBTEST.COM has only weak keys (arcfour-hmac)" in (
        checks["enctypes"].detail
    )
    assert "aes256-cts-hmac-sha1-96" in checks["enctypes"].advice


def test_a_cname_browsers_follow_warns(good_keytab: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "canonical_name", lambda host: "web01.example.com")
    checks = {c.name: c for c in doctor.run(good_keytab, url="https://localhost/app")}
    url = checks["url"]
    assert url.status == "WARN"
    assert "ask for HTTP/web01.example.com" in url.detail
    assert "the keytab holds HTTP/localhost only" in url.detail
    assert "A record" in url.advice
    assert checks["end-to-end"].status == "OK"  # the key for the name typed still works


def test_missing_keytab_fails_and_skips_what_needs_it(tmp_path: pathlib.Path) -> None:
    result = cli("--keytab", tmp_path / "none.keytab", "--url", "http://localhost/")
    assert result.returncode == 1
    assert complete(result.stdout), result.stdout
    keytab = line_of(result.stdout, "keytab")
    assert keytab.startswith("FAIL") and "none.keytab does not exist" in keytab
    assert "--keytab" in keytab
    found = statuses(result.stdout)
    assert found["permissions"] == "SKIP" and "no file to check" in line_of(
        result.stdout, "permissions"
    )
    for name in ("principals", "spn", "enctypes"):
        assert found[name] == "SKIP" and "see keytab" in line_of(result.stdout, name)
    assert "not compared with the keytab" in line_of(result.stdout, "url")
    assert "needs a keytab" in line_of(result.stdout, "end-to-end")
    assert found["url"] == found["end-to-end"] == found["clock"] == "SKIP"
    assert found["kdc"] == "OK"  # what does not need the keytab still runs


def test_a_keytab_that_is_no_file_skips_the_mode() -> None:
    checks = {c.name: c for c in doctor.run("MEMORY:doctor-none")}
    assert checks["permissions"].status == "SKIP"
    assert "MEMORY:doctor-none is not a file" in checks["permissions"].detail


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A TCP port that refuses connections: bound (so nothing else takes it), not listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def test_kdc_that_refuses_connections_names_its_port(
    realm: Realm, good_keytab: str, tmp_path: pathlib.Path, closed_port: int
) -> None:
    conf = tmp_path / "krb5.conf"
    kdc_line = re.compile(r"(?m)^(\s*)kdc = \S+")
    conf.write_text(kdc_line.sub(rf"\1kdc = 127.0.0.1:{closed_port}", realm_conf(realm)))
    result = cli("--keytab", good_keytab, env=with_conf(conf))
    assert result.returncode == 1
    assert complete(result.stdout), result.stdout
    kdc = line_of(result.stdout, "kdc")
    assert kdc.startswith("FAIL") and f"127.0.0.1:{closed_port} (Connection refused)" in kdc
    assert f"TCP port {closed_port} through" in kdc and not re.search(r"port 88\b", kdc)
    assert f"[realms] section of {conf} (KRB5_CONFIG)" in kdc
    end_to_end = line_of(result.stdout, "end-to-end")
    assert end_to_end.startswith("FAIL") and "Cannot contact any KDC" in end_to_end
    assert f"[realms] section of {conf}" in end_to_end
    assert line_of(result.stdout, "clock").startswith("SKIP")


def test_one_kdc_down_names_its_port(closed_port: int, realm: Realm) -> None:
    up = f"127.0.0.1:{realm.proxy.port}"
    check = doctor._kdc_check("KRBTEST.COM", [up, f"127.0.0.1:{closed_port}"])
    assert check.status == "WARN" and f"connected to {up}" in check.detail
    assert f"TCP port {closed_port} through" in check.advice
    assert not re.search(r"port 88\b", check.advice)


def test_udp_only_kdcs_are_skipped() -> None:
    check = doctor._kdc_check("EXAMPLE.COM", ["udp/kdc.example.com"])
    assert check.status == "SKIP" and "probes TCP only" in check.detail


def test_a_realm_krb5_conf_does_not_know_points_at_its_realms_section(
    realm: Realm, good_keytab: str, tmp_path: pathlib.Path
) -> None:
    # The ticket cache holds a TGT for KRBTEST.COM, but krb5.conf has no [realms] entry
    # for it (and DNS is not asked): MIT says "Cannot find KDC for realm".
    conf = tmp_path / "krb5.conf"
    conf.write_text(
        "[libdefaults]\n default_realm = KRBTEST.COM\n dns_lookup_kdc = false\n"
        " dns_canonicalize_hostname = false\n rdns = false\n"
    )
    result = cli("--keytab", good_keytab, "--hostname", "localhost", env=with_conf(conf))
    assert result.returncode == 1
    assert complete(result.stdout), result.stdout
    kdc = line_of(result.stdout, "kdc")
    assert kdc.startswith("WARN") and "names no kdc for KRBTEST.COM" in kdc
    assert f"[realms] section of {conf} (KRB5_CONFIG)" in kdc
    end_to_end = line_of(result.stdout, "end-to-end")
    assert end_to_end.startswith("FAIL")
    assert 'Cannot find KDC for realm "KRBTEST.COM"' in end_to_end
    assert (
        f"-> tell libkrb5 where KRBTEST.COM's KDC is: add KRBTEST.COM = {{ kdc = HOST:PORT }} "
        f"to the [realms] section of {conf} (KRB5_CONFIG)"
    ) in end_to_end


def guard_starts(keytab: str, env: dict[str, str], realm: str | None) -> str:
    """What constructing the guard in that environment says: "started" or its error."""
    code = (
        "import sys\n"
        "from tornado_kerb import ConfigurationError, KerberosGuard\n"
        "try:\n"
        f"    KerberosGuard({{'keytab': {keytab!r}, 'realm': {realm!r}}}).close()\n"
        "except ConfigurationError as err:\n"
        "    print('ConfigurationError', err)\n"
        "else:\n"
        "    print('started')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_no_realm_anywhere_fails_as_the_guard_would(
    realm: Realm, good_keytab: str, tmp_path: pathlib.Path
) -> None:
    conf = tmp_path / "krb5.conf"
    conf.write_text(re.sub(r"(?m)^\s*default_realm\s*=.*\n", "", realm_conf(realm)))
    env = with_conf(conf)
    result = cli("--keytab", good_keytab, env=env)
    assert result.returncode == 1
    assert complete(result.stdout), result.stdout
    found = line_of(result.stdout, "realm")
    assert found.startswith("FAIL") and f"no default_realm in {conf} (KRB5_CONFIG)" in found
    assert "refuses to start" in found
    assert f"-> set default_realm = KRBTEST.COM in [libdefaults] of {conf}" in found
    assert "--realm KRBTEST.COM" in found
    # The rest still runs: the KDC is found through the keytab's realm.
    assert statuses(result.stdout)["kdc"] == "OK"
    assert guard_starts(good_keytab, env, None).startswith("ConfigurationError")

    # Given a realm, the doctor is content, and so is the guard.
    given = cli("--keytab", good_keytab, "--realm", "KRBTEST.COM", env=env)
    assert line_of(given.stdout, "realm").startswith("OK    realm        KRBTEST.COM (given")
    assert given.returncode == 0, given.stdout
    assert guard_starts(good_keytab, env, "KRBTEST.COM") == "started"


def test_no_realm_and_no_keytab_skips_the_kdc(realm: Realm, tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "krb5.conf"
    conf.write_text(re.sub(r"(?m)^\s*default_realm\s*=.*\n", "", realm_conf(realm)))
    result = cli("--keytab", tmp_path / "none.keytab", env=with_conf(conf))
    assert complete(result.stdout), result.stdout
    kdc = line_of(result.stdout, "kdc")
    assert kdc.startswith("SKIP") and "no realm to look up the KDC for" in kdc
    assert "default_realm = EXAMPLE.COM" in line_of(result.stdout, "realm")


def test_kdc_lines_are_read_with_includes(tmp_path: pathlib.Path) -> None:
    extra = tmp_path / "conf.d"
    extra.mkdir()
    (extra / "realms.conf").write_text(
        "[realms]\n EXAMPLE.COM = {\n  kdc = tcp/[2001:db8::1]:750\n }\n"
    )
    main = tmp_path / "krb5.conf"
    main.write_text(
        f"includedir {extra}\n"
        "[realms]\n"
        "  OTHER.ORG = {\n    kdc = other.org\n  }\n"
        "  EXAMPLE.COM = {\n"
        "    auth_to_local_names = {\n      kdc = not-a-kdc\n    }\n"
        "    kdc = kdc1.example.com:88\n"
        "    kdc = https://proxy.example.com/KdcProxy\n"
        "  }\n"
    )
    kdcs = doctor._profile_kdcs([str(main)], "EXAMPLE.COM")
    assert kdcs == [
        "tcp/[2001:db8::1]:750",
        "kdc1.example.com:88",
        "https://proxy.example.com/KdcProxy",
    ]
    assert [doctor._kdc_endpoint(k) for k in kdcs] == [
        ("tcp", "2001:db8::1", 750),
        ("any", "kdc1.example.com", 88),
        ("https", "proxy.example.com", 443),
    ]


def test_clock_thresholds() -> None:
    assert doctor._clock(0, False).status == "OK"
    assert doctor._clock(-120, False).status == "WARN"
    assert "behind" in doctor._clock(-120, False).detail
    assert doctor._clock(400, False).status == "FAIL"
    assert doctor._clock(None, True).status == "FAIL"
    assert doctor._clock(None, False).status == "SKIP"


def test_error_numbers_become_words() -> None:
    # Messages as python-gssapi and pykrb5 render them, seen in doctor runs.
    assert (
        doctor._plain(
            "Major (851968): Unspecified GSS failure.  Minor code may provide more information, "
            'Minor (2529639053): Cannot find KDC for realm "KRBTEST.COM"'
        )
        == 'Cannot find KDC for realm "KRBTEST.COM"'
    )
    assert doctor._plain(
        "Major (458752): No credentials were supplied, or the credentials were unavailable "
        "or inaccessible, Minor (2529639107): No credentials cache found"
    ) == (
        "No credentials were supplied, or the credentials were unavailable or inaccessible: "
        "No credentials cache found"
    )
    assert doctor._plain("Client not found in Kerberos database (-1765328378)") == (
        "Client not found in Kerberos database"
    )
    kept = "127.0.0.1:61234 (3 ms), owner web (uid 1234500001), mode 0600, kvno 12"
    assert doctor._plain(kept) == kept
    check = doctor.Check("FAIL", "keytab", "is not a usable keytab (Bad format -1765328204)")
    assert check.detail == "is not a usable keytab (Bad format)"
