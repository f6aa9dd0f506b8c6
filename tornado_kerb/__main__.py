"""Command line: ``python -m tornado_kerb doctor`` (also the ``tornado-kerb`` script).

Run it as the server's user, with the server's environment (``KRB5_CONFIG``,
``KRB5_KTNAME``), after ``kinit`` as any user of the realm for the end-to-end check::

    python -m tornado_kerb doctor --keytab /etc/http.keytab --url https://www.example.com/

Exit status 0 when no check failed, 1 when one did, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import doctor
from .errors import ConfigurationError
from .settings import KerberosSettings

__all__ = ["main"]

_DEFAULTS = KerberosSettings()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tornado-kerb", description="Kerberos single sign-on for Tornado: tools."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "doctor",
        help="check the keytab, krb5.conf, the KDC, DNS and the clock",
        description="Check what a Kerberos web server needs, and say how to fix what is "
        "wrong. Each check prints OK, WARN or FAIL, or SKIP with the reason it could not "
        "run; the exit status is 1 if one FAILs.",
    )
    check.add_argument(
        "--keytab",
        default=_DEFAULTS.keytab,
        metavar="PATH",
        help="the service keytab (default: krb5's default keytab, KRB5_KTNAME)",
    )
    check.add_argument(
        "--service",
        default=_DEFAULTS.service,
        help=f"service name of the principal (default: {_DEFAULTS.service})",
    )
    check.add_argument(
        "--hostname",
        action="append",
        help="host part of the principal (default: the --url host, else any); give it "
        "once per host name the service answers to (the 'hostnames' setting)",
    )
    check.add_argument(
        "--realm",
        default=_DEFAULTS.realm,
        help="the realm (default: krb5's default realm)",
    )
    check.add_argument(
        "--url", metavar="URL", help="the address users open, to check the SPN browsers ask for"
    )
    check.add_argument(
        "--gssproxy",
        nargs="?",
        const=True,
        default=False,
        metavar="SOCKET",
        help="accept through GSS-Proxy, as the 'gssproxy' setting does (run as the app's "
        "user, with its GSS_USE_PROXY=yes environment)",
    )
    check.add_argument("--json", action="store_true", help="print JSON for machines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        # The same validation as the application setting: a bad name fails here, not later.
        names = args.hostname or []
        settings = KerberosSettings(
            keytab=args.keytab,
            service=args.service,
            hostname=names[0] if names else None,
            hostnames=tuple(names[1:]),
            realm=args.realm,
            gssproxy=args.gssproxy,
        )
    except ConfigurationError as err:
        parser.error(str(err))
    checks = doctor.run(
        settings.keytab,
        settings.service,
        settings.hostname,
        settings.realm,
        args.url,
        hostnames=settings.hostnames,
        gssproxy=settings.gssproxy,
    )
    print(doctor.render_json(checks) if args.json else doctor.render_text(checks))
    return doctor.exit_code(checks)


if __name__ == "__main__":
    sys.exit(main())
