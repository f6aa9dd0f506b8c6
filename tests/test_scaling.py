"""Scaling out: two processes sharing a keytab and a cookie secret, with and without a
shared replay cache."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.clients import negotiate_header
from tests.conftest import ROOT, Realm

SECRET = "one-cookie-secret-shared-by-every-node-" + "s" * 24

Node = Callable[[str], str]  # rcache dir -> base URL


@pytest.fixture
def node(realm: Realm) -> Iterator[Node]:
    procs: list[subprocess.Popen[str]] = []

    def start(rcache_dir: str) -> str:
        env = {**os.environ, "KRB5RCACHEDIR": rcache_dir}
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.node", realm.keytab],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(SECRET + "\n")
        proc.stdin.close()
        port = proc.stdout.readline().strip()
        assert port.isdigit(), "node did not start"
        return f"http://127.0.0.1:{port}/"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_session_from_one_node_is_good_on_the_other(
    node: Node, tmp_path: os.PathLike[str]
) -> None:
    shared = str(tmp_path)
    one, two = node(shared), node(shared)
    login = requests.get(one, headers={"Authorization": negotiate_header()}, timeout=30)
    assert login.status_code == 200
    cookies = login.cookies
    elsewhere = requests.get(two, cookies=cookies, timeout=30)
    assert elsewhere.status_code == 200
    assert elsewhere.json()["from_session"] is True


def test_a_replayed_token_is_refused_across_nodes_sharing_the_replay_cache(
    node: Node, tmp_path: os.PathLike[str]
) -> None:
    shared = str(tmp_path)
    one, two = node(shared), node(shared)
    header = {"Authorization": negotiate_header()}
    assert requests.get(one, headers=header, timeout=30).status_code == 200
    assert requests.get(two, headers=header, timeout=30).status_code == 401


def test_without_a_shared_replay_cache_the_other_node_accepts_the_replay(
    node: Node, tmp_path: os.PathLike[str]
) -> None:
    # What the README says plainly: separate hosts keep separate replay caches, so a token
    # captured on its way to one node is good once more at each other node (within the
    # five-minute clock-skew window). TLS (and channel bindings) is what closes this.
    one_dir, two_dir = os.path.join(tmp_path, "one"), os.path.join(tmp_path, "two")
    os.mkdir(one_dir)
    os.mkdir(two_dir)
    one, two = node(one_dir), node(two_dir)
    header = {"Authorization": negotiate_header()}
    assert requests.get(one, headers=header, timeout=30).status_code == 200
    assert requests.get(two, headers=header, timeout=30).status_code == 200
    assert requests.get(two, headers=header, timeout=30).status_code == 401  # once per node
