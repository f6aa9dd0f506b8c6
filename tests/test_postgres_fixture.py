"""ThrowawayPostgres: Kerberos logins from a k5test realm, nothing else, and a clean stop."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import Realm
from tornado_kerb.testing import postgres as pg_module
from tornado_kerb.testing.postgres import ThrowawayPostgres


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port someone else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def postmaster_pid(server: ThrowawayPostgres) -> int:
    with open(os.path.join(server.data_dir, "postmaster.pid")) as f:
        return int(f.readline())


def stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, ..."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def children(pid: int) -> set[int]:
    return {
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and (fields := stat(entry)) and int(fields[1]) == pid
    }


def alive(pid: int) -> bool:
    # The stopped postmaster is left a zombie until init reaps it: exited, not running.
    fields = stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def processes_mentioning(path: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if path.encode() in f.read():
                        found.append(int(entry))
    return found


def test_gss_login_as_user(realm: Realm, postgres: ThrowawayPostgres) -> None:
    with psycopg.connect(**postgres.conninfo("user")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("user",)
        row = conn.execute(
            "SELECT gss_authenticated, encrypted, principal FROM pg_stat_gssapi"
            " WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert row == (True, True, realm.user)


def test_login_without_gss_encryption_is_refused(postgres: ThrowawayPostgres) -> None:
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(**{**postgres.conninfo("user"), "gssencmode": "disable"}).close()
    assert "no pg_hba.conf entry" in str(err.value)


def test_stop_ends_every_process_and_removes_the_directory(
    realm: Realm, taken_port: int, postgres: ThrowawayPostgres
) -> None:
    # A second server on the same realm reuses the postgres/localhost principal; the
    # first port it is offered is taken, so it must retry with another.
    ports = iter([taken_port])
    free_port = pg_module._free_port
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pg_module, "_free_port", lambda: next(ports, None) or free_port())
        server = ThrowawayPostgres(realm.k5, ['odd "name'])
    try:
        assert server.port != taken_port
        # The unix socket and its trust line for postgres: the set-up path, no Kerberos.
        with psycopg.connect(
            host=server.directory, port=server.port, user="postgres", dbname="postgres"
        ) as conn:
            row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'odd \"name'")
            assert row.fetchone() == (True,)
        pid = postmaster_pid(server)
        backends = children(pid)
        assert backends  # checkpointer, walwriter, ...: proof the scan sees them
    finally:
        server.stop()
    assert not alive(pid)
    assert not any(alive(child) for child in backends)
    assert processes_mentioning(server.data_dir) == []
    assert not os.path.exists(server.directory)
    server.stop()  # idempotent


def test_a_failed_start_leaves_no_directory(realm: Realm) -> None:
    k5 = realm.k5

    class NoKeytab:  # kadmin.local "succeeds" without writing one: the module must notice
        realm = k5.realm
        env = k5.env

        def addprinc(self, name: str) -> None:
            pass

        def extract_keytab(self, name: str, keytab: str) -> None:
            pass

    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(RuntimeError, match="could not extract a keytab"):
        ThrowawayPostgres(NoKeytab(), ["user"])
    leftover = set(os.listdir(tempfile.gettempdir())) - before
    assert [name for name in leftover if name.startswith("throwaway-pg-")] == []
