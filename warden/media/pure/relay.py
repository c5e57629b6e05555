"""RTP relay data plane, pure Python: the twin of ``warden_ext.relay``.

Same API and same accounting as the compiled relay (see
``warden_ext/relay.pyi`` for the contract and ``warden_ext/relay.pyx`` for
the design): ``select.epoll`` instead of the C epoll, one ``recvfrom`` /
``sendto`` per datagram instead of ``recvmmsg`` / ``sendmmsg``. Several
times slower, but it needs no compiler and the tests hold it to the compiled
relay's behaviour.

Strategy (locking): a ``threading.Lock`` guards the session table and every
use of a session's sockets. ``run`` polls without it and takes it for the
batch of ready sockets; ``remove_session`` unregisters the session under it,
so once it returns the loop never uses that session's sockets again (events
polled before the removal find no session and are skipped). The relay works
on its own duplicates of the caller's descriptors (``os.dup``) and closes
them on removal; the caller's sockets are never closed here.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from typing import Any, Self

__all__ = ["MAX_PACKET", "Relay"]

MAX_PACKET = 2048
"""Longest datagram relayed; longer ones are dropped (``dropped_truncated``)."""

_BATCH = 32  # datagrams read from one ready socket per run()
_MAX_EVENTS = 256  # ready sockets taken from one poll
_MAX_DROPOUT = 3000  # RFC 3550 A.1, see warden_ext/relay.pyx
_MAX_MISORDER = 100
_SEQ_MOD = 65536
_NO_BAD_SEQ = 65537
_G711_RATE = 8000
_NS = 1_000_000_000


def _rtp_units(now_ns: int, rate: int) -> int:
    return ((now_ns // _NS) * rate + (now_ns % _NS) * rate // _NS) & 0xFFFFFFFF


class _Direction:
    """Counters for the packets received on one leg's socket (see DirStats)."""

    __slots__ = (
        "bad_seq",
        "base_seq",
        "bytes",
        "cycles",
        "dropped_foreign",
        "dropped_no_peer",
        "dropped_truncated",
        "have_seq",
        "have_transit",
        "jitter",
        "last_pt",
        "last_seen_ns",
        "last_transit",
        "lost_before",
        "max_seq",
        "packets",
        "received",
        "send_errors",
        "ssrc",
    )

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.dropped_foreign = 0
        self.dropped_no_peer = 0
        self.dropped_truncated = 0
        self.send_errors = 0
        self.last_seen_ns = 0
        self.have_seq = False
        self.ssrc = 0
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.bad_seq = _NO_BAD_SEQ
        self.received = 0
        self.lost_before = 0
        self.have_transit = False
        self.last_transit = 0
        self.jitter = 0.0
        self.last_pt = -1

    def lost_now(self) -> int:
        if not self.have_seq:
            return 0
        return (self.cycles + self.max_seq - self.base_seq + 1) - self.received

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.cycles = 0
        self.bad_seq = _NO_BAD_SEQ
        self.received = 0
        self.have_seq = True

    def _fold_lost(self) -> None:
        lost = self.lost_now()
        if lost > 0:
            self.lost_before += lost
        self.have_seq = False
        self.have_transit = False

    def account_rtp(self, p: bytes, now_ns: int, clock_rate: int) -> None:
        """Sequence (RFC 3550 A.1) and interarrival jitter (A.8) for one packet."""
        if len(p) < 12 or (p[0] >> 6) != 2:
            return
        pt = p[1] & 0x7F
        if 72 <= pt <= 76:
            return  # RTCP multiplexed on the RTP port (RFC 5761)
        seq = (p[2] << 8) | p[3]
        ts = int.from_bytes(p[4:8], "big")
        ssrc = int.from_bytes(p[8:12], "big")
        if self.have_seq and ssrc != self.ssrc:
            self._fold_lost()
        if not self.have_seq:
            self._init_seq(seq)
            self.ssrc = ssrc
        else:
            udelta = (seq - self.max_seq) & 0xFFFF
            if udelta < _MAX_DROPOUT:
                if seq < self.max_seq:
                    self.cycles += _SEQ_MOD
                self.max_seq = seq
            elif udelta <= _SEQ_MOD - _MAX_MISORDER:
                if seq != self.bad_seq:
                    self.bad_seq = (seq + 1) & 0xFFFF
                    return  # a lone jump: wait for the next packet to believe it
                self._fold_lost()
                self._init_seq(seq)
            # else: duplicate or late packet, counted as received
        self.received += 1
        self.last_pt = pt
        rate = _G711_RATE if pt in (0, 8) else clock_rate
        transit = (_rtp_units(now_ns, rate) - ts) & 0xFFFFFFFF
        if self.have_transit:
            d = (transit - self.last_transit) & 0xFFFFFFFF
            if d >= 0x80000000:
                d = 0x100000000 - d
            self.jitter += (d - self.jitter) / 16.0
        self.last_transit = transit
        self.have_transit = True


class _Leg:
    __slots__ = ("family", "fd", "latched", "peer", "sock", "st")

    def __init__(self, fd: int, sock: socket.socket, peer: tuple[Any, ...] | None) -> None:
        self.fd = fd
        self.sock = sock  # our duplicate of the caller's descriptor
        self.family = sock.family
        self.peer = peer  # where packets for this leg go (socket address)
        self.latched = False
        self.st = _Direction()


class _Session:
    __slots__ = ("clock_rate", "latch", "legs", "removed", "sid")

    def __init__(self, sid: int, latch: bool, clock_rate: int, legs: tuple[_Leg, _Leg]) -> None:
        self.sid = sid
        self.latch = latch
        self.clock_rate = clock_rate
        self.legs = legs
        self.removed = False


def _dup_udp(fd: int) -> socket.socket:
    if not isinstance(fd, int) or fd < 0:
        raise ValueError(f"invalid file descriptor {fd!r}")
    sock = socket.socket(fileno=os.dup(fd))
    if sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        sock.close()
        raise ValueError(f"fd {fd} is not a UDP socket (IPv4 or IPv6)")
    # No setblocking(): the duplicate shares the caller's file status flags.
    # Every call passes MSG_DONTWAIT instead, as the compiled relay does.
    return sock


def _sockaddr(family: int, peer: object) -> tuple[Any, ...]:
    """``(host, port)`` (numeric IP) as a socket address for a ``family`` socket."""
    host: object
    port: object
    try:
        host, port = peer  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"peer must be (host, port), not {peer!r}") from None
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"peer must be (host: str, port: 1-65535), not {peer!r}")
    try:
        if family == socket.AF_INET:
            return (socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, host)), port)
        scope = 0
        addr = host
        if ":" not in addr:
            addr = "::ffff:" + addr  # IPv4 peer on a dual-stack IPv6 socket
        elif "%" in addr:
            addr, _, zone = addr.partition("%")
            scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
        packed = socket.inet_pton(socket.AF_INET6, addr)
    except OSError:
        kind = "IPv4" if family == socket.AF_INET else "IPv6"
        raise ValueError(f"peer host {host!r} is not a numeric address for an {kind} socket") from None
    return (socket.inet_ntop(socket.AF_INET6, packed), port, 0, scope)


def _same_addr(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    # Address and port; IPv6 flow info and scope do not identify a sender.
    return bool(a[1] == b[1] and a[0] == b[0])


def _direction_dict(src: _Leg, dst: _Leg) -> dict[str, Any]:
    st = src.st
    lost = st.lost_before + st.lost_now()
    pt = st.last_pt if st.last_pt >= 0 else None
    return {
        "packets": st.packets,
        "bytes": st.bytes,
        "lost": max(0, lost),
        "jitter": st.jitter,
        "jitter_ms": st.jitter * 1000.0 / _G711_RATE if pt in (0, 8) else None,
        "last_seen": st.last_seen_ns / 1e9 if st.last_seen_ns else None,
        "source": (src.peer[0], src.peer[1]) if src.latched and src.peer else None,
        "destination": (dst.peer[0], dst.peer[1]) if dst.peer is not None else None,
        "ssrc": st.ssrc if st.have_seq else None,
        "payload_type": pt,
        "dropped_foreign": st.dropped_foreign,
        "dropped_no_peer": st.dropped_no_peer,
        "dropped_truncated": st.dropped_truncated,
        "send_errors": st.send_errors,
    }


def _side_index(side: object) -> int:
    if side == "a":
        return 0
    if side == "b":
        return 1
    raise ValueError(f"side must be 'a' or 'b', not {side!r}")


class Relay:
    """Relay RTP between the two UDP sockets of each session; see the module doc."""

    def __init__(self, max_sessions: int) -> None:
        if not isinstance(max_sessions, int) or max_sessions <= 0:
            raise ValueError(f"max_sessions must be positive, not {max_sessions!r}")
        self._max_sessions = max_sessions
        self._lock = threading.Lock()
        self._epoll: select.epoll | None = select.epoll()
        # stop() writes this eventfd; it sits in the epoll set beside the sockets.
        self._wakefd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wakefd, select.EPOLLIN)
        self._stop_seen = False
        self._sessions: dict[int, _Session] = {}
        self._by_fd: dict[int, tuple[_Session, int]] = {}  # our dup fd -> (session, side)
        self._caller_fds: set[int] = set()  # the caller's descriptors in sessions (EEXIST check)
        self._next_sid = 1
        self._running = False

    @property
    def max_sessions(self) -> int:
        return self._max_sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def _ep(self) -> select.epoll:
        if self._epoll is None:
            raise ValueError("relay is closed")
        return self._epoll

    def add_session(
        self,
        a_fd: int,
        b_fd: int,
        *,
        a_peer: tuple[str, int] | None = None,
        b_peer: tuple[str, int] | None = None,
        latch: bool = True,
        clock_rate: int = 8000,
    ) -> int:
        ep = self._ep()
        if a_fd == b_fd:
            raise ValueError("a_fd and b_fd must be two different sockets")
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, not {clock_rate}")
        socks: list[socket.socket] = []
        try:
            socks.append(_dup_udp(a_fd))
            socks.append(_dup_udp(b_fd))
            peers = [
                _sockaddr(sock.family, peer) if peer is not None else None
                for sock, peer in zip(socks, (a_peer, b_peer))
            ]
            legs = (_Leg(a_fd, socks[0], peers[0]), _Leg(b_fd, socks[1], peers[1]))
            with self._lock:
                if len(self._sessions) >= self._max_sessions:
                    raise RuntimeError(f"relay is full ({self._max_sessions} sessions)")
                if a_fd in self._caller_fds or b_fd in self._caller_fds:
                    raise OSError(errno.EEXIST, "cannot watch fd: already in a session")
                session = _Session(self._next_sid, bool(latch), clock_rate, legs)
                ep.register(socks[0].fileno(), select.EPOLLIN)
                try:
                    ep.register(socks[1].fileno(), select.EPOLLIN)
                except OSError:
                    ep.unregister(socks[0].fileno())
                    raise
                self._next_sid += 1
                self._sessions[session.sid] = session
                self._caller_fds.add(a_fd)
                self._caller_fds.add(b_fd)
                for side, sock in enumerate(socks):
                    self._by_fd[sock.fileno()] = (session, side)
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        return session.sid

    def _session(self, sid: int) -> _Session:
        try:
            return self._sessions[sid]
        except KeyError:
            raise KeyError(f"no relay session {sid!r}") from None

    def remove_session(self, sid: int) -> None:
        with self._lock:
            session = self._session(sid)
            del self._sessions[sid]
            session.removed = True
            for leg in session.legs:
                self._caller_fds.discard(leg.fd)
                fd = leg.sock.fileno()
                self._by_fd.pop(fd, None)
                if self._epoll is not None:
                    self._epoll.unregister(fd)
                leg.sock.close()

    def set_peer(self, sid: int, side: str, host: str, port: int) -> None:
        index = _side_index(side)
        with self._lock:
            leg = self._session(sid).legs[index]
            leg.peer = _sockaddr(leg.family, (host, port))
            leg.latched = False

    def stats(self, sid: int) -> dict[str, Any]:
        with self._lock:
            session = self._session(sid)
            a, b = session.legs
            return {
                "sid": sid,
                "latch": session.latch,
                "a_to_b": _direction_dict(a, b),
                "b_to_a": _direction_dict(b, a),
            }

    def close(self) -> None:
        """Release the epoll instance; the sockets stay the caller's to close."""
        if self._running:
            raise RuntimeError("close() while run() is active: stop the loop first")
        for sid in list(self._sessions):
            self.remove_session(sid)
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
            os.close(self._wakefd)

    def stop(self) -> None:
        """Make the running (or else the next) ``run`` return promptly; any thread."""
        if self._epoll is not None:
            os.eventfd_write(self._wakefd, 1)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, timeout_ms: int, *, duration_ms: int = 0) -> int:
        ep = self._ep()
        if self._running:
            raise RuntimeError("run() is already active in another thread")
        self._running = True
        self._stop_seen = False
        relayed = 0
        deadline = time.monotonic_ns() + duration_ms * 1_000_000
        try:
            while True:
                wait = timeout_ms
                if duration_ms > 0:
                    left = deadline - time.monotonic_ns()
                    if left <= 0:
                        break
                    left = (left + 999_999) // 1_000_000
                    if wait < 0 or wait > left:
                        wait = left
                try:
                    events = ep.poll(wait / 1000 if wait >= 0 else -1, _MAX_EVENTS)
                except InterruptedError:
                    break
                if events:
                    with self._lock:
                        relayed += self._process(events)
                if duration_ms == 0 or self._stop_seen:
                    break
        finally:
            self._running = False
        return relayed

    def _process(self, events: list[tuple[int, int]]) -> int:
        sent = 0
        by_fd = self._by_fd
        for fd, _mask in events:
            if fd == self._wakefd:
                try:
                    os.eventfd_read(fd)
                except BlockingIOError:
                    pass
                self._stop_seen = True
                continue
            entry = by_fd.get(fd)
            if entry is None:
                continue  # removed since poll() saw it
            session, side = entry
            sent += self._relay_from(session, session.legs[side], session.legs[1 - side])
        return sent

    def _relay_from(self, session: _Session, inl: _Leg, outl: _Leg) -> int:
        st = inl.st
        recvfrom = inl.sock.recvfrom
        sendto = outl.sock.sendto
        dontwait = socket.MSG_DONTWAIT
        latch = session.latch
        sent = 0
        now = time.monotonic_ns()
        for _ in range(_BATCH):
            try:
                data, source = recvfrom(MAX_PACKET + 1, dontwait)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # a pending socket error (ICMP); reading cleared it
            if len(data) > MAX_PACKET:
                st.dropped_truncated += 1
                continue
            if latch:
                if inl.latched:
                    if not _same_addr(source, inl.peer):  # type: ignore[arg-type]
                        st.dropped_foreign += 1
                        continue
                else:
                    inl.peer = source
                    inl.latched = True
            st.packets += 1
            st.bytes += len(data)
            st.last_seen_ns = now
            st.account_rtp(data, now, session.clock_rate)
            peer = outl.peer
            if peer is None:
                st.dropped_no_peer += 1
                continue
            try:
                sendto(data, dontwait, peer)
            except OSError:
                st.send_errors += 1
            else:
                sent += 1
        return sent
