# Conference mixer state (implemented in mixer.pyx; pure twin:
# warden.media.pure.mixer). A Room keeps all per-frame state in C arrays
# allocated once, at construction, for max_participants members, so a tick
# runs over raw pointers without the GIL and allocates nothing.

from libc.stdint cimport int16_t, int32_t, uint8_t, uint32_t, uint64_t

cdef enum:
    # Samples in one 20 ms G.711 frame at 8 kHz.
    _FRAME = 160


cdef struct _Participant:
    bint active
    bint started          # a first audio frame has been buffered
    bint contributes      # this tick: a frame was played (own[] is valid)
    bint has_event        # last_event_ts is valid
    uint8_t law           # 0 mu-law, 1 A-law
    uint8_t audio_pt
    uint8_t dtmf_pt
    int head              # ring slot at the playout point
    int count             # frames buffered
    uint32_t next_ts      # RTP timestamp of the frame at the playout point
    uint32_t last_event_ts
    uint64_t received
    uint64_t played
    uint64_t concealed
    uint64_t late
    uint64_t duplicate
    uint64_t overflow
    uint64_t restarts
    uint64_t ignored
    uint64_t dtmf


cdef struct _RoomCore:
    int capacity          # max_participants
    int depth             # jitter_frames: ring slots per participant
    int members           # active participants
    int high              # 1 + highest active index (0 if none)
    _Participant* parts   # [capacity]
    uint8_t* frames       # [capacity][depth][_FRAME] G.711 codes
    uint8_t* filled       # [capacity][depth] slot holds a frame
    int16_t* own          # [capacity][_FRAME] this tick's decoded frame
    uint8_t* out          # [capacity][_FRAME] this tick's encoded output
    int32_t* total        # [_FRAME] sum of all contributions


cdef class Room:
    cdef _RoomCore _core
    cdef dict _slots      # pid -> participant index
    cdef list _pids       # participant index -> pid (None when free)
    cdef object _events   # deque of (pid, digit, timestamp)
    cdef bint _mixing     # a GIL-free mix of this room is running

    cdef int _index_of(self, object pid) except -1
    cdef int _check_idle(self, str method) except -1
    cdef int _push_event(self, int index, uint32_t ts, object payload) except -1
    cdef dict _outputs(self)
