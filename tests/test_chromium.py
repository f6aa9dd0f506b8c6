"""The demo with a real Chromium, headless: Negotiate over HTTPS, and delegation."""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Iterator

import pytest

from tests.chromium import chromium_missing, page_json, run_chromium
from tests.test_demo import LDAP, Demo


@pytest.fixture
def chromium() -> None:
    """Chromium is a core client: a machine without it fails, unless
    ``TORNADO_KERB_NO_BROWSER=1`` asks to skip the browser tests."""
    reason = chromium_missing()
    if reason is None:
        return
    if os.environ.get("TORNADO_KERB_NO_BROWSER") == "1":
        pytest.skip(reason)
    pytest.fail(
        f"{reason} (scripts/install-system-deps.sh installs it; "
        "TORNADO_KERB_NO_BROWSER=1 skips this test)"
    )


@pytest.fixture
def demo(chromium: None) -> Iterator[Demo]:
    running = Demo()
    try:
        yield running
    finally:
        running.stop()


def _ca(demo: Demo) -> str:
    return re.search(r"--cacert (\S+)", demo.commands[0]).group(1)  # type: ignore[union-attr]


def test_chromium_logs_in_via_negotiate(demo: Demo, tmp_path: pathlib.Path) -> None:
    dom = run_chromium(f"{demo.https}/api/whoami", tmp_path / "profile", _ca(demo), demo.exports)
    me = page_json(dom)
    assert me["principal"] == "alice@DEMO.TEST"
    assert me["mechanism"] == "negotiate"
    assert me["tls"] is True
    # The human page too, on the same (now warm) profile.
    page = run_chromium(f"{demo.https}/whoami", tmp_path / "profile", _ca(demo), demo.exports)
    assert "<h1>You are alice@DEMO.TEST</h1>" in page
    log = demo.stop()
    # The server's own record: challenged first, then served to alice via Negotiate.
    assert "401 GET /api/whoami" in log and "200 GET /api/whoami" in log
    assert "served /api/whoami to alice@DEMO.TEST via negotiate" in log
    assert "served /whoami to alice@DEMO.TEST via negotiate" in log
    assert "via basic" not in log


def test_chromium_delegates_with_the_allowlist(demo: Demo, tmp_path: pathlib.Path) -> None:
    ca = _ca(demo)
    me = page_json(run_chromium(f"{demo.https}/api/whoami", tmp_path / "profile", ca, demo.exports))
    assert me["principal"] == "alice@DEMO.TEST" and me["credentials"] == "forwarded"
    acted = page_json(
        run_chromium(f"{demo.https}/act?format=json", tmp_path / "profile", ca, demo.exports)
    )
    assert acted["ok"] is True and acted["as"] == "alice@DEMO.TEST"
    assert acted["backend"] == "backend/localhost"
    # Without localhost in the delegation allowlist (a browser nobody configured) nothing
    # is forwarded: the server acts by constrained delegation where the KDC allows it.
    plain = page_json(
        run_chromium(
            f"{demo.https}/api/whoami", tmp_path / "plain", ca, demo.exports, delegate=False
        )
    )
    assert plain["principal"] == "alice@DEMO.TEST" and plain["mechanism"] == "negotiate"
    assert plain["credentials"] == ("constrained" if LDAP else "none")
    log = demo.stop()
    assert "served /act to alice@DEMO.TEST via negotiate" in log
    assert "no ticket for" not in log
