"""What the engine thread waits on: its UDP sockets, and work posted by other threads.

The engine reads its UDP sockets itself (see :mod:`warden.transport.udp`);
stream I/O threads and the control channel :meth:`EngineIO.post` items to a
queue instead. One selector covers both: the UDP sockets, and a wake-up file
descriptor (an eventfd, or a socket pair where there is none) that a poster
signals.

Strategy: a wake-up costs a system call on both sides, so a poster signals
only when the engine may be asleep. The engine raises ``_sleeping`` before it
looks at the queue one last time and blocks; a poster appends first and then
reads the flag. Whatever the interleaving, either the engine sees the item
before blocking or the poster sees the flag and wakes it (under the GIL the
two accesses are ordered). A spurious wake-up costs one empty turn.
"""

from __future__ import annotations

import collections
import os
import selectors
import socket
from typing import Any

from .udp import UDPServer

__all__ = ["EngineIO", "Waker"]


class Waker:
    """A file descriptor that turns readable when :meth:`wake` is called from any thread."""

    def __init__(self, eventfd: bool = hasattr(os, "eventfd")) -> None:
        """``eventfd``: Linux with Python >= 3.10; else (or False) a socket pair."""
        self._pair: tuple[socket.socket, socket.socket] | None = None
        if eventfd:
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:
            a, b = socket.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            self._pair = (a, b)
            self._fd = a.fileno()

    def fileno(self) -> int:
        return self._fd

    def wake(self) -> None:
        try:
            if self._pair is None:
                os.eventfd_write(self._fd, 1)
            else:
                self._pair[1].send(b"\0")
        except OSError:  # a wake-up is already pending (buffer full), or closed at shutdown
            pass

    def drain(self) -> None:
        try:
            if self._pair is None:
                os.eventfd_read(self._fd)
            else:
                while self._pair[0].recv(4096):
                    pass
        except OSError:  # nothing pending (BlockingIOError)
            pass

    def close(self) -> None:
        if self._pair is None:
            os.close(self._fd)
        else:
            for s in self._pair:
                s.close()


class EngineIO:
    """The engine thread's selector: UDP sockets, the post queue, writability of full sockets."""

    def __init__(self, waker: Waker | None = None) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._waker = waker or Waker()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._waker.fileno(), selectors.EVENT_READ, None)
        self._sleeping = False
        self._writing: set[socket.socket] = set()
        self.udp: UDPServer | None = None

    def watch(self, udp: UDPServer) -> None:
        """Wait on ``udp``'s sockets too (before the engine thread starts, or on it)."""
        self.udp = udp
        for sock in udp.sockets:
            self._selector.register(sock, selectors.EVENT_READ, sock)

    # -- any thread ------------------------------------------------------------------------

    def post(self, item: Any) -> None:
        """Queue ``item`` for the engine thread, waking it if it may be asleep."""
        self._items.append(item)
        if self._sleeping:
            self._sleeping = False
            self._waker.wake()

    @property
    def queued(self) -> int:
        return len(self._items)

    # -- the engine thread -------------------------------------------------------------------

    def take(self, limit: int) -> list[Any]:
        """Up to ``limit`` posted items, oldest first."""
        items = self._items
        popleft = items.popleft
        return [popleft() for _ in range(min(limit, len(items)))]

    def wait(self, timeout: float) -> list[socket.socket]:
        """Block up to ``timeout`` seconds (0: just look) until a UDP socket is readable or
        an item is posted; returns the readable sockets. Sockets with queued output that
        turned writable are flushed here."""
        udp = self.udp
        if udp is not None and (udp.blocked or self._writing):
            self._watch_writes(udp)
        if timeout > 0:
            self._sleeping = True
            if self._items:  # posted before the flag was up: no wake-up is coming for it
                timeout = 0
        try:
            events = self._selector.select(timeout)
        finally:
            self._sleeping = False
        readable = []
        for key, mask in events:
            sock = key.data
            if sock is None:
                self._waker.drain()
                continue
            if mask & selectors.EVENT_WRITE and udp is not None:
                udp.flush(sock)
            if mask & selectors.EVENT_READ:
                readable.append(sock)
        return readable

    def _watch_writes(self, udp: UDPServer) -> None:
        want = set(udp.blocked)
        for sock in want - self._writing:
            self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, sock)
        for sock in self._writing - want:
            self._selector.modify(sock, selectors.EVENT_READ, sock)
        self._writing = want

    def close(self) -> None:
        self._selector.close()
        self._waker.close()
