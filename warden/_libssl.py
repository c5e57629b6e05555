"""The few OpenSSL calls Python's ``ssl`` module does not expose.

Python has no API for TLS 1.3 cipher suites, the key-exchange group list or
the signature algorithm list, yet FIPS mode must restrict all three. We call
OpenSSL's own ``SSL_CTX_set_ciphersuites`` / ``SSL_CTX_ctrl`` on the context's
``SSL_CTX *`` through ctypes, resolved from the very library the ``_ssl``
extension is linked against, so the setting lands in the context Python uses.

Strategy: a CPython ``SSLContext`` object starts with ``PyObject_HEAD`` and
then the ``SSL_CTX *`` (stable across CPython 3.x). Before writing anything we
check that pointer by reading ``SSL_CTX_get_options`` through it and comparing
with ``context.options``; callers then verify the effect (``get_ciphers()``),
so a mismatch is reported as "not effective" instead of being trusted.
"""

from __future__ import annotations

import ctypes
import ssl
from functools import lru_cache

__all__ = ["NativeTLSUnavailable", "client_version", "get_max_early_data", "set_ciphersuites", "set_groups", "set_max_early_data", "set_sigalgs"]

_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_CTRL_SET_SIGALGS_LIST = 98


class NativeTLSUnavailable(RuntimeError):
    """The OpenSSL functions cannot be reached safely from this interpreter."""


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    import _ssl

    path = getattr(_ssl, "__file__", None)  # None when _ssl is built into python
    try:
        lib = ctypes.CDLL(path)
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.SSL_CTX_set_ciphersuites.restype = ctypes.c_int
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        lib.SSL_client_version.argtypes = [ctypes.c_void_p]
        lib.SSL_client_version.restype = ctypes.c_int
        lib.SSL_get_SSL_CTX.argtypes = [ctypes.c_void_p]
        lib.SSL_get_SSL_CTX.restype = ctypes.c_void_p
        lib.SSL_CTX_set_max_early_data.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.SSL_CTX_set_max_early_data.restype = ctypes.c_int
        lib.SSL_CTX_get_max_early_data.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_max_early_data.restype = ctypes.c_uint32
    except (OSError, AttributeError) as exc:
        raise NativeTLSUnavailable(f"OpenSSL functions not found via {path or 'python'}: {exc}") from None
    return lib


def _ctx_pointer(context: ssl.SSLContext) -> int:
    import sys

    if sys.implementation.name != "cpython":
        raise NativeTLSUnavailable(f"needs CPython, this is {sys.implementation.name}")
    lib = _lib()
    ptr = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not ptr or lib.SSL_CTX_get_options(ptr) != int(context.options):
        raise NativeTLSUnavailable("cannot locate the SSL_CTX of this SSLContext")
    return ptr


def set_ciphersuites(context: ssl.SSLContext, suites: str) -> None:
    """Restrict the TLS 1.3 cipher suites of ``context`` (OpenSSL syntax)."""
    if _lib().SSL_CTX_set_ciphersuites(_ctx_pointer(context), suites.encode()) != 1:
        raise ssl.SSLError(f"OpenSSL refused TLS 1.3 suites {suites!r}")


def set_groups(context: ssl.SSLContext, groups: str) -> None:
    """Set the key-exchange groups (e.g. ``X25519:P-256:P-384``)."""
    if _lib().SSL_CTX_ctrl(_ctx_pointer(context), _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode()) != 1:
        raise ssl.SSLError(f"OpenSSL refused groups {groups!r}")


def set_sigalgs(context: ssl.SSLContext, sigalgs: str) -> None:
    """Set the signature algorithms offered and accepted in handshakes."""
    if _lib().SSL_CTX_ctrl(_ctx_pointer(context), _SSL_CTRL_SET_SIGALGS_LIST, 0, sigalgs.encode()) != 1:
        raise ssl.SSLError(f"OpenSSL refused signature algorithms {sigalgs!r}")


def set_max_early_data(context: ssl.SSLContext, size: int) -> None:
    """Bytes of TLS 1.3 0-RTT early data accepted; Warden always sets 0 (replayable)."""
    if _lib().SSL_CTX_set_max_early_data(_ctx_pointer(context), size) != 1:
        raise ssl.SSLError(f"OpenSSL refused max_early_data {size}")


def get_max_early_data(context: ssl.SSLContext) -> int:
    """The 0-RTT early data limit in force (0: never accepted)."""
    return int(_lib().SSL_CTX_get_max_early_data(_ctx_pointer(context)))


def client_version(sock: ssl.SSLSocket) -> int | None:
    """The version a client offered in its ClientHello (``0x0302`` TLS 1.1,
    ``0x0303`` TLS 1.2 and 1.3), also after a failed handshake; None if unknown.

    CPython's ``_ssl._SSLSocket`` holds ``PyObject *Socket`` then ``SSL *ssl``
    after ``PyObject_HEAD``; the pointer is trusted only if its ``SSL_CTX`` is
    the socket's context.
    """
    sslobj = getattr(sock, "_sslobj", None)
    if sslobj is None:
        return None
    try:
        lib = _lib()
        ctx = _ctx_pointer(sock.context)
        ptr = ctypes.c_void_p.from_address(id(sslobj) + object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)).value
        if not ptr or lib.SSL_get_SSL_CTX(ptr) != ctx:
            return None
        return int(lib.SSL_client_version(ptr))
    except NativeTLSUnavailable:
        return None
