"""Media anchoring: every call's RTP goes through our relay.

For each call the B2BUA opens a :class:`CallMedia`. Each ``m=`` line gets two
socket pairs from the port pool (even RTP port, odd RTCP port): the *A side*
pair is what the caller sends to, the *B side* pair what the callee sends
to. The SDP each phone receives names our address and its side's ports, so
both phones send to us and the relay (``warden_ext.relay``, or its pure twin)
forwards between the pairs. Codecs are left alone: only ``c=``, the ``m=``
port, ``a=rtcp`` and ICE candidates change.

Strategy: an SDP body from side X tells where X wants media (its ``c=`` and
port, unless on hold at 0.0.0.0); we set that as X's peer in the relay, which
then latches onto the address X really sends from (NAT). The body we pass to
the other side names the other side's sockets.
"""

from __future__ import annotations

import errno
import logging
import resource
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..sip.sdp import SessionDescription, anchor_view, parse_sdp
from . import accel

__all__ = ["CallMedia", "MediaPlane", "PortPool", "SocketPair"]

log = logging.getLogger("warden.media")

_HOLD = ("0.0.0.0", "::")
_ICE_ATTRIBUTES = ("candidate", "remote-candidates", "ice-ufrag", "ice-pwd", "ice-options", "end-of-candidates")
_ICE_DROP = frozenset(_ICE_ATTRIBUTES)


@dataclass(eq=False)
class SocketPair:
    """A bound RTP socket on an even port and RTCP on the next (odd) one."""

    rtp: socket.socket
    rtcp: socket.socket
    port: int
    host: str
    dirty: bool = False
    """Found with queued packets at its last reuse check (see PortPool)."""

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


class PortPool:
    """Hands out even/odd port pairs from ``[low, high]``, skipping ports in use.

    Ports are real bound sockets, so a crash leaks nothing: the kernel frees
    them with the process. New pairs are bound walking the range from a
    cursor, so a port just closed is not bound again at once.

    Strategy (reuse): binding and closing two sockets per pair cost more
    than the rest of a call's media set-up, so a released pair is kept
    bound, idle, and handed out again (oldest first) once it has been idle
    for ``quarantine`` seconds. Late packets of the old call (the phone that
    learnt of the BYE last still sends for a round trip) must never reach
    the new call: the relay latches each leg onto the first source it hears
    (see ``warden_ext/relay.pyx``), so a stale packet read first would steer
    the new call's media to the old phone. Hence, before a pair is handed
    out again, one ``poll`` checks both sockets: a pair that received
    anything while idle is drained and goes back to the end of the queue
    for another full quarantine, and a pair found dirty twice in a row (a
    sender that does not stop) is closed. So a reused pair has been silent
    for at least ``quarantine`` seconds and holds no queued datagram, and
    its new relay session starts with a fresh latch: the exposure is that
    of a newly bound port (anyone who sends first is latched, the inherent
    limit of RTP latching), not more. Idle pairs are closed after
    ``idle_limit`` seconds (light load gets fresh ports, as before) and
    beyond ``max_idle`` pairs (file descriptors); when the range is full a
    pair still in quarantine is reused (checked and drained the same way)
    rather than failing the call, which is what the cursor walk did too.
    """

    def __init__(self, low: int, high: int, *, quarantine: float = 1.0, idle_limit: float = 30.0,
                 max_idle: int | None = None) -> None:
        if low % 2:
            low += 1
        self.low, self.high = low, high
        self._cursor = low
        self._lock = threading.Lock()
        self.in_use = 0
        self.quarantine = quarantine
        self.idle_limit = idle_limit
        if max_idle is None:
            # a quarter of the descriptors this process may open, two per pair
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            max_idle = (soft if soft != resource.RLIM_INFINITY else 65536) // 8
        self.max_idle = max(0, min(max_idle, (high - low) // 2 + 1))
        self._idle: dict[str, deque[tuple[float, SocketPair]]] = {}
        self._poll = select.poll()  # for the reuse check, under the lock
        self._held: dict[str, set[int]] = {}  # ports of the pairs we hold (in use or idle), per host
        self.reused = 0
        """Pairs handed out again from the idle pool (counter)."""
        self.retired = 0
        """Idle pairs closed because packets kept arriving on them (counter)."""

    def allocate(self, host: str) -> SocketPair:
        """Bind a pair on ``host``, or reuse an idle one; RuntimeError when the range is exhausted."""
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(host)
            if idle:
                while idle and now - idle[0][0] > self.idle_limit:
                    self._close(idle.popleft()[1])
                pair = self._reuse(idle, now - self.quarantine, now)
            else:
                pair = None
            if pair is None:
                pair = self._bind(host)
            if pair is None and idle:
                pair = self._reuse(idle, now, now)  # range full: quarantine cut short
                if pair is None:
                    pair = self._bind(host)  # dirty pairs were closed
            if pair is None:
                raise RuntimeError(f"no free RTP port pair in {self.low}-{self.high} on {host}")
            self.in_use += 1
            return pair

    def release(self, pair: SocketPair) -> None:
        """Take a pair back: kept idle for reuse, or closed."""
        with self._lock:
            self.in_use -= 1
            idle = self._idle.get(pair.host)
            if idle is None:
                idle = self._idle[pair.host] = deque()
            if len(idle) >= self.max_idle or pair.rtp.fileno() < 0:
                self._close(pair)
            else:
                pair.dirty = False
                idle.append((time.monotonic(), pair))

    def idle(self) -> int:
        """Pairs bound but not in use."""
        return sum(len(q) for q in self._idle.values())

    def close(self) -> None:
        """Close every idle pair (the ones in use stay their users')."""
        with self._lock:
            for q in self._idle.values():
                while q:
                    self._close(q.popleft()[1])

    def _reuse(self, idle: deque[tuple[float, SocketPair]], released_before: float,
               now: float) -> SocketPair | None:
        """The oldest idle pair released before ``released_before`` and silent since."""
        for _ in range(len(idle)):
            if idle[0][0] > released_before:
                return None
            pair = idle.popleft()[1]
            # poll(), not select(): descriptors beyond 1023 are the normal case here
            rtp, rtcp = pair.rtp.fileno(), pair.rtcp.fileno()
            self._poll.register(rtp, select.POLLIN)
            self._poll.register(rtcp, select.POLLIN)
            try:
                ready = self._poll.poll(0)
            finally:
                self._poll.unregister(rtp)
                self._poll.unregister(rtcp)
            if not ready:
                self.reused += 1
                return pair
            for fd, _events in ready:
                _drain(pair.rtp if fd == rtp else pair.rtcp)
            if pair.dirty:
                self.retired += 1
                self._close(pair)
            else:
                pair.dirty = True
                idle.append((now, pair))
        return None

    def _bind(self, host: str) -> SocketPair | None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        held = self._held.get(host)
        if held is None:
            held = self._held[host] = set()
        span = (self.high - self.low) // 2 + 1
        for _ in range(span):
            port = self._cursor
            self._cursor = port + 2 if port + 3 <= self.high else self.low
            if port in held:
                continue
            pair = _bind_pair(family, host, port)
            if pair is not None:
                held.add(port)
                return pair
        return None

    def _close(self, pair: SocketPair) -> None:
        self._held.get(pair.host, set()).discard(pair.port)
        pair.close()


def _bind_pair(family: int, host: str, port: int) -> SocketPair | None:
    socks = []
    try:
        for p in (port, port + 1):
            # non-blocking from the start: one system call fewer per socket, four per call
            s = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
            socks.append(s)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, p))
    except OSError as exc:
        for s in socks:
            s.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return None
        raise
    return SocketPair(socks[0], socks[1], port, host)


def _drain(sock: socket.socket, limit: int = 4096) -> None:
    """Read and drop what is queued on a non-blocking socket (bounded)."""
    for _ in range(limit):
        try:
            sock.recv(1)
        except BlockingIOError:
            return
        except OSError:
            continue  # a queued ICMP error; reading it cleared it


@dataclass(eq=False)
class _Stream:
    """One ``m=`` line of a call: the two pairs and their relay sessions."""

    a: SocketPair
    b: SocketPair
    rtp_sid: int
    rtcp_sid: int | None


@dataclass(eq=False)
class CallMedia:
    """The anchored media of one call."""

    plane: "MediaPlane"
    host: str
    """Our address in every SDP we send (the one the phones reached us on)."""
    streams: list[_Stream] = field(default_factory=list)
    opened_at: float = field(default_factory=time.monotonic)
    closed: bool = False
    sending: dict[str, bool] = field(default_factory=dict)
    """Per side: does its last SDP say it sends RTP (not on hold)?"""
    expected_since: dict[str, float] = field(default_factory=dict)
    """Per side: since when its RTP is expected (its SDP last turned to sending)."""

    def relay_sdp(self, body: bytes, from_side: str) -> bytes:
        """Record ``from_side``'s media addresses; return the body for the other side.

        Raises SIPParseError (400) for a body that is not SDP.

        Strategy: ordinary bodies go through :func:`anchor_view` (one pass
        over the lines, one rewrite); anything it declines (every error
        included) through the object model in :meth:`_relay_parsed`, which
        is the reference: a differential test holds the two to the same
        bytes and the same relay calls.
        """
        view = anchor_view(body)
        if view is None:
            return self._relay_parsed(parse_sdp(body), from_side)
        streams = view.streams
        sends = False
        for port, peer, direction, _mux, _rp, _ra in streams:
            if (port != 0 and (direction == "sendrecv" or direction == "sendonly")
                    and peer is not None and peer not in _HOLD):
                sends = True
                break
        self._note_sending(from_side, sends)
        relay = self.plane.relay
        ours_b = from_side == "a"  # the body goes to b: name b's sockets
        ports = []
        for index, (port, peer, _direction, mux, rtcp_port, rtcp_address) in enumerate(streams):
            if index >= len(self.streams):
                self.streams.append(self.plane._open_stream(self.host))
            stream = self.streams[index]
            if port == 0:
                ports.append(0)
                continue  # a rejected or disabled stream stays so
            if peer and peer not in _HOLD:
                relay.set_peer(stream.rtp_sid, from_side, peer, port)
                if stream.rtcp_sid is not None and not mux:
                    relay.set_peer(stream.rtcp_sid, from_side, rtcp_address or peer,
                                   rtcp_port if rtcp_port is not None else port + 1)
            ports.append(stream.b.port if ours_b else stream.a.port)
        return view.anchored(self.host, ports, _ICE_DROP)

    def _note_sending(self, from_side: str, sends: bool) -> None:
        if sends and not self.sending.get(from_side):
            self.expected_since[from_side] = time.monotonic()  # (re)starts now: give it time
        self.sending[from_side] = sends

    def _relay_parsed(self, sdp: SessionDescription, from_side: str) -> bytes:
        """:meth:`relay_sdp` through the SDP object model (the reference path)."""
        to_side = "b" if from_side == "a" else "a"
        sends = any(
            m.port != 0 and sdp.direction_of(m) in ("sendrecv", "sendonly")
            and (c := sdp.connection_of(m)) is not None and c.host not in _HOLD
            for m in sdp.media
        )
        self._note_sending(from_side, sends)
        for index, media in enumerate(sdp.media):
            if index >= len(self.streams):
                self.streams.append(self.plane._open_stream(self.host))
            stream = self.streams[index]
            if media.port == 0:
                continue  # a rejected or disabled stream stays so
            conn = sdp.connection_of(media)
            peer = conn.host if conn is not None else None
            if peer and peer not in _HOLD:
                self.plane.relay.set_peer(stream.rtp_sid, from_side, peer, media.port)
                rtcp = media.rtcp
                if stream.rtcp_sid is not None and not media.rtcp_mux:
                    self.plane.relay.set_peer(stream.rtcp_sid, from_side,
                                              rtcp.address if rtcp is not None and rtcp.address else peer,
                                              rtcp.port if rtcp is not None else media.port + 1)
            ours = stream.b if to_side == "b" else stream.a
            media.set_port(ours.port)
            if media.rtcp is not None:
                media.set_rtcp(ours.port if media.rtcp_mux else ours.port + 1)
            self._rewrite_connection(media)
            media.remove_attributes(*_ICE_ATTRIBUTES)
        self._rewrite_connection(sdp)
        sdp.remove_attributes(*_ICE_ATTRIBUTES)
        sdp.bump_version()
        return bytes(sdp)

    def _rewrite_connection(self, section: Any) -> None:
        """Our address in ``c=``; an old-style hold (0.0.0.0) stays a hold."""
        conn = section.connection
        if conn is not None and conn.host not in _HOLD:
            section.set_connection(self.host)

    def last_activity(self) -> float | None:
        """Monotonic time since which some expected RTP has not flowed, or None.

        A direction is expected while its sender's last SDP says it sends
        (sendrecv/sendonly, not an old-style 0.0.0.0 hold); the answer is the
        stalest of them (its last packet, or when the call opened), so a phone
        that stops sending is noticed even while the other keeps talking.
        """
        stalest: float | None = None
        for stream in self.streams:
            try:
                stats = self.plane.relay.stats(stream.rtp_sid)
            except KeyError:
                continue
            for side, direction in (("a", "a_to_b"), ("b", "b_to_a")):
                if not self.sending.get(side, False):
                    continue
                seen = stats[direction]["last_seen"]
                last = max(seen or 0.0, self.expected_since.get(side, self.opened_at))
                stalest = last if stalest is None else min(stalest, last)
        return stalest

    def stats(self) -> list[dict[str, Any]]:
        out = []
        for stream in self.streams:
            try:
                s = self.plane.relay.stats(stream.rtp_sid)
            except KeyError:
                continue
            out.append({"a_port": stream.a.port, "b_port": stream.b.port, **s})
        return out

    def close(self) -> None:
        """Stop relaying and give the ports back."""
        if self.closed:
            return
        self.closed = True
        for stream in self.streams:
            self.plane._close_stream(stream)
        self.streams.clear()


class MediaPlane:
    """The relay thread and the port pool shared by every call."""

    def __init__(self, rtp_port_min: int, rtp_port_max: int) -> None:
        self.pool = PortPool(rtp_port_min, rtp_port_max)
        relay_module = accel.load("relay")
        self.implementation = accel.implementation()
        # two sessions (RTP, RTCP) per stream and two port pairs per stream: one
        # session per pair of the range is the most that can ever be open
        self.relay = relay_module.Relay((rtp_port_max - rtp_port_min) // 2 + 1)
        self._thread: threading.Thread | None = None
        self._running = False

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="media-relay", daemon=True)
        self._thread.start()
        log.info("media relay running (%s build), RTP ports %d-%d",
                 self.implementation, self.pool.low, self.pool.high)

    def stop(self) -> None:
        self._running = False
        self.relay.stop()
        if self._thread is not None:
            self._thread.join(2)
        self.relay.close()
        self.pool.close()

    def _run(self) -> None:
        while self._running:
            try:
                # relay until stop() without coming back for the GIL: next to the busy
                # engine thread each reacquisition could cost the 5 ms switch interval
                self.relay.run(100, duration_ms=-1)
            except Exception:
                log.exception("relay loop failed")
                time.sleep(0.1)

    def open_call(self, host: str) -> CallMedia:
        """Media for a new call; ``host`` is our address as the phones see it."""
        return CallMedia(self, host)

    def _open_stream(self, host: str) -> _Stream:
        a = self.pool.allocate(host)
        try:
            b = self.pool.allocate(host)
        except RuntimeError:
            self.pool.release(a)
            raise
        rtp_sid = self.relay.add_session(a.rtp.fileno(), b.rtp.fileno())
        rtcp_sid = self.relay.add_session(a.rtcp.fileno(), b.rtcp.fileno())
        return _Stream(a, b, rtp_sid, rtcp_sid)

    def _close_stream(self, stream: _Stream) -> None:
        for sid in (stream.rtp_sid, stream.rtcp_sid):
            if sid is not None:
                try:
                    self.relay.remove_session(sid)
                except KeyError:
                    pass
        self.pool.release(stream.a)
        self.pool.release(stream.b)
