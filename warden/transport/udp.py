"""SIP over UDP: one receiving thread per socket, sends from any thread.

Datagrams are handed to the engine as they come; parsing happens there. A
send is a plain ``sendto`` (atomic per datagram), so the engine thread can
answer without a hop through this module's threads.

Strategy: the sockets are non-blocking. A receiving thread reads until the
socket is empty and only then waits in ``select`` (with a timeout, so stop()
is noticed): under load each datagram costs one system call, and one release
of the GIL, instead of a ``poll`` plus a ``recvfrom`` as a socket timeout
would make it. A send that finds the socket buffer full waits for room as a
blocking socket would (up to a bound).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable

from .stream import Listener, _bind, _fmt

__all__ = ["UDPServer"]

log = logging.getLogger("warden.transport.udp")

_MAX_DATAGRAM = 65535
_SEND_WAIT = 0.5
"""Longest wait for room in a full socket buffer before a send fails."""

DatagramHandler = Callable[[bytes, tuple[str, int], tuple[str, int], float], None]
"""``handler(data, peer, local, received_at)``, called on the socket's thread."""


class UDPServer:
    """Receives SIP datagrams on several addresses."""

    def __init__(self, listeners: list[Listener], handler: DatagramHandler, *, name: str = "udp",
                 receive_buffer: int = 4 << 20) -> None:
        self.listeners = listeners
        self.handler = handler
        self.name = name
        self.receive_buffer = receive_buffer
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._running = False

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s in self._sockets]

    def start(self) -> None:
        """Bind every listener (OSError names the address) and start receiving."""
        for lst in self.listeners:
            sock = _bind(lst, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
            except OSError:
                pass
            sock.setblocking(False)
            self._sockets.append(sock)
        self._running = True
        for sock in self._sockets:
            t = threading.Thread(target=self._receive, args=(sock,), name=f"{self.name}-rx", daemon=True)
            t.start()
            self._threads.append(t)
        for host, port in self.addresses:
            log.info("UDP listening on %s", _fmt((host, port)))

    def socket_for(self, family: int, local: tuple[str, int] | None = None) -> socket.socket | None:
        """The socket to send from: the one a peer reached, else any of the family."""
        fallback = None
        for s in self._sockets:
            if s.family != family:
                continue
            if local is not None and s.getsockname()[:2] == local:
                return s
            fallback = fallback or s
        return fallback

    def send(self, data: bytes, destination: tuple[str, int], local: tuple[str, int] | None = None) -> bool:
        """Send one datagram; False (logged) when it cannot be sent."""
        family = socket.AF_INET6 if ":" in destination[0] else socket.AF_INET
        sock = self.socket_for(family, local)
        if sock is None:
            log.warning("no UDP socket for %s", _fmt(destination))
            return False
        try:
            try:
                sock.sendto(data, destination)
            except BlockingIOError:  # the socket buffer is full: wait for room, as a blocking send would
                select.select([], [sock], [], _SEND_WAIT)
                sock.sendto(data, destination)
            return True
        except OSError as exc:
            log.info("UDP send to %s failed: %s", _fmt(destination), exc)
            return False

    def stop(self) -> None:
        self._running = False
        for t in self._threads:
            t.join(2)
        for s in self._sockets:
            s.close()

    def _receive(self, sock: socket.socket) -> None:
        local = sock.getsockname()[:2]
        recv = sock.recvfrom
        handler = self.handler
        while self._running:
            try:
                data, peer = recv(_MAX_DATAGRAM)
            except BlockingIOError:
                try:
                    select.select([sock], [], [], 0.5)  # timeout: so stop() is noticed without a wake-up datagram
                except (OSError, ValueError):  # closed by stop()
                    if not self._running:
                        return
                continue
            except OSError:
                if not self._running:
                    return
                time.sleep(0.01)  # e.g. ICMP-induced errors; keep serving
                continue
            if not data:
                continue
            try:
                handler(data, (peer[0], peer[1]), local, time.time())
            except Exception:
                log.exception("UDP handler failed for a datagram from %s", _fmt(peer))
