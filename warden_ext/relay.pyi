"""Stub for the compiled RTP relay (relay.pyx); pure twin: warden.media.pure.relay.

A session joins two already-bound UDP sockets (IPv4 or IPv6), one per call
leg: datagrams arriving on the A socket leave by the B socket towards B's
peer, and the other way round. The sockets stay the caller's: keep them open
until ``remove_session`` (or ``close``) has returned, then close them.

``stats(sid)`` returns::

    {"sid": int, "latch": bool, "a_to_b": Direction, "b_to_a": Direction}

where "a_to_b" counts what arrived on the A socket (from A's phone) and went
towards B. A Direction dict has:

- ``packets``, ``bytes``: datagrams accepted from the leg's (latched) source;
- ``lost``: RTP packets lost, from sequence numbers (RFC 3550 A.1, 16-bit
  wrap handled, SSRC changes and restarts accumulated, never negative);
- ``jitter``: interarrival jitter (RFC 3550 A.8) in RTP timestamp units;
  arrival times are converted at 8 kHz for payload types 0/8 (G.711) and at
  the session's ``clock_rate`` otherwise;
- ``jitter_ms``: the same in milliseconds for payload types 0/8, else None;
- ``last_seen``: ``time.monotonic()`` seconds of the last accepted packet, or None;
- ``source``: the latched source ``(host, port)`` of the sending phone, or None;
- ``destination``: where the other leg's socket sends these packets, or None;
- ``ssrc``, ``payload_type``: of the last RTP packet, or None;
- ``dropped_foreign``: from another address once latched (not in ``packets``);
- ``dropped_no_peer``: accepted while the destination was unknown;
- ``dropped_truncated``: longer than MAX_PACKET;
- ``send_errors``: refused by the kernel on the way out (e.g. buffer full).

RTP statistics skip datagrams that are not RTP version 2 and RTCP on the RTP
port (payload types 72-76); those are still relayed.
"""

from types import TracebackType
from typing import Any, Literal

__all__ = ["MAX_PACKET", "Relay"]

MAX_PACKET: int

class Relay:
    """Relay RTP between the two UDP sockets of each of up to ``max_sessions`` sessions.

    Thread model: one thread calls ``run`` in a loop; ``add_session``,
    ``remove_session``, ``set_peer`` and ``stats`` may be called from any
    other thread meanwhile (a mutex guards the session table; ``run`` holds
    it only while relaying a batch, never while waiting).
    """

    def __init__(self, max_sessions: int) -> None:
        """ValueError unless ``max_sessions`` is positive; OSError if epoll fails."""

    @property
    def max_sessions(self) -> int: ...
    def __len__(self) -> int:
        """Number of active sessions."""

    def add_session(
        self,
        a_fd: int,
        b_fd: int,
        *,
        a_peer: tuple[str, int] | None = None,
        b_peer: tuple[str, int] | None = None,
        latch: bool = True,
        clock_rate: int = 8000,
    ) -> int:
        """Join two bound UDP sockets; return the session id.

        ``a_peer``/``b_peer`` are the addresses from each leg's SDP (numeric
        IPs; an IPv4 peer on an IPv6 socket is sent to as ``::ffff:a.b.c.d``),
        or None when not yet known. With ``latch`` each leg's first packet
        fixes that leg's peer to its real source, and packets from any other
        source are then dropped; without it every source is accepted and the
        peers are only what the caller sets. ``clock_rate`` is the RTP clock
        of the session's codec, used for jitter of payload types other than
        0/8. ValueError for a bad fd or peer, OSError(EEXIST) for a socket
        already in a session, RuntimeError when the relay is full.
        """

    def remove_session(self, sid: int) -> None:
        """Stop relaying ``sid``; its sockets are not touched once this returns. KeyError if unknown."""

    def set_peer(self, sid: int, side: Literal["a", "b"], host: str, port: int) -> None:
        """Send that leg's packets to ``(host, port)`` and, if latching, learn its source again."""

    def stats(self, sid: int) -> dict[str, Any]:
        """Counters per direction (see the module doc). KeyError if unknown."""

    def run(self, timeout_ms: int, *, duration_ms: int = 0) -> int:
        """Wait up to ``timeout_ms`` (-1: forever) for packets, relay them, return how many were sent.

        One epoll_wait, then up to 32 datagrams from each ready socket, all
        with the GIL released. With ``duration_ms`` > 0 it keeps doing that
        (each wait at most ``timeout_ms``) until ``duration_ms`` has passed;
        with ``duration_ms`` < 0 until ``stop()``. Either way without the
        GIL: a relay thread next to busy Python threads (the SIP engine)
        must not go back for the GIL once per wake-up, as each
        reacquisition can cost up to the 5 ms switch interval. ``stop()``
        ends any run early. RuntimeError if another thread is already in
        ``run``.
        """

    def stop(self) -> None:
        """Make the running ``run`` (or else the next one) return promptly; callable from any thread."""

    def close(self) -> None:
        """Remove every session and release the epoll instance (sockets stay open)."""

    def __enter__(self) -> "Relay": ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
