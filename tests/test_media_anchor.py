"""Media anchoring over real UDP sockets: SDP rewritten to our relay ports,
payload relayed unchanged both ways, latching, ports given back."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from warden.media import accel
from warden.media.anchor import MediaPlane
from warden.sip.sdp import parse_sdp


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
