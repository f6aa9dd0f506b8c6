"""One node of a scaled-out app, for tests/test_scaling.py: ``python -m tests.node KEYTAB``.

Reads the cookie secret on stdin, prints its port once it listens, serves until SIGTERM.
Its Kerberos environment (KRB5_CONFIG, KRB5RCACHEDIR) comes from the parent.
"""

from __future__ import annotations

import asyncio
import sys

import tornado.web

from bench.server import serve
from tornado_kerb import KerberosAuthMixin, authenticated


class Me(KerberosAuthMixin, tornado.web.RequestHandler):
    @authenticated
    def get(self) -> None:
        user = self.current_user
        self.write({"principal": user.principal, "from_session": user.from_session})


async def main(keytab: str, secret: str) -> None:
    kerberos = {
        "keytab": keytab,
        "hostname": "localhost",
        "realm": "KRBTEST.COM",
        "session": {"http": True},  # the test speaks plain HTTP to both nodes
    }
    app = tornado.web.Application([(r"/", Me)], kerberos=kerberos, cookie_secret=secret)
    await serve(app, xheaders=False)  # the benchmark's: prints the port, stops on SIGTERM


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.stdin.readline().strip()))
