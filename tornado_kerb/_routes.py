"""What an application routes to, and what in those handler classes would fail open.

:meth:`KerberosGuard.check_application` asks :func:`application_problems`; every problem
found here is a handler that a mistake left open (or broken for every user), said in one
line that names the class and the fix.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator
from typing import Any

import tornado.routing
import tornado.web

__all__ = ["application_problems", "fingerprint", "handler_classes"]

log = logging.getLogger(__name__)

# Tornado's @authenticated leaves this code object on every method it wraps.
_TORNADO_AUTHENTICATED = tornado.web.authenticated(lambda self: None).__code__


def fingerprint(app: tornado.web.Application) -> int:
    """Changes when ``app.add_handlers()`` adds rules (each adds one host rule): the
    routes checked before are then checked again."""
    return len(app.default_router.rules)


def handler_classes(
    app: tornado.web.Application, opaque: list[object] | None = None
) -> list[type[tornado.web.RequestHandler]]:
    """Every handler class ``app``'s rules reach: nested routers, host rules and
    applications mounted as targets included, each once, in routing order. Routers that
    do not show their rules (a custom ``find_handler``) go to ``opaque``."""
    found: dict[type[tornado.web.RequestHandler], None] = {}
    seen: set[int] = set()

    def walk(target: Any) -> None:
        if id(target) in seen:
            return
        seen.add(id(target))
        if isinstance(target, type):
            if issubclass(target, tornado.web.RequestHandler):
                found.setdefault(target)
            return
        if isinstance(target, tornado.web.Application):
            walk(target.wildcard_router)
            walk(target.default_router)
            return
        rules = getattr(target, "rules", None)
        if rules is None and isinstance(target, tornado.routing.Router) and opaque is not None:
            opaque.append(target)
        for rule in rules or ():  # a RuleRouter
            walk(getattr(rule, "target", None))

    walk(app)
    return list(found)


def application_problems(app: tornado.web.Application) -> list[str]:
    """One line for each handler class of ``app`` that is open, or broken, by mistake."""
    login_url = "login_url" in app.settings
    opaque: list[object] = []
    classes = handler_classes(app, opaque)
    for router in opaque:
        log.warning(
            "tornado_kerb cannot see the handlers behind %r (a router with its own "
            "find_handler): check them yourself with check_application on what it routes to",
            router,
        )
    return [line for cls in classes for line in class_problems(cls, login_url)]


def class_problems(cls: type[tornado.web.RequestHandler], login_url: bool = False) -> list[str]:
    """What is wrong with ``cls``; ``login_url``: the application has a login page."""
    from .web import (
        MIXIN_ONLY,
        OUR_NAMES,
        KerberosAuthMixin,
    )  # web imports the guard, which imports us

    name = f"{cls.__module__}.{cls.__qualname__}"
    mixin = issubclass(cls, KerberosAuthMixin)
    problems = []
    if not mixin:
        used = sorted({attr for attr in _own_names(cls) if attr in MIXIN_ONLY})
        if used:
            problems.append(
                f"{name} sets {', '.join(used)}, which only KerberosAuthMixin reads, without "
                "inheriting it: the handler is open; add KerberosAuthMixin to its bases"
            )
        for attr in sorted(_own_names(cls)):
            if attr in OUR_NAMES or "kerb" not in attr.lower():
                continue
            close = difflib.get_close_matches(attr, OUR_NAMES, n=1, cutoff=0.85)
            if close:
                problems.append(
                    f"{name}.{attr}: not a tornado_kerb name; did you mean {close[0]!r}?"
                )
    streams = cls._stream_request_body
    prepared = getattr(cls.prepare, "_tornado_kerb_before_body", False)
    required = mixin and (cls.kerberos_required or cls.kerberos_optional)  # type: ignore[attr-defined]
    for verb in cls.SUPPORTED_METHODS:
        name_of = verb.lower()
        method = getattr(cls, name_of, None)
        guarded = getattr(method, "_tornado_kerb_guarded", False)
        if mixin and not login_url and getattr(method, "__code__", None) is _TORNADO_AUTHENTICATED:
            problems.append(
                f"{name}.{name_of} uses tornado.web.authenticated, which needs a login "
                "page (login_url) and fails every request without one: use "
                "tornado_kerb.authenticated"
            )
        if guarded and streams and not prepared:
            problems.append(
                f"{name} streams its request body (@stream_request_body) and guards "
                f"{name_of} with a decorator, but its prepare() does not log in first (it "
                "was defined by a subclass of a plain handler): the body would reach "
                "data_received() before the login; inherit KerberosAuthMixin, or await "
                "guard.authenticate(self) in prepare()"
            )
        implemented = callable(method) and method is not getattr(
            tornado.web.RequestHandler, name_of, None
        )
        if (
            required
            and implemented
            and not guarded
            and not getattr(method, "_tornado_kerb_public", False)
        ):
            problems.append(
                f"{name}.{name_of} is not guarded although the class sets kerberos_required "
                "or kerberos_optional (set after the class was made?): set it in the class "
                "body, or decorate the method"
            )
    return problems


def _own_names(cls: type) -> Iterator[str]:
    # Names the application's own classes define: Tornado's and ours are not mistakes.
    for klass in cls.__mro__:
        module = getattr(klass, "__module__", "") or ""
        if klass is object or module.startswith(("tornado.", "tornado_kerb.")):
            continue
        yield from vars(klass)
