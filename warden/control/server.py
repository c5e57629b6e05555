"""The PBX side of the control channel: a threaded UNIX stream server.

Strategy: one acceptor thread checks each peer's credentials (SO_PEERCRED)
and hands the connection to a thread of its own. Handlers may block (most
wait on the engine thread with a timeout), so a thread per connection keeps
one slow operation from holding up the others; requests on one connection
are answered in order. The number of connections is bounded and an idle
connection is closed, so a stuck or malicious local client costs at most one
thread for ``idle_timeout`` seconds.

Who may connect: root, the PBX's own uid and ``allowed_uids``. The socket's
mode (0660 by default) is the first gate, the credential check the second;
a refused peer gets one error line naming the reason and is closed.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WardenError
from .protocol import (
    ControlError,
    ControlProtocolError,
    LineBuffer,
    decode_request,
    encode_error,
    encode_result,
)

__all__ = ["ControlServer", "Handler"]

log = logging.getLogger("warden.control.server")

Handler = Callable[[dict[str, Any]], object]
"""An operation: takes the request's ``args``, returns a JSON-serializable result."""

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_READ_SIZE = 65536
_MAX_SUN_PATH = 107  # sizeof(sun_path) - 1 on Linux


class _ConnLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes records with the peer's pid and uid."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return f"[control pid={extra['pid']} uid={extra['uid']}] {msg}", kwargs


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    pid: int
    uid: int
    id: int
    thread: threading.Thread | None = None
    log: logging.LoggerAdapter = field(init=False)  # type: ignore[type-arg]

    def __post_init__(self) -> None:
        self.log = _ConnLog(log, {"pid": self.pid, "uid": self.uid})


class ControlServer:
    """Serves registered operations on a UNIX socket at ``path``.

    ``mode`` is applied to the socket file after bind. ``allowed_uids`` are
    admitted besides root and the server's own uid (e.g. the admin API's
    user). At most ``max_connections`` peers are served at once; a connection
    with no request for ``idle_timeout`` seconds is closed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        mode: int = 0o660,
        allowed_uids: set[int] | None = None,
        max_connections: int = 64,
        idle_timeout: float = 300.0,
    ) -> None:
        self.path = Path(path)
        self.mode = mode
        self.allowed_uids = frozenset(allowed_uids or ())
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._handlers: dict[str, Handler] = {"ping": self._ping}
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake: tuple[int, int] | None = None
        self._inode: tuple[int, int] | None = None

    # -- public API ----------------------------------------------------------

    def register(self, op: str, handler: Handler) -> None:
        """Serve ``op`` with ``handler(args)``; may be called before or after start."""
        if not isinstance(op, str) or not op:
            raise WardenError(f"control operation name must be a non-empty string, not {op!r}")
        if not callable(handler):
            raise WardenError(f"control operation {op!r}: handler {handler!r} is not callable")
        with self._lock:
            if op in self._handlers:
                raise WardenError(f"control operation {op!r} is already registered")
            self._handlers[op] = handler

    @property
    def running(self) -> bool:
        return self._acceptor is not None and self._acceptor.is_alive()

    def start(self) -> None:
        """Bind the socket and start serving; raises :class:`WardenError` if it cannot."""
        if self._listener is not None:
            raise WardenError(f"control server on {self.path} is already started")
        raw = os.fsencode(self.path)
        if len(raw) > _MAX_SUN_PATH:
            raise WardenError(f"control socket path {self.path} is too long ({len(raw)} bytes, at most {_MAX_SUN_PATH})")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WardenError(f"cannot create control socket directory {self.path.parent}: {exc.strerror}") from None
        self._remove_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                listener.bind(str(self.path))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise WardenError(f"another PBX is already running (control socket {self.path} is in use)") from None
                raise WardenError(f"cannot bind control socket {self.path}: {exc.strerror}") from None
            st = os.stat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            try:
                os.chmod(self.path, self.mode)
                listener.listen(16)
            except OSError as exc:
                self._unlink_own()
                raise WardenError(f"cannot set up control socket {self.path}: {exc.strerror}") from None
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._stopping = threading.Event()
        self._wake = os.pipe()
        os.set_blocking(self._wake[0], False)
        os.set_blocking(self._wake[1], False)
        self._acceptor = threading.Thread(target=self._accept_loop, name="control-accept", daemon=True)
        self._acceptor.start()
        log.info("control socket listening on %s (mode %04o)", self.path, self.mode)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, close every connection and remove the socket file.

        Waits up to ``timeout`` seconds for connection threads; a handler
        still running after that finishes on its own and its answer is lost.
        """
        listener, acceptor, wake = self._listener, self._acceptor, self._wake
        if listener is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        if wake is not None:
            try:
                os.write(wake[1], b"\0")
            except OSError:
                pass
        if acceptor is not None:
            acceptor.join(max(0.0, deadline - time.monotonic()))
        listener.close()
        self._unlink_own()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread; it closes the socket
            except OSError:
                pass
        for conn in conns:
            if conn.thread is not None:
                conn.thread.join(max(0.0, deadline - time.monotonic()))
        if wake is not None:
            for fd in wake:
                os.close(fd)
        self._listener = self._acceptor = self._wake = None
        log.info("control socket %s closed", self.path)

    def __enter__(self) -> "ControlServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start-up helpers -----------------------------------------------------

    def _remove_stale(self) -> None:
        """Remove a socket file left by a dead server; refuse if one answers."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise WardenError(f"{self.path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except ConnectionRefusedError:
            log.info("removing stale control socket %s", self.path)
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return
        except FileNotFoundError:
            return
        except TimeoutError:
            pass  # a listener with a full backlog: alive
        except OSError as exc:
            raise WardenError(f"cannot check existing control socket {self.path}: {exc.strerror}") from None
        finally:
            probe.close()
        raise WardenError(f"another PBX is already running (control socket {self.path} answers)")

    def _unlink_own(self) -> None:
        """Remove the socket file, unless another server has replaced it since."""
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except OSError:
            pass

    # -- acceptor thread ------------------------------------------------------

    def _accept_loop(self) -> None:
        listener, wake = self._listener, self._wake
        assert listener is not None and wake is not None
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            sel.register(wake[0], selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.fileobj == wake[0]:
                        return
                    try:
                        sock, _addr = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        if self._stopping.is_set():
                            return
                        log.error("control socket accept failed: %s", exc.strerror)
                        time.sleep(0.1)  # e.g. EMFILE: do not spin
                        continue
                    self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        try:
            pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        except OSError as exc:
            log.warning("control connection without peer credentials (%s); closed", exc.strerror)
            sock.close()
            return
        own = os.geteuid()
        if uid not in (0, own) and uid not in self.allowed_uids:
            log.warning(
                "control connection refused: uid %d (pid %d) is not root, not uid %d and not in allowed_uids",
                uid, pid, own,
            )
            self._refuse(sock, f"permission denied: uid {uid} may not use the control socket", 403)
            return
        with self._lock:
            full = len(self._conns) >= self.max_connections
            if not full:
                conn = _Conn(sock, pid, uid, next(self._ids))
                self._conns.add(conn)
        if full:
            log.warning("control connection from uid %d (pid %d) refused: %d connections open", uid, pid, self.max_connections)
            self._refuse(sock, f"too many control connections (limit {self.max_connections})", 503)
            return
        conn.thread = threading.Thread(target=self._serve, args=(conn,), name=f"control-conn-{conn.id}", daemon=True)
        conn.thread.start()

    @staticmethod
    def _refuse(sock: socket.socket, message: str, status: int) -> None:
        # A fresh socket's buffer holds one short line: never blocks the acceptor.
        sock.setblocking(False)
        try:
            sock.send(encode_error(None, message, status))
        except OSError:
            pass
        sock.close()

    # -- connection threads ---------------------------------------------------

    def _serve(self, conn: _Conn) -> None:
        sock, clog = conn.sock, conn.log
        buf = LineBuffer()
        sock.settimeout(self.idle_timeout)
        clog.debug("connected")
        reason = "closed by peer"
        try:
            while not self._stopping.is_set():
                try:
                    data = sock.recv(_READ_SIZE)
                except TimeoutError:
                    reason = f"idle for {self.idle_timeout:g} s"
                    return
                except OSError as exc:
                    reason = exc.strerror or str(exc)
                    return
                if not data:
                    if buf.pending:
                        reason = f"closed by peer in the middle of a line ({buf.pending} bytes)"
                    return
                buf.feed(data)
                while True:
                    try:
                        line = buf.next_line()
                    except ControlProtocolError as exc:
                        clog.warning("closing: %s", exc)
                        reason = str(exc)
                        self._send(conn, encode_error(None, f"request {exc}", exc.status))
                        return
                    if line is None:
                        break
                    if not line.strip():
                        continue
                    if not self._send(conn, self._dispatch(line, clog)):
                        reason = "peer stopped reading"
                        return
        finally:
            clog.debug("disconnected: %s", reason)
            with self._lock:
                self._conns.discard(conn)
            sock.close()

    def _send(self, conn: _Conn, data: bytes) -> bool:
        try:
            conn.sock.sendall(data)
        except OSError:
            return False
        return True

    def _dispatch(self, line: bytes, clog: logging.LoggerAdapter) -> bytes:  # type: ignore[type-arg]
        """Run one request line; always returns a response line."""
        try:
            request = decode_request(line)
        except ControlProtocolError as exc:
            clog.warning("bad request: %s", exc)
            return encode_error(exc.request_id, str(exc), exc.status)
        handler = self._handlers.get(request.op)
        if handler is None:
            return encode_error(request.id, f"unknown operation {request.op!r}", 404)
        try:
            result = handler(request.args)
        except ControlError as exc:
            return encode_error(request.id, str(exc), exc.status)
        except Exception:
            clog.exception("control operation %r failed", request.op)
            return encode_error(request.id, f"internal error in operation {request.op!r} (see the PBX log)", 500)
        try:
            return encode_result(request.id, result)
        except ControlProtocolError as exc:
            clog.error("control operation %r returned a result that cannot be sent: %s", request.op, exc)
            return encode_error(request.id, f"internal error in operation {request.op!r} (see the PBX log)", 500)

    @staticmethod
    def _ping(args: dict[str, Any]) -> object:
        return {"pong": True, "pid": os.getpid()}
