"""A throwaway PostgreSQL server that accepts only Kerberos (GSSAPI) logins, for tests and demos.

Needs PostgreSQL's server programs (Debian ``postgresql-15``) and a ``k5test`` realm::

    pg = ThrowawayPostgres(realm, ["alice"])
    try:
        # with the realm's KRB5_CONFIG and a ticket for alice in KRB5CCNAME:
        with psycopg.connect(**pg.conninfo("alice")) as conn:
            ...
    finally:
        pg.stop()

The server listens on 127.0.0.1 only, refuses every TCP login that is not GSSAPI over a
GSS-encrypted connection, and runs from a temporary directory that :meth:`stop` removes.
Connect with the system libpq (psycopg's pure-Python implementation): ``psycopg[binary]``
bundles its own Kerberos libraries, which never see a per-thread credentials cache.
"""

from __future__ import annotations

import glob
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import k5test  # untyped: mypy sees Any

__all__ = ["ThrowawayPostgres", "find_pg_bin"]

# initdb and pg_ctl refuse to run as root: as root, the server runs as this account.
_SERVER_USER = "postgres"
_START_ATTEMPTS = 4
_LOG_TAIL = 4000


def find_pg_bin() -> str:
    """The directory holding PostgreSQL's ``initdb``, ``pg_ctl`` and ``psql``.

    Debian keeps the server programs out of ``PATH`` in ``/usr/lib/postgresql/<major>/bin``:
    the highest version installed there wins, then ``pg_config --bindir``. Raises
    :class:`RuntimeError` when neither has them.
    """

    def major(path: str) -> int:
        version = pathlib.Path(path).parent.name
        return int(version) if version.isdigit() else -1

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            pass
    for bindir in candidates:
        # Debian's libpq-dev ships pg_config without the server: check for initdb itself.
        if os.access(os.path.join(bindir, "initdb"), os.X_OK):
            return bindir
    raise RuntimeError(
        "PostgreSQL server programs (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin "
        "or pg_config --bindir; on Debian: apt-get install postgresql-15"
    )


def _free_port() -> int:
    # The port can be taken again before the server binds it: start() retries on that.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _quote_ident(name: str) -> str:
    # Role names like "user" are reserved words: always quote, never interpolate bare.
    if not name or "\0" in name:
        raise ValueError(f"bad role name {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _quote_conf(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class ThrowawayPostgres:
    """A PostgreSQL server in a temp dir, GSS-only on 127.0.0.1; always :meth:`stop` it.

    ``realm`` is a running ``k5test.K5Realm``: the service principal
    ``postgres/<service_host>`` is added to it (or reused if present) and its key goes
    into a keytab only the server reads. Each name in ``roles`` becomes a ``LOGIN`` role;
    a client logs in as the role named like its principal without the realm (alice@REALM
    is role ``alice``). As root, the server runs as the ``postgres`` account. Usable as
    a context manager, which stops it on exit.

    Raises :class:`RuntimeError` (with the tail of the server log when the server would
    not start); whatever was started by then is stopped and removed first.
    """

    #: Host name for libpq, which builds the service principal from it (postgres/localhost).
    host: str
    #: Address libpq connects to, so no name lookup decides where ``host`` goes.
    hostaddr: str
    port: int
    dbname: str
    #: The temporary directory: ``data/``, ``server.log``, ``krb5/`` (keytab, krb5.conf).
    directory: str
    data_dir: str

    def __init__(
        self, realm: k5test.K5Realm, roles: Sequence[str], *, service_host: str = "localhost"
    ) -> None:
        if isinstance(roles, str):
            raise TypeError("roles is a sequence of role names, not one string")
        # Built first, so a bad name fails before anything is started.
        roles_sql = "".join(f"CREATE ROLE {_quote_ident(role)} LOGIN;\n" for role in roles)
        self.host = service_host
        self.hostaddr = "127.0.0.1"
        self.port = 0
        self.dbname = "postgres"
        self._bin = find_pg_bin()
        self._as_root = os.geteuid() == 0
        self._stopped = False
        # A minimal environment: none of the caller's KRB5CCNAME, KRB5_KTNAME or PG*
        # settings reach the server; C, so the log text _start() looks for is English.
        self._env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
        # mkdtemp, not pytest's tmp_path: the server account must reach it, and tmp_path
        # sits under a 0700 directory of root's.
        self.directory = tempfile.mkdtemp(prefix="throwaway-pg-")
        self.data_dir = os.path.join(self.directory, "data")
        self._log = os.path.join(self.directory, "server.log")
        try:
            self._setup(realm, roles_sql)
        except BaseException:
            self.stop()
            raise

    def conninfo(self, user: str) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect()`` to log in as ``user`` with Kerberos.

        ``gssencmode="require"`` makes libpq fail rather than fall back to a plain
        connection, which this server refuses anyway.
        """
        return {
            "host": self.host,
            "hostaddr": self.hostaddr,
            "port": self.port,
            "dbname": self.dbname,
            "user": user,
            "gssencmode": "require",
        }

    def stop(self) -> None:
        """Stop the server at once and remove its directory; safe to call again."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
                # Immediate: nothing here is worth a checkpoint, and it takes milliseconds.
                self._run_as_server(
                    [self._pg("pg_ctl"), "stop", "-D", self.data_dir, "-m", "immediate", "-w"],
                    check=False,
                )
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _setup(self, realm: k5test.K5Realm, roles_sql: str) -> None:
        krb_dir = os.path.join(self.directory, "krb5")
        os.mkdir(krb_dir)
        keytab = os.path.join(krb_dir, "postgres.keytab")
        spn = f"postgres/{self.host}"
        # kadmin.local exits 0 even when a query fails, so k5test raises for neither an
        # existing principal (fine: a second server shares its key) nor a failed ktadd:
        # the keytab itself is the check.
        realm.addprinc(spn)
        realm.extract_keytab(spn, keytab)
        if not os.path.isfile(keytab) or os.path.getsize(keytab) == 0:
            raise RuntimeError(f"could not extract a keytab for {spn} from the realm")
        # The server account cannot read the realm's 0700 directory: it gets its own copy
        # of krb5.conf, and a replay cache directory it may write ("Permission denied
        # (…rcache2)" otherwise).
        krb5_conf = os.path.join(krb_dir, "krb5.conf")
        shutil.copyfile(realm.env["KRB5_CONFIG"], krb5_conf)
        self._env.update(KRB5_CONFIG=krb5_conf, KRB5RCACHEDIR=krb_dir)
        if self._as_root:
            try:
                account = pwd.getpwnam(_SERVER_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root needs a {_SERVER_USER!r} account to run PostgreSQL"
                ) from None
            for dirpath, _, filenames in os.walk(self.directory):
                for path in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
                    os.chown(path, account.pw_uid, account.pw_gid)

        self._run_as_server(
            [
                self._pg("initdb"),
                "-D",
                self.data_dir,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=reject",
                "--locale=C",
                "--encoding=UTF8",
                "--no-sync",  # a throwaway cluster needs no durability
            ]
        )
        # Nothing but these two lines: a login without GSS encryption, or by password,
        # matches no line and is refused.
        pathlib.Path(self.data_dir, "pg_hba.conf").write_text(
            "local all postgres trust\n"
            f"hostgssenc all all 127.0.0.1/32 gss include_realm=0 krb_realm={realm.realm}\n"
        )
        # Settings go into the config file rather than pg_ctl -o, which passes its string
        # through a shell; the last setting in the file wins.
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": self.directory,
            "krb_server_keyfile": keytab,
            "fsync": "off",
            "log_connections": "on",
        }
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = {_quote_conf(value)}\n")
        self._start()
        self._create_roles(roles_sql)

    def _start(self) -> None:
        for _ in range(_START_ATTEMPTS):
            self.port = _free_port()
            offset = os.path.getsize(self._log) if os.path.exists(self._log) else 0
            result = self._run_as_server(
                [
                    self._pg("pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    "30",
                    "-D",
                    self.data_dir,
                    "-l",
                    self._log,
                    "-o",
                    f"-p {self.port}",
                ],
                check=False,
            )
            if result.returncode == 0:
                return
            log = self._read_log(offset)
            if "Address already in use" not in log:
                raise RuntimeError(f"PostgreSQL did not start:\n{result.stdout}{log}")
        raise RuntimeError(f"PostgreSQL found no free port in {_START_ATTEMPTS} attempts")

    def _create_roles(self, script: str) -> None:
        if not script:
            return
        # The unix socket and the trust line for postgres: no Kerberos needed to set up.
        result = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            [
                self._pg("psql"),
                "-X",  # no ~/.psqlrc
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.directory,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                self.dbname,
            ],
            input=script,
            capture_output=True,
            text=True,
            env=self._env,
            cwd=self.directory,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"could not create roles: {result.stderr.strip()}")

    def _run_as_server(
        self, args: list[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        program = os.path.basename(args[0])
        if self._as_root:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            args = [runuser, "-u", _SERVER_USER, "--", *args]
        # cwd: the server account may not be allowed into the caller's directory.
        result = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self._env,
            cwd=self.directory,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{program} failed:\n{result.stdout}")
        return result

    def _read_log(self, offset: int = 0) -> str:
        try:
            with open(self._log, errors="replace") as log:
                log.seek(offset)
                return log.read()[-_LOG_TAIL:]
        except OSError:
            return ""

    def _pg(self, program: str) -> str:
        return os.path.join(self._bin, program)
