"""Conference mixer: compiled (warden_ext.mixer) and pure (warden.media.pure.mixer).

Both implementations are imported directly, so both are tested whatever
WARDEN_NO_EXTENSIONS says; in pure mode a compiled module that was not built
is skipped instead of failing. Expected outputs come from ``_reference_mix``,
a per-sample loop written from the definition (decode, sum the others,
saturate, encode), and from Goertzel filters on the decoded audio.
"""

from __future__ import annotations

import importlib
import math
import os
import random
import struct
import threading
from collections.abc import Callable, Iterator
from functools import partial
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import warden.media.pure.mixer as pure_mixer
from warden.media import accel
from warden.media.pure import g711

RATE = 8000
FRAME = 160
MASK32 = 0xFFFFFFFF
LAW = {
    "PCMU": (g711.ulaw_decode, g711.ulaw_encode, 0),
    "PCMA": (g711.alaw_decode, g711.alaw_encode, 8),
}
SILENCE = {"PCMU": b"\xff" * FRAME, "PCMA": b"\xd5" * FRAME}


def _pure_mode() -> bool:
    return os.environ.get("WARDEN_NO_EXTENSIONS", "") not in ("", "0")


def _compiled() -> ModuleType:
    if _pure_mode():
        module: ModuleType = pytest.importorskip(
            "warden_ext.mixer", reason="extension not built (pure mode)"
        )
        return module
    return importlib.import_module("warden_ext.mixer")


@pytest.fixture(params=["compiled", "pure"])
def mixer(request: pytest.FixtureRequest) -> ModuleType:
    return _compiled() if request.param == "compiled" else pure_mixer


# -- signals and references -------------------------------------------------------


def _samples(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def _pcm(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def decode(codec: str, codes: bytes) -> list[int]:
    return _samples(LAW[codec][0](codes))


def encode(codec: str, samples: list[int]) -> bytes:
    return bytes(LAW[codec][1](_pcm(samples)))


def tone(freq: float, amplitude: float, frame: int, phase: float = 0.0) -> list[int]:
    """Samples of frame number ``frame`` of a continuous sine."""
    start = frame * FRAME
    return [
        round(amplitude * math.sin(2 * math.pi * freq * (start + i) / RATE + phase))
        for i in range(FRAME)
    ]


def goertzel(samples: list[int], freq: float) -> float:
    """Amplitude of the ``freq`` component (a full-scale sine of A gives A)."""
    coeff = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / len(samples)


def _reference_mix(
    frames: dict[int, tuple[str, bytes | None]],
) -> dict[int, bytes]:
    """One tick from the definition: pid -> (codec, codes or None for silence)."""
    decoded = {
        pid: decode(codec, codes) if codes is not None else [0] * FRAME
        for pid, (codec, codes) in frames.items()
    }
    out = {}
    for pid, (codec, _) in frames.items():
        mixed = []
        for i in range(FRAME):
            value = sum(d[i] for other, d in decoded.items() if other != pid)
            mixed.append(max(-32768, min(32767, value)))
        out[pid] = encode(codec, mixed)
    return out


class Sender:
    """An RTP sender: sequence and timestamp advance one 20 ms frame a packet."""

    def __init__(
        self, room: Any, pid: int, codec: str, seq: int = 1000, ts: int = 5000
    ):
        self.room, self.pid, self.codec = room, pid, codec
        self.pt = LAW[codec][2]
        self.seq0, self.ts0 = seq, ts

    def ts(self, frame: int) -> int:
        return (self.ts0 + frame * FRAME) & MASK32

    def push(self, frame: int, payload: bytes, seq: int | None = None) -> None:
        seq = (self.seq0 + frame) & 0xFFFF if seq is None else seq
        self.room.push(self.pid, seq, self.ts(frame), self.pt, payload)


def _room(mixer: ModuleType, codecs: dict[int, str], **kw: int) -> Any:
    room = mixer.Room(**kw)
    for pid, codec in codecs.items():
        room.add(pid, codec)
    return room


# -- API basics -----------------------------------------------------------------


def test_constants(mixer: ModuleType) -> None:
    assert mixer.FRAME_SAMPLES == 160
    assert mixer.Room.frame_samples == 160
    assert mixer.Room().frame_samples == 160
    assert mixer.MAX_PARTICIPANTS == 65535
    room = mixer.Room()
    assert (room.max_participants, room.jitter_frames) == (64, 3)
    assert set(mixer.__all__) == set(pure_mixer.__all__)


def test_empty_room_mixes_nothing(mixer: ModuleType) -> None:
    assert mixer.Room().mix() == {}
    assert len(mixer.Room()) == 0


def test_add_remove_and_membership(mixer: ModuleType) -> None:
    room = mixer.Room(max_participants=2)
    room.add(7, "PCMU")
    room.add(9, "pcma")
    assert len(room) == 2 and 7 in room and 9 in room and 8 not in room
    with pytest.raises(
        ValueError, match=r"^Room.add: participant 7 is already in the room$"
    ):
        room.add(7, "PCMU")
    with pytest.raises(
        ValueError, match=r"^Room.add: room is full \(2 participants\)$"
    ):
        room.add(8, "PCMU")
    room.remove(7)
    assert 7 not in room and len(room) == 1
    with pytest.raises(KeyError):
        room.remove(7)
    room.add(8, "PCMU")
    assert set(room.mix()) == {8, 9}


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (
            (1, "G722"),
            ValueError,
            r"^Room.add: codec 'G722' is not supported; expected 'PCMU' or 'PCMA'$",
        ),
        (
            (1, "PCMU", 128),
            ValueError,
            r"^Room.add: dtmf_pt 128 is out of range 0..127$",
        ),
        (
            (1, "PCMU", 0),
            ValueError,
            r"^Room.add: dtmf_pt 0 is PCMU's own payload type$",
        ),
        (
            (1, "PCMA", 8),
            ValueError,
            r"^Room.add: dtmf_pt 8 is PCMA's own payload type$",
        ),
        ((1, "PCMU", "101"), TypeError, r"^Room: dtmf_pt must be an integer, got str$"),
    ],
)
def test_add_rejects(
    mixer: ModuleType, args: tuple[Any, ...], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        mixer.Room().add(*args)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"max_participants": 0},
            ValueError,
            r"^Room: max_participants 0 is out of range 1..65535$",
        ),
        (
            {"max_participants": 65536},
            ValueError,
            r"max_participants 65536 is out of range",
        ),
        (
            {"jitter_frames": 0},
            ValueError,
            r"^Room: jitter_frames 0 is out of range 1..16$",
        ),
        ({"jitter_frames": 17}, ValueError, r"jitter_frames 17 is out of range"),
        (
            {"max_participants": 2.0},
            TypeError,
            r"^Room: max_participants must be an integer, got float$",
        ),
    ],
)
def test_room_rejects(
    mixer: ModuleType, kwargs: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        mixer.Room(**kwargs)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((2, 0, 0, 0, bytes(160)), KeyError, "2"),
        (
            (1, 65536, 0, 0, bytes(160)),
            ValueError,
            r"^Room.push: seq 65536 is out of range 0..65535$",
        ),
        ((1, -1, 0, 0, bytes(160)), ValueError, r"^Room.push: seq -1 is out of range"),
        (
            (1, 0, 2**32, 0, bytes(160)),
            ValueError,
            r"^Room.push: timestamp 4294967296 is out of range 0..4294967295$",
        ),
        (
            (1, 0, 0, 128, bytes(160)),
            ValueError,
            r"^Room.push: payload_type 128 is out of range 0..127$",
        ),
        (
            (1, 0, 0, 0, bytes(159)),
            ValueError,
            r"^Room.push: audio payload of 159 bytes from participant 1; expected 160 \(20 ms\)$",
        ),
        ((1, 0, 0, 0, bytes(320)), ValueError, r"audio payload of 320 bytes"),
        (
            (1, 0, 0, 101, bytes(3)),
            ValueError,
            r"^Room.push: telephone-event payload of 3 bytes from participant 1; expected at least 4$",
        ),
        (
            (1, 0, 0.5, 0, bytes(160)),
            TypeError,
            r"^Room: timestamp must be an integer, got float$",
        ),
        ((1, 0, 0, 0, "x" * 160), TypeError, None),
    ],
)
def test_push_rejects(
    mixer: ModuleType, args: tuple[Any, ...], error: type, message: str | None
) -> None:
    room = _room(mixer, {1: "PCMU"})
    with pytest.raises(error, match=message):
        room.push(*args)
    assert room.stats(1)["received"] == 0


def test_push_accepts_bytes_like(mixer: ModuleType) -> None:
    room = _room(mixer, {1: "PCMU", 2: "PCMU"}, jitter_frames=1)
    frame = bytes(range(160))
    for ts, payload in enumerate(
        (bytearray(frame), memoryview(frame), memoryview(b"x" + frame)[1:])
    ):
        room.push(1, ts, ts * FRAME, 0, payload)
        assert room.mix()[2] == encode("PCMU", decode("PCMU", frame))
    buf = bytearray(frame)
    room.push(1, 9, 9 * FRAME, 0, buf)
    buf.extend(b"\x00")  # BufferError if a view were still exported


# -- mix-minus ----------------------------------------------------------------------

TONES = {1: 400.0, 2: 700.0, 3: 1100.0}


@pytest.mark.parametrize(
    "codecs",
    [("PCMU", "PCMU", "PCMU"), ("PCMA", "PCMA", "PCMA"), ("PCMU", "PCMA", "PCMU")],
    ids=["ulaw", "alaw", "mixed"],
)
def test_three_tones_each_hears_the_others_not_itself(
    mixer: ModuleType, codecs: tuple[str, str, str]
) -> None:
    amplitude = 8000
    room = _room(mixer, dict(zip(TONES, codecs)))
    senders = {
        pid: Sender(room, pid, codec, seq=pid * 100, ts=pid * 7777)
        for pid, codec in zip(TONES, codecs)
    }
    heard: dict[int, list[int]] = {pid: [] for pid in TONES}
    ticks = 32
    for frame in range(ticks):
        sent = {}
        for pid, sender in senders.items():
            sent[pid] = encode(sender.codec, tone(TONES[pid], amplitude, frame))
            sender.push(frame, sent[pid])
        out = room.mix()
        assert set(out) == set(TONES)
        if frame >= 2:  # the jitter buffer plays frame - 2
            for pid, codes in out.items():
                assert len(codes) == FRAME
                heard[pid] += decode(senders[pid].codec, codes)
    for pid, samples in heard.items():
        assert len(samples) == (ticks - 2) * FRAME
        for other, freq in TONES.items():
            level = goertzel(samples, freq)
            if other == pid:
                # Only companding noise is left (intermodulation of the
                # other two lands here: 1100 - 700 = 400): below -34 dB.
                assert level < 0.02 * amplitude, (pid, freq, level)
            else:
                assert abs(level - amplitude) < 0.03 * amplitude, (pid, freq, level)


def test_output_matches_reference_mix(mixer: ModuleType) -> None:
    rng = random.Random(4733)
    codecs = {1: "PCMU", 2: "PCMA", 3: "PCMU", 4: "PCMA", 5: "PCMU"}
    room = _room(mixer, codecs, jitter_frames=1)
    senders = {pid: Sender(room, pid, codec) for pid, codec in codecs.items()}
    for frame in range(40):
        played: dict[int, tuple[str, bytes | None]] = {}
        for pid, sender in senders.items():
            # Loud random frames: sums of 4 others saturate often.
            codes = (
                bytes(rng.randrange(256) for _ in range(FRAME))
                if rng.random() < 0.8
                else None
            )
            if codes is not None:
                sender.push(frame, codes)
            played[pid] = (sender.codec, codes)
        assert room.mix() == _reference_mix(played)


def test_saturation_clips_and_never_wraps(mixer: ModuleType) -> None:
    room = _room(mixer, {1: "PCMU", 2: "PCMU", 3: "PCMU", 4: "PCMA"}, jitter_frames=1)
    codes = encode("PCMU", tone(50.0, 30000, 0))
    room.push(1, 0, 0, 0, codes)
    room.push(2, 0, 0, 0, codes)
    out = room.mix()
    level = decode("PCMU", codes)
    for pid in (3, 4):
        codec = "PCMU" if pid == 3 else "PCMA"
        heard = decode(codec, out[pid])
        table = decode(codec, bytes(range(256)))
        for value, x in zip(heard, level):
            total = 2 * x
            if total > 32767:
                assert value == max(table)
            elif total < -32768:
                assert value == min(table)
            if abs(total) > 1000:
                assert (value > 0) == (total > 0), "wrapped around"
        assert max(heard) == max(table) and min(heard) == min(table)
    # Each sender hears only the other one: no clipping there.
    assert out[1] == out[2] == encode("PCMU", level)


@pytest.mark.parametrize(("code", "expected"), [(0x80, 0x80), (0x00, 0x00)])
def test_saturation_at_full_scale_dc(
    mixer: ModuleType, code: int, expected: int
) -> None:
    # +-32124 twice: a wrapping int16 sum would give -+1288.
    room = _room(mixer, {1: "PCMU", 2: "PCMU", 3: "PCMU"}, jitter_frames=1)
    room.push(1, 0, 0, 0, bytes([code]) * FRAME)
    room.push(2, 0, 0, 0, bytes([code]) * FRAME)
    assert room.mix()[3] == bytes([expected]) * FRAME


def test_silent_participant_still_hears_the_others(mixer: ModuleType) -> None:
    room = _room(mixer, {1: "PCMU", 2: "PCMA", 3: "PCMU"})
    sender = Sender(room, 1, "PCMU")
    for frame in range(12):
        sender.push(frame, encode("PCMU", tone(400.0, 8000, frame)))
        out = room.mix()
        if frame < 2:
            assert out == {1: SILENCE["PCMU"], 2: SILENCE["PCMA"], 3: SILENCE["PCMU"]}
            continue
        played = encode("PCMU", tone(400.0, 8000, frame - 2))
        assert out[1] == SILENCE["PCMU"]
        assert out[3] == encode("PCMU", decode("PCMU", played))
        assert out[2] == encode("PCMA", decode("PCMU", played))
    assert room.stats(3) == dict.fromkeys(room.stats(3), 0)
    assert room.stats(1)["played"] == 10


def test_nobody_sending_gives_silence_in_each_codec(mixer: ModuleType) -> None:
    room = _room(mixer, {1: "PCMU", 2: "PCMA"})
    for _ in range(3):
        assert room.mix() == {1: SILENCE["PCMU"], 2: SILENCE["PCMA"]}


def test_removed_participant_is_no_longer_mixed(mixer: ModuleType) -> None:
    room = _room(mixer, {1: "PCMU", 2: "PCMU", 3: "PCMU"}, jitter_frames=1)
    room.push(1, 0, 0, 0, b"\x90" * FRAME)
    room.push(2, 0, 0, 0, b"\xa0" * FRAME)
    room.remove(1)
    out = room.mix()
    assert set(out) == {2, 3}
    assert out[3] == b"\xa0" * FRAME and out[2] == SILENCE["PCMU"]
    # A new participant in the freed place starts with an empty buffer.
    room.add(4, "PCMU")
    assert room.mix()[3] == SILENCE["PCMU"]


# -- jitter buffer ------------------------------------------------------------------

Script = list[list[int]]


def _marker(frame: int) -> bytes:
    """A recognisable frame: mu-law codes that survive decode/encode unchanged."""
    return bytes([0x10 + frame % 0x60]) * FRAME


def _play(
    mixer: ModuleType,
    script: Script,
    *,
    jitter_frames: int = 3,
    seq: int = 1000,
    ts: int = 5000,
) -> tuple[list[int | None], dict[str, int]]:
    """Push ``script[tick]``'s frames before each tick; what the listener heard."""
    room = _room(mixer, {1: "PCMU", 2: "PCMU"}, jitter_frames=jitter_frames)
    sender = Sender(room, 1, "PCMU", seq=seq, ts=ts)
    heard: list[int | None] = []
    for frames in script:
        for frame in frames:
            sender.push(frame, _marker(frame))
        codes = room.mix()[2]
        heard.append(None if codes == SILENCE["PCMU"] else codes[0] - 0x10)
    return heard, room.stats(1)


def test_jitter_in_order_plays_after_the_buffer_delay(mixer: ModuleType) -> None:
    heard, stats = _play(mixer, [[t] for t in range(8)])
    assert heard == [None, None, 0, 1, 2, 3, 4, 5]
    assert stats["received"] == 8 and stats["played"] == 6
    heard, _ = _play(mixer, [[t] for t in range(4)], jitter_frames=1)
    assert heard == [0, 1, 2, 3]


def test_jitter_reorders_within_the_window(mixer: ModuleType) -> None:
    # Frame 1 arrives after frame 2, frame 4 after frame 5, each a tick late.
    script = [[0], [], [2, 1], [3], [], [5, 4], [6], [7], [], [], []]
    heard, stats = _play(mixer, script)
    assert heard == [None, None, 0, 1, 2, 3, 4, 5, 6, 7, None]
    assert stats["late"] == stats["duplicate"] == stats["overflow"] == 0


def test_jitter_conceals_a_lost_frame_with_silence(mixer: ModuleType) -> None:
    script = [[0], [1], [2], [], [4], [5], [6]]
    heard, stats = _play(mixer, script)
    assert heard == [None, None, 0, 1, 2, None, 4]
    assert stats["concealed"] == 3  # two ticks of buffering delay, one loss


def test_jitter_plays_a_frame_up_to_two_ticks_late(mixer: ModuleType) -> None:
    heard, stats = _play(mixer, [[0], [1], [2], [], [4], [3, 5], [6], [7]])
    assert heard == [None, None, 0, 1, 2, 3, 4, 5]
    assert stats["late"] == 0


def test_jitter_drops_a_frame_too_late(mixer: ModuleType) -> None:
    heard, stats = _play(mixer, [[0], [1], [2], [], [4], [5], [3, 6], [7]])
    assert heard == [None, None, 0, 1, 2, None, 4, 5]
    assert stats["late"] == 1 and stats["restarts"] == 0


def test_jitter_drops_duplicates(mixer: ModuleType) -> None:
    heard, stats = _play(mixer, [[0], [1, 1], [2, 1], [3], [4]])
    assert heard == [None, None, 0, 1, 2]
    assert stats["duplicate"] == 2 and stats["received"] == 5


def test_jitter_burst_keeps_the_newest_frames(mixer: ModuleType) -> None:
    heard, stats = _play(mixer, [list(range(10)), [10], [11]])
    assert heard == [7, 8, 9]
    assert stats["overflow"] == 7


def test_jitter_wraps_sequence_and_timestamp(mixer: ModuleType) -> None:
    heard, stats = _play(
        mixer, [[t] for t in range(10)], seq=65533, ts=MASK32 - 3 * FRAME + 1
    )
    assert heard == [None, None, 0, 1, 2, 3, 4, 5, 6, 7]
    assert stats["late"] == stats["restarts"] == 0


def test_jitter_silence_suppression_gap_keeps_timing(mixer: ModuleType) -> None:
    # Frames 5-14 are never sent (DTX): timestamps jump, sequence numbers do not.
    room = _room(mixer, {1: "PCMU", 2: "PCMU"})
    sender = Sender(room, 1, "PCMU")
    heard = []
    for tick in range(22):
        if tick < 5 or tick >= 15:
            sender.push(tick, _marker(tick), seq=tick if tick < 5 else tick - 10)
        codes = room.mix()[2]
        heard.append(None if codes == SILENCE["PCMU"] else codes[0] - 0x10)
    assert heard == [None, None, 0, 1, 2, 3, 4] + [None] * 10 + [15, 16, 17, 18, 19]
    stats = room.stats(1)
    assert stats["restarts"] == stats["late"] == stats["overflow"] == 0


def test_jitter_restarts_when_a_slow_sender_falls_behind(mixer: ModuleType) -> None:
    # After the buffer ran dry, a late frame restarts it rather than being dropped.
    heard, stats = _play(mixer, [[0], [1], [2], [], [], [], [], [3], [4], [5], [6]])
    assert heard == [None, None, 0, 1, 2, None, None, None, None, 3, 4]
    assert stats["restarts"] == 1 and stats["late"] == 0 and stats["overflow"] == 0


def test_jitter_restarts_on_a_jump_back(mixer: ModuleType) -> None:
    room = _room(mixer, {1: "PCMU", 2: "PCMU"})
    sender = Sender(room, 1, "PCMU", ts=10**6)
    for tick in range(4):
        sender.push(tick, _marker(tick))
        room.mix()
    sender.push(-MAX_BACK, _marker(50))  # a restarted sender, far behind
    assert room.stats(1)["restarts"] == 1
    assert room.stats(1)["overflow"] == 2  # frames 2 and 3 were still buffered
    outs = [room.mix()[2] for _ in range(3)]
    assert outs == [SILENCE["PCMU"], SILENCE["PCMU"], _marker(50)]


MAX_BACK = pure_mixer.MAX_MISORDER


def test_other_payload_types_are_ignored(mixer: ModuleType) -> None:
    room = _room(mixer, {1: "PCMU", 2: "PCMU"}, jitter_frames=1)
    room.push(1, 0, 0, 13, b"\x40")  # comfort noise
    room.push(1, 1, 0, 8, b"\x00" * FRAME)  # PCMA from a PCMU participant
    assert room.mix()[2] == SILENCE["PCMU"]
    assert room.stats(1)["ignored"] == 2 and room.stats(1)["received"] == 0


# -- DTMF ---------------------------------------------------------------------------


def _event(code: int, end: bool = False, duration: int = 800) -> bytes:
    return struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)


def test_dtmf_is_reported_once_per_event_and_not_mixed(mixer: ModuleType) -> None:
    room = _room(mixer, {1: "PCMU", 2: "PCMA", 3: "PCMU"})
    seq = 0
    heard = []
    audio_ts = 1000
    for tick in range(14):
        codes = encode("PCMU", tone(700.0, 6000, tick))
        room.push(1, seq, (audio_ts + tick * FRAME) & MASK32, 0, codes)
        seq += 1
        # A key held from tick 3 to 8 (event timestamp = its start), with
        # updates interleaved in the same sequence space, then three end packets.
        if 3 <= tick <= 8:
            end = tick == 8
            for _ in range(3 if end else 1):
                room.push(
                    1,
                    seq,
                    audio_ts + 3 * FRAME,
                    101,
                    _event(5, end, (tick - 2) * FRAME),
                )
                seq += 1
        if tick == 10:
            room.push(1, seq, audio_ts + 10 * FRAME, 101, _event(11, True))
            seq += 1
        out = room.mix()
        heard.append(out[3])
    assert room.dtmf_events() == [
        (1, "5", audio_ts + 3 * FRAME),
        (1, "#", audio_ts + 10 * FRAME),
    ]
    assert room.dtmf_events() == []
    # The audio played on, unaffected by the interleaved event packets.
    expected = [SILENCE["PCMU"]] * 2 + [
        encode("PCMU", decode("PCMU", encode("PCMU", tone(700.0, 6000, t))))
        for t in range(12)
    ]
    assert heard == expected
    stats = room.stats(1)
    assert stats["dtmf"] == 2 and stats["concealed"] == 2 and stats["late"] == 0


def test_dtmf_alone_is_silence(mixer: ModuleType) -> None:
    room = _room(mixer, {1: "PCMU", 2: "PCMU"})
    for tick in range(5):
        room.push(1, tick, 320, 101, _event(1, tick == 4))
        assert room.mix()[2] == SILENCE["PCMU"]
    assert room.dtmf_events() == [(1, "1", 320)]
    assert room.stats(1)["received"] == 0


def test_dtmf_digits_payload_type_and_stale_packets(mixer: ModuleType) -> None:
    room = mixer.Room()
    room.add(1, "PCMA", dtmf_pt=96)
    room.add(2, "PCMU")
    for code in range(16):
        room.push(1, code, 1000 + code * 800, 96, _event(code, True))
    room.push(1, 20, 1000, 96, _event(0, True))  # a stale retransmission
    room.push(1, 21, 90000, 96, _event(16))  # flash: not a digit
    room.push(1, 22, 90000, 101, _event(3))  # not this participant's dtmf_pt
    room.push(2, 0, 500, 101, _event(9) + b"\x00" * 4)
    events = room.dtmf_events()
    assert [digit for _, digit, _ in events] == list("0123456789*#ABCD9")
    assert events[0] == (1, "0", 1000) and events[-1] == (2, "9", 500)
    assert room.stats(1)["ignored"] == 2 and room.stats(1)["dtmf"] == 16


def test_dtmf_queue_is_bounded(mixer: ModuleType) -> None:
    room = _room(mixer, {1: "PCMU"})
    for n in range(mixer.MAX_DTMF_EVENTS + 10):
        room.push(1, n & 0xFFFF, n * 1000, 101, _event(n % 10, True))
    events = room.dtmf_events()
    assert len(events) == mixer.MAX_DTMF_EVENTS
    assert events[0][2] == 10 * 1000


# -- mix_rooms -------------------------------------------------------------------------


def test_mix_rooms_equals_mixing_each(mixer: ModuleType) -> None:
    def build() -> list[Any]:
        rooms = []
        for r in range(3):
            room = _room(
                mixer,
                {10 * r + i: ("PCMU", "PCMA")[i % 2] for i in range(4)},
                jitter_frames=1,
            )
            for i in range(3):
                room.push(
                    10 * r + i,
                    0,
                    0,
                    (0, 8)[i % 2],
                    bytes([(37 * r + 11 * i) & 0xFF]) * FRAME,
                )
            rooms.append(room)
        return rooms

    assert mixer.mix_rooms(build()) == [room.mix() for room in build()]
    assert mixer.mix_rooms([]) == []


def test_mix_rooms_rejects(mixer: ModuleType) -> None:
    room = _room(mixer, {1: "PCMU"})
    room.push(1, 0, 0, 0, b"\x80" * FRAME)
    with pytest.raises(TypeError, match=r"^mix_rooms: expected Room, got int$"):
        mixer.mix_rooms([room, 3])
    with pytest.raises(ValueError, match=r"^mix_rooms: a room is listed twice$"):
        mixer.mix_rooms([room, room])
    assert room.stats(1)["played"] == 0 and room.stats(1)["concealed"] == 0


# -- compiled and pure agree ---------------------------------------------------------


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", call())
    except Exception as exc:  # noqa: BLE001 - compared, not swallowed
        return ("error", type(exc), str(exc))


def _run_ops(
    module: ModuleType, setup: dict[str, Any], ops: list[tuple[Any, ...]]
) -> Iterator[Any]:
    room = module.Room(max_participants=setup["capacity"], jitter_frames=setup["depth"])
    for pid, codec in setup["members"]:
        yield _outcome(partial(room.add, pid, codec))
    for op in ops:
        kind = op[0]
        if kind == "add":
            yield _outcome(partial(room.add, op[1], op[2]))
        elif kind == "remove":
            yield _outcome(partial(room.remove, op[1]))
        elif kind == "push":
            yield _outcome(partial(room.push, *op[1:]))
        else:
            yield _outcome(room.mix)
            yield room.dtmf_events()
            yield {pid: room.stats(pid) for pid in range(6) if pid in room}


_op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 5), st.sampled_from(["PCMU", "PCMA"])),
    st.tuples(st.just("remove"), st.integers(0, 5)),
    st.tuples(
        st.just("push"),
        st.integers(0, 5),
        st.integers(0, 0xFFFF),
        st.integers(-6, 30).map(lambda n: (n * FRAME + 4294966000) & MASK32)
        | st.integers(0, MASK32),
        st.sampled_from([0, 0, 0, 8, 8, 8, 101, 13]),
        st.binary(min_size=FRAME, max_size=FRAME) | st.binary(min_size=0, max_size=6),
    ),
    st.tuples(st.just("mix")),
    st.tuples(st.just("mix")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    setup=st.fixed_dictionaries(
        {
            "capacity": st.integers(1, 6),
            "depth": st.integers(1, 4),
            "members": st.lists(
                st.tuples(st.integers(0, 5), st.sampled_from(["PCMU", "pcma", "PCMA"])),
                max_size=6,
            ),
        }
    ),
    ops=st.lists(_op, max_size=60),
)
def test_compiled_equals_pure_on_any_script(
    setup: dict[str, Any], ops: list[tuple[Any, ...]]
) -> None:
    compiled = list(_run_ops(_compiled(), setup, ops))
    pure = list(_run_ops(pure_mixer, setup, ops))
    assert compiled == pure


def test_compiled_equals_pure_on_long_noisy_session() -> None:
    """A big room (the GIL-released path), loss, jitter, bursts and DTMF."""
    outputs = []
    for module in (_compiled(), pure_mixer):
        rng = random.Random(20)
        room = module.Room(max_participants=40)
        for pid in range(40):
            room.add(pid, "PCMU" if pid % 3 else "PCMA")
        trace = []
        for tick in range(60):
            for pid in range(35):  # five never send
                if rng.random() < 0.1:
                    continue
                frame = tick + rng.choice((0, 0, 0, 0, -1, -2, -3, 1, 2, 5))
                payload = bytes(rng.randrange(256) for _ in range(FRAME))
                room.push(
                    pid,
                    (tick + pid) & 0xFFFF,
                    (frame * FRAME + pid * 999) & MASK32,
                    8 if pid % 3 == 0 else 0,
                    payload,
                )
                if rng.random() < 0.05:
                    room.push(
                        pid, 0, rng.randrange(2**32), 101, _event(rng.randrange(20))
                    )
            trace.append(room.mix())
        trace.append(room.dtmf_events())
        trace.append([room.stats(pid) for pid in range(40)])
        outputs.append(trace)
    assert outputs[0] == outputs[1]


def test_compiled_room_is_guarded_while_mixed_without_the_gil() -> None:
    """Calls from another thread during a GIL-free mix fail cleanly, never race."""
    compiled = _compiled()
    room = compiled.Room(max_participants=64)
    for pid in range(64):  # big enough for Room.mix to release the GIL
        room.add(pid, "PCMU")
    stop = threading.Event()
    errors: list[BaseException] = []

    def mixing() -> None:
        while not stop.is_set():
            room.mix()
            compiled.mix_rooms([room])

    thread = threading.Thread(target=mixing)
    thread.start()
    try:
        for n in range(3000):
            try:
                room.push(n % 64, n & 0xFFFF, n * FRAME, 0, _marker(n))
            except RuntimeError as exc:
                errors.append(exc)
    finally:
        stop.set()
        thread.join()
    for error in errors:
        assert "called while the room is being mixed in another thread" in str(error)
    assert len(room.mix()) == 64


# -- compiled module, selector ----------------------------------------------------------


@pytest.mark.skipif(_pure_mode(), reason="WARDEN_NO_EXTENSIONS is set")
def test_compiled_module_is_an_extension() -> None:
    import warden_ext.mixer

    assert warden_ext.mixer.__file__ is not None
    assert warden_ext.mixer.__file__.endswith(".so")


def test_media_mixer_reexports_chosen_implementation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import warden.media.mixer as media_mixer

    monkeypatch.setenv("WARDEN_NO_EXTENSIONS", "1")
    try:
        media_mixer = importlib.reload(media_mixer)
        assert media_mixer.Room is pure_mixer.Room
        assert media_mixer.mix_rooms is pure_mixer.mix_rooms
    finally:
        monkeypatch.undo()
        importlib.reload(media_mixer)
    expected = accel.load("mixer")
    assert media_mixer.Room is expected.Room
    assert media_mixer.FRAME_SAMPLES == 160
