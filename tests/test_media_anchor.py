"""Media anchoring over real UDP sockets: SDP rewritten to our relay ports,
payload relayed unchanged both ways, latching, ports given back."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from warden.media import accel
from warden.errors import SIPParseError
from warden.media.anchor import CallMedia, MediaPlane, PortPool
from warden.sip.sdp import anchor_view, parse_sdp


def offer(host: str, port: int, *, mux: bool = False) -> bytes:
    lines = [
        "v=0", f"o=- 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", f"a=rtcp:{port + 1}", "a=sendrecv",
        "a=candidate:1 1 UDP 2130706431 10.0.0.5 4000 typ host",
    ]
    if mux:
        lines.append("a=rtcp-mux")
    return ("\r\n".join(lines) + "\r\n").encode()


def rtp(seq: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + payload


@pytest.fixture(params=["accelerated", "pure"])
def plane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[MediaPlane]:
    if request.param == "pure":
        monkeypatch.setenv("WARDEN_NO_EXTENSIONS", "1")
    else:
        monkeypatch.delenv("WARDEN_NO_EXTENSIONS", raising=False)
    mp = MediaPlane(6200, 6299)
    assert mp.implementation == request.param == accel.implementation()
    mp.start()
    yield mp
    mp.stop()


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    return s


def test_call_media_is_anchored_and_relayed_unchanged(plane: MediaPlane) -> None:
    phone_a, phone_b = udp(), udp()
    call = plane.open_call("127.0.0.1")
    to_b = parse_sdp(call.relay_sdp(offer("127.0.0.1", phone_a.getsockname()[1]), "a"))
    to_a = parse_sdp(call.relay_sdp(offer("127.0.0.1", phone_b.getsockname()[1]), "b"))
    b_port, a_port = to_b.media[0].port, to_a.media[0].port
    assert 6200 <= a_port <= 6299 and 6200 <= b_port <= 6299 and a_port % 2 == 0 and a_port != b_port
    assert to_b.connection_of(to_b.media[0]).host == "127.0.0.1"  # type: ignore[union-attr]
    assert to_b.media[0].rtcp.port == b_port + 1  # type: ignore[union-attr]
    assert to_b.media[0].formats == ("0", "8", "101")  # codecs pass through untouched
    assert not to_b.media[0].has_attribute("candidate")
    for i in range(20):
        payload = bytes([i]) * 160
        phone_a.sendto(rtp(i, payload), ("127.0.0.1", a_port))
        assert phone_b.recv(2048) == rtp(i, payload)
        phone_b.sendto(rtp(i, payload[::-1]), ("127.0.0.1", b_port))
        assert phone_a.recv(2048) == rtp(i, payload[::-1])
    stats = call.stats()[0]
    assert stats["a_to_b"]["packets"] == 20 and stats["b_to_a"]["packets"] == 20
    assert time.monotonic() - call.last_activity() < 2
    call.close()
    assert plane.pool.in_use == 0
    phone_a.sendto(rtp(99, b"x" * 160), ("127.0.0.1", a_port))
    phone_b.settimeout(0.3)
    with pytest.raises(socket.timeout):
        phone_b.recv(2048)  # ports given back: nothing relayed any more
    phone_a.close()
    phone_b.close()


def test_latching_and_foreign_source(plane: MediaPlane) -> None:
    announced, real_a, phone_b, intruder = udp(), udp(), udp(), udp()
    call = plane.open_call("127.0.0.1")
    to_b = parse_sdp(call.relay_sdp(offer("127.0.0.1", announced.getsockname()[1]), "a"))
    to_a = parse_sdp(call.relay_sdp(offer("127.0.0.1", phone_b.getsockname()[1]), "b"))
    a_port, b_port = to_a.media[0].port, to_b.media[0].port
    # A sends from another port than its SDP says (NAT): B hears it, and B's audio
    # goes back to where A really is
    real_a.sendto(rtp(1, b"a" * 160), ("127.0.0.1", a_port))
    assert phone_b.recv(2048) == rtp(1, b"a" * 160)
    phone_b.sendto(rtp(1, b"b" * 160), ("127.0.0.1", b_port))
    assert real_a.recv(2048) == rtp(1, b"b" * 160)
    # a third party sending to A's relay port after latching is ignored
    intruder.sendto(rtp(2, b"evil" * 40), ("127.0.0.1", a_port))
    real_a.sendto(rtp(3, b"a" * 160), ("127.0.0.1", a_port))
    assert phone_b.recv(2048) == rtp(3, b"a" * 160)
    assert call.stats()[0]["a_to_b"]["dropped_foreign"] >= 1
    call.close()
    for s in (announced, real_a, phone_b, intruder):
        s.close()


def test_port_pool_skips_busy_ports_and_wraps() -> None:
    from warden.media.anchor import PortPool

    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 7200))
    pool = PortPool(7200, 7205)
    first = pool.allocate("127.0.0.1")
    assert first.port == 7202  # 7200 was taken by someone else
    second = pool.allocate("127.0.0.1")
    assert second.port == 7204
    with pytest.raises(RuntimeError, match="no free RTP port pair"):
        pool.allocate("127.0.0.1")
    pool.release(first)
    assert pool.allocate("127.0.0.1").port == 7202
    busy.close()


# -- the one-pass SDP rewrite against the object model --------------------------------

_SESSION_EXTRA = [
    "c=IN IP4 192.0.2.7", "c=IN IP6 2001:db8::7", "c=IN IP4 0.0.0.0", "c=IN IP6 ::",
    "c=IN IP4 224.2.1.1/127/3", "c=IN IP4", "c=IN  IP4   192.0.2.8", "c=IN IP4 /24",
    "a=sendonly", "a=recvonly", "a=inactive", "a=sendrecv", "a=ice-ufrag:Xy", "a=ICE-PWD:secret",
    "a=ice-options:trickle", "a=group:BUNDLE 0 1", "b=AS:64", "t=0 0", "a=tool:x", "k=prompt",
    "o=- 1 2 IN IP4 192.0.2.1", "s=again", "v=0", "x", "A=upper", "", "a=rtcp:9", "a=rtcp-mux",
    "a=bad\x00nul", "a=stray\rcr", "z=é", "a=\udcff",
]
_MEDIA_LINES = [
    "m=audio {p} RTP/AVP 0 8 101", "m=video {p} RTP/AVPF 96", "m=audio 0 RTP/AVP 0",
    "m=audio {p}/2 RTP/AVP 0", "m=audio {p}/0 RTP/AVP 0", "m=audio abc RTP/AVP 0", "m=audio 70000 RTP/AVP 0",
    "m=audio 65535 RTP/AVP 0", "m=audio {p} RTP/AVP", "m=audio  {p}\tRTP/AVP  0", "m=image {p} udptl t38",
]
_MEDIA_EXTRA = [
    "c=IN IP4 198.51.100.9", "c=IN IP4 0.0.0.0", "c=IN IP6 ::", "c=IN IP6 2001:db8::9",
    "c=IN IP4 198.51.100.10", "c=bad", "c=IN IP4 /x", "a=rtcp:{r}", "a=rtcp:{r} IN IP4 203.0.113.4",
    "a=RTCP:{r}", "a=rtcp", "a=rtcp:bad", "a=rtcp:70000", "a=rtcp:0", "a=rtcp:1 2", "a=rtcp:",
    "a=rtcp-mux", "a=RTCP-MUX", "a=candidate:1 1 UDP 2130706431 10.0.0.5 4000 typ host",
    "a=end-of-candidates", "a=remote-candidates:1 10.0.0.5 4000", "a=ice-ufrag:ab", "a=sendonly",
    "a=recvonly", "a=inactive", "a=sendrecv", "a=rtpmap:0 PCMU/8000", "a=ptime:20", "i=info",
    "b=AS:64", "o=- 1 1 IN IP4 1.2.3.4", "s=x", "v=0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KEY",
]

_SESSION_C = [e for e in _SESSION_EXTRA[:8] if e not in ("c=IN IP4", "c=IN IP4 /24")]
_SESSION_GOOD = _SESSION_EXTRA[:18]
_MEDIA_GOOD = [e for e in _MEDIA_EXTRA if e not in (
    "c=bad", "a=rtcp", "a=rtcp:bad", "a=rtcp:70000", "a=rtcp:1 2", "a=rtcp:", "o=- 1 1 IN IP4 1.2.3.4", "s=x", "v=0")]


def _random_sdp(rng: random.Random) -> bytes:
    session = ["v=0" if rng.random() < 0.95 else "v=1"]
    origin = rng.choice(["o=- 1 1 IN IP4 192.0.2.1", "o=alice  2890844526 7  IN IP4 192.0.2.1",
                         "o=- 1 x IN IP4 192.0.2.1", "o=- 1 1 IN IP4", "o=- 1 99999999999999999999 IN IP6 ::1"])
    if rng.random() < 0.97:
        session.append(origin)
    if rng.random() < 0.97:
        session.append("s=-")
    odd = rng.random() < 0.25  # now and then lines parse_sdp rejects or quirks
    if rng.random() < 0.8:
        session.append(rng.choice(_SESSION_EXTRA[:8] if odd else _SESSION_C))
    pool = _SESSION_EXTRA if odd else _SESSION_GOOD
    session += rng.sample(pool, rng.choice([0, 0, 1, 2, 3]))
    rng.shuffle(session[1:] if rng.random() < 0.1 else [])
    lines = list(session)
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        port = rng.choice([4000, 6000, 49170, 65534])
        lines.append(rng.choice(_MEDIA_LINES if odd else _MEDIA_LINES[:4]).format(p=port))
        extra = rng.sample(_MEDIA_EXTRA if odd else _MEDIA_GOOD, rng.choice([0, 1, 2, 3, 4, 5]))
        lines += [e.format(r=rng.choice([port + 1, 7001, 65535])) for e in extra]
    ending = rng.choice(["\r\n", "\r\n", "\n"])
    text = ending.join(lines) + rng.choice([ending, ending, "", ending * 2, "\r\n\n"])
    return text.encode("utf-8", "surrogateescape")


class _Recorder:
    """The real relay, with every control call written down."""

    def __init__(self, relay: object) -> None:
        self.relay = relay
        self.calls: list[tuple[object, ...]] = []

    def set_peer(self, sid: int, side: str, host: str, port: int) -> None:
        self.calls.append(("set_peer", sid, side, host, port))
        self.relay.set_peer(sid, side, host, port)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.relay, name)


def _outcome(fn: Callable[[], bytes]) -> tuple[str, object]:
    try:
        return "ok", fn()
    except (SIPParseError, ValueError) as exc:
        return type(exc).__name__, str(exc)


def test_one_pass_rewrite_matches_the_object_model(plane: MediaPlane) -> None:
    rng = random.Random(3264)
    recorder = _Recorder(plane.relay)
    plane.relay = recorder  # type: ignore[assignment]
    fast = declined = 0
    try:
        for _ in range(1500):
            body = _random_sdp(rng)
            side = rng.choice("ab")
            view = anchor_view(body)
            if view is None:
                declined += 1
                # declined bodies take the reference path; they include every one it rejects
                with contextlib.suppress(SIPParseError):
                    parse_sdp(body)
                continue
            fast += 1
            call = plane.open_call(rng.choice(["127.0.0.1", "::1"]))
            recorder.calls.clear()
            got = _outcome(lambda: call.relay_sdp(body, side))
            got_calls, got_sending = list(recorder.calls), dict(call.sending)
            twin = CallMedia(plane, call.host, streams=list(call.streams))
            recorder.calls.clear()
            want = _outcome(lambda: twin._relay_parsed(parse_sdp(body), side))
            assert got == want, body
            assert got_calls == recorder.calls, body
            assert got_sending == twin.sending, body
            assert len(call.streams) == len(twin.streams)
            call.close()
    finally:
        plane.relay = recorder.relay  # type: ignore[assignment]
    assert fast > 600 and declined > 100  # both paths well exercised


def test_one_pass_rewrite_real_offers(plane: MediaPlane) -> None:
    for body in (offer("192.0.2.5", 4000), offer("192.0.2.5", 4000, mux=True)):
        assert anchor_view(body) is not None
        call = plane.open_call("127.0.0.1")
        out = call.relay_sdp(body, "a")
        twin = CallMedia(plane, call.host, streams=list(call.streams))
        assert out == twin._relay_parsed(parse_sdp(body), "a")
        sdp = parse_sdp(out)
        assert sdp.origin.version == 2 and sdp.media[0].port == call.streams[0].b.port
        call.close()


# -- socket pairs reused ---------------------------------------------------------------


def test_idle_pair_reused_after_quarantine_only() -> None:
    pool = PortPool(7300, 7319, quarantine=0.2)
    first = pool.allocate("127.0.0.1")
    pool.release(first)
    assert pool.in_use == 0 and pool.idle() == 1
    second = pool.allocate("127.0.0.1")
    assert second is not first and second.port != first.port  # still in quarantine: a fresh port
    time.sleep(0.25)
    third = pool.allocate("127.0.0.1")
    assert third is first and pool.reused == 1 and pool.in_use == 2
    for pair in (second, third):
        pool.release(pair)
    pool.close()
    assert pool.idle() == 0 and first.rtp.fileno() == -1


def test_late_packets_never_reach_the_next_call_on_a_reused_pair() -> None:
    pool = PortPool(7320, 7339, quarantine=0.2)
    old_phone = udp()
    pair = pool.allocate("127.0.0.1")
    pool.release(pair)
    old_phone.sendto(b"late rtp", ("127.0.0.1", pair.port))  # a straggler after the BYE
    old_phone.sendto(b"late rtcp", ("127.0.0.1", pair.port + 1))
    time.sleep(0.25)
    other = pool.allocate("127.0.0.1")
    assert other is not pair  # heard while idle: drained and put back for another quarantine
    time.sleep(0.25)
    again = pool.allocate("127.0.0.1")
    assert again is pair and pool.retired == 0
    for sock in (pair.rtp, pair.rtcp):
        with pytest.raises(BlockingIOError):
            sock.recv(2048)  # nothing of the old call is left queued
    pool.release(again)
    # a sender that does not stop: dirty at two checks in a row, the pair is closed
    for _ in range(2):
        time.sleep(0.25)
        old_phone.sendto(b"still talking", ("127.0.0.1", pair.port))
        time.sleep(0.02)
        assert pool.allocate("127.0.0.1") is not pair
    assert pool.retired == 1 and pair.rtp.fileno() == -1
    pool.release(other)
    pool.close()
    old_phone.close()


def test_reused_pair_latches_afresh(plane: MediaPlane) -> None:
    plane.pool.quarantine = 0.0
    phone_a, phone_b, old_a = udp(), udp(), udp()
    first = plane.open_call("127.0.0.1")
    first.relay_sdp(offer("127.0.0.1", old_a.getsockname()[1]), "a")
    first.relay_sdp(offer("127.0.0.1", phone_b.getsockname()[1]), "b")
    a_port = first.streams[0].a.port
    old_a.sendto(rtp(1, b"o" * 160), ("127.0.0.1", a_port))
    assert phone_b.recv(2048) == rtp(1, b"o" * 160)  # latched onto old_a
    first.close()
    call = plane.open_call("127.0.0.1")
    call.relay_sdp(offer("127.0.0.1", phone_a.getsockname()[1]), "a")
    call.relay_sdp(offer("127.0.0.1", phone_b.getsockname()[1]), "b")
    new_a_port = call.streams[0].a.port
    assert plane.pool.reused == 2 and new_a_port == a_port  # the old call's A pair, oldest idle first
    phone_a.sendto(rtp(2, b"n" * 160), ("127.0.0.1", new_a_port))
    assert phone_b.recv(2048) == rtp(2, b"n" * 160)
    assert call.stats()[0]["a_to_b"]["source"] == phone_a.getsockname()
    call.close()
    for s in (phone_a, phone_b, old_a):
        s.close()


def test_idle_pairs_expire_and_max_idle_zero_closes_at_once() -> None:
    pool = PortPool(7340, 7359, quarantine=0.0, idle_limit=0.1)
    pair = pool.allocate("127.0.0.1")
    pool.release(pair)
    time.sleep(0.15)
    fresh = pool.allocate("127.0.0.1")
    assert fresh is not pair and pair.rtp.fileno() == -1  # idle too long: closed, a new port bound
    pool.release(fresh)
    pool.close()
    closing = PortPool(7360, 7379, max_idle=0)
    pair = closing.allocate("127.0.0.1")
    closing.release(pair)
    assert pair.rtp.fileno() == -1 and closing.idle() == 0
