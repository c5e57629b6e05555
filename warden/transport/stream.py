"""Threaded stream server for SIP over TCP and TLS.

One acceptor thread takes new connections and deals them out to a few I/O
threads; each I/O thread runs a selector over many non-blocking sockets. A
phone's connection stays open and is what we send its requests back over
(phones behind NAT accept no new connections), so ``Connection.send`` may be
called from any thread: it queues bytes and wakes the owning I/O thread.

Strategy: nothing here may let one peer stall the others. Handshakes are
non-blocking with a deadline; reads never block; a peer that does not read
what we send is cut off once its output queue passes a bound, instead of
blocking the engine that called ``send``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import _libssl
from ..handshakes import DEPRECATED_VERSIONS, version_name
from .telemetry import DEPRECATED_PROTOCOL, TLS12_REFUSED, HandshakeStats, classify_handshake_error

__all__ = ["Connection", "StreamHandler", "StreamServer", "Listener", "certificate_names"]

log = logging.getLogger("warden.transport.stream")

_READ_SIZE = 65536
_TLS1_2 = 0x0303
_MAX_OUTPUT = 1 << 20  # bytes queued to a peer that does not read before we cut it off


class StreamHandler(Protocol):
    """What the transport tells the layer above (called on I/O threads)."""

    def on_open(self, conn: "Connection") -> None: ...

    def on_data(self, conn: "Connection", data: bytes) -> None: ...

    def on_close(self, conn: "Connection", reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening address of a stream server."""

    host: str
    port: int


_ids = itertools.count(1)


@dataclass(eq=False)
class Connection:
    """One accepted TCP or TLS connection."""

    sock: socket.socket = field(repr=False)
    peer: tuple[str, int]
    local: tuple[str, int]
    transport: str
    """``tcp`` or ``tls``."""
    worker: "_IOWorker" = field(repr=False)
    id: int = field(default_factory=lambda: next(_ids))
    tls_version: str | None = None
    cipher: str | None = None
    listener: str = ""
    """Name of the server that accepted it (``sips``, ``sips-5063``...)."""
    peer_cert_names: tuple[str, ...] | None = None
    """Identities in the peer's verified client certificate (CN, ``sip:`` URI
    users, DNS names); None when the peer presented none."""
    opened_at: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    established: bool = False
    closed: bool = False
    handshake_deadline: float = 0.0
    keep: bool = False
    """A registration or call lives on this flow: the idle timeout does not apply."""
    _out: collections.deque[bytes] = field(default_factory=collections.deque, repr=False)
    _out_size: int = 0
    _events: int = 0
    """The selector events this connection is registered for (modified only on change)."""

    def send(self, data: bytes) -> bool:
        """Queue ``data`` for this peer; thread-safe. False if it is gone."""
        if self.closed:
            return False
        return self.worker.queue_send(self, data)

    def close(self, reason: str = "closed by server") -> None:
        """Close after flushing nothing further; thread-safe."""
        self.worker.queue_close(self, reason)


class _IOWorker(threading.Thread):
    """A selector loop over many connections."""

    def __init__(self, server: "StreamServer", index: int) -> None:
        super().__init__(name=f"{server.name}-io-{index}", daemon=True)
        self.server = server
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Connection, object]] = []
        self._wake_pending = False
        """A wake-up byte is written and not drained yet (guarded by _lock)."""
        self.connections: set[Connection] = set()
        self.handshaking: set[Connection] = set()
        self.running = True
        self._next_idle_check = 0.0

    # -- called from other threads -------------------------------------------

    def _post(self, op: str, conn: Connection, arg: object = None) -> None:
        with self._lock:
            self._pending.append((op, conn, arg))
            wake, self._wake_pending = not self._wake_pending, True
        if not wake:
            return  # one wake-up byte is enough for everything posted before the drain
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # a wake-up is already pending

    def adopt(self, conn: Connection) -> None:
        self._post("adopt", conn)

    def queue_send(self, conn: Connection, data: bytes) -> bool:
        self._post("send", conn, data)
        return True

    def queue_close(self, conn: Connection, reason: str) -> None:
        self._post("close", conn, reason)

    def stop(self) -> None:
        self.running = False
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass

    # -- the loop ----------------------------------------------------------------

    def run(self) -> None:
        try:
            while self.running:
                timeout = self._next_deadline()
                for key, mask in self.selector.select(timeout):
                    if key.data is None:
                        self._drain_wakeups()
                        continue
                    conn: Connection = key.data
                    if conn.closed:
                        continue
                    if not conn.established:
                        self._handshake(conn)
                        continue
                    if mask & selectors.EVENT_WRITE:
                        self._flush(conn)
                    if mask & selectors.EVENT_READ and not conn.closed:
                        self._read(conn)
                self._expire_handshakes()
                if self.server.idle_timeout:
                    self._expire_idle()
        finally:
            for conn in list(self.connections):
                self._close(conn, "server stopped")
            self.selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _next_deadline(self) -> float:
        pending = [c.handshake_deadline for c in self.handshaking]
        if not pending:
            return 1.0
        return max(0.0, min(min(pending) - time.monotonic(), 1.0))

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            pending, self._pending = self._pending, []
            self._wake_pending = False
        to_flush: dict[Connection, None] = {}  # in order, once each
        for op, conn, arg in pending:
            if op == "adopt":
                self.connections.add(conn)
                self.selector.register(conn.sock, selectors.EVENT_READ, conn)
                conn._events = selectors.EVENT_READ
                if conn.transport == "tcp":
                    self._established(conn)
                else:
                    self.handshaking.add(conn)
                    self._handshake(conn)
            elif conn.closed:
                continue
            elif op == "send":
                assert isinstance(arg, bytes)
                if conn._out_size + len(arg) > _MAX_OUTPUT:
                    self._close(conn, "peer does not read (output queue full)")
                    continue
                conn._out.append(arg)
                conn._out_size += len(arg)
                if conn.established:
                    to_flush[conn] = None
            elif op == "close":
                if conn.established:
                    self._flush(conn)
                self._close(conn, str(arg))
        for conn in to_flush:
            if not conn.closed:
                self._flush(conn)

    def _expire_handshakes(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self.handshaking if c.handshake_deadline <= now]:
            self.server.stats.failed(conn.transport, "timeout")
            log.info("%s handshake from %s timed out", conn.transport.upper(), _fmt(conn.peer))
            self._close(conn, "handshake timeout", notify=False)

    def _expire_idle(self) -> None:
        now = time.monotonic()
        if now < self._next_idle_check:
            return
        self._next_idle_check = now + 1.0
        silent_since = now - self.server.idle_timeout
        for conn in [c for c in self.connections if c.established and not c.keep and c.last_activity < silent_since]:
            log.info("%s connection from %s silent for %.0f s and nothing registered on it: closed",
                     conn.transport.upper(), _fmt(conn.peer), now - conn.last_activity)
            self._close(conn, "idle timeout")

    def _handshake(self, conn: Connection) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._set_events(conn, selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as exc:
            reason = classify_handshake_error(exc)
            offered = _libssl.client_version(sock) if reason == DEPRECATED_PROTOCOL else None
            if reason == DEPRECATED_PROTOCOL and offered == _TLS1_2:
                reason = TLS12_REFUSED  # a TLS 1.2 client at a TLS 1.3-only (modern) listener: not deprecated
            self.server.stats.failed("tls", reason)
            if reason == DEPRECATED_PROTOCOL:
                name = version_name(offered)
                version = name if name in DEPRECATED_VERSIONS else "unknown"
                self.server.stats.deprecated_attempt("tls", version)
                log.warning("TLS handshake on %s from %s failed: %s (deprecated-protocol attempt, %s offered, %s)",
                            self.server.name, _fmt(conn.peer), reason, version, _detail(exc))
            else:
                log.info("TLS handshake on %s from %s failed: %s (%s)", self.server.name, _fmt(conn.peer), reason,
                         _detail(exc))
            self._close(conn, f"handshake failed: {reason}", notify=False)
            return
        conn.tls_version = sock.version()
        cipher = sock.cipher()
        conn.cipher = cipher[0] if cipher else None
        peer_cert = sock.getpeercert()  # only ever a certificate that verified against the client CA
        conn.peer_cert_names = certificate_names(peer_cert) if peer_cert else None
        self.server.stats.succeeded("tls", conn.tls_version or "?", conn.cipher or "?")
        log.debug("TLS from %s: %s %s", _fmt(conn.peer), conn.tls_version, conn.cipher)
        self._established(conn)

    def _established(self, conn: Connection) -> None:
        conn.established = True
        self.handshaking.discard(conn)
        self._set_events(conn, selectors.EVENT_READ | (selectors.EVENT_WRITE if conn._out else 0))
        try:
            self.server.handler.on_open(conn)
        except Exception:
            log.exception("handler failed on open of %s", _fmt(conn.peer))
            self._close(conn, "handler error")
            return
        self._read(conn)  # TLS may already hold decrypted data

    def _read(self, conn: Connection) -> None:
        sock = conn.sock
        for _ in range(64):  # bounded so one chatty peer cannot starve the rest
            try:
                data = sock.recv(_READ_SIZE)
            except (ssl.SSLWantReadError, BlockingIOError):
                return
            except ssl.SSLWantWriteError:
                self._set_events(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            except (ssl.SSLError, OSError) as exc:
                self._close(conn, f"read error: {_detail(exc)}")
                return
            if not data:
                self._close(conn, "closed by peer")
                return
            conn.last_activity = time.monotonic()
            try:
                self.server.handler.on_data(conn, data)
            except Exception:
                log.exception("handler failed on data from %s", _fmt(conn.peer))
                self._close(conn, "handler error")
                return
            if conn.closed or (isinstance(sock, ssl.SSLSocket) and not sock.pending() and len(data) < _READ_SIZE):
                return

    def _flush(self, conn: Connection) -> None:
        sock = conn.sock
        out = conn._out
        # what queued up meanwhile goes in one write (one TLS record, one syscall); not
        # while a blocked TLS write waits to be retried with the bytes it was given
        if len(out) > 1 and not conn._events & selectors.EVENT_WRITE:
            joined = b"".join(out)
            out.clear()
            out.append(joined)
        while conn._out:
            chunk = conn._out[0]
            try:
                sent = sock.send(chunk)
            except (ssl.SSLWantWriteError, BlockingIOError, ssl.SSLWantReadError):
                self._set_events(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            except (ssl.SSLError, OSError) as exc:
                self._close(conn, f"write error: {_detail(exc)}")
                return
            conn._out_size -= sent
            if sent < len(chunk):
                conn._out[0] = chunk[sent:]
            else:
                conn._out.popleft()
        self._set_events(conn, selectors.EVENT_READ)

    def _set_events(self, conn: Connection, events: int) -> None:
        """Change what the selector watches for ``conn``; a no-op (no epoll_ctl) when unchanged,
        as after most flushes."""
        if conn._events != events:
            self.selector.modify(conn.sock, events, conn)
            conn._events = events

    def _close(self, conn: Connection, reason: str, *, notify: bool = True) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.connections.discard(conn)
        self.handshaking.discard(conn)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass
        self.server._released(conn.peer[0])
        if notify and conn.established:
            try:
                self.server.handler.on_close(conn, reason)
            except Exception:
                log.exception("handler failed on close of %s", _fmt(conn.peer))


class StreamServer:
    """Accepts TCP or TLS connections on several addresses.

    ``context_factory`` is called per accepted connection (not once), so a
    certificate reload applies to new connections while old ones continue.
    """

    def __init__(
        self,
        listeners: list[Listener],
        handler: StreamHandler,
        *,
        context_factory: Callable[[], ssl.SSLContext] | None = None,
        handshake_timeout: float = 5.0,
        io_threads: int = 2,
        max_connections: int = 15000,
        name: str = "stream",
        shield: Any = None,
        idle_timeout: float = 0.0,
    ) -> None:
        self.listeners = listeners
        self.handler = handler
        self.context_factory = context_factory
        self.transport = "tls" if context_factory else "tcp"
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.name = name
        self.shield = shield
        """Per-source admission (:class:`warden.transport.shield.Shield`), or None."""
        self.idle_timeout = idle_timeout
        """Seconds a connection without ``keep`` may stay silent (0: forever)."""
        self.stats = HandshakeStats(listener=name)
        self._sockets: list[socket.socket] = []
        self._workers = [_IOWorker(self, i) for i in range(io_threads)]
        self._next_worker = itertools.cycle(self._workers)
        self._acceptor: threading.Thread | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._count_lock = threading.Lock()
        self.open_connections = 0

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs, with ephemeral ports resolved."""
        return [s.getsockname()[:2] for s in self._sockets]

    def start(self) -> None:
        """Bind every listener (raising OSError naming the address) and serve."""
        for lst in self.listeners:
            self._sockets.append(_bind(lst, socket.SOCK_STREAM))
        for worker in self._workers:
            worker.start()
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept", daemon=True)
        self._acceptor.start()
        for host, port in self.addresses:
            log.info("%s listening on %s", self.transport.upper(), _fmt((host, port)))

    def stop(self) -> None:
        """Close listeners and every connection; wait for the threads."""
        os.write(self._stop_w, b"\0")
        if self._acceptor:
            self._acceptor.join(5)
        for worker in self._workers:
            worker.stop()
        for worker in self._workers:
            if worker.is_alive():
                worker.join(5)
        for s in self._sockets:
            s.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def connections(self) -> list[Connection]:
        """A snapshot of the open connections."""
        return [c for w in self._workers for c in list(w.connections)]

    def _released(self, host: str | None = None) -> None:
        with self._count_lock:
            self.open_connections -= 1
        if host is not None and self.shield is not None:
            self.shield.close_connection(host)

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        for s in self._sockets:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        sel.register(self._stop_r, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in sel.select():
                    if key.fileobj == self._stop_r:
                        return
                    self._accept(key.fileobj)  # type: ignore[arg-type]
        finally:
            sel.close()

    def _accept(self, lsock: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, back off, keep serving
                log.error("accept on %s failed: %s", _fmt(lsock.getsockname()), exc)
                time.sleep(0.05)
                return
            with self._count_lock:
                if self.open_connections >= self.max_connections:
                    full = True
                else:
                    full = False
                    self.open_connections += 1
            if full:
                log.warning("connection limit %d reached: refusing %s", self.max_connections, _fmt(addr))
                sock.close()
                continue
            if self.shield is not None and self.shield.open_connection(addr[0]) is not None:
                log.debug("%s connection from %s refused", self.transport.upper(), _fmt(addr))
                sock.close()  # the shield logs why, once per source and episode
                self._released()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            worker = next(self._next_worker)
            if self.context_factory is not None:
                try:
                    sock = self.context_factory().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (ssl.SSLError, OSError) as exc:
                    log.warning("cannot start TLS with %s: %s", _fmt(addr), exc)
                    sock.close()
                    self._released(addr[0])
                    continue
            conn = Connection(
                sock=sock,
                peer=(addr[0], addr[1]),
                local=sock.getsockname()[:2],
                transport=self.transport,
                listener=self.name,
                worker=worker,
                handshake_deadline=time.monotonic() + self.handshake_timeout,
            )
            worker.adopt(conn)


def certificate_names(cert: dict[str, Any]) -> tuple[str, ...]:
    """The identities a client certificate claims, as ``getpeercert()`` gives them:
    subject CNs, the user part of ``sip:``/``sips:`` URI SANs, DNS SANs."""
    names: list[str] = []
    for rdn in cert.get("subject", ()):
        names += [value for key, value in rdn if key == "commonName"]
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI" and value.lower().startswith(("sip:", "sips:")):
            rest = value.split(":", 1)[1]
            if "@" in rest:
                names.append(rest.split("@", 1)[0].split(";", 1)[0])
        elif kind == "DNS":
            names.append(value)
    return tuple(dict.fromkeys(n for n in names if n))


def _bind(lst: Listener, kind: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in lst.host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((lst.host, lst.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind {_fmt((lst.host, lst.port))}: {exc.strerror}") from None
    return sock


def _fmt(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _detail(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return str(exc) or type(exc).__name__
