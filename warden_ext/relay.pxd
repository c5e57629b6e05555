# Declarations for the RTP relay (relay.pyx): the C APIs it calls and the
# state it keeps. Nothing here is meant for cimport by other modules yet; the
# Python-level contract is relay.pyi.
#
# _GNU_SOURCE: recvmmsg/sendmmsg/struct mmsghdr are GNU extensions. pyconfig.h
# already defines it on Linux (Python.h comes first in the generated C), the
# verbatim block below keeps that true for any other include order.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #ifndef _GNU_SOURCE
    #define _GNU_SOURCE 1
    #endif
    """

cdef extern from "errno.h" nogil:
    int errno
    enum:
        EINTR
        EEXIST
        EAGAIN
        EWOULDBLOCK

cdef extern from "unistd.h" nogil:
    int close(int fd)
    ssize_t read(int fd, void* buf, size_t count)
    ssize_t write(int fd, const void* buf, size_t count)

cdef extern from "sys/eventfd.h" nogil:
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC
    int eventfd(unsigned int initval, int flags)

cdef extern from "time.h" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    ctypedef int clockid_t
    enum:
        CLOCK_MONOTONIC
    int clock_gettime(clockid_t clk, timespec* ts)

cdef extern from "pthread.h" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass
    int pthread_mutex_init(pthread_mutex_t* m, const pthread_mutexattr_t* attr)
    int pthread_mutex_destroy(pthread_mutex_t* m)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)

cdef extern from "sys/epoll.h" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    enum:
        EPOLLIN
        EPOLLERR
        EPOLLHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)

cdef extern from "sys/uio.h" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len

cdef extern from "sys/socket.h" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    enum:
        AF_INET
        AF_INET6
        SOCK_DGRAM
        SOL_SOCKET
        SO_TYPE
        MSG_DONTWAIT
        MSG_TRUNC
    int recvmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags, timespec* timeout)
    int sendmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags)
    int getsockname(int fd, sockaddr* addr, socklen_t* addrlen)
    int getsockopt(int fd, int level, int optname, void* optval, socklen_t* optlen)

cdef extern from "netinet/in.h" nogil:
    ctypedef uint32_t in_addr_t
    ctypedef uint16_t in_port_t
    struct in_addr:
        in_addr_t s_addr
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in:
        sa_family_t sin_family
        in_port_t sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        in_port_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    uint16_t htons(uint16_t v)
    uint16_t ntohs(uint16_t v)

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char* src, void* dst)
    const char* inet_ntop(int af, const void* src, char* dst, socklen_t size)


cdef enum:
    # Datagrams per recvmmsg/sendmmsg call, and the largest one relayed
    # (anything longer arrives truncated and is dropped, counted).
    RELAY_BATCH = 32
    RELAY_MAX_PACKET = 2048
    # Ready sockets taken from one epoll_wait.
    RELAY_MAX_EVENTS = 256


cdef struct DirStats:
    # Counters for the packets received on one leg's socket (from that leg's
    # phone), which go out of the other leg's socket.
    uint64_t packets            # accepted from the (latched) source
    uint64_t bytes
    uint64_t dropped_foreign    # from another source after latching
    uint64_t dropped_no_peer    # accepted, but the other side's address unknown
    uint64_t dropped_truncated  # longer than RELAY_MAX_PACKET
    uint64_t send_errors        # sendmmsg refused the datagram
    int64_t last_seen_ns        # CLOCK_MONOTONIC; 0 = never
    # RTP sequence tracking (RFC 3550 A.1) and jitter (A.8).
    bint have_seq
    uint32_t ssrc
    uint32_t base_seq
    uint32_t max_seq
    uint32_t cycles
    uint32_t bad_seq
    uint64_t received
    int64_t lost_before         # lost in earlier SSRCs / sequence restarts
    bint have_transit
    uint32_t last_transit
    double jitter               # timestamp units
    int last_pt                 # -1 = no RTP seen


cdef struct Leg:
    int fd
    int family
    bint have_peer              # peer is where this leg's packets go
    bint latched                # peer learnt from this leg's own traffic
    socklen_t peer_len
    sockaddr_storage peer
    DirStats st


cdef struct Session:
    int64_t sid                 # 0 = free slot
    uint32_t gen                # bumped on removal; stale epoll events carry the old one
    bint latch
    uint32_t clock_rate
    Leg leg[2]


cdef class Relay:
    cdef int _epfd
    cdef int _max_sessions
    cdef Session* _sessions
    cdef int* _free_slots
    cdef int _n_free
    cdef int64_t _next_sid
    cdef pthread_mutex_t _mutex
    cdef bint _mutex_ready
    cdef bint _running
    cdef int _wakefd            # eventfd in the epoll set: stop() writes it
    cdef bint _stop_seen
    cdef dict _slot_of
    # Pre-allocated I/O state for run(): one receive batch and its echo.
    cdef epoll_event* _events
    cdef unsigned char* _buffers
    cdef sockaddr_storage* _sources
    cdef iovec* _rx_iov
    cdef mmsghdr* _rx_msgs
    cdef iovec* _tx_iov
    cdef mmsghdr* _tx_msgs

    cdef void _lock(self) noexcept
    cdef void _unlock(self) noexcept nogil
    cdef int _slot(self, object sid) except -1
    cdef uint64_t _process(self, int n_events) noexcept nogil
    cdef void _drain_wakefd(self) noexcept nogil
    cdef uint64_t _relay_from(self, Session* s, int side) noexcept nogil
