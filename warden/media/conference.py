"""Conference rooms: participants' RTP in, mix-minus G.711 out every 20 ms.

One thread serves every room: it reads RTP from each participant's socket
(latching onto the address the phone really sends from), pushes payloads
into the room's mixer (``warden_ext.mixer`` or its pure twin) and, on a
steady 20 ms clock, sends each participant everyone else's audio. The B2BUA
adds and removes participants from the engine thread; a lock guards the
table and each room is only ever mixed on this thread.
"""

from __future__ import annotations

import logging
import secrets
import selectors
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..sip.sdp import parse_sdp
from . import accel
from .anchor import PortPool, SocketPair

__all__ = ["ConferenceBridge", "Participant", "PAYLOAD_TYPES", "answer", "negotiate"]

log = logging.getLogger("warden.conference")

PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}
_TICK = 0.020
_RTP_HEADER = struct.Struct("!BBHII")


@dataclass(eq=False)
class Participant:
    """One phone in a room."""

    id: int
    room: str
    codec: str
    pair: SocketPair
    peer: tuple[str, int] | None
    """Where to send: from its SDP, then latched to its real source."""
    dtmf_pt: int = 101
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    seq: int = field(default_factory=lambda: secrets.randbits(16))
    timestamp: int = field(default_factory=lambda: secrets.randbits(32))
    latched: bool = False
    packets_in: int = 0
    packets_out: int = 0
    last_seen: float | None = None


class ConferenceBridge:
    """Every room of the PBX, mixed on one thread with a steady clock."""

    def __init__(self, pool: PortPool, rooms: tuple[str, ...]) -> None:
        self.pool = pool
        self.room_numbers = set(rooms)
        self._mixer = accel.load("mixer")
        self.implementation = accel.implementation()
        self._rooms: dict[str, Any] = {}
        self._participants: dict[int, Participant] = {}
        self._by_fd: dict[int, Participant] = {}
        self._lock = threading.Lock()
        self._next_id = 1
        self._selector = selectors.DefaultSelector()
        self._running = False
        self._thread: threading.Thread | None = None
        self._pending: list[tuple[str, Participant]] = []

    def is_room(self, number: str) -> bool:
        return number in self.room_numbers

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="conference", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(2)
        for p in list(self._participants.values()):
            self.pool.release(p.pair)
        self._participants.clear()
        self._selector.close()

    # -- called from the engine thread ------------------------------------------------

    def join(self, room: str, codec: str, host: str, peer: tuple[str, int] | None, dtmf_pt: int = 101) -> Participant:
        """Add a participant; returns it with the port to put in our SDP answer."""
        if codec not in PAYLOAD_TYPES:
            raise ValueError(f"conference needs PCMU or PCMA, not {codec}")
        pair = self.pool.allocate(host)
        with self._lock:
            pid = self._next_id
            self._next_id += 1
            participant = Participant(pid, room, codec, pair, peer, dtmf_pt)
            self._participants[pid] = participant
            self._pending.append(("join", participant))
        log.info("room %s: participant %d joined (%s)", room, pid, codec)
        return participant

    def leave(self, participant: Participant) -> None:
        with self._lock:
            if self._participants.pop(participant.id, None) is None:
                return
            self._pending.append(("leave", participant))
        log.info("room %s: participant %d left", participant.room, participant.id)

    def last_activity(self, participant: Participant) -> float | None:
        return participant.last_seen

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            out: dict[str, list[dict[str, Any]]] = {}
            for p in self._participants.values():
                out.setdefault(p.room, []).append({"id": p.id, "codec": p.codec, "port": p.pair.port,
                                                   "packets_in": p.packets_in, "packets_out": p.packets_out})
            return out

    # -- the media thread ---------------------------------------------------------------

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for op, p in pending:
            room = self._rooms.get(p.room)
            if op == "join":
                if room is None:
                    room = self._rooms[p.room] = self._mixer.Room(64)
                room.add(p.id, p.codec, p.dtmf_pt)
                self._by_fd[p.pair.rtp.fileno()] = p
                self._selector.register(p.pair.rtp, selectors.EVENT_READ, p)
            else:
                if room is not None and p.id in room:
                    room.remove(p.id)
                    if len(room) == 0:
                        del self._rooms[p.room]
                try:
                    self._selector.unregister(p.pair.rtp)
                except (KeyError, ValueError):
                    pass
                self._by_fd.pop(p.pair.rtp.fileno(), None)
                self.pool.release(p.pair)

    def _run(self) -> None:
        next_tick = time.monotonic() + _TICK
        while self._running:
            try:
                self._apply_pending()
                timeout = max(0.0, next_tick - time.monotonic())
                if self._by_fd:
                    for key, _ in self._selector.select(timeout):
                        self._receive(key.data)
                else:
                    time.sleep(timeout)
                now = time.monotonic()
                if now >= next_tick:
                    self._tick()
                    next_tick += _TICK
                    if now - next_tick > 0.2:  # fell far behind (suspended?): resynchronise
                        next_tick = now + _TICK
            except Exception:
                log.exception("conference loop failed")
                time.sleep(_TICK)

    def _receive(self, p: Participant) -> None:
        room = self._rooms.get(p.room)
        for _ in range(16):
            try:
                data, source = p.pair.rtp.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            if p.latched and p.peer is not None and (source[0], source[1]) != p.peer:
                continue  # latched: nobody else may feed this participant's audio
            if not p.latched:
                p.peer, p.latched = (source[0], source[1]), True
            first, marker_pt, seq, ts, _ssrc = _RTP_HEADER.unpack_from(data)
            offset = 12 + 4 * (first & 0x0F)
            if first & 0x10 and len(data) >= offset + 4:  # header extension
                offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
            payload = data[offset:]
            if first & 0x20 and payload:  # padding
                payload = payload[:-payload[-1]]
            p.packets_in += 1
            p.last_seen = time.monotonic()
            if room is None:
                continue
            try:
                room.push(p.id, seq, ts, marker_pt & 0x7F, payload)
            except ValueError:
                pass  # e.g. a 30 ms packet: not mixable, counted by nobody

    def _tick(self) -> None:
        for room in self._rooms.values():
            frames = room.mix()
            for pid, frame in frames.items():
                p = self._participants.get(pid)
                if p is None or p.peer is None:
                    continue
                header = _RTP_HEADER.pack(0x80, PAYLOAD_TYPES[p.codec], p.seq, p.timestamp, p.ssrc)
                p.seq = (p.seq + 1) & 0xFFFF
                p.timestamp = (p.timestamp + 160) & 0xFFFFFFFF
                try:
                    p.pair.rtp.sendto(header + frame, p.peer)
                    p.packets_out += 1
                except OSError:
                    pass
            for pid, digit, _ts in room.dtmf_events():
                log.info("participant %d pressed %s", pid, digit)



def negotiate(offer: bytes) -> tuple[str, int, tuple[str, int] | None]:
    """(codec, telephone-event payload type, peer address) for a room participant.

    The room speaks G.711 only: the first of PCMU/PCMA in the offer's audio
    line wins. ValueError (the B2BUA answers 488) when neither is offered.
    """
    sdp = parse_sdp(offer)
    for media in sdp.media:
        if media.media != "audio" or media.port == 0:
            continue
        codec = next((name for fmt in media.formats for name, pt in PAYLOAD_TYPES.items() if fmt == str(pt)), None)
        if codec is None:
            raise ValueError("the conference needs PCMU or PCMA")
        dtmf = next((pt for pt, m in media.rtpmap.items() if m.encoding.lower() == "telephone-event"), 101)
        conn = sdp.connection_of(media)
        peer = (conn.host, media.port) if conn is not None and conn.host not in ("0.0.0.0", "::") else None
        return codec, dtmf, peer
    raise ValueError("no audio stream offered")


def answer(host: str, port: int, codec: str, dtmf_pt: int) -> bytes:
    """Our SDP answer for a room participant."""
    addrtype = "IP6" if ":" in host else "IP4"
    pt = PAYLOAD_TYPES[codec]
    session = secrets.randbits(31)
    lines = [
        "v=0", f"o=warden {session} {session} IN {addrtype} {host}", "s=Warden conference",
        f"c=IN {addrtype} {host}", "t=0 0", f"m=audio {port} RTP/AVP {pt} {dtmf_pt}",
        f"a=rtpmap:{pt} {codec}/8000", f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} 0-15",
        "a=ptime:20", "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()
