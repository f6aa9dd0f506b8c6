"""The doctor guide: ``tornado-kerb doctor``'s checks from code and from the command line.

Run with ``pytest docs/examples/test_doctor.py``: the ``kerberos_realm`` fixture (tornado_kerb's
pytest plugin) starts a throwaway MIT realm, puts its ``KRB5_CONFIG`` and the user's ticket
(``KRB5CCNAME``) into the environment, and gives an ``HTTP/localhost`` keytab, so every check
can run, the end-to-end one included.
"""

from __future__ import annotations

import json
import os
import shutil

from typing import get_args

from tornado_kerb import doctor
from tornado_kerb.__main__ import main

EVERY_CHECK = list(get_args(doctor.CheckName))  # keytab, permissions, … account


# --- from code
def check_deployment(keytab, hostname):
    """The doctor's checks at start-up: log them, and refuse to start on a FAIL."""
    checks = doctor.run(keytab=keytab, hostname=hostname)
    print(doctor.render_text(checks))
    if doctor.exit_code(checks) != 0:
        failed = [check.name for check in checks if check.status == "FAIL"]
        raise SystemExit(f"Kerberos is not set up: {', '.join(failed)} failed")
    return checks


# --- end from code


def test_a_sound_deployment_passes_every_check(kerberos_realm, capsys):
    checks = check_deployment(kerberos_realm.keytab, "localhost")
    assert [check.name for check in checks] == EVERY_CHECK
    statuses = {check.name: check.status for check in checks}
    # No --url: the one check that cannot run says so. Everything else is OK, including
    # the decisive one: a fresh ticket from the KDC, accepted with the keytab.
    assert statuses.pop("url") == "SKIP"
    assert set(statuses.values()) == {"OK"}, statuses
    assert "HTTP/localhost@KRBTEST.COM was accepted with the keytab" in capsys.readouterr().out


def test_the_command_line_with_a_url_and_json(kerberos_realm, capsys):
    status = main(
        [
            "doctor",
            "--keytab",
            kerberos_realm.keytab,
            "--hostname",
            "localhost",
            "--url",
            "http://localhost:8888/",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert status == 0 == report["exit_code"]
    assert report["counts"] == {"FAIL": 0, "WARN": 0, "OK": 12, "SKIP": 0}
    url = next(check for check in report["checks"] if check["name"] == "url")
    assert url["detail"] == "browsers will ask for HTTP/localhost: the keytab holds it"


def test_a_keytab_others_can_read_fails(kerberos_realm, tmp_path, capsys):
    keytab = tmp_path / "http.keytab"
    shutil.copy(kerberos_realm.keytab, keytab)
    os.chmod(keytab, 0o644)
    status = main(["doctor", "--keytab", str(keytab), "--hostname", "localhost"])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL  permissions  mode 0644" in out
    assert f"-> chmod 600 {keytab}" in out


def test_a_host_name_the_keytab_lacks_fails(kerberos_realm, capsys):
    status = main(["doctor", "--keytab", kerberos_realm.keytab, "--hostname", "www.example.com"])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL  spn          holds no key for HTTP/www.example.com@KRBTEST.COM" in out
    # Nothing to accept a ticket with: the end-to-end check says why it did not run.
    assert "SKIP  end-to-end   not run: no HTTP/www.example.com key in the keytab" in out
