"""SIP over UDP: sockets the engine thread reads and writes itself.

No thread of its own: the engine's loop (:class:`warden.transport.engine_io.EngineIO`)
waits on these sockets and calls :meth:`UDPServer.read` when one is readable,
so a datagram costs no hand-over between threads (no queue, no GIL switch, no
futex wake-up). Parsing happens on the engine thread.

Strategy: the sockets are non-blocking. :meth:`read` admits each datagram
through the abuse shield before keeping it (banned, over its rate, or shed
under load: no engine work at all), and reads at most a bound per call so the
engine's other work keeps its turn. A send that finds the socket buffer full
is queued and sent when the socket is writable again (bounded): the engine
never waits for room.
"""

from __future__ import annotations

import collections
import logging
import socket
import sys
import time
from typing import Any

from .stream import Listener, _bind, _fmt

__all__ = ["DatagramOutbox", "UDPServer"]

log = logging.getLogger("warden.transport.udp")

_MAX_DATAGRAM = 65535
_MAX_QUEUED = 1 << 20
"""Bytes queued per socket while its send buffer is full, before sends fail."""
_SO_RCVBUFFORCE: int | None = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
"""Linux's option to pass net.core.rmem_max (CAP_NET_ADMIN); Python 3.11 does not name it."""


class DatagramOutbox:
    """Datagrams that found their socket's send buffer full, sent again once it has room.

    Any datagram socket works (the tests use AF_UNIX ones, whose receiver pushes back;
    UDP over loopback never does). Order per socket is kept: while some wait, new
    ones queue behind them. At most ``max_queued`` bytes wait per socket; beyond, a
    datagram is dropped (logged, at most every 10 s) and :meth:`send` says False.
    """

    def __init__(self, max_queued: int = _MAX_QUEUED) -> None:
        self.max_queued = max_queued
        self.waiting: dict[socket.socket, collections.deque[tuple[bytes, Any]]] = {}
        """Sockets with datagrams waiting for room (watch these for writability)."""
        self._bytes: dict[socket.socket, int] = {}
        self.dropped = 0
        self._unreported = 0
        self._next_notice = 0.0

    def send(self, sock: socket.socket, data: bytes, destination: Any) -> bool:
        """``sendto`` without ever waiting; False (logged) when it failed or was dropped."""
        if sock in self.waiting:  # earlier datagrams wait for room: keep their order
            return self._queue(sock, data, destination)
        try:
            sock.sendto(data, destination)
            return True
        except BlockingIOError:
            return self._queue(sock, data, destination)
        except OSError as exc:
            log.info("UDP send to %s failed: %s", _show(destination), exc)
            return False

    def _queue(self, sock: socket.socket, data: bytes, destination: Any) -> bool:
        size = self._bytes.get(sock, 0)
        if size + len(data) > self.max_queued:
            self.dropped += 1
            self._unreported += 1
            now = time.monotonic()
            if now >= self._next_notice:
                self._next_notice = now + 10.0
                log.warning("send buffer of %s full: dropped %d datagram(s)", _show(sock.getsockname()),
                            self._unreported)
                self._unreported = 0
            return False
        self.waiting.setdefault(sock, collections.deque()).append((data, destination))
        self._bytes[sock] = size + len(data)
        return True

    def flush(self, sock: socket.socket) -> None:
        """``sock`` is writable: send what waits for it, until it is full again."""
        waiting = self.waiting.get(sock)
        if waiting is None:
            return
        size = self._bytes.get(sock, 0)
        while waiting:
            data, destination = waiting[0]
            try:
                sock.sendto(data, destination)
            except BlockingIOError:
                break
            except OSError as exc:
                log.info("UDP send to %s failed: %s", _show(destination), exc)
            waiting.popleft()
            size -= len(data)
        if waiting:
            self._bytes[sock] = size
        else:
            del self.waiting[sock]
            self._bytes.pop(sock, None)

    def clear(self) -> None:
        self.waiting.clear()
        self._bytes.clear()


def _show(address: Any) -> str:
    return _fmt(address) if isinstance(address, tuple) else str(address)


class UDPServer:
    """The PBX's UDP sockets: bound here, read and written by the engine thread."""

    def __init__(self, listeners: list[Listener], *, name: str = "udp", receive_buffer: int = 4 << 20,
                 shield: Any = None) -> None:
        self.listeners = listeners
        self.name = name
        self.receive_buffer = receive_buffer
        self.shield = shield
        """The abuse :class:`~warden.transport.shield.Shield` consulted per datagram, or None."""
        self.sockets: list[socket.socket] = []
        self.local: dict[socket.socket, tuple[str, int]] = {}
        """Each socket's bound address (asked once: a getsockname per datagram costs a system call)."""
        self.outbox = DatagramOutbox()
        """Datagrams waiting for room in a socket's send buffer."""
        self._by_family: dict[int, socket.socket] = {}
        self._by_local: dict[tuple[str, int], socket.socket] = {}

    @property
    def blocked(self) -> dict[socket.socket, Any]:
        """Sockets with datagrams waiting for room: the engine's loop watches them for writability."""
        return self.outbox.waiting

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [self.local[s] for s in self.sockets]

    def start(self) -> None:
        """Bind every listener (OSError names the address); reading is the engine's."""
        for lst in self.listeners:
            sock = _bind(lst, socket.SOCK_DGRAM)
            self._grow_receive_buffer(sock)
            sock.setblocking(False)
            self.sockets.append(sock)
            local = sock.getsockname()[:2]
            self.local[sock] = local
            self._by_local[local] = sock
            self._by_family.setdefault(sock.family, sock)
        for host, port in self.addresses:
            log.info("UDP listening on %s", _fmt((host, port)))

    def _grow_receive_buffer(self, sock: socket.socket) -> None:
        """A large receive buffer absorbs bursts (a re-registration storm) while the engine
        is busy. SO_RCVBUF is capped by net.core.rmem_max (212 kB on a stock kernel);
        SO_RCVBUFFORCE passes the cap when the process may (CAP_NET_ADMIN)."""
        size = self.receive_buffer
        for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
                break
            except OSError:
                continue
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux reports twice the size asked
        if got < size:
            log.info("UDP receive buffer %d kB (asked %d kB; raise net.core.rmem_max for more)",
                     got >> 10, size >> 10)

    # -- input (engine thread) -------------------------------------------------------------------

    def read(self, sock: socket.socket, limit: int, backlog: int,
             out: collections.deque[tuple[bytes, tuple[str, int], tuple[str, int]]]) -> int:
        """Read up to ``limit`` datagrams now waiting on ``sock``; append the admitted ones
        to ``out`` as ``(data, peer, local)``. ``backlog`` is the engine's work already
        waiting (the shield's load signal), grown by what this call admits. Returns how many
        datagrams were read (``limit`` means more may wait)."""
        recv = sock.recvfrom
        local = self.local[sock]
        admit = self.shield.admit if self.shield is not None else None
        append = out.append
        n = 0
        while n < limit:
            try:
                data, peer = recv(_MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError as exc:  # e.g. an ICMP error reported on the socket: keep serving
                log.debug("UDP receive on %s: %s", _fmt(local), exc)
                break
            n += 1
            if not data:
                continue
            peer = (peer[0], peer[1])
            if admit is not None and admit(peer[0], backlog) is not None:
                continue  # banned, over its rate, or shed under load
            backlog += 1
            append((data, peer, local))
        return n

    # -- output (engine thread) -------------------------------------------------------------------

    def socket_for(self, family: int, local: tuple[str, int] | None = None) -> socket.socket | None:
        """The socket to send from: the one a peer reached, else the first of the family."""
        if local is not None:
            sock = self._by_local.get(local)
            if sock is not None:
                return sock
        return self._by_family.get(family)

    def send(self, data: bytes, destination: tuple[str, int], local: tuple[str, int] | None = None) -> bool:
        """Send one datagram, or queue it while the socket buffer is full; False (logged)
        when it cannot be sent or queued."""
        family = socket.AF_INET6 if ":" in destination[0] else socket.AF_INET
        sock = self.socket_for(family, local)
        if sock is None:
            log.warning("no UDP socket for %s", _fmt(destination))
            return False
        return self.outbox.send(sock, data, destination)

    def flush(self, sock: socket.socket) -> None:
        """``sock`` is writable: send the datagrams that wait for it."""
        self.outbox.flush(sock)

    def stop(self) -> None:
        """Close the sockets (after the engine stopped reading them)."""
        for s in self.sockets:
            s.close()
        self.outbox.clear()
