"""RTP relay: compiled (warden_ext.relay) and pure (warden.media.pure.relay).

Both implementations are imported directly and every test runs over both,
with real UDP sockets on 127.0.0.1 and ::1 (ephemeral ports). Each loop is
bounded in iterations and time, and every socket is closed at teardown.
"""

from __future__ import annotations

import importlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

import warden.media.pure.relay as pure_relay

HOSTS: dict[int, str] = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


def _pure_mode() -> bool:
    return os.environ.get("WARDEN_NO_EXTENSIONS", "") not in ("", "0")


def _compiled() -> ModuleType:
    if _pure_mode():
        module: ModuleType = pytest.importorskip(
            "warden_ext.relay", reason="extension not built (pure mode)"
        )
        return module
    return importlib.import_module("warden_ext.relay")


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(params=["compiled", "pure"])
def relay_mod(request: pytest.FixtureRequest) -> ModuleType:
    return _compiled() if request.param == "compiled" else pure_relay


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def family(request: pytest.FixtureRequest) -> int:
    if request.param == socket.AF_INET6 and not _has_ipv6():
        pytest.skip("no IPv6 loopback")
    return int(request.param)


class Net:
    """Sockets and relays made by one test; all closed at teardown."""

    def __init__(self, mod: ModuleType, family: int) -> None:
        self.mod = mod
        self.family = family
        self.host = HOSTS[family]
        self.sockets: list[socket.socket] = []
        self.relays: list[Any] = []

    def udp(self, family: int | None = None, host: str | None = None) -> socket.socket:
        fam = self.family if family is None else family
        sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sockets.append(sock)
        sock.bind((HOSTS[fam] if host is None else host, 0))
        sock.setblocking(False)
        return sock

    def relay(self, max_sessions: int = 8) -> Any:
        relay = self.mod.Relay(max_sessions)
        self.relays.append(relay)
        return relay

    def close(self) -> None:
        for relay in self.relays:
            relay.close()  # before the sockets: the relay must let go first
        for sock in self.sockets:
            sock.close()


@pytest.fixture()
def net(relay_mod: ModuleType, family: int) -> Iterator[Net]:
    n = Net(relay_mod, family)
    yield n
    n.close()


def addr(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return (host, port)


def rtp(seq: int, ts: int, ssrc: int = 0x1234ABCD, pt: int = 0, payload: bytes = b"") -> bytes:
    body = payload or bytes((seq + i) & 0xFF for i in range(160))
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + body


def pump(relay: Any, done: Callable[[], bool], timeout: float = 3.0) -> None:
    """Run the relay in this thread until ``done()`` or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "relay did not get there in time"
        relay.run(10)


def drain(relay: Any, seconds: float = 0.05) -> int:
    """Run the relay for a short while; return what it relayed."""
    total = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        total += relay.run(5)
    return total


def _readable(sock: socket.socket, timeout: float) -> bool:
    poller = select.poll()  # not select(): descriptors above 1024 in the big tests
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def recv_all(sock: socket.socket, count: int, timeout: float = 3.0) -> list[tuple[bytes, Any]]:
    """Up to ``count`` datagrams, waiting at most ``timeout`` in total."""
    got: list[tuple[bytes, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if not _readable(sock, left):
            break
        while len(got) < count:
            try:
                got.append(sock.recvfrom(4096))
            except BlockingIOError:
                break
    return got


def assert_nothing(sock: socket.socket, wait: float = 0.05) -> None:
    assert not _readable(sock, wait), f"unexpected datagram: {sock.recvfrom(4096)!r}"


class Call:
    """A relay session with both phones: ``pa``/``pb`` phones, ``ra``/``rb`` relay sockets."""

    def __init__(self, net: Net, relay: Any, *, announce: bool = True, latch: bool = True) -> None:
        self.ra, self.rb = net.udp(), net.udp()
        self.pa, self.pb = net.udp(), net.udp()
        self.relay = relay
        self.sid = relay.add_session(
            self.ra.fileno(), self.rb.fileno(),
            a_peer=addr(self.pa) if announce else None,
            b_peer=addr(self.pb) if announce else None,
            latch=latch,
        )

    def a_to_b(self, data: bytes, sender: socket.socket | None = None) -> None:
        (sender or self.pa).sendto(data, addr(self.ra))

    def b_to_a(self, data: bytes, sender: socket.socket | None = None) -> None:
        (sender or self.pb).sendto(data, addr(self.rb))

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.relay.stats(self.sid)
        return result


# -- the build -------------------------------------------------------------------


def test_compiled_module_is_compiled() -> None:
    if _pure_mode():
        pytest.skip("WARDEN_NO_EXTENSIONS is set")
    compiled = importlib.import_module("warden_ext.relay")
    assert compiled.__file__ is not None and compiled.__file__.endswith(".so"), compiled.__file__
    from warden.media import relay as selected

    assert selected.Relay is compiled.Relay


def test_selector_follows_the_switch() -> None:
    from warden.media import accel

    assert (accel.load("relay") is pure_relay) == _pure_mode()


def test_same_public_api(relay_mod: ModuleType) -> None:
    names = {n for n in dir(relay_mod.Relay) if not n.startswith("_")}
    assert names == {n for n in dir(pure_relay.Relay) if not n.startswith("_")}
    assert relay_mod.MAX_PACKET == pure_relay.MAX_PACKET == 2048


# -- relaying ------------------------------------------------------------------------


def test_relays_both_ways_payload_unchanged(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay)
    a_packets = [rtp(100 + i, 160 * i) for i in range(20)] + [b"not rtp", bytes(range(256)) * 4]
    b_packets = [rtp(7 + i, 999 + 160 * i, ssrc=0x55, pt=8) for i in range(20)] + [b"\x00"]
    for data in a_packets:
        call.a_to_b(data)
    for data in b_packets:
        call.b_to_a(data)
    pump(relay, lambda: relay.stats(call.sid)["a_to_b"]["packets"] == len(a_packets)
         and relay.stats(call.sid)["b_to_a"]["packets"] == len(b_packets))
    at_b = recv_all(call.pb, len(a_packets))
    at_a = recv_all(call.pa, len(b_packets))
    assert [d for d, _ in at_b] == a_packets
    assert [d for d, _ in at_a] == b_packets
    # Each phone hears the relay's socket on its own leg, never the other phone.
    assert {src[:2] for _, src in at_b} == {addr(call.rb)}
    assert {src[:2] for _, src in at_a} == {addr(call.ra)}
    stats = call.stats()
    assert stats["a_to_b"]["bytes"] == sum(map(len, a_packets))
    assert stats["b_to_a"]["bytes"] == sum(map(len, b_packets))


def test_run_returns_relayed_count_and_times_out(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay)
    started = time.monotonic()
    assert relay.run(30) == 0
    assert time.monotonic() - started >= 0.02
    for i in range(5):
        call.a_to_b(rtp(i, i * 160))
    total = 0
    deadline = time.monotonic() + 3
    while total < 5 and time.monotonic() < deadline:
        total += relay.run(10)
    assert total == 5
    assert len(recv_all(call.pb, 5)) == 5


def test_ipv4_peer_on_dual_stack_ipv6_socket(relay_mod: ModuleType) -> None:
    if not _has_ipv6():
        pytest.skip("no IPv6")
    n = Net(relay_mod, socket.AF_INET)
    try:
        ra = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        n.sockets.append(ra)
        ra.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        ra.bind(("::", 0))
        ra.setblocking(False)
        rb = n.udp()
        pa, pb = n.udp(), n.udp()
        relay = n.relay()
        sid = relay.add_session(ra.fileno(), rb.fileno(), a_peer=addr(pa), b_peer=addr(pb))
        assert relay.stats(sid)["b_to_a"]["destination"] == ("::ffff:127.0.0.1", addr(pa)[1])
        pb.sendto(b"to a", addr(rb))
        pump(relay, lambda: relay.stats(sid)["b_to_a"]["packets"] == 1)
        data, src = recv_all(pa, 1)[0]
        assert data == b"to a" and src[1] == ra.getsockname()[1]
        pa.sendto(b"to b", ("127.0.0.1", ra.getsockname()[1]))
        pump(relay, lambda: relay.stats(sid)["a_to_b"]["packets"] == 1)
        assert recv_all(pb, 1)[0][0] == b"to b"
        assert relay.stats(sid)["a_to_b"]["source"] == ("::ffff:127.0.0.1", addr(pa)[1])
    finally:
        n.close()


def test_one_leg_ipv4_the_other_ipv6(relay_mod: ModuleType) -> None:
    if not _has_ipv6():
        pytest.skip("no IPv6")
    n = Net(relay_mod, socket.AF_INET)
    try:
        ra, pa = n.udp(socket.AF_INET), n.udp(socket.AF_INET)
        rb, pb = n.udp(socket.AF_INET6), n.udp(socket.AF_INET6)
        relay = n.relay()
        sid = relay.add_session(ra.fileno(), rb.fileno(), a_peer=addr(pa), b_peer=addr(pb))
        pa.sendto(b"v4 to v6", addr(ra))
        pb.sendto(b"v6 to v4", addr(rb))
        pump(relay, lambda: relay.stats(sid)["a_to_b"]["packets"] == relay.stats(sid)["b_to_a"]["packets"] == 1)
        assert recv_all(pb, 1)[0][0] == b"v4 to v6"
        assert recv_all(pa, 1)[0][0] == b"v6 to v4"
    finally:
        n.close()


# -- latching ----------------------------------------------------------------------


def test_latching_phone_behind_nat_gets_audio_both_ways(net: Net) -> None:
    relay = net.relay()
    ra, rb, pb = net.udp(), net.udp(), net.udp()
    announced = net.udp()  # what A's SDP says; A really sends from nat_a
    nat_a = net.udp()
    sid = relay.add_session(ra.fileno(), rb.fileno(), a_peer=addr(announced), b_peer=addr(pb))
    nat_a.sendto(rtp(1, 0), addr(ra))
    pump(relay, lambda: relay.stats(sid)["a_to_b"]["packets"] == 1)
    assert recv_all(pb, 1)[0][0] == rtp(1, 0)
    pb.sendto(rtp(50, 0, ssrc=9), addr(rb))
    pump(relay, lambda: relay.stats(sid)["b_to_a"]["packets"] == 1)
    assert recv_all(nat_a, 1)[0][0] == rtp(50, 0, ssrc=9)
    assert_nothing(announced)
    stats = relay.stats(sid)
    assert stats["a_to_b"]["source"] == addr(nat_a)
    assert stats["b_to_a"]["destination"] == addr(nat_a)
    assert stats["b_to_a"]["source"] == addr(pb)


def test_unknown_peer_counts_dropped_no_peer_until_it_sends(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay, announce=False)
    call.a_to_b(rtp(1, 0))
    call.a_to_b(rtp(2, 160))
    pump(relay, lambda: call.stats()["a_to_b"]["packets"] == 2)
    assert call.stats()["a_to_b"]["dropped_no_peer"] == 2
    call.b_to_a(rtp(1, 0, ssrc=2))  # B is learnt; A was learnt from its first packet
    pump(relay, lambda: call.stats()["b_to_a"]["packets"] == 1)
    assert recv_all(call.pa, 1)[0][0] == rtp(1, 0, ssrc=2)
    call.a_to_b(rtp(3, 320))
    pump(relay, lambda: call.stats()["a_to_b"]["packets"] == 3)
    assert recv_all(call.pb, 1)[0][0] == rtp(3, 320)
    assert call.stats()["a_to_b"]["dropped_no_peer"] == 2


def test_foreign_source_is_ignored_after_latching(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay)
    intruder = net.udp()
    call.a_to_b(rtp(1, 0))
    call.b_to_a(rtp(1, 0, ssrc=7))
    pump(relay, lambda: call.stats()["a_to_b"]["packets"] == 1 and call.stats()["b_to_a"]["packets"] == 1)
    recv_all(call.pb, 1)
    recv_all(call.pa, 1)
    for i in range(5):
        intruder.sendto(b"hijack" + bytes([i]), addr(call.ra))
        intruder.sendto(b"hijack" + bytes([i]), addr(call.rb))
    pump(relay, lambda: call.stats()["a_to_b"]["dropped_foreign"] == 5
         and call.stats()["b_to_a"]["dropped_foreign"] == 5)
    assert_nothing(call.pb)
    assert_nothing(call.pa)
    assert_nothing(intruder)
    stats = call.stats()
    assert stats["a_to_b"]["packets"] == stats["b_to_a"]["packets"] == 1
    assert stats["a_to_b"]["source"] == addr(call.pa)
    # The real phone still gets through.
    call.a_to_b(rtp(2, 160))
    pump(relay, lambda: call.stats()["a_to_b"]["packets"] == 2)
    assert recv_all(call.pb, 1)[0][0] == rtp(2, 160)


def test_without_latch_any_source_goes_to_the_configured_peer(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay, latch=False)
    other = net.udp()
    call.a_to_b(b"one")
    other.sendto(b"two", addr(call.ra))
    pump(relay, lambda: call.stats()["a_to_b"]["packets"] == 2)
    assert sorted(d for d, _ in recv_all(call.pb, 2)) == [b"one", b"two"]
    call.b_to_a(b"back")
    pump(relay, lambda: call.stats()["b_to_a"]["packets"] == 1)
    assert recv_all(call.pa, 1)[0][0] == b"back"
    assert_nothing(other)
    stats = call.stats()
    assert stats["latch"] is False
    assert stats["a_to_b"]["source"] is None and stats["a_to_b"]["dropped_foreign"] == 0


def test_set_peer_moves_the_destination_and_relatches(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay)
    call.a_to_b(rtp(1, 0))
    pump(relay, lambda: call.stats()["a_to_b"]["packets"] == 1)
    recv_all(call.pb, 1)
    moved = net.udp()  # re-INVITE: A now at another address
    relay.set_peer(call.sid, "a", *addr(moved))
    assert call.stats()["b_to_a"]["destination"] == addr(moved)
    assert call.stats()["a_to_b"]["source"] is None
    call.b_to_a(b"to new a")
    pump(relay, lambda: call.stats()["b_to_a"]["packets"] == 1)
    assert recv_all(moved, 1)[0][0] == b"to new a"
    assert_nothing(call.pa)
    moved.sendto(rtp(2, 160), addr(call.ra))  # latches the new address
    pump(relay, lambda: call.stats()["a_to_b"]["packets"] == 2)
    assert call.stats()["a_to_b"]["source"] == addr(moved)
    call.a_to_b(rtp(3, 320))  # the old address is now foreign
    pump(relay, lambda: call.stats()["a_to_b"]["dropped_foreign"] == 1)


# -- counters -------------------------------------------------------------------------


def _send_seqs(call: Call, relay: Any, seqs: list[int], ssrc: int = 0x1234ABCD) -> None:
    before = call.stats()["a_to_b"]["packets"]
    for seq in seqs:
        call.a_to_b(rtp(seq, seq * 160, ssrc=ssrc))
        relay.run(0)  # keep the socket buffer and the order trivially safe
    pump(relay, lambda: call.stats()["a_to_b"]["packets"] == before + len(seqs))


def test_loss_from_sequence_gaps_across_wrap(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay)
    lost_seqs = {65533, 2, 3}
    seqs = [s for s in [*range(65528, 65536), *range(12)] if s not in lost_seqs]
    _send_seqs(call, relay, seqs)
    assert call.stats()["a_to_b"]["lost"] == 3
    _send_seqs(call, relay, [11, 12])  # a duplicate does not make loss negative
    assert call.stats()["a_to_b"]["lost"] == 2
    _send_seqs(call, relay, [3])  # a late packet fills its gap
    assert call.stats()["a_to_b"]["lost"] == 1


def test_loss_survives_ssrc_change_and_restart(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay)
    _send_seqs(call, relay, [10, 11, 13])  # one lost
    _send_seqs(call, relay, [500, 502], ssrc=0xBEEF)  # new SSRC: one more lost
    assert call.stats()["a_to_b"]["lost"] == 2
    assert call.stats()["a_to_b"]["ssrc"] == 0xBEEF
    # A jump of 30000 is believed only when the next packet follows it.
    _send_seqs(call, relay, [30502, 30503, 30505], ssrc=0xBEEF)
    assert call.stats()["a_to_b"]["lost"] == 3


def test_jitter_of_a_stream_with_known_delay_variation(net: Net) -> None:
    """Timestamps alternate 10 ms early/late against near-simultaneous arrival.

    |D| is 80 units (10 ms at 8 kHz) for every pair, so after n packets
    J = 80 * (1 - (15/16) ** (n - 1)) (RFC 3550 A.8).
    """
    relay = net.relay()
    call = Call(net, relay)
    count = 60
    base = 1_000_000
    for i in range(count):
        call.a_to_b(rtp(i, base + 80 * (i % 2)))
    pump(relay, lambda: call.stats()["a_to_b"]["packets"] == count)
    expected = 80 * (1 - (15 / 16) ** (count - 1))
    stats = call.stats()["a_to_b"]
    assert stats["jitter"] == pytest.approx(expected, rel=0.1)
    assert stats["jitter_ms"] == pytest.approx(expected / 8, rel=0.1)
    assert stats["lost"] == 0


def test_jitter_of_a_paced_stream_matches_rfc3550(net: Net) -> None:
    """20 ms packets, every other one sent 4 ms late: J approaches 32 units (4 ms).

    The expectation is computed with the A.8 formula from the send times this
    test actually achieved, so a busy machine does not make it flaky.
    """
    relay = net.relay()
    call = Call(net, relay)
    count = 25
    sent_ns: list[int] = []
    start = time.monotonic() + 0.01
    for i in range(count):
        due = start + i * 0.020 + (0.004 if i % 2 else 0.0)
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent_ns.append(time.monotonic_ns())
        call.a_to_b(rtp(i, i * 160))
        pump(relay, lambda i=i: call.stats()["a_to_b"]["packets"] == i + 1)  # type: ignore[misc]
    jitter = 0.0
    for i in range(1, count):
        d = (sent_ns[i] - sent_ns[i - 1]) * 8000 / 1e9 - 160
        jitter += (abs(d) - jitter) / 16
    stats = call.stats()["a_to_b"]
    assert 15 < jitter < 35
    assert stats["jitter"] == pytest.approx(jitter, abs=4)
    assert stats["jitter_ms"] == pytest.approx(jitter / 8, abs=0.5)


def test_stats_fields(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay)
    empty = call.stats()
    assert empty["sid"] == call.sid and empty["latch"] is True
    for direction in ("a_to_b", "b_to_a"):
        d = empty[direction]
        assert d["packets"] == d["bytes"] == d["lost"] == 0
        assert d["last_seen"] is None and d["source"] is None and d["ssrc"] is None
        assert d["payload_type"] is None and d["jitter_ms"] is None
    assert empty["a_to_b"]["destination"] == addr(call.pb)
    before = time.monotonic()
    call.a_to_b(rtp(5, 800, ssrc=42, pt=8))
    call.b_to_a(rtp(9, 1, ssrc=43, pt=96, payload=b"opus"))
    pump(relay, lambda: call.stats()["b_to_a"]["packets"] == 1 and call.stats()["a_to_b"]["packets"] == 1)
    after = time.monotonic()
    stats = call.stats()
    a, b = stats["a_to_b"], stats["b_to_a"]
    assert set(a) == {
        "packets", "bytes", "lost", "jitter", "jitter_ms", "last_seen", "source",
        "destination", "ssrc", "payload_type", "dropped_foreign", "dropped_no_peer",
        "dropped_truncated", "send_errors",
    }
    assert (a["packets"], a["bytes"], a["ssrc"], a["payload_type"]) == (1, 172, 42, 8)
    assert (b["packets"], b["bytes"], b["ssrc"], b["payload_type"]) == (1, 16, 43, 96)
    assert a["jitter_ms"] == 0.0 and b["jitter_ms"] is None  # ms only for G.711 PTs
    assert before <= a["last_seen"] <= after
    assert a["source"] == addr(call.pa) and b["source"] == addr(call.pb)
    assert a["send_errors"] == b["send_errors"] == 0


def test_oversized_datagram_is_dropped_and_counted(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay)
    call.a_to_b(bytes(net.mod.MAX_PACKET + 1))
    call.a_to_b(bytes(net.mod.MAX_PACKET))
    pump(relay, lambda: call.stats()["a_to_b"]["packets"] == 1)
    assert call.stats()["a_to_b"]["dropped_truncated"] == 1
    assert [len(d) for d, _ in recv_all(call.pb, 2, timeout=0.3)] == [net.mod.MAX_PACKET]


# -- session lifecycle ----------------------------------------------------------------


def test_remove_session_stops_relaying_and_leaves_sockets_open(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay)
    call.a_to_b(b"before")
    pump(relay, lambda: call.stats()["a_to_b"]["packets"] == 1)
    assert recv_all(call.pb, 1)[0][0] == b"before"
    relay.remove_session(call.sid)
    assert len(relay) == 0
    call.a_to_b(b"after")
    assert drain(relay, 0.1) == 0
    assert_nothing(call.pb)
    # The relay neither read nor closed the caller's socket.
    assert call.ra.recvfrom(100)[0] == b"after"
    with pytest.raises(KeyError):
        relay.stats(call.sid)
    with pytest.raises(KeyError):
        relay.remove_session(call.sid)
    with pytest.raises(KeyError):
        relay.set_peer(call.sid, "a", net.host, 5000)
    # The same sockets can join a new session (new id).
    sid2 = relay.add_session(call.ra.fileno(), call.rb.fileno(), a_peer=addr(call.pa), b_peer=addr(call.pb))
    assert sid2 != call.sid
    call.a_to_b(b"again")
    pump(relay, lambda: relay.stats(sid2)["a_to_b"]["packets"] == 1)
    assert recv_all(call.pb, 1)[0][0] == b"again"


def test_two_hundred_concurrent_sessions(net: Net) -> None:
    sessions = 200
    relay = net.relay(sessions)
    calls = [Call(net, relay) for _ in range(sessions)]
    assert len(relay) == sessions
    with pytest.raises(RuntimeError):
        Call(net, relay)
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            deadline = time.monotonic() + 20
            while not stop.is_set() and time.monotonic() < deadline:
                relay.run(20)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        per_call = 3
        for k in range(per_call):
            for i, call in enumerate(calls):
                call.a_to_b(rtp(k, k * 160, ssrc=i, payload=b"A%05d" % i))
                call.b_to_a(rtp(k, k * 160, ssrc=i + 1000, payload=b"B%05d" % i))
        for i, call in enumerate(calls):
            at_b = recv_all(call.pb, per_call, timeout=5)
            at_a = recv_all(call.pa, per_call, timeout=5)
            assert [d[12:] for d, _ in at_b] == [b"A%05d" % i] * per_call
            assert [d[12:] for d, _ in at_a] == [b"B%05d" % i] * per_call
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive() and not errors
    for call in calls:
        stats = call.stats()
        assert stats["a_to_b"]["packets"] == stats["b_to_a"]["packets"] == per_call
        assert stats["a_to_b"]["lost"] == 0


def test_control_calls_from_another_thread_while_running(net: Net) -> None:
    """add/remove/set_peer/stats race a running loop; removed sockets are closed at once."""
    relay = net.relay(16)
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            deadline = time.monotonic() + 20
            while not stop.is_set() and time.monotonic() < deadline:
                relay.run(5)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        keeper = Call(net, relay)
        for round_ in range(30):
            ra, rb, pa, pb = (socket.socket(net.family, socket.SOCK_DGRAM) for _ in range(4))
            try:
                for s in (ra, rb, pa, pb):
                    s.bind((net.host, 0))
                    s.setblocking(False)
                sid = relay.add_session(ra.fileno(), rb.fileno(), a_peer=addr(pa), b_peer=addr(pb))
                for i in range(3):
                    pa.sendto(rtp(i, i * 160), addr(ra))
                keeper.a_to_b(b"k%d" % round_)
                assert len(recv_all(pb, 3)) == 3
                relay.set_peer(sid, "b", *addr(pa))
                relay.stats(sid)
                pa.sendto(b"in flight", addr(ra))
                relay.remove_session(sid)
            finally:
                for s in (ra, rb, pa, pb):
                    s.close()  # right after removal: the loop must not use these fds
        assert len(recv_all(keeper.pb, 30)) == 30
        assert keeper.stats()["a_to_b"]["packets"] == 30
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive() and not errors


def test_run_is_single_threaded_and_close_waits_for_it(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay)
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(relay.run(5000)), daemon=True)
    thread.start()
    try:
        time.sleep(0.2)  # the thread is now waiting inside run()
        with pytest.raises(RuntimeError):
            relay.run(0)
        with pytest.raises(RuntimeError):
            relay.close()
    finally:
        call.a_to_b(b"wake up")
        thread.join(5)
    assert results == [1]


def test_run_with_duration_keeps_relaying_until_stop(net: Net) -> None:
    relay = net.relay()
    call = Call(net, relay)
    results: list[int] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: results.append(relay.run(20, duration_ms=-1)), daemon=True)
    thread.start()
    try:
        for i in range(10):
            call.a_to_b(rtp(i, i * 160))
            time.sleep(0.005)
        assert len(recv_all(call.pb, 10)) == 10
        assert thread.is_alive()  # many waits of 20 ms, one call
    finally:
        relay.stop()
        thread.join(5)
    assert not thread.is_alive() and results == [10]
    # A bounded duration returns by itself, after about that long.
    started = time.monotonic()
    assert relay.run(10, duration_ms=120) == 0
    assert 0.1 <= time.monotonic() - started < 2.0
    # stop() before run() makes the next run() return at once.
    relay.stop()
    started = time.monotonic()
    assert relay.run(5000, duration_ms=-1) == 0
    assert time.monotonic() - started < 1.0


# -- errors ---------------------------------------------------------------------------


def test_argument_errors(net: Net) -> None:
    with pytest.raises(ValueError):
        net.mod.Relay(0)
    relay = net.relay(1)
    ra, rb, pa = net.udp(), net.udp(), net.udp()
    with pytest.raises(ValueError):
        relay.add_session(ra.fileno(), ra.fileno())
    tcp = socket.socket(net.family, socket.SOCK_STREAM)
    net.sockets.append(tcp)
    with pytest.raises(ValueError):
        relay.add_session(tcp.fileno(), rb.fileno())
    for bad in (("not an ip", 5000), (net.host, 0), (net.host, 70000), ("x",), "127.0.0.1:5000"):
        with pytest.raises(ValueError):
            relay.add_session(ra.fileno(), rb.fileno(), a_peer=bad)
    if net.family == socket.AF_INET:
        with pytest.raises(ValueError):
            relay.add_session(ra.fileno(), rb.fileno(), a_peer=("::1", 5000))
    assert len(relay) == 0
    sid = relay.add_session(ra.fileno(), rb.fileno())
    with pytest.raises(ValueError):
        relay.set_peer(sid, "c", net.host, 5000)
    with pytest.raises(RuntimeError):
        relay.add_session(pa.fileno(), net.udp().fileno())
    relay.remove_session(sid)
    other = net.relay(4)
    other.add_session(ra.fileno(), pa.fileno())
    relay2 = net.relay(4)
    relay2.add_session(rb.fileno(), net.udp().fileno())
    with pytest.raises(OSError):
        relay2.add_session(rb.fileno(), net.udp().fileno())  # rb already in a session
    with pytest.raises(KeyError):
        relay.stats(12345)
    relay.close()
    with pytest.raises(ValueError):
        relay.run(0)
    relay.close()  # idempotent
