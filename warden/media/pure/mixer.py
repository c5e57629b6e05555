"""Conference mixer DSP core (sans-I/O), pure Python.

Twin of the compiled ``warden_ext.mixer``: same API, byte-identical output
and counters for the same calls, used when ``WARDEN_NO_EXTENSIONS`` is set.
See ``warden_ext/mixer.pyi`` for the contract; the strategy notes below are
the same in both.

Strategy, jitter buffer: each participant owns a ring of ``jitter_frames``
(D) slots. Frames are placed by RTP *timestamp*, not sequence number: RFC
4733 telephone-event packets take sequence numbers from the same stream,
and silence suppression leaves gaps in timestamps only, so the timestamp is
the one that says when a frame plays. The first frame is placed D - 1 ticks
ahead of the playout point (the buffering delay), so a frame arriving up to
D - 1 ticks late or out of order still plays. Each tick (``mix``) plays the
slot at the playout point, or silence if it is empty, and advances one
frame whatever happened: wall-clock time moves on during loss and silence.
A frame behind the playout point is dropped as late, unless the buffer is
empty (the sender's clock is slower than ours, or it resumed after a
pause): then, or on a jump back of ``MAX_MISORDER`` frames or more (a
restarted sender), the buffer restarts on that frame. A frame beyond the
ring pushes the playout point forward, discarding the oldest frames, which
bounds the delay when the sender's clock runs fast.

Strategy, mixing: every contribution is decoded to 16-bit linear and summed
in wide integers; each participant gets the sum minus their own
contribution, saturated to int16 and encoded in their own codec. A
participant who contributed nothing hears the plain sum, which is encoded
once per codec and shared. Here the per-sample work is done by ``map`` over
lookup tables (C-level iteration, no Python loop per sample).
"""

from __future__ import annotations

import operator
import struct
from collections import deque
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import TYPE_CHECKING

from warden.media.pure import g711 as _g711

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "FRAME_SAMPLES",
    "MAX_DTMF_EVENTS",
    "MAX_JITTER_FRAMES",
    "MAX_MISORDER",
    "MAX_PARTICIPANTS",
    "Room",
    "mix_rooms",
]

FRAME_SAMPLES = 160
"""Samples in one 20 ms G.711 frame: the payload size ``push`` accepts."""
MAX_PARTICIPANTS = 65535
"""Largest ``max_participants``: the sum of that many int16 fits an int32."""
MAX_JITTER_FRAMES = 16
"""Largest ``jitter_frames``."""
MAX_MISORDER = 100
"""A frame this many frames (2 s) or more behind the playout point restarts
the buffer rather than being dropped as late (RFC 3550 A.1's bound)."""
MAX_DTMF_EVENTS = 256
"""DTMF events a room queues before the oldest are dropped."""

# Codec name -> (law index, static RTP payload type, RFC 3551).
_CODECS = {"PCMU": (0, 0), "PCMA": (1, 8)}
# RFC 4733 event codes 0-15 are the DTMF digits.
_DIGITS = "0123456789*#ABCD"
_MASK32 = 0xFFFFFFFF
_INT16_MAX = 32767
_INT16_MIN = -32768


def _decode_table(decode: Callable[[bytes], bytes]) -> tuple[int, ...]:
    """Linear sample of every code."""
    samples: tuple[int, ...] = struct.unpack("<256h", decode(bytes(range(256))))
    return samples


def _encode_table(encode: Callable[[bytes], bytes]) -> bytes:
    """Code for every sample, indexed by the sample's 16-bit pattern.

    So ``table[v]`` is the code of ``v`` for any int16 ``v``: a negative
    index counts from the end, exactly where its pattern lies.
    """
    return encode(struct.pack("<65536H", *range(65536)))


# Indexed by law: 0 mu-law, 1 A-law.
_DECODE = (_decode_table(_g711.ulaw_decode), _decode_table(_g711.alaw_decode))
_ENCODE = (_encode_table(_g711.ulaw_encode), _encode_table(_g711.alaw_encode))
_ZEROS = (0,) * FRAME_SAMPLES
_HIGH = repeat(_INT16_MAX)
_LOW = repeat(_INT16_MIN)


def _encode(samples: Iterable[int], law: int) -> bytes:
    """Saturate to int16 and encode with ``law``'s table."""
    clipped = map(max, map(min, samples, _HIGH), _LOW)
    return bytes(map(_ENCODE[law].__getitem__, clipped))


def _index(value: object, name: str) -> int:
    """``value`` as an int (TypeError if it is not an integer)."""
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"Room: {name} must be an integer, got {type(value).__name__}"
        ) from None


def _ranged(value: object, name: str, low: int, high: int, where: str) -> int:
    number = _index(value, name)
    if not low <= number <= high:
        raise ValueError(f"{where}: {name} {number} is out of range {low}..{high}")
    return number


class _Participant:
    """One member: codec, jitter buffer ring and counters."""

    __slots__ = (
        "audio_pt",
        "concealed",
        "count",
        "dtmf",
        "dtmf_pt",
        "duplicate",
        "frames",
        "has_event",
        "head",
        "ignored",
        "last_event_ts",
        "late",
        "law",
        "next_ts",
        "overflow",
        "own",
        "pid",
        "played",
        "received",
        "restarts",
        "started",
    )

    def __init__(self, pid: int, law: int, audio_pt: int, dtmf_pt: int, depth: int):
        self.pid = pid
        self.law = law
        self.audio_pt = audio_pt
        self.dtmf_pt = dtmf_pt
        self.started = False
        self.next_ts = 0
        self.head = 0
        self.count = 0
        self.frames: list[bytes | None] = [None] * depth
        self.own: list[int] | None = None
        self.has_event = False
        self.last_event_ts = 0
        self.received = 0
        self.played = 0
        self.concealed = 0
        self.late = 0
        self.duplicate = 0
        self.overflow = 0
        self.restarts = 0
        self.ignored = 0
        self.dtmf = 0


class Room:
    """One conference room: jitter buffers in, mix-minus G.711 frames out.

    Sans-I/O: the caller pushes each participant's RTP payloads as they
    arrive and calls ``mix`` once per 20 ms tick of its own steady clock.

    Use a room from one thread (the engine's); the compiled twin raises
    RuntimeError for a call made while another thread mixes the room.
    """

    frame_samples = FRAME_SAMPLES

    def __init__(self, max_participants: int = 64, jitter_frames: int = 3) -> None:
        self._capacity = _ranged(
            max_participants, "max_participants", 1, MAX_PARTICIPANTS, "Room"
        )
        self._depth = _ranged(
            jitter_frames, "jitter_frames", 1, MAX_JITTER_FRAMES, "Room"
        )
        self._parts: list[_Participant | None] = [None] * self._capacity
        self._slots: dict[int, int] = {}
        self._events: deque[tuple[int, str, int]] = deque(maxlen=MAX_DTMF_EVENTS)

    @property
    def max_participants(self) -> int:
        """Participants the room can hold."""
        return self._capacity

    @property
    def jitter_frames(self) -> int:
        """Frames each jitter buffer holds (its delay is one less)."""
        return self._depth

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, pid: object) -> bool:
        return pid in self._slots

    def add(self, pid: int, codec: str, dtmf_pt: int = 101) -> None:
        """Add participant ``pid`` sending and receiving ``codec``.

        ``codec`` is "PCMU" or "PCMA" (any case); ``dtmf_pt`` is the RTP
        payload type negotiated for RFC 4733 telephone-event. Raises
        ValueError for an unknown codec, a payload type out of 0..127 or
        equal to the codec's, a pid already present, or a full room.
        """
        key = codec.upper() if isinstance(codec, str) else codec
        if key not in _CODECS:
            raise ValueError(
                f"Room.add: codec {codec!r} is not supported; expected 'PCMU' or 'PCMA'"
            )
        law, audio_pt = _CODECS[key]
        dtmf = _ranged(dtmf_pt, "dtmf_pt", 0, 127, "Room.add")
        if dtmf == audio_pt:
            raise ValueError(f"Room.add: dtmf_pt {dtmf} is {key}'s own payload type")
        if pid in self._slots:
            raise ValueError(f"Room.add: participant {pid!r} is already in the room")
        if len(self._slots) >= self._capacity:
            raise ValueError(f"Room.add: room is full ({self._capacity} participants)")
        slot = self._parts.index(None)
        self._parts[slot] = _Participant(pid, law, audio_pt, dtmf, self._depth)
        self._slots[pid] = slot

    def remove(self, pid: int) -> None:
        """Remove participant ``pid`` (KeyError if absent)."""
        slot = self._slots.pop(pid)
        self._parts[slot] = None

    def _participant(self, pid: int) -> _Participant:
        part = self._parts[self._slots[pid]]
        assert part is not None
        return part

    def push(
        self,
        pid: int,
        seq: int,
        timestamp: int,
        payload_type: int,
        payload: Buffer,
    ) -> None:
        """Queue one RTP packet's payload from participant ``pid``.

        Audio (the codec's static payload type) must be one 20 ms frame of
        ``FRAME_SAMPLES`` bytes; it goes to the jitter buffer. A packet of
        the participant's ``dtmf_pt`` is an RFC 4733 event: never mixed, its
        digit is queued once per event for ``dtmf_events``. Other payload
        types (comfort noise, ...) are counted and ignored. ``seq`` is
        checked but frames are ordered by ``timestamp`` (see the module
        notes). Raises KeyError for an unknown pid and ValueError for a
        field out of range or a payload of the wrong size.
        """
        part = self._participant(pid)
        _ranged(seq, "seq", 0, 0xFFFF, "Room.push")
        ts = _ranged(timestamp, "timestamp", 0, _MASK32, "Room.push")
        pt = _ranged(payload_type, "payload_type", 0, 127, "Room.push")
        if pt == part.dtmf_pt:
            self._push_event(part, ts, payload)
        elif pt == part.audio_pt:
            with memoryview(payload) as view, view.cast("B") as raw:
                if raw.nbytes != FRAME_SAMPLES:
                    raise ValueError(
                        f"Room.push: audio payload of {raw.nbytes} bytes from "
                        f"participant {pid!r}; expected {FRAME_SAMPLES} (20 ms)"
                    )
                self._place(part, ts, raw.tobytes())
        else:
            part.ignored += 1

    def _push_event(self, part: _Participant, ts: int, payload: Buffer) -> None:
        with memoryview(payload) as view, view.cast("B") as raw:
            if raw.nbytes < 4:
                raise ValueError(
                    f"Room.push: telephone-event payload of {raw.nbytes} bytes "
                    f"from participant {part.pid!r}; expected at least 4"
                )
            event = raw[0]
        if event >= len(_DIGITS):
            part.ignored += 1
            return
        # Every packet of one event (updates, the three end packets) carries
        # the event's start timestamp: report a timestamp newer than the last.
        if part.has_event:
            age = ((ts - part.last_event_ts + 0x80000000) & _MASK32) - 0x80000000
            if age <= 0:
                return
        part.has_event = True
        part.last_event_ts = ts
        part.dtmf += 1
        self._events.append((part.pid, _DIGITS[event], ts))

    def _restart(self, part: _Participant, ts: int) -> None:
        if part.started:
            part.restarts += 1
            part.overflow += part.count
        part.started = True
        part.frames = [None] * self._depth
        part.count = 0
        part.head = 0
        part.next_ts = (ts - (self._depth - 1) * FRAME_SAMPLES) & _MASK32

    def _place(self, part: _Participant, ts: int, frame: bytes) -> None:
        depth = self._depth
        if not part.started:
            self._restart(part, ts)
        diff = ((ts - part.next_ts + 0x80000000) & _MASK32) - 0x80000000
        if diff < 0:
            if part.count and diff > -MAX_MISORDER * FRAME_SAMPLES:
                part.late += 1
                return
            self._restart(part, ts)
            ahead = depth - 1
        else:
            ahead = diff // FRAME_SAMPLES
            if ahead >= depth:
                advance = ahead - (depth - 1)
                if advance >= depth:
                    self._restart(part, ts)
                else:
                    for _ in range(advance):
                        if part.frames[part.head] is not None:
                            part.frames[part.head] = None
                            part.count -= 1
                            part.overflow += 1
                        part.head = (part.head + 1) % depth
                        part.next_ts = (part.next_ts + FRAME_SAMPLES) & _MASK32
                ahead = depth - 1
        slot = (part.head + ahead) % depth
        if part.frames[slot] is not None:
            part.duplicate += 1
            return
        part.frames[slot] = frame
        part.count += 1
        part.received += 1

    def _take(self) -> list[list[int]]:
        """Advance every buffer one frame; return the decoded contributions."""
        contributions = []
        for part in self._parts:
            if part is None:
                continue
            part.own = None
            if not part.started:
                continue
            frame = part.frames[part.head]
            if frame is not None:
                part.own = list(map(_DECODE[part.law].__getitem__, frame))
                contributions.append(part.own)
                part.frames[part.head] = None
                part.count -= 1
                part.played += 1
            else:
                part.concealed += 1
            part.head = (part.head + 1) % self._depth
            part.next_ts = (part.next_ts + FRAME_SAMPLES) & _MASK32
        return contributions

    def _outputs(self, contributions: list[list[int]]) -> dict[int, bytes]:
        if not contributions:
            total: list[int] | tuple[int, ...] = _ZEROS
        elif len(contributions) == 1:
            total = contributions[0]
        else:
            total = list(map(sum, zip(*contributions)))
        outputs = {}
        plain: list[bytes | None] = [None, None]
        for part in self._parts:
            if part is None:
                continue
            if part.own is None:
                code = plain[part.law]
                if code is None:
                    code = plain[part.law] = _encode(total, part.law)
            else:
                code = _encode(map(operator.sub, total, part.own), part.law)
            outputs[part.pid] = code
        return outputs

    def mix(self) -> dict[int, bytes]:
        """One 20 ms tick: each participant's mix-minus frame, by pid.

        Takes one frame from every jitter buffer (silence if none) and
        returns, for every participant, ``FRAME_SAMPLES`` bytes in their
        codec: the sum of everyone else, saturated to int16.
        """
        return self._outputs(self._take())

    def dtmf_events(self) -> list[tuple[int, str, int]]:
        """Return and clear the queued DTMF events as (pid, digit, timestamp).

        ``digit`` is one of "0123456789*#ABCD"; ``timestamp`` is the event's
        RTP timestamp (its start). Oldest first; at most ``MAX_DTMF_EVENTS``.
        """
        events = list(self._events)
        self._events.clear()
        return events

    def stats(self, pid: int) -> dict[str, int]:
        """Counters of participant ``pid`` (KeyError if absent).

        received: audio frames buffered; played: frames mixed; concealed:
        ticks of silence once buffering began (the initial delay and each
        restart's included); late and duplicate: frames
        dropped as such; overflow: frames discarded unplayed (buffer full or
        restarted); restarts: buffer restarts; ignored: packets of another
        payload type or a non-DTMF event; dtmf: events reported.
        """
        part = self._participant(pid)
        return {
            "received": part.received,
            "played": part.played,
            "concealed": part.concealed,
            "late": part.late,
            "duplicate": part.duplicate,
            "overflow": part.overflow,
            "restarts": part.restarts,
            "ignored": part.ignored,
            "dtmf": part.dtmf,
        }


def mix_rooms(rooms: Iterable[Room]) -> list[dict[int, bytes]]:
    """``[room.mix() for room in rooms]``, for the tick of a whole process.

    The compiled twin mixes all rooms in one release of the GIL. Raises
    TypeError for an item that is not a Room and ValueError if a room is
    listed twice; either way no room is mixed.
    """
    batch = list(rooms)
    for room in batch:
        if not isinstance(room, Room):
            raise TypeError(f"mix_rooms: expected Room, got {type(room).__name__}")
    if len({id(room) for room in batch}) != len(batch):
        raise ValueError("mix_rooms: a room is listed twice")
    return [room.mix() for room in batch]
