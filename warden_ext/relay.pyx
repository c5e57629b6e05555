"""RTP relay data plane, compiled: epoll + recvmmsg/sendmmsg, GIL released.

A ``Relay`` owns one epoll instance and a table of sessions. A session joins
two UDP sockets, one per call leg, that the Python caller created and bound
(IPv4 or IPv6, each leg its own family): what arrives on the A socket leaves
by the B socket towards B's peer, and the other way round. The caller runs
the packet loop in a thread of its own::

    relay.run(100, duration_ms=-1)    # relays until relay.stop()

(or ``while not stopping: relay.run(100)``, one epoll_wait per call; but a
loop that comes back to Python needs the GIL again each time, and next to
a busy Python thread that can cost up to the 5 ms switch interval).

The pure-Python twin with the same API is ``warden.media.pure.relay``; the
contract both keep is ``warden_ext/relay.pyi``.

Strategy (locking): one pthread mutex guards the session table and every use
of a session's sockets. ``run`` waits in ``epoll_wait`` *without* it, then
takes it once for the whole batch of ready sockets; ``add_session``,
``remove_session``, ``set_peer`` and ``stats`` take it (with the GIL released
while they wait, so a busy loop never stalls other Python threads on the
GIL). Each epoll registration carries the slot, the side and the slot's
generation; ``remove_session`` unregisters both sockets and bumps the
generation under the mutex, so an event that ``epoll_wait`` returned before
the removal is recognised as stale and skipped: once ``remove_session``
returns, the loop never touches those descriptors again. The loop holds the
mutex only while it relays (microseconds per batch) and never needs the GIL
while holding it, so there is no lock-order deadlock.

Strategy (latching): with ``latch=True`` a leg's first packet fixes its
source address as that leg's peer (phones behind NAT send from another port
than their SDP says); later packets on that socket from any other address
are dropped and counted (``dropped_foreign``), so nobody can hijack the
media. ``set_peer`` re-arms the latch (a re-INVITE moved the phone).

Per packet the loop does no allocation and creates no Python object: the
receive buffers, address slots and message vectors are allocated once in
the constructor and each received datagram is sent from the buffer it was
received into.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset

import os
import socket as _socket

__all__ = ["MAX_PACKET", "Relay"]

MAX_PACKET = RELAY_MAX_PACKET
"""Longest datagram relayed; longer ones are dropped (``dropped_truncated``)."""

cdef enum:
    # RFC 3550 A.1: a jump ahead of up to MAX_DROPOUT is loss; a packet up
    # to MAX_MISORDER behind is late; anything else is a restart, believed
    # when the next packet follows it.
    _MAX_DROPOUT = 3000
    _MAX_MISORDER = 100
    _SEQ_MOD = 65536
    _NO_BAD_SEQ = 65537
    _G711_RATE = 8000

cdef int64_t _NS = 1000000000


# -- small helpers (no GIL) ---------------------------------------------------

cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * _NS + ts.tv_nsec


cdef inline uint32_t _rtp_units(int64_t now_ns, uint32_t rate) noexcept nogil:
    # Arrival time in RTP timestamp units, modulo 2**32, without overflow.
    return <uint32_t>(<uint64_t>(now_ns // _NS) * rate
                      + <uint64_t>(now_ns % _NS) * rate // <uint64_t>_NS)


cdef inline bint _same_addr(const sockaddr_storage* a, const sockaddr_storage* b) noexcept nogil:
    cdef const sockaddr_in* a4
    cdef const sockaddr_in* b4
    cdef const sockaddr_in6* a6
    cdef const sockaddr_in6* b6
    if a.ss_family != b.ss_family:
        return False
    if a.ss_family == AF_INET:
        a4 = <const sockaddr_in*>a
        b4 = <const sockaddr_in*>b
        return a4.sin_port == b4.sin_port and a4.sin_addr.s_addr == b4.sin_addr.s_addr
    if a.ss_family == AF_INET6:
        a6 = <const sockaddr_in6*>a
        b6 = <const sockaddr_in6*>b
        return (a6.sin6_port == b6.sin6_port
                and memcmp(&a6.sin6_addr, &b6.sin6_addr, 16) == 0)
    return False


cdef inline int64_t _lost_now(const DirStats* st) noexcept nogil:
    # Expected minus received for the current SSRC / sequence run (may be
    # negative with duplicates; the report clamps the total).
    if not st.have_seq:
        return 0
    return (<int64_t>st.cycles + st.max_seq - st.base_seq + 1) - <int64_t>st.received


cdef inline void _init_seq(DirStats* st, uint32_t seq) noexcept nogil:
    st.base_seq = seq
    st.max_seq = seq
    st.cycles = 0
    st.bad_seq = _NO_BAD_SEQ
    st.received = 0
    st.have_seq = True


cdef inline void _fold_lost(DirStats* st) noexcept nogil:
    cdef int64_t lost = _lost_now(st)
    if lost > 0:
        st.lost_before += lost
    st.have_seq = False
    st.have_transit = False


cdef void _account_rtp(DirStats* st, const unsigned char* p, unsigned int length,
                       int64_t now_ns, uint32_t clock_rate) noexcept nogil:
    """Sequence (RFC 3550 A.1) and interarrival jitter (A.8) for one packet."""
    cdef uint32_t pt, seq, ts, ssrc, udelta, rate, transit
    cdef int64_t d
    if length < 12 or (p[0] >> 6) != 2:
        return
    pt = p[1] & 0x7F
    if 72 <= pt <= 76:
        return  # RTCP multiplexed on the RTP port (RFC 5761)
    seq = (<uint32_t>p[2] << 8) | p[3]
    ts = (<uint32_t>p[4] << 24) | (<uint32_t>p[5] << 16) | (<uint32_t>p[6] << 8) | p[7]
    ssrc = (<uint32_t>p[8] << 24) | (<uint32_t>p[9] << 16) | (<uint32_t>p[10] << 8) | p[11]
    if st.have_seq and ssrc != st.ssrc:
        _fold_lost(st)
    if not st.have_seq:
        _init_seq(st, seq)
        st.ssrc = ssrc
    else:
        udelta = (seq - st.max_seq) & 0xFFFF
        if udelta < _MAX_DROPOUT:
            if seq < st.max_seq:
                st.cycles += _SEQ_MOD
            st.max_seq = seq
        elif udelta <= _SEQ_MOD - _MAX_MISORDER:
            if seq != st.bad_seq:
                st.bad_seq = (seq + 1) & 0xFFFF
                return  # a lone jump: wait for the next packet to believe it
            _fold_lost(st)
            _init_seq(st, seq)
        # else: duplicate or late packet, counted as received
    st.received += 1
    st.last_pt = <int>pt
    rate = _G711_RATE if (pt == 0 or pt == 8) else clock_rate
    transit = _rtp_units(now_ns, rate) - ts
    if st.have_transit:
        d = <int32_t>(transit - st.last_transit)
        if d < 0:
            d = -d
        st.jitter += (<double>d - st.jitter) / 16.0
    st.last_transit = transit
    st.have_transit = True


# -- address conversion (control path, GIL held) ------------------------------

cdef int _socket_family(int fd) except -1:
    cdef sockaddr_storage ss
    cdef socklen_t length = sizeof(ss)
    cdef int sotype = 0
    cdef socklen_t optlen = sizeof(sotype)
    if fd < 0:
        raise ValueError(f"invalid file descriptor {fd}")
    if getsockname(fd, <sockaddr*>&ss, &length) < 0:
        PyErr_SetFromErrno(OSError)
        return -1
    if getsockopt(fd, SOL_SOCKET, SO_TYPE, &sotype, &optlen) < 0:
        PyErr_SetFromErrno(OSError)
        return -1
    if sotype != SOCK_DGRAM or ss.ss_family not in (AF_INET, AF_INET6):
        raise ValueError(f"fd {fd} is not a UDP socket (IPv4 or IPv6)")
    return ss.ss_family


cdef socklen_t _fill_addr(sockaddr_storage* out, int family, object peer) except 0:
    """Write ``(host, port)`` (numeric IP) as a sockaddr for a ``family`` socket."""
    cdef sockaddr_in* sin
    cdef sockaddr_in6* sin6
    cdef bytes packed
    cdef uint32_t scope = 0
    try:
        host, port = peer
    except (TypeError, ValueError):
        raise ValueError(f"peer must be (host, port), not {peer!r}") from None
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"peer must be (host: str, port: 1-65535), not {peer!r}")
    memset(out, 0, sizeof(sockaddr_storage))
    try:
        if family == AF_INET:
            packed = _socket.inet_pton(_socket.AF_INET, host)
            sin = <sockaddr_in*>out
            sin.sin_family = AF_INET
            sin.sin_port = htons(<uint16_t>port)
            memcpy(&sin.sin_addr, <const char*>packed, 4)
            return sizeof(sockaddr_in)
        if ":" not in host:
            host = "::ffff:" + host  # IPv4 peer on a dual-stack IPv6 socket
        elif "%" in host:
            host, _, zone = host.partition("%")
            scope = int(zone) if zone.isdigit() else _socket.if_nametoindex(zone)
        packed = _socket.inet_pton(_socket.AF_INET6, host)
    except OSError:
        kind = "IPv4" if family == AF_INET else "IPv6"
        raise ValueError(f"peer host {peer[0]!r} is not a numeric address for an {kind} socket") from None
    sin6 = <sockaddr_in6*>out
    sin6.sin6_family = AF_INET6
    sin6.sin6_port = htons(<uint16_t>port)
    sin6.sin6_scope_id = scope
    memcpy(&sin6.sin6_addr, <const char*>packed, 16)
    return sizeof(sockaddr_in6)


cdef object _addr_tuple(const sockaddr_storage* ss):
    cdef const sockaddr_in* sin
    cdef const sockaddr_in6* sin6
    if ss.ss_family == AF_INET:
        sin = <const sockaddr_in*>ss
        return (_socket.inet_ntop(_socket.AF_INET,
                                  PyBytes_FromStringAndSize(<const char*>&sin.sin_addr, 4)),
                ntohs(sin.sin_port))
    if ss.ss_family == AF_INET6:
        sin6 = <const sockaddr_in6*>ss
        return (_socket.inet_ntop(_socket.AF_INET6,
                                  PyBytes_FromStringAndSize(<const char*>&sin6.sin6_addr, 16)),
                ntohs(sin6.sin6_port))
    return None


cdef dict _direction_dict(const Leg* src, const Leg* dst):
    cdef const DirStats* st = &src.st
    cdef int64_t lost = st.lost_before + _lost_now(st)
    pt = st.last_pt if st.last_pt >= 0 else None
    return {
        "packets": st.packets,
        "bytes": st.bytes,
        "lost": lost if lost > 0 else 0,
        "jitter": st.jitter,
        "jitter_ms": st.jitter * 1000.0 / _G711_RATE if pt in (0, 8) else None,
        "last_seen": st.last_seen_ns / 1e9 if st.last_seen_ns else None,
        "source": _addr_tuple(&src.peer) if src.latched else None,
        "destination": _addr_tuple(&dst.peer) if dst.have_peer else None,
        "ssrc": st.ssrc if st.have_seq else None,
        "payload_type": pt,
        "dropped_foreign": st.dropped_foreign,
        "dropped_no_peer": st.dropped_no_peer,
        "dropped_truncated": st.dropped_truncated,
        "send_errors": st.send_errors,
    }


# epoll key of the wake-up eventfd; session keys have the generation in the
# high half and never reach it (the slot field would be 2**31 - 1, past any
# max_sessions allowed).
cdef uint64_t _WAKE_KEY = 0xFFFFFFFFFFFFFFFFULL


cdef inline uint64_t _event_key(uint32_t gen, int slot, int side) noexcept nogil:
    return (<uint64_t>gen << 32) | (<uint64_t>slot << 1) | <uint64_t>side


cdef int _side_index(object side) except -1:
    if side == "a":
        return 0
    if side == "b":
        return 1
    raise ValueError(f"side must be 'a' or 'b', not {side!r}")


# -- the relay ----------------------------------------------------------------

cdef class Relay:
    """Relay RTP between the two UDP sockets of each session; see the module doc."""

    def __cinit__(self, int max_sessions):
        cdef int j
        self._epfd = -1
        if max_sessions <= 0:
            raise ValueError(f"max_sessions must be positive, not {max_sessions}")
        if max_sessions > (1 << 30):
            raise ValueError(f"max_sessions {max_sessions} is too large")
        self._max_sessions = max_sessions
        self._next_sid = 1
        self._slot_of = {}
        self._sessions = <Session*>calloc(max_sessions, sizeof(Session))
        self._free_slots = <int*>calloc(max_sessions, sizeof(int))
        self._events = <epoll_event*>calloc(RELAY_MAX_EVENTS, sizeof(epoll_event))
        self._buffers = <unsigned char*>calloc(RELAY_BATCH, RELAY_MAX_PACKET)
        self._sources = <sockaddr_storage*>calloc(RELAY_BATCH, sizeof(sockaddr_storage))
        self._rx_iov = <iovec*>calloc(RELAY_BATCH, sizeof(iovec))
        self._rx_msgs = <mmsghdr*>calloc(RELAY_BATCH, sizeof(mmsghdr))
        self._tx_iov = <iovec*>calloc(RELAY_BATCH, sizeof(iovec))
        self._tx_msgs = <mmsghdr*>calloc(RELAY_BATCH, sizeof(mmsghdr))
        if (self._sessions == NULL or self._free_slots == NULL or self._events == NULL
                or self._buffers == NULL or self._sources == NULL or self._rx_iov == NULL
                or self._rx_msgs == NULL or self._tx_iov == NULL or self._tx_msgs == NULL):
            raise MemoryError()
        # Free slots as a stack, lowest slot on top.
        for j in range(max_sessions):
            self._free_slots[j] = max_sessions - 1 - j
        self._n_free = max_sessions
        for j in range(RELAY_BATCH):
            self._rx_iov[j].iov_base = self._buffers + j * RELAY_MAX_PACKET
            self._rx_iov[j].iov_len = RELAY_MAX_PACKET
            self._rx_msgs[j].msg_hdr.msg_name = &self._sources[j]
            self._rx_msgs[j].msg_hdr.msg_iov = &self._rx_iov[j]
            self._rx_msgs[j].msg_hdr.msg_iovlen = 1
            self._tx_msgs[j].msg_hdr.msg_iov = &self._tx_iov[j]
            self._tx_msgs[j].msg_hdr.msg_iovlen = 1
        if pthread_mutex_init(&self._mutex, NULL) != 0:
            raise OSError("pthread_mutex_init failed")
        self._mutex_ready = True
        self._wakefd = -1
        self._epfd = epoll_create1(EPOLL_CLOEXEC)
        if self._epfd < 0:
            PyErr_SetFromErrno(OSError)
        self._wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self._wakefd < 0:
            PyErr_SetFromErrno(OSError)
        cdef epoll_event ev
        ev.events = EPOLLIN
        ev.data.u64 = _WAKE_KEY
        if epoll_ctl(self._epfd, EPOLL_CTL_ADD, self._wakefd, &ev) < 0:
            PyErr_SetFromErrno(OSError)

    def __dealloc__(self):
        if self._epfd >= 0:
            close(self._epfd)
            self._epfd = -1
        if self._wakefd >= 0:
            close(self._wakefd)
            self._wakefd = -1
        if self._mutex_ready:
            pthread_mutex_destroy(&self._mutex)
        free(self._sessions)
        free(self._free_slots)
        free(self._events)
        free(self._buffers)
        free(self._sources)
        free(self._rx_iov)
        free(self._rx_msgs)
        free(self._tx_iov)
        free(self._tx_msgs)

    # -- locking ---------------------------------------------------------------

    cdef void _lock(self) noexcept:
        with nogil:
            pthread_mutex_lock(&self._mutex)

    cdef void _unlock(self) noexcept nogil:
        pthread_mutex_unlock(&self._mutex)

    cdef int _slot(self, object sid) except -1:
        try:
            return self._slot_of[sid]
        except KeyError:
            raise KeyError(f"no relay session {sid!r}") from None

    # -- control path ------------------------------------------------------------

    @property
    def max_sessions(self):
        return self._max_sessions

    def __len__(self):
        return len(self._slot_of)

    def add_session(self, int a_fd, int b_fd, *, a_peer=None, b_peer=None,
                    bint latch=True, int clock_rate=8000):
        cdef sockaddr_storage peers[2]
        cdef socklen_t peer_len[2]
        cdef int families[2]
        cdef int fds[2]
        cdef int slot, side, err = 0, failed_fd = -1
        cdef Session* s
        cdef epoll_event ev
        cdef int64_t sid
        if self._epfd < 0:
            raise ValueError("relay is closed")
        if a_fd == b_fd:
            raise ValueError("a_fd and b_fd must be two different sockets")
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, not {clock_rate}")
        fds[0] = a_fd
        fds[1] = b_fd
        for side in range(2):
            families[side] = _socket_family(fds[side])
        peer_len[0] = peer_len[1] = 0
        if a_peer is not None:
            peer_len[0] = _fill_addr(&peers[0], families[0], a_peer)
        if b_peer is not None:
            peer_len[1] = _fill_addr(&peers[1], families[1], b_peer)

        self._lock()
        try:
            if self._n_free == 0:
                raise RuntimeError(f"relay is full ({self._max_sessions} sessions)")
            slot = self._free_slots[self._n_free - 1]
            s = &self._sessions[slot]
            memset(&s.leg[0], 0, sizeof(Leg) * 2)
            s.latch = latch
            s.clock_rate = <uint32_t>clock_rate
            for side in range(2):
                s.leg[side].fd = fds[side]
                s.leg[side].family = families[side]
                s.leg[side].st.last_pt = -1
                if peer_len[side]:
                    memcpy(&s.leg[side].peer, &peers[side], peer_len[side])
                    s.leg[side].peer_len = peer_len[side]
                    s.leg[side].have_peer = True
            for side in range(2):
                ev.events = EPOLLIN
                ev.data.u64 = _event_key(s.gen, slot, side)
                if epoll_ctl(self._epfd, EPOLL_CTL_ADD, fds[side], &ev) < 0:
                    err = errno
                    failed_fd = fds[side]
                    if side == 1:
                        epoll_ctl(self._epfd, EPOLL_CTL_DEL, fds[0], NULL)
                    break
            if err == 0:
                self._n_free -= 1
                sid = self._next_sid
                self._next_sid += 1
                s.sid = sid
        finally:
            self._unlock()
        if err:
            raise OSError(err, f"cannot watch fd {failed_fd}: {os.strerror(err)}"
                          + (" (already in a session?)" if err == EEXIST else ""))
        self._slot_of[sid] = slot
        return sid

    def remove_session(self, sid):
        cdef int slot = self._slot(sid)
        cdef Session* s
        del self._slot_of[sid]
        self._lock()
        try:
            s = &self._sessions[slot]
            if self._epfd >= 0:
                epoll_ctl(self._epfd, EPOLL_CTL_DEL, s.leg[0].fd, NULL)
                epoll_ctl(self._epfd, EPOLL_CTL_DEL, s.leg[1].fd, NULL)
            s.sid = 0
            s.gen += 1
            self._free_slots[self._n_free] = slot
            self._n_free += 1
        finally:
            self._unlock()

    def set_peer(self, sid, side, host, int port):
        cdef int slot = self._slot(sid)
        cdef int index = _side_index(side)
        cdef int family
        cdef sockaddr_storage addr
        cdef socklen_t length
        cdef Session* s
        cdef bint gone = False
        self._lock()
        family = self._sessions[slot].leg[index].family
        gone = self._sessions[slot].sid != sid
        self._unlock()
        if gone:
            raise KeyError(f"no relay session {sid!r}")
        length = _fill_addr(&addr, family, (host, port))
        self._lock()
        s = &self._sessions[slot]
        if s.sid == sid:
            memcpy(&s.leg[index].peer, &addr, length)
            s.leg[index].peer_len = length
            s.leg[index].have_peer = True
            s.leg[index].latched = False
        else:
            gone = True
        self._unlock()
        if gone:
            raise KeyError(f"no relay session {sid!r}")

    def stats(self, sid):
        cdef int slot = self._slot(sid)
        cdef Session copy
        self._lock()
        memcpy(&copy, &self._sessions[slot], sizeof(Session))
        self._unlock()
        if copy.sid != sid:
            raise KeyError(f"no relay session {sid!r}")
        return {
            "sid": sid,
            "latch": bool(copy.latch),
            "a_to_b": _direction_dict(&copy.leg[0], &copy.leg[1]),
            "b_to_a": _direction_dict(&copy.leg[1], &copy.leg[0]),
        }

    def close(self):
        """Release the epoll instance; the sockets stay the caller's to close."""
        if self._running:
            raise RuntimeError("close() while run() is active: stop the loop first")
        for sid in list(self._slot_of):
            self.remove_session(sid)
        if self._epfd >= 0:
            close(self._epfd)
            self._epfd = -1
        if self._wakefd >= 0:
            close(self._wakefd)
            self._wakefd = -1

    def stop(self):
        """Make the running (or else the next) ``run`` return promptly; any thread."""
        cdef uint64_t one = 1
        if self._wakefd >= 0:
            with nogil:
                write(self._wakefd, &one, sizeof(one))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- data path ---------------------------------------------------------------

    def run(self, int timeout_ms, *, int duration_ms=0):
        cdef int n = 0
        cdef int err = 0
        cdef int wait
        cdef uint64_t relayed = 0
        cdef int64_t deadline = 0
        cdef int64_t left
        if self._epfd < 0:
            raise ValueError("relay is closed")
        if self._running:
            raise RuntimeError("run() is already active in another thread")
        self._running = True
        self._stop_seen = False
        try:
            with nogil:
                if duration_ms > 0:
                    deadline = _now_ns() + <int64_t>duration_ms * 1000000
                while True:
                    wait = timeout_ms
                    if duration_ms > 0:
                        left = deadline - _now_ns()
                        if left <= 0:
                            break
                        left = (left + 999999) // 1000000
                        if wait < 0 or wait > left:
                            wait = <int>left
                    n = epoll_wait(self._epfd, self._events, RELAY_MAX_EVENTS, wait)
                    if n < 0:
                        err = errno
                        break
                    if n > 0:
                        pthread_mutex_lock(&self._mutex)
                        relayed += self._process(n)
                        pthread_mutex_unlock(&self._mutex)
                    if duration_ms == 0 or self._stop_seen:
                        break
        finally:
            self._running = False
        if err:
            if err == EINTR:
                PyErr_CheckSignals()
                return relayed
            raise OSError(err, f"epoll_wait: {os.strerror(err)}")
        return relayed

    cdef uint64_t _process(self, int n_events) noexcept nogil:
        cdef uint64_t total = 0
        cdef uint64_t key
        cdef int i, slot
        cdef Session* s
        for i in range(n_events):
            key = self._events[i].data.u64
            if key == _WAKE_KEY:
                self._drain_wakefd()
                continue
            slot = <int>(<uint32_t>key >> 1)
            if slot >= self._max_sessions:
                continue
            s = &self._sessions[slot]
            if s.sid == 0 or s.gen != <uint32_t>(key >> 32):
                continue  # removed (and maybe reused) since epoll_wait saw it
            total += self._relay_from(s, <int>(key & 1))
        return total

    cdef void _drain_wakefd(self) noexcept nogil:
        cdef uint64_t count
        read(self._wakefd, &count, sizeof(count))
        self._stop_seen = True

    cdef uint64_t _relay_from(self, Session* s, int side) noexcept nogil:
        cdef Leg* inl = &s.leg[side]
        cdef Leg* outl = &s.leg[1 - side]
        cdef DirStats* st = &inl.st
        cdef mmsghdr* m
        cdef int n, j, k, r, off
        cdef uint64_t sent = 0
        cdef int64_t now
        for j in range(RELAY_BATCH):
            self._rx_msgs[j].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self._rx_msgs[j].msg_hdr.msg_flags = 0
        n = recvmmsg(inl.fd, self._rx_msgs, RELAY_BATCH, MSG_DONTWAIT, NULL)
        if n <= 0:
            return 0
        now = _now_ns()
        k = 0
        for j in range(n):
            m = &self._rx_msgs[j]
            if m.msg_hdr.msg_flags & MSG_TRUNC:
                st.dropped_truncated += 1
                continue
            if s.latch:
                if inl.latched:
                    if not _same_addr(&self._sources[j], &inl.peer):
                        st.dropped_foreign += 1
                        continue
                else:
                    memcpy(&inl.peer, &self._sources[j], m.msg_hdr.msg_namelen)
                    inl.peer_len = m.msg_hdr.msg_namelen
                    inl.have_peer = True
                    inl.latched = True
            st.packets += 1
            st.bytes += m.msg_len
            st.last_seen_ns = now
            _account_rtp(st, <unsigned char*>self._rx_iov[j].iov_base, m.msg_len,
                         now, s.clock_rate)
            if not outl.have_peer:
                st.dropped_no_peer += 1
                continue
            self._tx_msgs[k].msg_hdr.msg_name = &outl.peer
            self._tx_msgs[k].msg_hdr.msg_namelen = outl.peer_len
            self._tx_iov[k].iov_base = self._rx_iov[j].iov_base
            self._tx_iov[k].iov_len = m.msg_len
            k += 1
        off = 0
        while off < k:
            r = sendmmsg(outl.fd, &self._tx_msgs[off], <unsigned int>(k - off), MSG_DONTWAIT)
            if r < 0:
                if errno == EINTR:
                    continue
                st.send_errors += 1  # the first datagram failed: skip it
                off += 1
            elif r == 0:
                st.send_errors += <uint64_t>(k - off)
                break
            else:
                sent += <uint64_t>r
                off += r
        return sent
