"""G.711 codec: compiled (warden_ext.g711) and pure (warden.media.pure.g711).

Both implementations are imported directly, so both are tested whatever
WARDEN_NO_EXTENSIONS says; in pure mode a compiled module that was not built
is skipped instead of failing. The references below are written from the
decision and reconstruction levels of ITU-T G.711 Tables 1 and 2, not from
the shift-and-bias algorithm the modules use.
"""

from __future__ import annotations

import array
import bisect
import importlib
import os
import struct
import sys
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

import warden.media.pure.g711 as pure_g711
from warden.media import accel

ALL_SAMPLES = range(-32768, 32768)
ALL_PCM = struct.pack(f"<{len(ALL_SAMPLES)}h", *ALL_SAMPLES)
ALL_CODES = bytes(range(256))


def _pure_mode() -> bool:
    return os.environ.get("WARDEN_NO_EXTENSIONS", "") not in ("", "0")


def _compiled() -> ModuleType:
    if _pure_mode():
        module: ModuleType = pytest.importorskip(
            "warden_ext.g711", reason="extension not built (pure mode)"
        )
        return module
    return importlib.import_module("warden_ext.g711")


@pytest.fixture(params=["compiled", "pure"])
def g711(request: pytest.FixtureRequest) -> ModuleType:
    return _compiled() if request.param == "compiled" else pure_g711


# -- references from the G.711 tables (16-bit units: 14-bit mu-law x 4,
#    13-bit A-law x 8) ---------------------------------------------------------


def _ulaw_interval(segment: int, step_index: int) -> tuple[int, int]:
    """Lower decision level and reconstruction value, magnitude in 16-bit units.

    Table 2: segment s ends at 2**(s+6) - 33 (14-bit units) and has 16 steps
    of 2**(s+1); the very first step is [0, 1) and reconstructs to 0.
    """
    if segment == 0 and step_index == 0:
        return 0, 0
    start = 2 ** (segment + 5) - 33 if segment else -1
    step = 2 ** (segment + 1)
    lower = start + step * step_index
    return 4 * lower, 4 * (lower + step // 2)


def _alaw_interval(segment: int, step_index: int) -> tuple[int, int]:
    """Lower decision level and reconstruction value, magnitude in 16-bit units.

    Table 1: segments 0 and 1 both have steps of 2 (13-bit units) from 0;
    segment s >= 1 starts at 2**(s+4) with steps of 2**s. Reconstruction is
    the middle of the step.
    """
    start = 0 if segment == 0 else 2 ** (segment + 4)
    step = 2 if segment == 0 else 2**segment
    lower = start + step * step_index
    return 8 * lower, 8 * lower + 4 * step


def _ulaw_code(negative: bool, segment: int, step_index: int) -> int:
    return ~((0x80 if negative else 0) | (segment << 4) | step_index) & 0xFF


def _alaw_code(negative: bool, segment: int, step_index: int) -> int:
    return ((0 if negative else 0x80) | (segment << 4) | step_index) ^ 0x55


def _reference_decode_table(
    interval: Callable[[int, int], tuple[int, int]],
    code_of: Callable[[bool, int, int], int],
) -> dict[int, int]:
    table = {}
    for negative in (False, True):
        for segment in range(8):
            for step_index in range(16):
                value = interval(segment, step_index)[1]
                table[code_of(negative, segment, step_index)] = (
                    -value if negative else value
                )
    return table


def _reference_encoder(
    interval: Callable[[int, int], tuple[int, int]],
    code_of: Callable[[bool, int, int], int],
    negative_magnitude: Callable[[int], int],
) -> Callable[[int], int]:
    """Encoder as a search of the magnitude among the 128 decision levels."""
    keys = [(s, q) for s in range(8) for q in range(16)]
    lowers = [interval(s, q)[0] for s, q in keys]
    assert lowers == sorted(lowers)

    def encode(sample: int) -> int:
        negative = sample < 0
        magnitude = negative_magnitude(sample) if negative else sample
        s, q = keys[bisect.bisect_right(lowers, magnitude) - 1]
        return code_of(negative, s, q)

    return encode


ULAW_DECODE_REF = _reference_decode_table(_ulaw_interval, _ulaw_code)
ALAW_DECODE_REF = _reference_decode_table(_alaw_interval, _alaw_code)
# mu-law is sign-magnitude; A-law takes the one's complement of negatives.
ULAW_ENCODE_REF = _reference_encoder(_ulaw_interval, _ulaw_code, lambda x: -x)
ALAW_ENCODE_REF = _reference_encoder(_alaw_interval, _alaw_code, lambda x: -x - 1)

LAWS = {
    "ulaw": (ULAW_DECODE_REF, ULAW_ENCODE_REF),
    "alaw": (ALAW_DECODE_REF, ALAW_ENCODE_REF),
}


def _samples(pcm: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


# -- conformance ---------------------------------------------------------------


def test_reference_tables_cover_every_code() -> None:
    assert sorted(ULAW_DECODE_REF) == list(range(256))
    assert sorted(ALAW_DECODE_REF) == list(range(256))


@pytest.mark.parametrize("law", LAWS)
def test_decode_all_codes_match_reference(g711: ModuleType, law: str) -> None:
    decoded = _samples(getattr(g711, f"{law}_decode")(ALL_CODES))
    assert decoded == tuple(LAWS[law][0][code] for code in range(256))


@pytest.mark.parametrize(
    ("law", "code", "value"),
    [
        ("ulaw", 0xFF, 0),
        ("ulaw", 0x7F, 0),
        ("ulaw", 0x00, -32124),
        ("ulaw", 0x80, 32124),
        ("alaw", 0xD5, 8),
        ("alaw", 0x55, -8),
        ("alaw", 0xAA, 32256),
        ("alaw", 0x2A, -32256),
    ],
)
def test_decode_anchor_values(
    g711: ModuleType, law: str, code: int, value: int
) -> None:
    assert _samples(getattr(g711, f"{law}_decode")(bytes([code]))) == (value,)


@pytest.mark.parametrize("law", LAWS)
def test_encode_every_sample_matches_reference(g711: ModuleType, law: str) -> None:
    encode_ref = LAWS[law][1]
    expected = bytes(encode_ref(sample) for sample in ALL_SAMPLES)
    assert getattr(g711, f"{law}_encode")(ALL_PCM) == expected


def test_ulaw_round_trip(g711: ModuleType) -> None:
    # 0x7F is mu-law's negative zero: it decodes to 0, which encodes as 0xFF.
    round_trip = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    expected = bytes(0xFF if code == 0x7F else code for code in range(256))
    assert round_trip == expected


def test_alaw_round_trip(g711: ModuleType) -> None:
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES


@pytest.mark.parametrize(
    ("samples", "ulaw", "alaw"),
    [
        ((32767, 32635, 40 * 800), b"\x80\x80\x80", b"\xaa\xaa\xaa"),
        ((-32768, -32635), b"\x00\x00", b"\x2a\x2a"),
        ((0, -1, 1), b"\xff\x7f\xff", b"\xd5\x55\xd5"),
    ],
)
def test_encode_extremes_and_zero(
    g711: ModuleType, samples: tuple[int, ...], ulaw: bytes, alaw: bytes
) -> None:
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    assert g711.ulaw_encode(pcm) == ulaw
    assert g711.alaw_encode(pcm) == alaw


# -- compiled and pure agree -----------------------------------------------------


@pytest.mark.parametrize("name", ["ulaw_encode", "alaw_encode"])
def test_encode_compiled_equals_pure_for_every_sample(name: str) -> None:
    assert getattr(_compiled(), name)(ALL_PCM) == getattr(pure_g711, name)(ALL_PCM)


@pytest.mark.parametrize("name", ["ulaw_decode", "alaw_decode"])
def test_decode_compiled_equals_pure_for_every_code(name: str) -> None:
    assert getattr(_compiled(), name)(ALL_CODES) == getattr(pure_g711, name)(ALL_CODES)


@given(data=st.binary(max_size=1000))
def test_compiled_equals_pure_on_any_frame(data: bytes) -> None:
    compiled = _compiled()
    pcm = data[: len(data) & ~1]
    for name in ("ulaw_decode", "alaw_decode"):
        assert getattr(compiled, name)(data) == getattr(pure_g711, name)(data)
    for name in ("ulaw_encode", "alaw_encode"):
        assert getattr(compiled, name)(pcm) == getattr(pure_g711, name)(pcm)


# -- buffer handling ---------------------------------------------------------------


def test_accepts_bytes_like_inputs(g711: ModuleType) -> None:
    pcm = struct.pack("<4h", 0, 1000, -1000, 32000)
    expected = g711.ulaw_encode(pcm)
    samples = array.array("h", (0, 1000, -1000, 32000))
    if sys.byteorder == "big":
        samples.byteswap()
    for variant in (bytearray(pcm), memoryview(pcm), samples, memoryview(samples)):
        assert g711.ulaw_encode(variant) == expected
        assert g711.alaw_encode(variant) == g711.alaw_encode(pcm)
    codes = g711.ulaw_encode(pcm)
    for variant in (bytearray(codes), memoryview(codes)):
        assert g711.ulaw_decode(variant) == g711.ulaw_decode(codes)
        assert g711.alaw_decode(variant) == g711.alaw_decode(codes)


def test_accepts_unaligned_slice(g711: ModuleType) -> None:
    pcm = struct.pack("<3h", -5, 12345, -32768)
    padded = memoryview(b"\x00" + pcm)[1:]
    assert g711.ulaw_encode(padded) == g711.ulaw_encode(pcm)
    assert g711.alaw_encode(padded) == g711.alaw_encode(pcm)


def test_bytearray_is_released_after_call(g711: ModuleType) -> None:
    buf = bytearray(b"\x01\x02")
    g711.ulaw_encode(buf)
    g711.ulaw_decode(buf)
    buf.extend(b"\x03\x04")  # BufferError if a view were still exported


def test_outputs_are_bytes(g711: ModuleType) -> None:
    for name in ("ulaw_decode", "alaw_decode", "ulaw_encode", "alaw_encode"):
        assert type(getattr(g711, name)(bytearray(b"\x00\x00"))) is bytes


@pytest.mark.parametrize("name", ["ulaw_encode", "alaw_encode"])
def test_odd_length_pcm_raises(g711: ModuleType, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}: PCM length 3 is odd; "):
        getattr(g711, name)(b"\x00\x01\x02")


@pytest.mark.parametrize(
    "name", ["ulaw_decode", "alaw_decode", "ulaw_encode", "alaw_encode"]
)
def test_empty_input_gives_empty_output(g711: ModuleType, name: str) -> None:
    assert getattr(g711, name)(b"") == b""
    assert getattr(g711, name)(bytearray()) == b""


@pytest.mark.parametrize(
    "name", ["ulaw_decode", "alaw_decode", "ulaw_encode", "alaw_encode"]
)
def test_str_is_rejected(g711: ModuleType, name: str) -> None:
    with pytest.raises(TypeError):
        getattr(g711, name)("\x00\x00")


def test_large_frame_matches_small_frames(g711: ModuleType) -> None:
    # Large inputs take the GIL-released path in the compiled module.
    big = ALL_PCM * 2
    chunks = b"".join(
        g711.ulaw_encode(big[i : i + 320]) for i in range(0, len(big), 320)
    )
    assert g711.ulaw_encode(big) == chunks
    codes = g711.alaw_encode(big)
    assert g711.alaw_decode(codes) == b"".join(
        g711.alaw_decode(codes[i : i + 160]) for i in range(0, len(codes), 160)
    )


@pytest.mark.skipif(_pure_mode(), reason="WARDEN_NO_EXTENSIONS is set")
def test_compiled_module_is_an_extension() -> None:
    import warden_ext.g711

    assert warden_ext.g711.__file__ is not None
    assert warden_ext.g711.__file__.endswith(".so")


# -- accel -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_accel_pure_when_requested(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WARDEN_NO_EXTENSIONS", value)
    assert accel.implementation() == "pure"
    assert accel.load("g711") is pure_g711


@pytest.mark.parametrize("value", [None, "", "0"])
def test_accel_compiled_by_default(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    compiled = _compiled()
    if value is None:
        monkeypatch.delenv("WARDEN_NO_EXTENSIONS", raising=False)
    else:
        monkeypatch.setenv("WARDEN_NO_EXTENSIONS", value)
    assert accel.implementation() == "accelerated"
    assert accel.load("g711") is compiled


def test_accel_missing_extension_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARDEN_NO_EXTENSIONS", raising=False)
    monkeypatch.setitem(sys.modules, "warden_ext.g711", None)
    with pytest.raises(ImportError, match=r"warden_ext\.g711 is not built") as info:
        accel.load("g711")
    assert info.value.name == "warden_ext.g711"


def test_accel_rejects_dotted_names() -> None:
    with pytest.raises(ValueError, match="not a module name"):
        accel.load("g711.something")


def test_media_g711_reexports_chosen_implementation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import warden.media.g711 as media_g711

    monkeypatch.setenv("WARDEN_NO_EXTENSIONS", "1")
    try:
        media_g711 = importlib.reload(media_g711)
        assert media_g711.ulaw_encode is pure_g711.ulaw_encode
        assert media_g711.alaw_decode is pure_g711.alaw_decode
    finally:
        monkeypatch.undo()
        importlib.reload(media_g711)
    expected = accel.load("g711")
    assert media_g711.ulaw_decode is expected.ulaw_decode
