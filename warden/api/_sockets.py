"""Sockets for gunicorn's workers: a deadline against slow clients (slowloris).

Strategy (slowloris): gunicorn's ``gthread`` and ``sync`` workers read a
request in a blocking thread; a client that sends a byte every few seconds
keeps that thread forever, and a few dozen such clients starve every worker.
So every accepted connection gets a *deadline*: it must finish its TLS
handshake and send a whole request (head and body) within
:data:`REQUEST_TIMEOUT` seconds of being accepted, or of our last response
on it. Each ``recv`` waits at most until the deadline; past it the read
returns end-of-file, which gunicorn treats as a client that went away
(quietly, on every version). The clock starts at ``accept()``, not when a
thread picks the connection up, so slow connections that waited in the
queue behind other slow ones are cut soon after their turn comes: a
connection first read after its deadline gets only :data:`PICKUP_GRACE`
more, enough for a client that has already sent its request (or answers its
handshake at once), too little to hold a thread. So N slow clients on T
threads cost about ``REQUEST_TIMEOUT + N / T * PICKUP_GRACE`` seconds of
delay to an honest request, not ``N / T * REQUEST_TIMEOUT``. A send waits at
most :data:`SEND_TIMEOUT`.

:func:`guard_listeners` (called from ``post_worker_init``) swaps each
worker's listening socket for a :class:`GuardedListener`, whose ``accept``
returns :class:`GuardedSocket` (plain HTTP); the TLS context's
``sslsocket_class`` is :class:`GuardedSSLSocket`, which takes the deadline
over when gunicorn wraps the connection. TLS handshake failures (an old
protocol version, a refused cipher, plain HTTP on the TLS port) are logged in
one line and the connection closed, the same way on every gunicorn.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from warden import _libssl
from warden.handshakes import DEPRECATED_VERSIONS, version_name

from ._handshakes import HANDSHAKES

__all__ = [
    "PICKUP_GRACE",
    "REQUEST_TIMEOUT",
    "SEND_TIMEOUT",
    "GuardedListener",
    "GuardedSSLSocket",
    "GuardedSocket",
    "guard_context",
    "guard_listeners",
]

log = logging.getLogger("warden.api.sockets")

#: Seconds a connection has, from accept or from our last response, to
#: complete its TLS handshake and send one whole request.
REQUEST_TIMEOUT = 5.0
#: Seconds a connection first read after its deadline still gets.
PICKUP_GRACE = 0.5
#: Seconds one send of a response may block on a client that does not read.
SEND_TIMEOUT = 10.0


# OpenSSL's reasons for an SSLv3/TLS 1.0/TLS 1.1 ClientHello (as warden.transport.telemetry maps them)
_OLD_PROTOCOL = frozenset({"UNSUPPORTED_PROTOCOL", "UNKNOWN_PROTOCOL", "VERSION_TOO_LOW", "TLSV1_ALERT_PROTOCOL_VERSION"})


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except (OSError, ValueError):
        return "a client"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class _Deadline:
    """The deadline logic shared by the plain and TLS sockets (a mixin)."""

    _warden_deadline: float = 0.0
    _warden_picked: float = 0.0
    _warden_dead: bool = False

    def _warden_arm(self, start: float | None = None) -> None:
        self._warden_deadline = (time.monotonic() if start is None else start) + REQUEST_TIMEOUT
        self._warden_picked = 0.0

    def _warden_expire(self, why: str) -> None:
        if not self._warden_dead:
            self._warden_dead = True
            log.info("closing connection from %s: %s", _peer(self), why)  # type: ignore[arg-type]

    def _warden_read(self, call: Callable[[], Any], eof: Any) -> Any:
        """Run a read with the deadline; ``eof`` is what end-of-file looks like."""
        if self._warden_dead:
            return eof
        now = time.monotonic()
        if not self._warden_picked:
            self._warden_picked = now
        remaining = max(self._warden_deadline, self._warden_picked + PICKUP_GRACE) - now
        if remaining <= 0:
            self._warden_expire(f"request not complete within {REQUEST_TIMEOUT:g} s")
            self._warden_handshake_failed(None)
            return eof
        current = self.gettimeout()  # type: ignore[attr-defined]
        limit = remaining if current is None else min(current, remaining)
        self.settimeout(limit)  # type: ignore[attr-defined]
        try:
            return call()
        except TimeoutError:
            if current is not None and current <= remaining:
                raise  # the caller's own, shorter timeout
            self._warden_expire(f"request not complete within {REQUEST_TIMEOUT:g} s")
            self._warden_handshake_failed(None)
            return eof
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise  # a non-blocking caller's business
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError) as exc:
            self._warden_dead = True
            self._warden_handshake_failed(exc)
            return eof
        except ssl.SSLError as exc:
            self._warden_handshake_failed(exc)
            if exc.reason in _OLD_PROTOCOL and _libssl.client_version(self) != 0x0303:  # type: ignore[arg-type]
                self._warden_dead = True
                log.warning("TLS handshake on api from %s failed: protocol too old (deprecated-protocol attempt, %s)",
                            _peer(self), exc.reason)  # type: ignore[arg-type]
            else:
                self._warden_expire(f"TLS error: {exc.reason or exc}")
            return eof
        finally:
            self._warden_settimeout(current)

    def _warden_handshake_failed(self, exc: BaseException | None) -> None:
        """Count a TLS handshake that failed (TLS sockets only; see GuardedSSLSocket)."""

    def _warden_settimeout(self, value: float | None) -> None:
        try:
            self.settimeout(value)  # type: ignore[attr-defined]
        except OSError:  # closed meanwhile
            pass

    def _warden_send(self, call: Callable[[], Any]) -> Any:
        current = self.gettimeout()  # type: ignore[attr-defined]
        self.settimeout(SEND_TIMEOUT if current is None else min(current, SEND_TIMEOUT))  # type: ignore[attr-defined]
        try:
            result = call()
        finally:
            self._warden_settimeout(current)
        self._warden_arm()
        return result


class GuardedSocket(_Deadline, socket.socket):
    """An accepted plain-HTTP connection with a request deadline."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._warden_read(lambda: socket.socket.recv(self, bufsize, flags), b"")  # type: ignore[no-any-return]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return self._warden_read(lambda: socket.socket.recv_into(self, buffer, nbytes, flags), 0)  # type: ignore[no-any-return]

    def send(self, data: Any, flags: int = 0) -> int:
        return self._warden_send(lambda: socket.socket.send(self, data, flags))  # type: ignore[no-any-return]

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._warden_send(lambda: socket.socket.sendall(self, data, flags))


class GuardedListener(socket.socket):
    """A listening socket whose ``accept`` starts each connection's deadline."""

    def accept(self) -> tuple[socket.socket, Any]:
        fd, addr = self._accept()  # type: ignore[attr-defined]
        sock = GuardedSocket(self.family, self.type, self.proto, fileno=fd)
        # As socket.accept: a listener with a timeout must not make the new socket non-blocking.
        if socket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        sock._warden_arm()
        return sock, addr


class GuardedSSLSocket(_Deadline, ssl.SSLSocket):
    """A TLS connection with the request deadline, handshake included.

    The deadline is carried over from the :class:`GuardedSocket` it wraps
    (so it counts from ``accept``), else it starts now.
    """

    @classmethod
    def _create(cls, sock: socket.socket, *args: Any, **kwargs: Any) -> "GuardedSSLSocket":  # type: ignore[override]
        deadline = getattr(sock, "_warden_deadline", 0.0)
        self: GuardedSSLSocket = super()._create(sock, *args, **kwargs)  # type: ignore[misc]
        if deadline:
            self._warden_deadline = deadline
        else:
            self._warden_arm()
        return self

    def do_handshake(self, block: bool = False) -> None:
        error: list[BaseException] = []

        def handshake() -> None:
            try:
                ssl.SSLSocket.do_handshake(self, block)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except (ssl.SSLError, OSError) as exc:
                error.append(exc)
                raise

        sentinel = object()
        if self._warden_read(handshake, sentinel) is sentinel:
            self._warden_handshake_failed(error[0] if error else None)
            # gunicorn closes quietly on ENOTCONN (a peer that went away).
            raise OSError(errno.ENOTCONN, "TLS handshake failed or timed out")
        self._warden_handshake_done()

    # Counted once per connection, whether gunicorn calls do_handshake (21+) or
    # the handshake happens inside the first recv (20.1's wrap_socket path).
    _warden_counted: bool = False

    def _warden_handshake_done(self) -> None:
        if not self._warden_counted and self.version():
            self._warden_counted = True
            cipher = self.cipher()
            HANDSHAKES.succeeded(self.version() or "?", cipher[0] if cipher else "?")

    def _warden_handshake_failed(self, exc: BaseException | None) -> None:
        if self._warden_counted:
            return
        if self.version():
            # done, then the read failed (20.1 shakes hands inside recv; a client may reset at once):
            # the handshake succeeded, the error is the connection's
            self._warden_handshake_done()
            return
        self._warden_counted = True
        HANDSHAKES.failed(self._warden_failure(exc))
        if isinstance(exc, ssl.SSLError) and exc.reason in _OLD_PROTOCOL:
            name = version_name(_libssl.client_version(self))
            if name != "TLSv1.2":
                HANDSHAKES.deprecated(name if name in DEPRECATED_VERSIONS else "unknown")

    def _warden_failure(self, exc: BaseException | None) -> str:
        """The code sent to the PBX for a failed handshake."""
        if exc is None:
            return "timeout" if self._warden_dead else "eof"
        if isinstance(exc, ssl.SSLError) and exc.reason and not isinstance(exc, ssl.SSLEOFError):
            if exc.reason in _OLD_PROTOCOL and _libssl.client_version(self) == 0x0303:
                return "TLS12_REFUSED"
            return str(exc.reason)
        return "eof"

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        data = self._warden_read(lambda: ssl.SSLSocket.recv(self, buflen, flags), b"")
        if not self._warden_counted:
            self._warden_handshake_done()  # 20.1 shakes hands inside the first recv
        return data  # type: ignore[no-any-return]

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        n = self._warden_read(lambda: ssl.SSLSocket.recv_into(self, buffer, nbytes, flags), 0)  # type: ignore[arg-type]
        if not self._warden_counted:
            self._warden_handshake_done()
        return n  # type: ignore[no-any-return]

    def send(self, data: Any, flags: int = 0) -> int:
        return self._warden_send(lambda: ssl.SSLSocket.send(self, data, flags))  # type: ignore[no-any-return]

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._warden_send(lambda: ssl.SSLSocket.sendall(self, data, flags))


def guard_context(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Make ``ctx`` wrap connections as :class:`GuardedSSLSocket`; return it."""
    if ctx.sslsocket_class is not GuardedSSLSocket:
        ctx.sslsocket_class = GuardedSSLSocket
    return ctx


def guard_listeners(listeners: list[Any]) -> None:
    """Swap each gunicorn listener's socket for a :class:`GuardedListener` (same fd)."""
    for listener in listeners:
        raw = getattr(listener, "sock", None)
        if not isinstance(raw, socket.socket) or isinstance(raw, GuardedListener):
            continue
        blocking = raw.getblocking()
        guarded = GuardedListener(raw.family, raw.type, raw.proto, fileno=raw.detach())
        guarded.setblocking(blocking)
        listener.sock = guarded
