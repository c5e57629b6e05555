"""Conference bridge over real UDP: three phones each send a tone, each hears
the other two and not itself (Goertzel on the decoded audio)."""

from __future__ import annotations

import math
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from phones import tone_power

from warden.media import accel
from warden.media.anchor import PortPool
from warden.media.conference import ConferenceBridge
from warden.media.pure import g711


@pytest.fixture(params=["accelerated", "pure"])
def bridge(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConferenceBridge]:
    if request.param == "pure":
        monkeypatch.setenv("WARDEN_NO_EXTENSIONS", "1")
    else:
        monkeypatch.delenv("WARDEN_NO_EXTENSIONS", raising=False)
    b = ConferenceBridge(PortPool(6000, 6099), ("8000",))
    assert b.implementation == request.param == accel.implementation()
    b.start()
    yield b
    b.stop()


def tone_frame(freq: float, n: int) -> bytes:
    pcm = b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * freq * (n * 160 + i) / 8000)))
                   for i in range(160))
    return g711.ulaw_encode(pcm)


def test_three_tones_mix_minus(bridge: ConferenceBridge) -> None:
    freqs = (400.0, 700.0, 1100.0)
    phones = []
    for _ in freqs:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        phones.append(s)
    members = [bridge.join("8000", "PCMU", "127.0.0.1", s.getsockname()[:2]) for s in phones]
    heard: list[bytearray] = [bytearray() for _ in phones]
    start = time.monotonic()
    for n in range(100):  # 2 s of audio, paced at 20 ms
        for i, (s, m) in enumerate(zip(phones, members)):
            header = struct.pack("!BBHII", 0x80, 0, n, n * 160, 1000 + i)
            s.sendto(header + tone_frame(freqs[i], n), ("127.0.0.1", m.pair.port))
        deadline = start + (n + 1) * 0.02
        while time.monotonic() < deadline:
            for i, s in enumerate(phones):
                try:
                    data = s.recv(2048)
                    heard[i] += data[12:]
                except BlockingIOError:
                    pass
            time.sleep(0.002)
    for m in members:
        bridge.leave(m)
    for i, freq in enumerate(freqs):
        pcm = g711.ulaw_decode(bytes(heard[i][160 * 10:]))  # skip the jitter-buffer start-up
        samples = list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
        assert len(samples) > 8000, f"phone {i} heard only {len(samples)} samples"
        own = tone_power(samples, freq)
        others = [tone_power(samples, f) for f in freqs if f != freq]
        assert min(others) > 100 * own, (freq, own, others)
    for s in phones:
        s.close()
    time.sleep(0.1)
    assert bridge.pool.in_use == 0
