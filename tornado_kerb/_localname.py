"""Map a Kerberos principal to a local account name the way krb5.conf says.

A ctypes binding to libkrb5's ``krb5_aname_to_localname``: python-gssapi has no
``gss_localname`` and pykrb5 (0.10) does not expose the call, yet only libkrb5 applies
``auth_to_local``, ``auth_to_local_names`` and the DEFAULT rule exactly as the rest of the
system (sshd, kadmind, NFS) does. No Tornado import: the guard decides when to call it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from .errors import LocalNameError

__all__ = ["aname_to_localname"]

# krb5_error_code values from krb5.h (MIT 1.20); they are int32.
KRB5_LNAME_NOTRANS = -1765328208
KRB5_CONFIG_NOTENUFSPACE = -1765328247

# Far above any account name a system accepts (Linux allows 32 bytes), so a name that
# does not fit points at a broken rule rather than a real user.
_LNAME_SIZE = 1024

_c_context = ctypes.c_void_p
_c_principal = ctypes.c_void_p


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _load() -> ctypes.CDLL:
    # Loaded on first use, not at import: a server that never maps names must still
    # import this package on a machine whose libkrb5 is missing or is Heimdal's.
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        names = ["libkrb5.so.3"]
        found = ctypes.util.find_library("krb5")
        if found is not None:
            names.append(found)
        errors = []
        for name in names:
            try:
                lib = ctypes.CDLL(name)
                _declare(lib)
            except (OSError, AttributeError) as exc:
                errors.append(f"{name}: {exc}")
                continue
            _lib = lib
            return lib
        raise LocalNameError("cannot load libkrb5: " + ("; ".join(errors) or "not found"))


def _declare(lib: ctypes.CDLL) -> None:
    # Without argtypes ctypes would pass pointers as C int and truncate them on 64-bit.
    p_void = ctypes.POINTER(ctypes.c_void_p)
    lib.krb5_init_context.argtypes = [p_void]
    lib.krb5_init_context.restype = ctypes.c_int32
    lib.krb5_free_context.argtypes = [_c_context]
    lib.krb5_free_context.restype = None
    lib.krb5_parse_name.argtypes = [_c_context, ctypes.c_char_p, p_void]
    lib.krb5_parse_name.restype = ctypes.c_int32
    lib.krb5_free_principal.argtypes = [_c_context, _c_principal]
    lib.krb5_free_principal.restype = None
    lib.krb5_aname_to_localname.argtypes = [
        _c_context,
        _c_principal,
        ctypes.c_int,
        ctypes.c_char_p,
    ]
    lib.krb5_aname_to_localname.restype = ctypes.c_int32
    # c_void_p, not c_char_p: the pointer must survive to be handed back to
    # krb5_free_error_message.
    lib.krb5_get_error_message.argtypes = [_c_context, ctypes.c_int32]
    lib.krb5_get_error_message.restype = ctypes.c_void_p
    lib.krb5_free_error_message.argtypes = [_c_context, ctypes.c_void_p]
    lib.krb5_free_error_message.restype = None


def _message(lib: ctypes.CDLL, ctx: ctypes.c_void_p | None, code: int) -> str:
    # With a context the text carries krb5's detail (which rule, which file); without
    # one (init failed) MIT still returns the static com_err text.
    ptr = lib.krb5_get_error_message(ctx, code)
    if not ptr:
        return f"krb5 error {code}"
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        lib.krb5_free_error_message(ctx, ptr)


class _Context:
    """One thread's krb5_context, freed when the thread's local storage is dropped."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        # Keep the library on the instance: __del__ may run at interpreter shutdown,
        # after module globals are gone.
        self.lib = lib
        self.ctx = ctypes.c_void_p()
        code = int(lib.krb5_init_context(ctypes.byref(self.ctx)))
        if code:
            self.ctx = ctypes.c_void_p()
            raise LocalNameError(f"krb5_init_context: {_message(lib, None, code)}")

    def __del__(self) -> None:
        # Runs once per instance; touches no module globals (see __init__).
        if self.ctx:
            self.lib.krb5_free_context(self.ctx)


# A krb5_context must not be shared between threads, and creating one re-reads
# krb5.conf and reloads the localauth modules: keep one per thread (the IOLoop thread
# and each executor worker) for the thread's lifetime. MIT re-reads krb5.conf by
# itself when the file's mtime changes; a changed KRB5_CONFIG variable is only seen
# by threads that have not made a context yet.
_local = threading.local()


def _context() -> _Context:
    holder: _Context | None = getattr(_local, "holder", None)
    if holder is None:
        holder = _Context(_load())
        _local.holder = holder
    return holder


def aname_to_localname(principal: str) -> str | None:
    """The local account name krb5.conf maps ``principal`` to.

    The mapping is libkrb5's: the ``auth_to_local_names`` and ``auth_to_local`` rules
    in the *default* realm's ``[realms]`` section, or the DEFAULT rule (a one-component
    name, or ``name/<default realm>``, of the default realm) when that realm has no
    ``auth_to_local``. Two MIT quirks carry over: ``auth_to_local_names`` matches the
    name without its realm, so ``alice@ANY.REALM`` gets alice's entry; and a name
    without ``@REALM`` is taken to be in the default realm.

    Returns ``None`` when nothing maps the principal (``KRB5_LNAME_NOTRANS``), so the
    caller can refuse the user. Raises :class:`LocalNameError` for everything else:
    an empty or unparseable name, a rule krb5 cannot read, a mapping to an empty or
    overlong or non-UTF-8 name, an unreadable krb5.conf, no libkrb5. It is safe to
    call from any thread; each thread keeps its own krb5 context.

    >>> aname_to_localname("alice@EXAMPLE.COM")  # doctest: +SKIP
    'alice'
    """
    # ctypes would cut the string at a NUL, so "alice\0@EVIL" would be mapped as
    # "alice" of the default realm.
    if not principal or "\0" in principal:
        raise LocalNameError(f"not a principal name: {principal!r}")
    try:
        raw = principal.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalNameError(f"not a principal name: {principal!r}") from exc
    holder = _context()
    lib, ctx = holder.lib, holder.ctx
    princ = ctypes.c_void_p()
    code = int(lib.krb5_parse_name(ctx, raw, ctypes.byref(princ)))
    if code:
        raise LocalNameError(f"{principal!r}: {_message(lib, ctx, code)}")
    buf = ctypes.create_string_buffer(_LNAME_SIZE)
    try:
        code = int(lib.krb5_aname_to_localname(ctx, princ, _LNAME_SIZE, buf))
    finally:
        lib.krb5_free_principal(ctx, princ)
    if code == KRB5_LNAME_NOTRANS:
        return None
    if code == KRB5_CONFIG_NOTENUFSPACE:
        raise LocalNameError(f"{principal!r}: local name longer than {_LNAME_SIZE - 1} bytes")
    if code:
        raise LocalNameError(f"{principal!r}: {_message(lib, ctx, code)}")
    if not buf.value:
        # "@REALM" parses as one empty component, which DEFAULT maps to "".
        raise LocalNameError(f"{principal!r}: maps to an empty local name")
    try:
        return buf.value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LocalNameError(f"{principal!r}: local name is not UTF-8") from exc
