"""G.711 mu-law and A-law (ITU-T G.711), whole frames, pure Python.

Twin of the compiled ``warden_ext.g711``: same API, byte-identical output,
used when ``WARDEN_NO_EXTENSIONS`` is set. Codes are one byte per sample;
linear PCM is 16-bit signed little-endian.

Strategy: the segment algorithms run only at import, to build lookup tables.
Decoding is two ``bytes.translate`` calls (low and high byte of each sample)
interleaved by extended-slice assignment, all at C speed. Encoding maps each
16-bit sample, read through ``memoryview.cast("H")``, through a 65536-byte
table: one C-level ``map`` step per sample and no Python-level loop.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

# G.711 mu-law on 16-bit input: bias 0x84 (33 in 14-bit units) and the clip
# level that keeps magnitude + bias within 15 bits.
_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


def _segment(magnitude: int) -> int:
    """Index (0-7) of the highest set bit among bits 8-14, 0 below 256."""
    return max(magnitude.bit_length() - 8, 0)


def _ulaw_compress(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), _ULAW_CLIP) + _ULAW_BIAS
    segment = _segment(magnitude)
    return ~(sign | (segment << 4) | ((magnitude >> (segment + 3)) & 0x0F)) & 0xFF


def _alaw_compress(sample: int) -> int:
    # Negative samples use the one's complement (-x - 1), so -1..-16 share
    # the smallest negative step exactly as 0..15 share the positive one.
    sign = 0x80 if sample >= 0 else 0
    magnitude = sample if sample >= 0 else -sample - 1
    segment = _segment(magnitude)
    shift = 4 if segment == 0 else segment + 3
    return (sign | (segment << 4) | ((magnitude >> shift) & 0x0F)) ^ 0x55


def _ulaw_expand(code: int) -> int:
    u = ~code & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return _ULAW_BIAS - t if u & 0x80 else t - _ULAW_BIAS


def _alaw_expand(code: int) -> int:
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    segment = (a & 0x70) >> 4
    t = t + 8 if segment == 0 else (t + 0x108) << (segment - 1)
    return t if a & 0x80 else -t


def _decode_tables(expand: Callable[[int], int]) -> tuple[bytes, bytes]:
    """Translation tables code -> low byte and code -> high byte of the sample."""
    patterns = [expand(code) & 0xFFFF for code in range(256)]
    return bytes(p & 0xFF for p in patterns), bytes(p >> 8 for p in patterns)


def _encode_table(compress: Callable[[int], int]) -> bytes:
    """Code for every sample, indexed as ``memoryview.cast("H")`` reads it.

    That read is in host byte order, so on a big-endian host the index of a
    little-endian sample is its byte-swapped pattern.
    """
    table = bytes(compress(p - 65536 if p >= 32768 else p) for p in range(65536))
    if sys.byteorder == "big":
        table = bytes(table[((p & 0xFF) << 8) | (p >> 8)] for p in range(65536))
    return table


_ULAW_LOW, _ULAW_HIGH = _decode_tables(_ulaw_expand)
_ALAW_LOW, _ALAW_HIGH = _decode_tables(_alaw_expand)
_LINEAR_TO_ULAW = _encode_table(_ulaw_compress)
_LINEAR_TO_ALAW = _encode_table(_alaw_compress)


def _decode(data: Buffer, low: bytes, high: bytes) -> bytes:
    with memoryview(data) as view, view.cast("B") as raw:
        codes = raw.tobytes()
    out = bytearray(2 * len(codes))
    out[0::2] = codes.translate(low)
    out[1::2] = codes.translate(high)
    return bytes(out)


def _encode(pcm: Buffer, table: bytes, name: str) -> bytes:
    # The views are released on the way out so a bytearray argument can be
    # resized again by its owner.
    with memoryview(pcm) as view, view.cast("B") as raw:
        if raw.nbytes % 2:
            raise ValueError(
                f"{name}: PCM length {raw.nbytes} is odd; expected 2 bytes "
                f"per 16-bit sample"
            )
        with raw.cast("H") as samples:
            return bytes(map(table.__getitem__, samples))


def ulaw_decode(data: Buffer) -> bytes:
    """Decode mu-law codes (1 byte each) to 16-bit signed little-endian PCM."""
    return _decode(data, _ULAW_LOW, _ULAW_HIGH)


def alaw_decode(data: Buffer) -> bytes:
    """Decode A-law codes (1 byte each) to 16-bit signed little-endian PCM."""
    return _decode(data, _ALAW_LOW, _ALAW_HIGH)


def ulaw_encode(pcm: Buffer) -> bytes:
    """Encode 16-bit signed little-endian PCM to mu-law codes.

    Raises ValueError if ``pcm`` holds an odd number of bytes.
    """
    return _encode(pcm, _LINEAR_TO_ULAW, "ulaw_encode")


def alaw_encode(pcm: Buffer) -> bytes:
    """Encode 16-bit signed little-endian PCM to A-law codes.

    Raises ValueError if ``pcm`` holds an odd number of bytes.
    """
    return _encode(pcm, _LINEAR_TO_ALAW, "alaw_encode")
