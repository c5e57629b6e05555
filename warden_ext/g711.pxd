# Per-sample G.711 conversions for other Cython modules (mixer, relay):
#
#     from warden_ext.g711 cimport linear_to_ulaw, ulaw_to_linear
#
# They are table lookups (the tables are filled when warden_ext.g711 is
# imported, which a cimport does first), safe to call without the GIL, and
# cannot fail. Linear samples are 16-bit signed PCM.

from libc.stdint cimport int16_t, uint8_t

cdef int16_t ulaw_to_linear(uint8_t code) noexcept nogil
cdef uint8_t linear_to_ulaw(int16_t sample) noexcept nogil
cdef int16_t alaw_to_linear(uint8_t code) noexcept nogil
cdef uint8_t linear_to_alaw(int16_t sample) noexcept nogil
