"""Conference mixer DSP core (sans-I/O), compiled.

A ``Room`` takes each participant's RTP payloads (``push``) into a small
jitter buffer and, once per 20 ms tick of the caller's steady clock
(``mix``), returns every participant's mix-minus frame: everyone else's
audio, summed in 32-bit integers, saturated to int16 and encoded in that
participant's G.711 law. RFC 4733 telephone-events are never mixed; their
digits are queued for ``dtmf_events``. The pure-Python twin with the same
API is ``warden.media.pure.mixer``; tests hold both to byte-identical
output.

Strategy, jitter buffer: each participant owns a ring of ``jitter_frames``
(D) slots. Frames are placed by RTP *timestamp*, not sequence number: RFC
4733 telephone-event packets take sequence numbers from the same stream,
and silence suppression leaves gaps in timestamps only, so the timestamp is
the one that says when a frame plays. The first frame is placed D - 1 ticks
ahead of the playout point (the buffering delay), so a frame arriving up to
D - 1 ticks late or out of order still plays. Each tick plays the slot at
the playout point, or silence if it is empty, and advances one frame
whatever happened: wall-clock time moves on during loss and silence. A
frame behind the playout point is dropped as late, unless the buffer is
empty (the sender's clock is slower than ours, or it resumed after a
pause): then, or on a jump back of ``MAX_MISORDER`` frames or more (a
restarted sender), the buffer restarts on that frame. A frame beyond the
ring pushes the playout point forward, discarding the oldest frames, which
bounds the delay when the sender's clock runs fast.

Strategy, mixing: all per-frame state lives in C arrays allocated with the
room (see mixer.pxd), so a tick is two passes over raw pointers that need
neither the GIL nor an allocation: decode each played frame into its
``own`` row and add it to the int32 ``total``; then encode ``total - own``,
saturated, for each participant. A participant who contributed nothing
hears the plain total, encoded once per law and copied. The G.711 tables
are copied at import from ``warden_ext.g711``'s per-sample functions, so the
inner loops are plain array lookups the compiler can see.
"""

from collections import deque

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.number cimport PyNumber_Index
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from warden_ext.g711 cimport alaw_to_linear, linear_to_alaw, linear_to_ulaw, ulaw_to_linear

__all__ = [
    "FRAME_SAMPLES",
    "MAX_DTMF_EVENTS",
    "MAX_JITTER_FRAMES",
    "MAX_MISORDER",
    "MAX_PARTICIPANTS",
    "Room",
    "mix_rooms",
]

cdef enum:
    _MAX_PARTICIPANTS = 65535   # the sum of that many int16 fits an int32
    _MAX_JITTER_FRAMES = 16
    _MAX_MISORDER = 100         # frames; RFC 3550 A.1's bound
    _MAX_DTMF_EVENTS = 256
    _INT16_MAX = 32767
    _INT16_MIN = -32768
    # Room.mix releases the GIL only for a room of at least this many
    # samples (26 participants). A small room mixes in a few microseconds;
    # releasing the GIL for that would hand it to any waiting thread and
    # then queue for it again, up to the 5 ms switch interval: a convoy the
    # engine thread must not pay once per room. mix_rooms releases it once
    # per _BATCH rooms instead.
    _NOGIL_MIN_SAMPLES = 4096
    _BATCH = 256

FRAME_SAMPLES = _FRAME
MAX_PARTICIPANTS = _MAX_PARTICIPANTS
MAX_JITTER_FRAMES = _MAX_JITTER_FRAMES
MAX_MISORDER = _MAX_MISORDER
MAX_DTMF_EVENTS = _MAX_DTMF_EVENTS

# Codec name -> (law index, static RTP payload type, RFC 3551).
_CODECS = {"PCMU": (0, 0), "PCMA": (1, 8)}
# RFC 4733 event codes 0-15 are the DTMF digits.
_DIGITS = "0123456789*#ABCD"

# Indexed by law (0 mu-law, 1 A-law), then by code or 16-bit sample pattern.
cdef int16_t _DECODE[2][256]
cdef uint8_t _ENCODE[2][65536]


cdef void _build_tables() noexcept nogil:
    cdef int32_t i
    cdef int16_t sample
    for i in range(256):
        _DECODE[0][i] = ulaw_to_linear(<uint8_t>i)
        _DECODE[1][i] = alaw_to_linear(<uint8_t>i)
    for i in range(65536):
        sample = <int16_t>(i - 65536 if i >= 32768 else i)
        _ENCODE[0][i] = linear_to_ulaw(sample)
        _ENCODE[1][i] = linear_to_alaw(sample)


_build_tables()


cdef object _ranged(object value, str name, long long low, long long high, str where):
    try:
        number = PyNumber_Index(value)
    except TypeError:
        raise TypeError(
            f"Room: {name} must be an integer, got {type(value).__name__}"
        ) from None
    if not low <= number <= high:
        raise ValueError(f"{where}: {name} {number} is out of range {low}..{high}")
    return number


cdef inline int64_t _signed_diff(uint32_t a, uint32_t b) noexcept nogil:
    """a - b modulo 2**32, as a signed value in [-2**31, 2**31)."""
    cdef uint32_t diff = a - b
    if diff <= 0x7FFFFFFF:
        return <int64_t>diff
    return <int64_t>diff - (<int64_t>1 << 32)


# -- jitter buffer (GIL not needed) -----------------------------------------------

cdef void _restart(_RoomCore* core, int index, uint32_t ts) noexcept nogil:
    cdef _Participant* part = &core.parts[index]
    if part.started:
        part.restarts += 1
        part.overflow += <uint64_t>part.count
    part.started = True
    memset(core.filled + index * core.depth, 0, <size_t>core.depth)
    part.count = 0
    part.head = 0
    part.next_ts = ts - <uint32_t>((core.depth - 1) * _FRAME)


cdef void _place(_RoomCore* core, int index, uint32_t ts,
                 const uint8_t* frame) noexcept nogil:
    cdef _Participant* part = &core.parts[index]
    cdef int depth = core.depth
    cdef uint8_t* filled = core.filled + index * depth
    cdef int64_t diff
    cdef int64_t ahead
    cdef int64_t advance
    cdef int64_t step
    cdef int slot
    if not part.started:
        _restart(core, index, ts)
    diff = _signed_diff(ts, part.next_ts)
    if diff < 0:
        if part.count != 0 and diff > -_MAX_MISORDER * _FRAME:
            part.late += 1
            return
        _restart(core, index, ts)
        ahead = depth - 1
    else:
        ahead = diff // _FRAME
        if ahead >= depth:
            advance = ahead - (depth - 1)
            if advance >= depth:
                _restart(core, index, ts)
            else:
                for step in range(advance):
                    if filled[part.head]:
                        filled[part.head] = 0
                        part.count -= 1
                        part.overflow += 1
                    part.head = (part.head + 1) % depth
                    part.next_ts += _FRAME
            ahead = depth - 1
    slot = <int>((part.head + ahead) % depth)
    if filled[slot]:
        part.duplicate += 1
        return
    memcpy(core.frames + (<size_t>index * depth + slot) * _FRAME, frame, _FRAME)
    filled[slot] = 1
    part.count += 1
    part.received += 1


# -- the tick (GIL not needed, nothing allocated) ------------------------------------

cdef void _mix_core(_RoomCore* core) noexcept nogil:
    cdef int index
    cdef int slot
    cdef int i
    cdef int depth = core.depth
    cdef int plain[2]
    cdef _Participant* part
    cdef int32_t* total = core.total
    cdef int16_t* own
    cdef const uint8_t* codes
    cdef const int16_t* decode
    cdef const uint8_t* encode
    cdef uint8_t* dst
    cdef int32_t value

    # Pass 1: play one frame per participant, decode it, add it up.
    memset(total, 0, _FRAME * sizeof(int32_t))
    for index in range(core.high):
        part = &core.parts[index]
        part.contributes = False
        if not part.active or not part.started:
            continue
        slot = index * depth + part.head
        if core.filled[slot]:
            codes = core.frames + <size_t>slot * _FRAME
            own = core.own + <size_t>index * _FRAME
            decode = _DECODE[part.law]
            for i in range(_FRAME):
                own[i] = decode[codes[i]]
                total[i] += own[i]
            core.filled[slot] = 0
            part.count -= 1
            part.played += 1
            part.contributes = True
        else:
            part.concealed += 1
        part.head += 1
        if part.head == depth:
            part.head = 0
        part.next_ts += _FRAME

    # Pass 2: everyone's mix-minus, saturated, in their own law.
    plain[0] = -1
    plain[1] = -1
    for index in range(core.high):
        part = &core.parts[index]
        if not part.active:
            continue
        dst = core.out + <size_t>index * _FRAME
        encode = _ENCODE[part.law]
        if part.contributes:
            own = core.own + <size_t>index * _FRAME
            for i in range(_FRAME):
                value = total[i] - own[i]
                if value > _INT16_MAX:
                    value = _INT16_MAX
                elif value < _INT16_MIN:
                    value = _INT16_MIN
                dst[i] = encode[<uint16_t>value]
        elif plain[part.law] >= 0:
            memcpy(dst, core.out + <size_t>plain[part.law] * _FRAME, _FRAME)
        else:
            plain[part.law] = index
            for i in range(_FRAME):
                value = total[i]
                if value > _INT16_MAX:
                    value = _INT16_MAX
                elif value < _INT16_MIN:
                    value = _INT16_MIN
                dst[i] = encode[<uint16_t>value]


# -- Python API ---------------------------------------------------------------------

cdef class Room:
    """One conference room: jitter buffers in, mix-minus G.711 frames out.

    Sans-I/O: the caller pushes each participant's RTP payloads as they
    arrive and calls ``mix`` once per 20 ms tick of its own steady clock.

    Use a room from one thread (the engine's). ``mix`` may run without the
    GIL; a call on the same room from another thread meanwhile raises
    RuntimeError rather than race.
    """

    frame_samples = _FRAME

    def __cinit__(self, max_participants=64, jitter_frames=3):
        cdef int capacity = _ranged(
            max_participants, "max_participants", 1, _MAX_PARTICIPANTS, "Room"
        )
        cdef int depth = _ranged(
            jitter_frames, "jitter_frames", 1, _MAX_JITTER_FRAMES, "Room"
        )
        self._core.capacity = capacity
        self._core.depth = depth
        self._core.members = 0
        self._core.high = 0
        self._core.parts = <_Participant*>calloc(capacity, sizeof(_Participant))
        self._core.frames = <uint8_t*>calloc(<size_t>capacity * depth, _FRAME)
        self._core.filled = <uint8_t*>calloc(<size_t>capacity, <size_t>depth)
        self._core.own = <int16_t*>calloc(<size_t>capacity * _FRAME, sizeof(int16_t))
        self._core.out = <uint8_t*>calloc(capacity, _FRAME)
        self._core.total = <int32_t*>calloc(_FRAME, sizeof(int32_t))
        if (self._core.parts == NULL or self._core.frames == NULL
                or self._core.filled == NULL or self._core.own == NULL
                or self._core.out == NULL or self._core.total == NULL):
            raise MemoryError(f"Room: cannot allocate {capacity} participants")
        self._slots = {}
        self._pids = [None] * capacity
        self._events = deque(maxlen=_MAX_DTMF_EVENTS)
        self._mixing = False

    def __dealloc__(self):
        free(self._core.parts)
        free(self._core.frames)
        free(self._core.filled)
        free(self._core.own)
        free(self._core.out)
        free(self._core.total)

    @property
    def max_participants(self):
        """Participants the room can hold."""
        return self._core.capacity

    @property
    def jitter_frames(self):
        """Frames each jitter buffer holds (its delay is one less)."""
        return self._core.depth

    def __len__(self):
        return len(self._slots)

    def __contains__(self, pid):
        return pid in self._slots

    cdef int _index_of(self, object pid) except -1:
        return self._slots[pid]

    cdef int _check_idle(self, str method) except -1:
        if self._mixing:
            raise RuntimeError(
                f"Room.{method}: called while the room is being mixed in another thread"
            )
        return 0

    def add(self, pid, codec, dtmf_pt=101):
        """Add participant ``pid`` sending and receiving ``codec``.

        ``codec`` is "PCMU" or "PCMA" (any case); ``dtmf_pt`` is the RTP
        payload type negotiated for RFC 4733 telephone-event. Raises
        ValueError for an unknown codec, a payload type out of 0..127 or
        equal to the codec's, a pid already present, or a full room.
        """
        cdef int index
        cdef _Participant* part
        self._check_idle("add")
        key = codec.upper() if isinstance(codec, str) else codec
        if key not in _CODECS:
            raise ValueError(
                f"Room.add: codec {codec!r} is not supported; expected 'PCMU' or 'PCMA'"
            )
        law, audio_pt = _CODECS[key]
        dtmf = _ranged(dtmf_pt, "dtmf_pt", 0, 127, "Room.add")
        if dtmf == audio_pt:
            raise ValueError(
                f"Room.add: dtmf_pt {dtmf} is {key}'s own payload type"
            )
        if pid in self._slots:
            raise ValueError(f"Room.add: participant {pid!r} is already in the room")
        if self._core.members >= self._core.capacity:
            raise ValueError(
                f"Room.add: room is full ({self._core.capacity} participants)"
            )
        index = 0
        while self._core.parts[index].active:
            index += 1
        part = &self._core.parts[index]
        memset(part, 0, sizeof(_Participant))
        memset(self._core.filled + index * self._core.depth, 0,
               <size_t>self._core.depth)
        part.active = True
        part.law = law
        part.audio_pt = audio_pt
        part.dtmf_pt = dtmf
        self._slots[pid] = index
        self._pids[index] = pid
        self._core.members += 1
        if index >= self._core.high:
            self._core.high = index + 1

    def remove(self, pid):
        """Remove participant ``pid`` (KeyError if absent)."""
        self._check_idle("remove")
        cdef int index = self._slots.pop(pid)
        self._core.parts[index].active = False
        self._pids[index] = None
        self._core.members -= 1
        while self._core.high > 0 and not self._core.parts[self._core.high - 1].active:
            self._core.high -= 1

    def push(self, pid, seq, timestamp, payload_type, payload):
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
        cdef int index
        cdef uint32_t ts
        cdef int pt
        cdef Py_buffer view
        cdef _Participant* part
        self._check_idle("push")
        index = self._index_of(pid)
        part = &self._core.parts[index]
        _ranged(seq, "seq", 0, 0xFFFF, "Room.push")
        ts = _ranged(timestamp, "timestamp", 0, 0xFFFFFFFF, "Room.push")
        pt = _ranged(payload_type, "payload_type", 0, 127, "Room.push")
        if pt == part.dtmf_pt:
            self._push_event(index, ts, payload)
        elif pt == part.audio_pt:
            PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
            try:
                if view.len != _FRAME:
                    raise ValueError(
                        f"Room.push: audio payload of {view.len} bytes from "
                        f"participant {pid!r}; expected {_FRAME} (20 ms)"
                    )
                _place(&self._core, index, ts, <const uint8_t*>view.buf)
            finally:
                PyBuffer_Release(&view)
        else:
            part.ignored += 1

    cdef int _push_event(self, int index, uint32_t ts, object payload) except -1:
        cdef Py_buffer view
        cdef uint8_t event
        cdef _Participant* part = &self._core.parts[index]
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            if view.len < 4:
                raise ValueError(
                    f"Room.push: telephone-event payload of {view.len} bytes "
                    f"from participant {self._pids[index]!r}; expected at least 4"
                )
            event = (<const uint8_t*>view.buf)[0]
        finally:
            PyBuffer_Release(&view)
        if event >= 16:
            part.ignored += 1
            return 0
        # Every packet of one event (updates, the three end packets) carries
        # the event's start timestamp: report a timestamp newer than the last.
        if part.has_event and _signed_diff(ts, part.last_event_ts) <= 0:
            return 0
        part.has_event = True
        part.last_event_ts = ts
        part.dtmf += 1
        self._events.append((self._pids[index], _DIGITS[event], ts))
        return 0

    cdef dict _outputs(self):
        cdef dict result = {}
        cdef int index
        cdef const char* out = <const char*>self._core.out
        for index in range(self._core.high):
            if self._core.parts[index].active:
                result[self._pids[index]] = PyBytes_FromStringAndSize(
                    out + <size_t>index * _FRAME, _FRAME
                )
        return result

    def mix(self):
        """One 20 ms tick: each participant's mix-minus frame, by pid.

        Takes one frame from every jitter buffer (silence if none) and
        returns, for every participant, ``FRAME_SAMPLES`` bytes in their
        codec: the sum of everyone else, saturated to int16.
        """
        self._check_idle("mix")
        if self._core.members * _FRAME >= _NOGIL_MIN_SAMPLES:
            self._mixing = True
            with nogil:
                _mix_core(&self._core)
            self._mixing = False
        else:
            _mix_core(&self._core)
        return self._outputs()

    def dtmf_events(self):
        """Return and clear the queued DTMF events as (pid, digit, timestamp).

        ``digit`` is one of "0123456789*#ABCD"; ``timestamp`` is the event's
        RTP timestamp (its start). Oldest first; at most ``MAX_DTMF_EVENTS``.
        """
        events = list(self._events)
        self._events.clear()
        return events

    def stats(self, pid):
        """Counters of participant ``pid`` (KeyError if absent).

        received: audio frames buffered; played: frames mixed; concealed:
        ticks of silence once buffering began (the initial delay and each
        restart's included); late and duplicate: frames
        dropped as such; overflow: frames discarded unplayed (buffer full or
        restarted); restarts: buffer restarts; ignored: packets of another
        payload type or a non-DTMF event; dtmf: events reported.
        """
        self._check_idle("stats")
        cdef _Participant* part = &self._core.parts[self._index_of(pid)]
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


def mix_rooms(rooms):
    """``[room.mix() for room in rooms]``, for the tick of a whole process.

    Mixes the rooms with the GIL released once per 256 rooms rather than
    per room. Raises TypeError for an item that is not a Room and
    ValueError if a room is listed twice; either way no room is mixed.
    """
    cdef list batch = list(rooms)
    cdef list results = []
    cdef _RoomCore* cores[_BATCH]
    cdef Py_ssize_t start = 0
    cdef Py_ssize_t count
    cdef Py_ssize_t j
    cdef Room room
    for item in batch:
        if not isinstance(item, Room):
            raise TypeError(f"mix_rooms: expected Room, got {type(item).__name__}")
    if len({id(item) for item in batch}) != len(batch):
        raise ValueError("mix_rooms: a room is listed twice")
    for item in batch:
        (<Room>item)._check_idle("mix")
    # Every room is marked busy until its batch is done, so no other thread
    # can start on a room this call has yet to mix.
    for item in batch:
        (<Room>item)._mixing = True
    try:
        while start < len(batch):
            count = min(<Py_ssize_t>_BATCH, len(batch) - start)
            for j in range(count):
                cores[j] = &(<Room>batch[start + j])._core
            with nogil:
                for j in range(count):
                    _mix_core(cores[j])
            # Read each batch's output while it is still in the CPU cache.
            for j in range(count):
                room = <Room>batch[start + j]
                room._mixing = False
                results.append(room._outputs())
            start += count
    finally:
        for item in batch:
            (<Room>item)._mixing = False
    return results
