"""G.711 mu-law and A-law (ITU-T G.711), whole frames, compiled.

Codes are one byte per sample; linear PCM is 16-bit signed little-endian.
The pure-Python twin with the same API is ``warden.media.pure.g711``; tests
check that both give byte-identical output for every input sample.

Strategy: the segment algorithms below run only at import, to fill four
lookup tables (256 entries to decode, 65536 to encode, indexed by the
sample's 16-bit pattern). A frame is then one table lookup per sample over
raw buffer pointers: no Python objects per sample, and the loops need no GIL.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t, int32_t, uint8_t, uint16_t

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

cdef enum:
    # G.711 mu-law on 16-bit input: bias 0x84 (33 in 14-bit units) and the
    # clip level that keeps magnitude + bias within 15 bits.
    _ULAW_BIAS = 0x84
    _ULAW_CLIP = 32635
    # Frames smaller than this are converted holding the GIL. A 20 ms frame
    # (160 samples) takes well under a microsecond; releasing the GIL for it
    # would hand the GIL to any waiting thread and then queue for it again,
    # up to the 5 ms switch interval: a convoy the engine thread must not pay.
    _NOGIL_MIN_SAMPLES = 4096

cdef int16_t _ULAW_TO_LINEAR[256]
cdef int16_t _ALAW_TO_LINEAR[256]
cdef uint8_t _LINEAR_TO_ULAW[65536]
cdef uint8_t _LINEAR_TO_ALAW[65536]


# -- segment algorithms (import time only) ----------------------------------

cdef int32_t _segment(int32_t magnitude) noexcept nogil:
    """Index (0-7) of the highest set bit among bits 8-14, 0 below 256."""
    cdef int32_t segment = 7
    cdef int32_t bit = 0x4000
    while segment > 0 and (magnitude & bit) == 0:
        segment -= 1
        bit >>= 1
    return segment


cdef uint8_t _ulaw_compress(int32_t sample) noexcept nogil:
    cdef int32_t sign = 0
    cdef int32_t segment
    cdef int32_t mantissa
    if sample < 0:
        sign = 0x80
        sample = -sample
    if sample > _ULAW_CLIP:
        sample = _ULAW_CLIP
    sample += _ULAW_BIAS
    segment = _segment(sample)
    mantissa = (sample >> (segment + 3)) & 0x0F
    return <uint8_t>(~(sign | (segment << 4) | mantissa) & 0xFF)


cdef uint8_t _alaw_compress(int32_t sample) noexcept nogil:
    # Negative samples use the one's complement (-x - 1), so -1..-16 share
    # the smallest negative step exactly as 0..15 share the positive one.
    cdef int32_t sign = 0x80
    cdef int32_t segment
    cdef int32_t mantissa
    if sample < 0:
        sign = 0
        sample = -sample - 1
    segment = _segment(sample)
    if segment == 0:
        mantissa = (sample >> 4) & 0x0F
    else:
        mantissa = (sample >> (segment + 3)) & 0x0F
    return <uint8_t>((sign | (segment << 4) | mantissa) ^ 0x55)


cdef int16_t _ulaw_expand(uint8_t code) noexcept nogil:
    cdef int32_t u = ~code & 0xFF
    cdef int32_t t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    if u & 0x80:
        return <int16_t>(_ULAW_BIAS - t)
    return <int16_t>(t - _ULAW_BIAS)


cdef int16_t _alaw_expand(uint8_t code) noexcept nogil:
    cdef int32_t a = code ^ 0x55
    cdef int32_t t = (a & 0x0F) << 4
    cdef int32_t segment = (a & 0x70) >> 4
    if segment == 0:
        t += 8
    else:
        t = (t + 0x108) << (segment - 1)
    if a & 0x80:
        return <int16_t>t
    return <int16_t>(-t)


cdef void _build_tables() noexcept nogil:
    cdef int32_t i
    for i in range(256):
        _ULAW_TO_LINEAR[i] = _ulaw_expand(<uint8_t>i)
        _ALAW_TO_LINEAR[i] = _alaw_expand(<uint8_t>i)
    for i in range(65536):
        # i is the sample's 16-bit pattern; convert to its signed value
        # explicitly rather than rely on an implementation-defined cast.
        _LINEAR_TO_ULAW[i] = _ulaw_compress(i - 65536 if i >= 32768 else i)
        _LINEAR_TO_ALAW[i] = _alaw_compress(i - 65536 if i >= 32768 else i)


_build_tables()


# -- per-sample API for cimport (declared in g711.pxd) -----------------------

cdef int16_t ulaw_to_linear(uint8_t code) noexcept nogil:
    return _ULAW_TO_LINEAR[code]


cdef uint8_t linear_to_ulaw(int16_t sample) noexcept nogil:
    return _LINEAR_TO_ULAW[<uint16_t>sample]


cdef int16_t alaw_to_linear(uint8_t code) noexcept nogil:
    return _ALAW_TO_LINEAR[code]


cdef uint8_t linear_to_alaw(int16_t sample) noexcept nogil:
    return _LINEAR_TO_ALAW[<uint16_t>sample]


# -- frame loops -------------------------------------------------------------

cdef void _decode_loop(const uint8_t* src, uint8_t* dst, Py_ssize_t count,
                       const int16_t* table) noexcept nogil:
    # Bytes are written one by one: little-endian on any host, no alignment
    # assumption (the compiler merges them into one store where it can).
    cdef Py_ssize_t i
    cdef uint16_t value
    for i in range(count):
        value = <uint16_t>table[src[i]]
        dst[2 * i] = <uint8_t>(value & 0xFF)
        dst[2 * i + 1] = <uint8_t>(value >> 8)


cdef void _encode_loop(const uint8_t* src, uint8_t* dst, Py_ssize_t count,
                       const uint8_t* table) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        dst[i] = table[src[2 * i] | (<uint16_t>src[2 * i + 1] << 8)]


cdef bytes _decode(object data, const int16_t* table):
    cdef Py_buffer view
    cdef bytes out
    cdef const uint8_t* src
    cdef uint8_t* dst
    cdef Py_ssize_t count
    # PyBUF_SIMPLE: any C-contiguous bytes-like object, read as raw bytes
    # whatever its item format; the export also pins a bytearray's size.
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        count = view.len
        out = PyBytes_FromStringAndSize(NULL, 2 * count)
        src = <const uint8_t*>view.buf
        dst = <uint8_t*>PyBytes_AS_STRING(out)
        if count >= _NOGIL_MIN_SAMPLES:
            with nogil:
                _decode_loop(src, dst, count, table)
        else:
            _decode_loop(src, dst, count, table)
    finally:
        PyBuffer_Release(&view)
    return out


cdef bytes _encode(object pcm, const uint8_t* table, str name):
    cdef Py_buffer view
    cdef bytes out
    cdef const uint8_t* src
    cdef uint8_t* dst
    cdef Py_ssize_t count
    PyObject_GetBuffer(pcm, &view, PyBUF_SIMPLE)
    try:
        if view.len % 2:
            raise ValueError(
                f"{name}: PCM length {view.len} is odd; expected 2 bytes "
                f"per 16-bit sample"
            )
        count = view.len // 2
        out = PyBytes_FromStringAndSize(NULL, count)
        src = <const uint8_t*>view.buf
        dst = <uint8_t*>PyBytes_AS_STRING(out)
        if count >= _NOGIL_MIN_SAMPLES:
            with nogil:
                _encode_loop(src, dst, count, table)
        else:
            _encode_loop(src, dst, count, table)
    finally:
        PyBuffer_Release(&view)
    return out


# -- public API --------------------------------------------------------------

def ulaw_decode(data):
    """Decode mu-law codes (1 byte each) to 16-bit signed little-endian PCM."""
    return _decode(data, _ULAW_TO_LINEAR)


def alaw_decode(data):
    """Decode A-law codes (1 byte each) to 16-bit signed little-endian PCM."""
    return _decode(data, _ALAW_TO_LINEAR)


def ulaw_encode(pcm):
    """Encode 16-bit signed little-endian PCM to mu-law codes.

    Raises ValueError if ``pcm`` holds an odd number of bytes.
    """
    return _encode(pcm, _LINEAR_TO_ULAW, "ulaw_encode")


def alaw_encode(pcm):
    """Encode 16-bit signed little-endian PCM to A-law codes.

    Raises ValueError if ``pcm`` holds an odd number of bytes.
    """
    return _encode(pcm, _LINEAR_TO_ALAW, "alaw_encode")
