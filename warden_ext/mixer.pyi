"""Stub for the compiled conference mixer (mixer.pyx); pure twin: warden.media.pure.mixer."""

from collections.abc import Iterable
from typing import ClassVar

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

FRAME_SAMPLES: int
"""Samples in one 20 ms G.711 frame (160): the payload size push accepts."""
MAX_PARTICIPANTS: int
"""Largest max_participants (65535: their int16 sum fits an int32)."""
MAX_JITTER_FRAMES: int
"""Largest jitter_frames (16)."""
MAX_MISORDER: int
"""Frames (100) behind the playout point from which a frame restarts the buffer."""
MAX_DTMF_EVENTS: int
"""DTMF events (256) a room queues before the oldest are dropped."""

class Room:
    """One conference room: jitter buffers in, mix-minus G.711 frames out.

    Sans-I/O: the caller pushes each participant's RTP payloads as they
    arrive and calls mix() once per 20 ms tick of its own steady clock.

    Use a room from one thread (the engine's): mix() may run without the
    GIL, and a call on the same room from another thread meanwhile raises
    RuntimeError rather than race.
    """

    frame_samples: ClassVar[int]

    def __init__(self, max_participants: int = 64, jitter_frames: int = 3) -> None:
        """ValueError if max_participants is out of 1..MAX_PARTICIPANTS or
        jitter_frames out of 1..MAX_JITTER_FRAMES; TypeError if not integers."""

    @property
    def max_participants(self) -> int: ...
    @property
    def jitter_frames(self) -> int:
        """Frames each jitter buffer holds; a frame plays jitter_frames - 1
        ticks after arriving on time, so it may be that late or misordered."""

    def __len__(self) -> int: ...
    def __contains__(self, pid: object) -> bool: ...
    def add(self, pid: int, codec: str, dtmf_pt: int = 101) -> None:
        """Add a participant sending and receiving codec ("PCMU" or "PCMA",
        any case). ValueError: unknown codec, dtmf_pt out of 0..127 or equal
        to the codec's payload type, pid already present, room full."""

    def remove(self, pid: int) -> None:
        """Remove a participant; KeyError if absent."""

    def push(
        self, pid: int, seq: int, timestamp: int, payload_type: int, payload: Buffer
    ) -> None:
        """Queue one RTP packet's payload. Audio (PT 0 for PCMU, 8 for PCMA)
        must be FRAME_SAMPLES bytes and is placed by timestamp in the jitter
        buffer; dtmf_pt packets (RFC 4733) are reported by dtmf_events() and
        never mixed; other payload types are counted as ignored. KeyError:
        unknown pid; ValueError: field out of range, wrong payload size."""

    def mix(self) -> dict[int, bytes]:
        """One 20 ms tick: every participant's frame (FRAME_SAMPLES bytes in
        their codec) of everyone else's audio, saturated to int16."""

    def dtmf_events(self) -> list[tuple[int, str, int]]:
        """Return and clear the queued (pid, digit, event timestamp) tuples;
        digit is one of "0123456789*#ABCD"."""

    def stats(self, pid: int) -> dict[str, int]:
        """Counters: received, played, concealed, late, duplicate, overflow,
        restarts, ignored, dtmf. KeyError if absent."""

def mix_rooms(rooms: Iterable[Room]) -> list[dict[int, bytes]]:
    """[room.mix() for room in rooms], with the GIL released once per batch of
    rooms. TypeError for a non-Room, ValueError for a room listed twice."""
