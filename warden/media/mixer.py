"""Conference mixer DSP core, compiled or pure as ``accel`` decides.

The choice is made once, when this module is first imported; see
``warden_ext/mixer.pyi`` for the contract both implementations keep.
"""

from __future__ import annotations

from warden.media.accel import load

__all__ = [
    "FRAME_SAMPLES",
    "MAX_DTMF_EVENTS",
    "MAX_JITTER_FRAMES",
    "MAX_MISORDER",
    "MAX_PARTICIPANTS",
    "Room",
    "mix_rooms",
]

_impl = load("mixer")

Room = _impl.Room
mix_rooms = _impl.mix_rooms
FRAME_SAMPLES: int = _impl.FRAME_SAMPLES
MAX_PARTICIPANTS: int = _impl.MAX_PARTICIPANTS
MAX_JITTER_FRAMES: int = _impl.MAX_JITTER_FRAMES
MAX_MISORDER: int = _impl.MAX_MISORDER
MAX_DTMF_EVENTS: int = _impl.MAX_DTMF_EVENTS
