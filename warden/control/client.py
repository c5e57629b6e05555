"""The caller's side of the control channel (admin API workers, the CLI).

Strategy: a call takes an idle connection (or opens one), sends one line,
reads one line and puts the connection back. Threads each take their own
connection, so a slow operation in one thread does not hold up another, and
a single-threaded caller reuses one connection for all its calls.

Before an idle connection is reused it is polled: a server that restarted or
closed it for idleness has left an end-of-file there, and the call quietly
opens a new one. A send that fails on a reused connection means the server
never saw the request, so the call is retried once on a fresh connection.
Once a request has been sent it is never sent again: if the answer does not
come, the caller gets :class:`ControlUnavailable` rather than a risk of the
operation running twice.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .protocol import (
    ControlError,
    ControlProtocolError,
    ControlUnavailable,
    MAX_RESPONSE,
    LineBuffer,
    Response,
    decode_response,
    encode_request,
)

__all__ = ["ControlClient"]

_READ_SIZE = 65536


class _NotDelivered(Exception):
    """The request could not be sent: the server closed the connection."""


class _Conn:
    """One connected socket and the bytes read from it so far."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = LineBuffer(MAX_RESPONSE)
        self.pid = os.getpid()

    def idle_and_open(self) -> bool:
        """True if nothing (not even EOF) is waiting: safe to send on."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLPRI)
        return not poller.poll(0) and self.buf.pending == 0

    def close(self) -> None:
        self.sock.close()


class ControlClient:
    """Calls operations of the PBX over its control socket at ``path``.

    ``timeout`` bounds each call, connecting included. Thread-safe. At most
    ``max_idle`` idle connections are kept for reuse.
    """

    def __init__(self, path: str | Path, timeout: float = 5.0, *, max_idle: int = 4) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[_Conn] = []
        self._ids = itertools.count(1)
        self._pid = os.getpid()

    def call(self, op: str, /, **args: Any) -> Any:
        """Run ``op`` with ``args`` in the PBX and return its result.

        Raises :class:`ControlError` with the PBX's status and message, or
        :class:`ControlUnavailable` when the PBX cannot be reached or does not
        answer within ``timeout``.
        """
        with self._lock:
            request_id = next(self._ids)
        line = encode_request(request_id, op, args)
        deadline = time.monotonic() + self.timeout
        conn, reused = self._checkout(deadline)
        try:
            try:
                self._send(conn, line, deadline, op)
            except _NotDelivered:
                conn.close()
                if not reused:
                    raise ControlUnavailable(f"PBX closed the control connection at {self.path}") from None
                conn = self._connect(deadline)
                try:
                    self._send(conn, line, deadline, op)
                except _NotDelivered:
                    raise ControlUnavailable(f"PBX closed the control connection at {self.path}") from None
            response = self._receive(conn, deadline, op)
        except BaseException:
            conn.close()
            raise
        if response.id != request_id:
            conn.close()
            if response.id is None and not response.ok:
                response.unwrap()
            raise ControlError(f"bad reply from PBX: response id {response.id} for request {request_id}", 502)
        self._checkin(conn)
        return response.unwrap()

    def close(self) -> None:
        """Close idle connections; the client stays usable."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections ----------------------------------------------------------

    def _checkout(self, deadline: float) -> tuple[_Conn, bool]:
        stale: list[_Conn] = []
        found: _Conn | None = None
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent owns those sockets
                stale, self._idle, self._pid = self._idle, [], os.getpid()
            while self._idle:
                conn = self._idle.pop()
                if conn.idle_and_open():
                    found = conn
                    break
                stale.append(conn)
        for conn in stale:
            conn.close()
        if found is not None:
            return found, True
        return self._connect(deadline), False

    def _checkin(self, conn: _Conn) -> None:
        with self._lock:
            if conn.pid == os.getpid() and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self, deadline: float) -> _Conn:
        path = self.path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.connect(str(path))
        except FileNotFoundError:
            sock.close()
            raise ControlUnavailable(f"PBX not running (no control socket at {path})") from None
        except ConnectionRefusedError:
            sock.close()
            raise ControlUnavailable(f"PBX not running (control socket at {path} refuses connections)") from None
        except PermissionError:
            sock.close()
            raise ControlUnavailable(f"permission denied on the control socket at {path}", 403) from None
        except TimeoutError:
            sock.close()
            raise ControlUnavailable(
                f"PBX did not accept a connection within {self.timeout:g} s (control socket at {path})", 504
            ) from None
        except OSError as exc:
            sock.close()
            raise ControlUnavailable(f"cannot connect to the control socket at {path}: {exc.strerror}") from None
        return _Conn(sock)

    # -- one exchange ---------------------------------------------------------

    def _send(self, conn: _Conn, line: bytes, deadline: float, op: str) -> None:
        try:
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            conn.sock.sendall(line)
        except TimeoutError:
            raise self._timed_out(op) from None
        except (BrokenPipeError, ConnectionResetError):
            # The server may have said why before closing (e.g. permission denied).
            said = self._salvage(conn)
            if said is not None:
                said.unwrap()
            raise _NotDelivered from None
        except OSError as exc:
            raise ControlUnavailable(f"control connection at {self.path} failed: {exc.strerror}") from None

    def _receive(self, conn: _Conn, deadline: float, op: str) -> Response:
        while True:
            try:
                line = conn.buf.next_line()
            except ControlProtocolError as exc:
                raise ControlError(f"bad reply from PBX: {exc}", 502) from None
            if line is not None:
                if not line.strip():
                    continue
                try:
                    return decode_response(line)
                except ControlProtocolError as exc:
                    raise ControlError(f"bad reply from PBX: {exc}", 502) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out(op)
            try:
                conn.sock.settimeout(remaining)
                data = conn.sock.recv(_READ_SIZE)
            except TimeoutError:
                raise self._timed_out(op) from None
            except OSError as exc:
                raise ControlUnavailable(
                    f"PBX closed the control connection before answering {op!r} ({exc.strerror}; socket {self.path})"
                ) from None
            if not data:
                raise ControlUnavailable(
                    f"PBX closed the control connection before answering {op!r} (socket {self.path})"
                )
            conn.buf.feed(data)

    def _salvage(self, conn: _Conn) -> Response | None:
        """An error line the server sent before closing, if one is waiting."""
        try:
            conn.sock.setblocking(False)
            while True:
                data = conn.sock.recv(_READ_SIZE)
                if not data:
                    break
                conn.buf.feed(data)
        except OSError:
            pass
        try:
            line = conn.buf.next_line()
            response = decode_response(line) if line else None
        except ControlProtocolError:
            return None
        if response is None or response.ok:
            return None
        return response

    def _timed_out(self, op: str) -> ControlUnavailable:
        return ControlUnavailable(f"PBX did not answer {op!r} within {self.timeout:g} s (control socket {self.path})", 504)
