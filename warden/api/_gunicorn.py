"""gunicorn-version glue: TLS from our context on gunicorn 20.1, problem objects for gunicorn's own errors.

Strategy (gunicorn 20.1): 21.0 added the ``ssl_context`` server hook; 20.1
(Debian 12) has none, and its workers call the module-level
``ssl.wrap_socket(sock, server_side=True, **cfg.ssl_options)`` (deprecated,
and it would build its own context from ``certfile``/``keyfile``).
:func:`install_gunicorn20_tls` replaces the ``ssl`` name inside
``gunicorn.workers.gthread`` and ``gunicorn.workers.sync`` with
:class:`_SSLModuleShim`, whose ``wrap_socket`` wraps with *our* context;
every other attribute is the real ``ssl`` module's. The result is the same
context, the same policy, the same socket class on 20.1 and 21+.

gunicorn answers some malformed requests itself, before the app sees them
(a request line over ``limit_request_line`` gives 414, a bad header 400), with
an HTML page. :func:`install_problem_errors` swaps ``gunicorn.util.write_error``
(same signature from 20.1 to 27) for one that writes an
``application/problem+json`` body, so no answer of the API is ever HTML.
"""

from __future__ import annotations

import importlib
import json
import socket
import ssl
import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["install_gunicorn20_tls", "install_problem_errors", "needs_gunicorn20_tls", "problem_bytes"]


class _SSLModuleShim(types.ModuleType):
    """``ssl`` as gunicorn 20.1's workers see it: ``wrap_socket`` uses our context."""

    def __init__(self, context: Callable[[], ssl.SSLContext]) -> None:
        super().__init__("ssl", "the ssl module, wrapping with Warden's TLS context")
        self._warden_context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)

    def wrap_socket(self, sock: socket.socket, server_side: bool = True, **_gunicorn_options: Any) -> ssl.SSLSocket:
        # certfile/keyfile/ciphers/ssl_version from gunicorn are ignored on purpose:
        # the policy is the TLSManager's, as with the ssl_context hook on 21+.
        return self._warden_context().wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False, suppress_ragged_eofs=True
        )


def needs_gunicorn20_tls() -> bool:
    """True on a gunicorn without the ``ssl_context`` hook (before 21.0)."""
    import gunicorn.config

    return not any(getattr(s, "name", None) == "ssl_context" for s in gunicorn.config.KNOWN_SETTINGS)


def install_gunicorn20_tls(context: Callable[[], ssl.SSLContext]) -> list[str]:
    """On gunicorn < 21, make its workers wrap with ``context()``; return the modules patched."""
    if not needs_gunicorn20_tls():
        return []
    patched = []
    shim = _SSLModuleShim(context)
    for name in ("gunicorn.workers.gthread", "gunicorn.workers.sync"):
        module = sys.modules.get(name) or importlib.import_module(name)
        if getattr(module, "ssl", None) is ssl:
            module.ssl = shim  # type: ignore[attr-defined]
            patched.append(name)
    return patched


def problem_bytes(status: int, reason: str, detail: str) -> bytes:
    """A whole ``Connection: close`` HTTP/1.1 response carrying a problem object."""
    body = json.dumps({"type": "about:blank", "title": reason, "status": status, "detail": detail},
                      ensure_ascii=True).encode("ascii")
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1", "replace") + body


def install_problem_errors() -> None:
    """Make gunicorn's own error answers problem objects instead of HTML pages."""
    import gunicorn.util

    if getattr(gunicorn.util.write_error, "_warden", False):
        return
    write_nonblock = gunicorn.util.write_nonblock

    def write_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
        write_nonblock(sock, problem_bytes(int(status_int), str(reason), str(mesg)))

    write_error._warden = True  # type: ignore[attr-defined]
    gunicorn.util.write_error = write_error
