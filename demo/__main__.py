"""tornado_kerb demo: Kerberos single sign-on over HTTPS (and plain HTTP), nothing to set up.

Run it with ``make demo`` or ``python -m demo``. With no options it starts a throwaway MIT
realm (a KDC, ``HTTP/localhost``, the user ``alice`` with a ticket), makes development
certificates if ``certs/`` has none, serves HTTPS (Negotiate and Basic) and plain HTTP
(Negotiate only) on localhost, and prints what to paste into a terminal to log in with
curl or Firefox. Ctrl-C stops the server and the KDC and removes the realm. Where slapd
is installed the realm keeps its database in a private OpenLDAP and lets the demo act as
users towards its PostgreSQL without their browser delegating (constrained delegation).

With ``--keytab`` (and usually ``--hostname``, ``--realm``, ``--cert``, ``--key``) it
serves your real realm instead and starts no KDC. ``python -m demo --help`` lists all
options.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import ssl
import subprocess
import sys
from typing import Any

import tornado.httpserver
import tornado.netutil
from tornado.options import define, options, parse_command_line

from demo.app import make_app
from demo.database import Database
from demo.realm import BACKEND, PASSWORD, REALM, USER, DemoRealm
from tornado_kerb import KerberosGuard, KeytabError
from tornado_kerb.keytab import inspect_keytab

CERTS = pathlib.Path(__file__).resolve().parent.parent / "certs"

define("port", default=8443, help="HTTPS port (Negotiate and Basic); 0 picks a free one")
define("http_port", default=8080, help="plain HTTP port (Negotiate only); 0 picks a free one")
define("address", default="localhost", help="address to listen on")
define("keytab", default=None, help="serve a real realm with this service keytab")
define("hostname", default=None, help="with --keytab: service host name (default: localhost)")
define("realm", default=None, help="with --keytab: realm of Basic users (default: krb5's)")
define("cert", default=None, help="TLS certificate (default: certs/localhost.pem, made if missing)")
define("key", default=None, help="TLS private key (default: certs/localhost.key)")
define(
    "db_host", default=None, help="with --keytab: PostgreSQL host that /db logs in to as the user"
)
define("db_name", default="postgres", help="with --db_host: database name")
define(
    "s4u2proxy",
    default=False,
    type=bool,
    help="with --keytab: act as users who did not delegate (constrained delegation, "
    "if your KDC allows this service)",
)
define(
    "backend",
    default=None,
    help=f"service/host that /act gets a ticket for (default: {BACKEND}; "
    "with --keytab: host/HOSTNAME)",
)


def tls_files() -> tuple[str, str, str | None]:
    """Certificate, key and (for the printed recipe) the CA that signed them."""
    if options.cert or options.key:
        if not (options.cert and options.key):
            sys.exit("--cert and --key go together")
        return options.cert, options.key, None
    # Development certificates: the script does nothing if they exist already.
    script = CERTS / "make-dev-certs.sh"
    subprocess.run([str(script), str(CERTS)], check=True, stdout=sys.stderr)
    return str(CERTS / "localhost.pem"), str(CERTS / "localhost.key"), str(CERTS / "ca.pem")


def listen(server: tornado.httpserver.HTTPServer, port: int) -> int:
    try:
        sockets = tornado.netutil.bind_sockets(port, options.address)
    except OSError as err:
        sys.exit(
            f"cannot listen on {options.address}:{port} ({err.strerror}): pick another "
            "port with --port=N (HTTPS) or --http_port=N, or 0 for any free one"
        )
    server.add_sockets(sockets)
    return int(sockets[0].getsockname()[1])


def recipe(host: str, https: str, http: str, ca: str | None, realm: DemoRealm | None) -> str:
    """The block a newcomer pastes into another terminal."""
    cacert = f" --cacert {ca}" if ca else ""
    lines = [
        "",
        "tornado_kerb demo is running",
        f"  HTTPS (Negotiate + Basic): {https}/",
        f"  HTTP  (Negotiate only):    {http}/",
        "",
        "Paste into another terminal:",
        "",
    ]
    if realm:
        lines += [f"  export KRB5_CONFIG={realm.krb5_conf}", f"  export KRB5CCNAME={realm.ccache}"]
    user, password = (USER, PASSWORD) if realm else ("YOUR_USER", "YOUR_PASSWORD")
    lines += [
        f"  curl --negotiate -u :{cacert} {https}/api/whoami",
        f"  curl --negotiate -u : --delegation always{cacert} '{https}/act?format=json'",
        f"  curl -u {user}:{password}{cacert} {https}/api/whoami",
        f"  curl -i -u {user}:{password} {http}/api/whoami    # 401: no Basic on plain HTTP",
        f"  curl --negotiate -u : --delegation always{cacert} '{https}/db?format=json'"
        "    # PostgreSQL as you",
    ]
    if realm:
        lines.append(f"  kinit {USER}    # password {PASSWORD}, if the ticket runs out")
    lines += ["", "Firefox:"]
    if ca:
        lines.append(f"  trust {ca} (Settings > Certificates > View > Authorities > Import)")
    lines += [
        f"  in about:config set network.negotiate-auth.trusted-uris to {host}",
        f"  (and network.negotiate-auth.delegation-uris to {host}, for /act and /db);",
        "  quit any running Firefox and start it "
        + ("from the terminal with the exports above:" if realm else "where you have a ticket:"),
        f"  firefox {https}/whoami",
        "",
        "Chromium:",
    ]
    if ca:
        lines.append(
            "  mkdir -p ~/.pki/nssdb; certutil -d sql:$HOME/.pki/nssdb -A -t C,, "
            f"-n tornado_kerb-dev-ca -i {ca}"
        )
    lines += [
        f"  chromium --auth-server-allowlist={host} {https}/whoami",
        "  (quit any running Chromium first; a profile that never saw Negotiate fails the",
        "  first time: quit and start it again. For /act and /db, set the policy",
        f"  AuthNegotiateDelegateAllowlist to {host})",
        "",
        "Ctrl-C stops the server" + (" and removes the throwaway realm." if realm else "."),
        "",
    ]
    return "\n".join(lines)


async def serve(realm: DemoRealm | None) -> None:
    hostname = options.hostname or "localhost"
    kerberos: dict[str, Any] = {
        "keytab": realm.keytab if realm else options.keytab,
        "hostname": hostname,
        "realm": REALM if realm else options.realm,
        "s4u2proxy": realm.delegation if realm else options.s4u2proxy,
        # A browser without a ticket gets a sign-in page, not the browser's password box;
        # one with a ticket never sees it. Both end with a session cookie.
        "session": True,
        "login_form": True,
    }
    if realm and not realm.delegation:
        print(f"note: no constrained delegation ({realm.no_delegation})", file=sys.stderr)
    guard = KerberosGuard(kerberos)  # a typo fails here, not at the first request
    if kerberos["s4u2proxy"]:
        # The guard fetches its own TGT in the background; wait for it (off the IOLoop),
        # so that even the first login gets constrained credentials.
        if not await asyncio.to_thread(guard.delegation_ready, 10):
            print(
                f"warning: no constrained delegation: {guard.delegation_problem}", file=sys.stderr
            )
    report = inspect_keytab(kerberos["keytab"])
    try:
        guard.check()  # what the first request would do: fails here instead
        principal = report.check(guard.settings.service, hostname)
        kvnos = sorted({e.kvno for e in report.entries if e.principal == principal})
        print(f"keytab {report.name}: {principal} (kvno {kvnos})", file=sys.stderr)
    except KeytabError as err:
        print(f"warning: {err}; every login will fail until it is fixed", file=sys.stderr)
    # The database starts in the background: the site is up before initdb is done.
    if realm:
        database = Database(start=realm.k5)
    elif options.db_host:
        conninfo = {"host": options.db_host, "dbname": options.db_name, "gssencmode": "require"}
        database = Database(conninfo=conninfo)
    else:
        database = Database()
    try:
        await serve_app(guard, database, realm, hostname)
    finally:
        await database.stop()
        guard.close()


async def serve_app(
    guard: KerberosGuard, database: Database, realm: DemoRealm | None, hostname: str
) -> None:
    cert, key, ca = tls_files()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    backend = options.backend or (BACKEND if realm else f"host/{hostname}")
    app = make_app(guard, backend, database)
    https_server = tornado.httpserver.HTTPServer(app, ssl_options=context)
    http_server = tornado.httpserver.HTTPServer(app)
    https_port = listen(https_server, options.port)
    http_port = listen(http_server, options.http_port)
    # Signal handlers first: a Ctrl-C right after the recipe must stop things cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(
        recipe(
            hostname,
            f"https://{hostname}:{https_port}",
            f"http://{hostname}:{http_port}",
            ca,
            realm,
        ),
        flush=True,
    )
    await stop.wait()
    for server in (https_server, http_server):
        server.stop()
        await server.close_all_connections()


async def main() -> None:
    parse_command_line()
    if not options.keytab and (options.hostname or options.realm):
        sys.exit("--hostname and --realm describe a real realm: give them with --keytab")
    if (options.hostname or "localhost") != "localhost" and not options.cert:
        sys.exit("the development certificate is for localhost only: give --cert and --key")
    realm = None if options.keytab else DemoRealm()
    try:
        if realm:
            # Set once, before serving: the server process lives in the demo realm. The
            # library itself never touches the environment.
            os.environ["KRB5_CONFIG"] = realm.krb5_conf
            os.environ["KRB5RCACHEDIR"] = realm.rcache_dir
        await serve(realm)
    finally:
        if realm:
            realm.stop()
    print("stopped" + (": KDC stopped, realm removed" if realm else ""), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
