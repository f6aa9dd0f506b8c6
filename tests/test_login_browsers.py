"""The sign-in form (issue 17) in real browsers: headless Chromium and Firefox ESR.

Both browsers are set up for Negotiate on ``localhost`` (as a domain computer's browser)
but hold no ticket: ``KRB5CCNAME`` names a cache that does not exist. A guarded page over
HTTPS must then show the site's own sign-in form (a 401 offering only ``Negotiate``, so
no password box pops up), the form must sign them in with a session cookie, refuse a wrong
password with one message, stop at ``login_limits`` without asking the KDC, and never
send them off-site, whatever ``next`` says. A browser *with* a ticket never sees the form.

How the browsers are driven, without any package beyond the standard library:

- Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
  messages separated by NUL bytes on file descriptors 3 and 4; no port to find);
- Firefox over Marionette (``--marionette``: length-prefixed JSON on a TCP port that
  Firefox picks and writes to ``MarionetteActivePort`` in its profile).

The driver types the user name and password into the fields and clicks "Sign in"; the
page itself has no JavaScript. A password box would not go unnoticed: offered Basic as
well, Firefox opens its prompt (Marionette then fails the next command with "unexpected
alert open: promptUserAndPass") and headless Chromium, which cannot ask, fails the load
with ``ERR_INVALID_AUTH_CREDENTIALS`` (both seen here with the form turned off).

One server and one ticketless browser of each kind serve the whole module; each test
starts with an empty cookie jar.

``TORNADO_KERB_SCREENSHOTS=docs`` makes ``test_screenshot_of_the_form`` write
``docs/login.png`` (the README's picture).
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import os
import pathlib
import secrets
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import tornado.escape
import tornado.web

from tests import chromium as chromium_setup
from tests import firefox as firefox_setup
from tests.chromium import _kill_group
from tests.conftest import TLS, Realm, ServeFn, Server, User, add_user
from tornado_kerb import KerberosAuthMixin, KerberosGuard, KerberosUser

SESSION_COOKIE = "tornado_kerb_session"
#: ``login_limits`` of the module's guard: three wrong passwords per user name.
PER_PRINCIPAL = 3
WRONG = "The user name or password was wrong"
TIMEOUT = 30.0
BASH = shutil.which("bash") or "/bin/bash"


# -- the guarded site ---------------------------------------------------------------------


class Page(KerberosAuthMixin, tornado.web.RequestHandler):
    """A guarded page that says who is signed in, and how."""

    kerberos_required = True

    def get(self) -> None:
        user: KerberosUser = self.current_user
        how = "session cookie" if user.from_session else user.mechanism
        who = tornado.escape.xhtml_escape(user.principal)
        self.write(
            "<!doctype html><html><head><title>Private</title></head><body>"
            f'<h1 id="who">{who}</h1><p id="how">{how}</p></body></html>'
        )


class Api(KerberosAuthMixin, tornado.web.RequestHandler):
    """A guarded API with the application's own CORS answer for pages on another origin."""

    kerberos_required = True

    def options(self) -> None:
        origin = self.request.headers.get("Origin", "")
        if origin == self.settings["cors_origin"]:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Methods", "POST")
            self.set_header("Access-Control-Allow-Headers", "Content-Type, X-Requested-With")
        self.set_status(204)

    def post(self) -> None:
        self.write({"principal": self.current_user.principal})


class CallerPage(tornado.web.RequestHandler):
    """A page on another origin whose script calls ``Api`` with a custom header: the
    browser sends a CORS preflight first."""

    def get(self) -> None:
        target = self.settings["api_url"]
        self.write(
            "<!doctype html><html><head><title>caller</title></head><body><script>"
            f"fetch({json.dumps(target)}, {{method: 'POST', body: '{{}}', headers: "
            "{'Content-Type': 'application/json', 'X-Requested-With': 'fetch'}})"
            ".then(r => document.title = 'status ' + r.status)"
            ".catch(e => document.title = 'failed');"
            "</script></body></html>"
        )


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request as the server answered it (cookie names only, never values)."""

    method: str
    uri: str
    status: int
    challenges: tuple[str, ...]
    set_cookies: tuple[str, ...]
    cookies: tuple[str, ...]
    location: str | None
    retry_after: str | None
    auth: str | None  # the scheme of an Authorization header: never the token
    principal: str | None
    from_session: bool | None


class Journal:
    """What the server answered (its ``log_function``), with a way to wait for it:
    Tornado logs a request just after the response went out, so the browser may have
    the page a moment before the entry is here."""

    def __init__(self) -> None:
        self.entries: list[Seen] = []
        self._changed = threading.Condition()

    def record(self, handler: tornado.web.RequestHandler) -> None:
        headers = handler.request.headers
        auth = headers.get("Authorization")
        user = handler.current_user if isinstance(handler.current_user, KerberosUser) else None
        new_cookies = getattr(handler, "_new_cookie", None) or {}
        seen = Seen(
            handler.request.method or "",
            handler.request.uri or "",
            handler.get_status(),
            tuple(handler._headers.get_list("WWW-Authenticate")),
            tuple(sorted(new_cookies)),
            tuple(sorted(handler.request.cookies)),
            handler._headers.get("Location"),
            handler._headers.get("Retry-After"),
            auth.split(None, 1)[0].lower() if auth else None,
            user.principal if user else None,
            user.from_session if user else None,
        )
        with self._changed:
            self.entries.append(seen)
            self._changed.notify_all()

    def mark(self) -> int:
        with self._changed:
            return len(self.entries)

    def wait(
        self, mark: int, done: Callable[[list[Seen]], bool], timeout: float = 15
    ) -> list[Seen]:
        with self._changed:
            if not self._changed.wait_for(lambda: done(self.entries[mark:]), timeout):
                raise AssertionError(f"the server never saw that; it saw {self.entries[mark:]}")
            return self.entries[mark:]

    def until(self, mark: int, method: str, path: str, status: int | None = None) -> list[Seen]:
        """The entries since ``mark``, once one for ``method path`` (answered ``status``) is in."""

        def done(seen: list[Seen]) -> bool:
            return any(
                s.method == method and s.uri == path and status in (None, s.status) for s in seen
            )

        return self.wait(mark, done)


@dataclasses.dataclass
class Site:
    server: Server
    guard: KerberosGuard
    journal: Journal
    ca: str

    @property
    def base(self) -> str:
        return self.server.url("")

    def url(self, path: str) -> str:
        return self.server.url(path)


@pytest.fixture(scope="module")
def site(realm: Realm, tls: TLS) -> Iterator[Site]:
    guard = KerberosGuard(
        {
            "keytab": realm.keytab,
            "hostname": "localhost",
            "realm": "KRBTEST.COM",
            "session": True,
            "login_form": True,
            "login_limits": {"per_principal": PER_PRINCIPAL},
        }
    )
    journal = Journal()
    app = tornado.web.Application(
        [(r"/", Page), (r"/private", Page), (r"/api", Api), *guard.login_routes("/login")],
        kerberos=guard,
        cookie_secret=secrets.token_hex(32),
        log_function=journal.record,
        cors_origin="",  # set by the preflight test, once the caller's port is known
    )
    server = Server(app, tls.server_context())
    try:
        yield Site(server, guard, journal, tls.ca)
    finally:
        server.stop()
        guard.close()


# -- the browsers -------------------------------------------------------------------------


class BrowserError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Shown:
    """What the browser shows: its address bar, and the page's text."""

    url: str
    text: str  # the page's text, whitespace collapsed


# The sign-in form as the browser parsed it (None when the page has none).
FORM_JS = """(() => {
  const form = document.forms[0];
  if (!form) return null;
  return {
    method: form.method, action: form.getAttribute("action"),
    fields: Array.from(form.elements).filter(e => e.name).map(e => ({
      name: e.name, type: e.type, autocomplete: e.getAttribute("autocomplete"),
      value: e.type === "password" ? "" : e.value,
      label: e.labels && e.labels.length ? e.labels[0].textContent.trim() : null,
    })),
  };
})()"""
SHOWN_JS = "({url: location.href, text: document.body ? document.body.innerText : ''})"


class Browser:
    """What the tests ask of a browser; Chromium and Firefox each implement it."""

    name: str
    proc: subprocess.Popen[bytes]

    def fresh(self) -> None:
        """An empty cookie jar, on a blank page."""
        raise NotImplementedError

    def goto(self, url: str) -> Shown:
        """Load ``url`` (as typed in the address bar) and return what is shown."""
        raise NotImplementedError

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        raise NotImplementedError

    def type_into(self, selector: str, text: str) -> None:
        """Type ``text`` into the (emptied) field ``selector``, as a user would."""
        raise NotImplementedError

    def click_and_wait(self, selector: str) -> Shown:
        """Click ``selector`` and return the page the browser ends on."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def shown(self) -> Shown:
        value = self.evaluate(SHOWN_JS)
        # Whitespace as one space: browsers lay out innerText's line breaks differently.
        return Shown(value["url"], " ".join(value["text"].split()))

    def form(self) -> dict[str, Any] | None:
        form: dict[str, Any] | None = self.evaluate(FORM_JS)
        return form

    def sign_in(self, username: str, password: str, *, next_url: str | None = None) -> Shown:
        """Fill in the form on the page and press "Sign in"; ``next_url`` replaces the
        hidden ``next`` field first (what a page elsewhere could make a user post)."""
        self.type_into("#username", username)
        self.type_into("#password", password)
        if next_url is not None:
            field = json.dumps(next_url)
            self.evaluate(f'document.querySelector("input[name=next]").value = {field}')
        return self.click_and_wait('button[type="submit"]')


class Chromium(Browser):
    """Headless Chromium driven over the DevTools protocol on a pipe."""

    name = "chromium"

    def __init__(
        self, profile: pathlib.Path, ca: str, env: Mapping[str, str], size: tuple[int, int]
    ) -> None:
        if chromium_setup.CHROMIUM is None:
            raise BrowserError("chromium is not installed")
        profile = chromium_setup.prepare_profile(profile, ca)
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()
        cmd = [
            chromium_setup.CHROMIUM,
            *chromium_setup.FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            f"--window-size={size[0]},{size[1]}",
            "about:blank",
        ]
        # Chromium reads commands from fd 3 and writes to fd 4 (bash: dash's
        # redirections stop at fd 9).
        shell = f'exec "$@" 3<&{to_child} 4>&{from_child} {to_child}<&- {from_child}>&-'
        self.log = profile / "chromium.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [BASH, "-c", shell, "bash", *cmd],
                pass_fds=(to_child, from_child),
                env=chromium_setup.chromium_env(profile, env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # own process group: renderers go with it
            )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._session: str | None = None
        self._size = size
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            attached = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
            self._session = attached["sessionId"]
            self.call("Page.enable")
        except BaseException:
            self.close()
            raise

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a command (to the page, once attached) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self._session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self._session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._w, data) :]
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result
            self._events.append(reply)

    def wait_for(self, event: str) -> dict[str, Any]:
        """The next ``event`` of the page (those seen while waiting for replies count)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            while self._events:
                message = self._events.popleft()
                if message.get("method") == event and message.get("sessionId") == self._session:
                    params: dict[str, Any] = message.get("params", {})
                    return params
            self._events.append(self._read(deadline, event))

    def _read(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._r], [], [], max(left, 0))
            if not ready:
                raise BrowserError(f"chromium: no {waiting_for} within {TIMEOUT}s{self._tail()}")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium went away{self._tail()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def _tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return ":\n" + "\n".join(line for line in lines if "dbus" not in line)[-3000:]

    def fresh(self) -> None:
        self.goto("about:blank")
        self.call("Network.clearBrowserCookies")

    def goto(self, url: str) -> Shown:
        self._events.clear()
        result = self.call("Page.navigate", {"url": url})
        if "errorText" in result:
            raise BrowserError(f"chromium could not load {url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired")
        return self.shown()

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def type_into(self, selector: str, text: str) -> None:
        found = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.focus(); e.select(); return true; })()"
        )
        if not found:
            raise BrowserError(f"no {selector} on the page")
        self.call("Input.insertText", {"text": text})

    def click_and_wait(self, selector: str) -> Shown:
        self._events.clear()
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        self.wait_for("Page.loadEventFired")
        return self.shown()

    def screenshot(self) -> bytes:
        width, height = self._size
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        return base64.b64decode(data)

    def close(self) -> None:
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        _kill_group(self.proc)


class Firefox(Browser):
    """Headless Firefox ESR driven over Marionette."""

    name = "firefox"
    _ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

    def __init__(self, profile: pathlib.Path, ca: str, env: Mapping[str, str]) -> None:
        profile = firefox_setup.prepare_profile(profile, ca, {"marionette.port": 0})
        port_file = profile / "MarionetteActivePort"
        port_file.unlink(missing_ok=True)
        self.log = profile / "firefox.log"
        cmd = [firefox_setup.FIREFOX, "--headless", "--no-remote", "--profile", str(profile)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                # System access: the chrome context, to empty the cookie jar.
                [*cmd, "--marionette", "--remote-allow-system-access"],
                env=firefox_setup.firefox_env(profile, env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: content processes go with it
            )
        self._next_id = 0
        self._buffer = b""
        try:
            self._sock = socket.create_connection(("127.0.0.1", self._port(port_file)), TIMEOUT)
            self._receive()  # the greeting: {"applicationType": "gecko", ...}
            self.call("WebDriver:NewSession", {"capabilities": {"pageLoadStrategy": "normal"}})
        except BaseException:
            self.close()
            raise

    def _port(self, port_file: pathlib.Path) -> int:
        # Firefox writes the file once Marionette listens: poll for that, or its exit.
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text.isdigit():
                return int(text)
            if self.proc.poll() is not None:
                raise BrowserError(f"firefox exited with {self.proc.returncode}{self._tail()}")
            time.sleep(0.05)
        raise BrowserError(f"firefox: Marionette never listened{self._tail()}")

    def _tail(self) -> str:
        return ":\n" + self.log.read_text(errors="replace")[-3000:]

    def call(self, command: str, params: dict[str, Any] | None = None) -> Any:
        self._next_id += 1
        data = json.dumps([0, self._next_id, command, params or {}]).encode()
        self._sock.sendall(str(len(data)).encode() + b":" + data)
        while True:
            reply = self._receive()
            if isinstance(reply, list) and reply[0] == 1 and reply[1] == self._next_id:
                _, _, error, result = reply
                if error:
                    raise BrowserError(f"{command}: {error.get('error')}: {error.get('message')}")
                return result

    def _receive(self) -> Any:
        while True:
            length, colon, rest = self._buffer.partition(b":")
            if colon and len(rest) >= int(length):
                size = int(length)
                message, self._buffer = rest[:size], rest[size:]
                return json.loads(message)
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                raise BrowserError(f"firefox closed Marionette{self._tail()}")
            self._buffer += chunk

    def fresh(self) -> None:
        self.goto("about:blank")
        self.call("Marionette:SetContext", {"value": "chrome"})
        try:
            self.call("WebDriver:ExecuteScript", {"script": "Services.cookies.removeAll();"})
        finally:
            self.call("Marionette:SetContext", {"value": "content"})

    def goto(self, url: str) -> Shown:
        self.call("WebDriver:Navigate", {"url": url})
        return self.shown()

    def evaluate(self, expression: str) -> Any:
        result = self.call("WebDriver:ExecuteScript", {"script": f"return ({expression});"})
        return result["value"]

    def _element(self, selector: str) -> str:
        found = self.call("WebDriver:FindElement", {"using": "css selector", "value": selector})
        element: str = found["value"][self._ELEMENT]
        return element

    def type_into(self, selector: str, text: str) -> None:
        element = self._element(selector)
        self.call("WebDriver:ElementClear", {"id": element})
        self.call("WebDriver:ElementSendKeys", {"id": element, "text": text})

    def click_and_wait(self, selector: str) -> Shown:
        # Marionette's click waits for the navigation it starts to finish loading.
        self.call("WebDriver:ElementClick", {"id": self._element(selector)})
        return self.shown()

    def close(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()
        _kill_group(self.proc)


def browsers_missing() -> str | None:
    reason = chromium_setup.chromium_missing()
    if reason is None and shutil.which(firefox_setup.FIREFOX) is None:
        reason = "firefox-esr is not installed"
    return reason


@pytest.fixture(scope="module")
def no_ticket(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The realm's krb5.conf, but a ticket cache that does not exist."""
    reason = browsers_missing()
    if reason is not None:
        if os.environ.get("TORNADO_KERB_NO_BROWSER") == "1":
            pytest.skip(reason)
        pytest.fail(
            f"{reason} (scripts/install-system-deps.sh installs them; "
            "TORNADO_KERB_NO_BROWSER=1 skips this test)"
        )
    cache = tmp_path_factory.mktemp("no-ticket") / "ccache"
    return {"KRB5_CONFIG": os.environ["KRB5_CONFIG"], "KRB5CCNAME": f"FILE:{cache}"}


def launch(name: str, profile: pathlib.Path, ca: str, env: Mapping[str, str]) -> Browser:
    if name == "chromium":
        return Chromium(profile, ca, env, (900, 700))
    return Firefox(profile, ca, env)


@pytest.fixture(scope="module", params=["chromium", "firefox"])
def browser(
    request: pytest.FixtureRequest,
    site: Site,
    no_ticket: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Browser]:
    """A ticketless browser for the module (one kind at a time)."""
    name: str = request.param
    running = launch(name, tmp_path_factory.mktemp(name) / "profile", site.ca, no_ticket)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def fresh(browser: Browser) -> Browser:
    browser.fresh()
    return browser


# -- helpers ------------------------------------------------------------------------------


def as_requests(realm: Realm, principal: str) -> int:
    """AS requests for ``principal`` in the KDC's log so far."""
    return sum(
        1
        for line in realm.kdc_log.splitlines()
        if "AS_REQ" in line and f" {principal} for " in line
    )


def fields(form: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {field["name"]: field for field in form["fields"]}


def assert_form(form: dict[str, Any] | None, next_url: str) -> dict[str, dict[str, Any]]:
    assert form is not None, "no sign-in form on the page"
    assert (form["method"], form["action"]) == ("post", "/login")
    named = fields(form)
    assert set(named) == {"_xsrf", "next", "username", "password"}
    assert named["_xsrf"]["type"] == "hidden" and named["_xsrf"]["value"]
    assert (named["next"]["type"], named["next"]["value"]) == ("hidden", next_url)
    assert named["username"]["type"] == "text"
    assert named["username"]["autocomplete"] == "username"
    assert named["username"]["label"] == "User name"
    assert named["password"]["type"] == "password"
    assert named["password"]["autocomplete"] == "current-password"
    assert named["password"]["label"] == "Password"
    return named


def requests_to(seen: list[Seen], method: str, uri: str) -> list[Seen]:
    return [s for s in seen if s.method == method and s.uri == uri]


# -- the tests ----------------------------------------------------------------------------


def test_a_browser_without_a_ticket_signs_in_with_the_form(
    site: Site, realm: Realm, fresh: Browser
) -> None:
    page = site.url("/private?x=1")
    mark = site.journal.mark()
    shown = fresh.goto(page)
    # The page itself, not an error page and not a prompt: the browser rendered the
    # 401's body, the form, whose "next" is where the user wanted to go.
    assert shown.url == page
    assert_form(fresh.form(), "/private?x=1")
    assert "Sign in to localhost with your Kerberos (domain) account." in shown.text
    first = site.journal.until(mark, "GET", "/private?x=1")
    # Only Negotiate is offered (a browser with a ticket still gets in without a click);
    # Basic would pop up the browser's password box. Chromium asks twice: its GSSAPI
    # attempt fails without a ticket, it drops Negotiate and asks again without it.
    gets = requests_to(first, "GET", "/private?x=1")
    assert {(s.status, s.challenges, s.auth) for s in gets} == {(401, ("Negotiate",), None)}
    assert "_xsrf" in gets[0].set_cookies  # the 401 set the XSRF cookie the form needs

    mark = site.journal.mark()
    shown = fresh.sign_in("user", realm.password)
    assert shown.url == page
    assert f"{realm.user} session cookie" in shown.text
    seen = site.journal.until(mark, "GET", "/private?x=1", 200)
    (post,) = requests_to(seen, "POST", "/login")
    assert (post.status, post.location) == (303, "/private?x=1")
    assert SESSION_COOKIE in post.set_cookies
    assert "_xsrf" in post.cookies
    (landed,) = requests_to(seen, "GET", "/private?x=1")
    assert (landed.status, landed.principal, landed.from_session) == (200, realm.user, True)
    assert SESSION_COOKIE in landed.cookies

    # Signed in for good: the next visit goes straight to the page, by the cookie.
    shown = fresh.goto(site.url("/"))
    assert shown.url == site.url("/")
    assert f"{realm.user} session cookie" in shown.text
    assert fresh.form() is None


def test_a_wrong_password_shows_the_form_again(site: Site, realm: Realm, fresh: Browser) -> None:
    fresh.goto(site.url("/private"))
    mark = site.journal.mark()
    shown = fresh.sign_in("user", "not " + realm.password)
    assert shown.url == site.url("/login")
    assert WRONG in shown.text
    named = assert_form(fresh.form(), "/private")
    assert named["username"]["value"] == "user"  # kept; the password is not
    assert fresh.evaluate('document.querySelector("#password").value') == ""
    (post,) = requests_to(site.journal.until(mark, "POST", "/login"), "POST", "/login")
    assert post.status == 200 and SESSION_COOKIE not in post.set_cookies
    # The form shown again works: the right password now lands on the page.
    shown = fresh.sign_in("user", realm.password)
    assert shown.url == site.url("/private")
    assert f"{realm.user} session cookie" in shown.text


@pytest.fixture(scope="module")
def limited_users(realm: Realm) -> dict[str, User]:
    """One user per browser, for the limit: its failures are its own."""
    return {name: add_user(realm, f"limited_{name}") for name in ("chromium", "firefox")}


def test_over_the_limit_the_answer_is_429_and_the_kdc_is_not_asked(
    site: Site, realm: Realm, fresh: Browser, limited_users: dict[str, User]
) -> None:
    user = limited_users[fresh.name]
    name = user.principal.split("@")[0]
    fresh.goto(site.url("/private"))
    for attempt in range(PER_PRINCIPAL):
        before = as_requests(realm, user.principal)
        shown = fresh.sign_in(name, f"wrong {attempt}")
        assert WRONG in shown.text, shown.text
        assert as_requests(realm, user.principal) > before  # each was put to the KDC
    exchanges, asked = realm.proxy.exchanges, as_requests(realm, user.principal)
    mark = site.journal.mark()
    # Even the right password: over the limit it is not checked at all.
    shown = fresh.sign_in(name, user.password)
    (post,) = requests_to(site.journal.until(mark, "POST", "/login"), "POST", "/login")
    assert realm.proxy.exchanges == exchanges
    assert as_requests(realm, user.principal) == asked
    assert post.status == 429 and post.retry_after is not None
    retry = int(post.retry_after)
    assert 0 < retry <= 900  # the window still to run, of the default 900 s
    assert SESSION_COOKIE not in post.set_cookies
    assert shown.url == site.url("/login")
    assert shown.text.startswith("429 ")
    assert "Too many failed logins" in shown.text
    # The page tells the user the wait the header tells the browser.
    assert f"Try again in {retry} seconds" in shown.text, (retry, shown.text)


EVIL_NEXT = [
    pytest.param("https://evil.example/", id="absolute"),
    pytest.param("//evil.example/", id="scheme-relative"),
    pytest.param("/\\evil.example/", id="backslash"),
    pytest.param("javascript:alert(1)", id="javascript"),
    # Browsers drop tabs and newlines from URLs: "/\t/evil" would be "//evil". In a query
    # the tab travels as /%09/evil.example; in the form's body as a raw tab.
    pytest.param("/\t/evil.example", id="tab"),
    pytest.param("/\n/evil.example", id="newline"),
]


@pytest.mark.parametrize("evil", EVIL_NEXT)
def test_next_never_leads_off_the_site(
    site: Site, realm: Realm, browser: Browser, evil: str
) -> None:
    # In the query of the sign-in page's address: the form's next is "/".
    login = site.url("/login?next=" + urllib.parse.quote(evil, safe="/:"))
    shown = browser.goto(login)
    assert shown.url == login
    assert_form(browser.form(), "/")
    # In the form's own field, as a page elsewhere could post it: the browser ends on "/".
    mark = site.journal.mark()
    shown = browser.sign_in("user", realm.password, next_url=evil)
    (post,) = requests_to(site.journal.until(mark, "POST", "/login"), "POST", "/login")
    assert (post.status, post.location) == (303, "/")
    assert shown.url == site.url("/")
    assert f"{realm.user} session cookie" in shown.text


def test_a_literal_percent_09_in_next_stays_on_the_site(
    site: Site, realm: Realm, browser: Browser
) -> None:
    """``/%09/evil.example`` posted as such (not decoded) may be kept as a path here:
    browsers keep a percent-encoded tab in a path, so the user stays on this site."""
    browser.goto(site.url("/login"))
    shown = browser.sign_in("user", realm.password, next_url="/%09/evil.example")
    assert shown.url.startswith(site.base + "/"), shown.url


@pytest.mark.parametrize("name", ["chromium", "firefox"])
def test_a_browser_with_a_ticket_never_sees_the_form(
    site: Site, realm: Realm, tmp_path: pathlib.Path, name: str
) -> None:
    env = {"KRB5_CONFIG": os.environ["KRB5_CONFIG"], "KRB5CCNAME": realm.k5.env["KRB5CCNAME"]}
    page = site.url("/private?ticket=" + name)
    path = "/private?ticket=" + name
    mark = site.journal.mark()
    with_ticket = launch(name, tmp_path / "profile", site.ca, env)
    try:
        shown = with_ticket.goto(page)
        assert shown.url == page
        assert f"{realm.user} negotiate" in shown.text
        assert with_ticket.form() is None
    finally:
        with_ticket.close()
    seen = requests_to(site.journal.until(mark, "GET", path, 200), "GET", path)
    # The 401 (form and all) is answered with a token at once; the page is what loads.
    assert [(s.status, s.auth, s.principal) for s in seen] == [
        (401, None, None),
        (200, "negotiate", realm.user),
    ]
    assert seen[0].challenges == ("Negotiate",)


def test_signing_out_clears_the_cookie(site: Site, realm: Realm, fresh: Browser) -> None:
    fresh.goto(site.url("/"))
    fresh.sign_in("user", realm.password)
    shown = fresh.goto(site.url("/login/logout"))
    assert "Sign out of this site?" in shown.text
    mark = site.journal.mark()
    shown = fresh.click_and_wait('button[type="submit"]')
    assert "You are signed out of this site." in shown.text
    assert "signs you straight back in" in shown.text
    (post,) = requests_to(
        site.journal.until(mark, "POST", "/login/logout"), "POST", "/login/logout"
    )
    assert post.status == 200 and SESSION_COOKIE in post.set_cookies  # cleared (expired)
    shown = fresh.goto(site.url("/"))
    assert_form(fresh.form(), "/")


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


@pytest.mark.parametrize("browser", ["chromium"], indirect=True)
def test_screenshot_of_the_form(site: Site, browser: Browser, tmp_path: pathlib.Path) -> None:
    assert isinstance(browser, Chromium)
    browser.fresh()
    shown = browser.goto(site.url("/private"))
    assert "Sign in" in shown.text
    png = browser.screenshot()
    assert _png_size(png) == (900, 700)
    assert len(png) > 10_000  # a drawn page, not a blank one
    (tmp_path / "login.png").write_bytes(png)
    shot = os.environ.get("TORNADO_KERB_SCREENSHOTS")  # docs/: the README's picture
    if shot:
        (pathlib.Path(shot) / "login.png").write_bytes(png)


def test_a_cors_preflight_reaches_the_handler_not_a_401(
    site: Site, fresh: Browser, serve: ServeFn
) -> None:
    caller = serve([(r"/", CallerPage)], None, api_url=site.url("/api"))  # plain HTTP
    site.server.app.settings["cors_origin"] = caller.url("").rstrip("/")  # another port
    mark = site.journal.mark()
    fresh.goto(caller.url("/"))
    seen = site.journal.until(mark, "POST", "/api")
    (preflight,) = requests_to(seen, "OPTIONS", "/api")
    # The browser's preflight, without credentials: the handler's CORS answer, no 401.
    assert preflight.status == 204 and not preflight.challenges and preflight.auth is None
    # The browser took that answer and sent the request itself, which needs a login.
    assert requests_to(seen, "POST", "/api")[0].status in (401, 403)
