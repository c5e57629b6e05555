"""The engine reads its UDP sockets itself: the wake-up, the shield on the read path, sends
that never wait, and a live Engine answering over UDP and stopping promptly.

Real sockets throughout: UDP on loopback, AF_UNIX datagram sockets where the kernel must
push back on a sender (UDP over loopback never does).
"""

from __future__ import annotations

import collections
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import free_port

from warden.core.abuse import AbusePolicy
from warden.core.registrar import RegistrarPolicy
from warden.engine import Engine
from warden.sip.message import ParserLimits, Response, parse_message
from warden.store import Store
from warden.transport.engine_io import EngineIO, Waker
from warden.transport.shield import Shield
from warden.transport.stream import Listener
from warden.transport.udp import DatagramOutbox, UDPServer

WAKERS = [pytest.param(True, id="eventfd"), pytest.param(False, id="socketpair")]


def options(target: tuple[str, int], local: tuple[str, int], call_id: str) -> bytes:
    return (f"OPTIONS sip:{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"From: <sip:probe@{local[0]}>;tag={secrets.token_hex(4)}\r\nTo: <sip:{target[0]}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def client(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(5)
    return s


@pytest.fixture()
def udp() -> Iterator[UDPServer]:
    server = UDPServer([Listener("127.0.0.1", free_port())])
    server.start()
    yield server
    server.stop()


# --- the wake-up -------------------------------------------------------------------------------


@pytest.mark.parametrize("eventfd", WAKERS)
def test_a_post_wakes_the_engine_from_a_long_wait(eventfd: bool) -> None:
    io = EngineIO(Waker(eventfd=eventfd))
    try:
        returned: list[float] = []

        def sleeper() -> None:
            io.wait(30.0)
            returned.append(time.monotonic())

        t = threading.Thread(target=sleeper, daemon=True)
        t.start()
        deadline = time.monotonic() + 5
        while not io._sleeping and time.monotonic() < deadline:  # until it is really asleep
            time.sleep(0.005)
        assert io._sleeping
        posted = time.monotonic()
        io.post("work")
        t.join(10)
        assert returned and returned[0] - posted < 5.0, "the post did not end a 30 s wait"
        assert io.take(10) == ["work"]
        assert io.take(10) == []
    finally:
        io.close()


@pytest.mark.parametrize("eventfd", WAKERS)
def test_a_post_before_the_wait_is_not_slept_through(eventfd: bool) -> None:
    """Posted while the engine was busy (no wake-up written): the wait must not block."""
    io = EngineIO(Waker(eventfd=eventfd))
    try:
        io.post("early")
        assert not io._sleeping  # nobody was asleep: no wake-up was written
        started = time.monotonic()
        io.wait(30.0)
        assert time.monotonic() - started < 5.0
        assert io.take(10) == ["early"]
    finally:
        io.close()


def test_only_one_wake_up_per_sleep_and_all_posts_arrive_in_order() -> None:
    io = EngineIO()
    try:
        got: list[int] = []
        done = threading.Event()

        def engine() -> None:
            while len(got) < 3000:
                io.wait(1.0)
                got.extend(io.take(64))
            done.set()

        t = threading.Thread(target=engine, daemon=True)
        t.start()
        posters = [threading.Thread(target=lambda k=k: [io.post(k * 1000 + i) for i in range(1000)])
                   for k in range(3)]
        for p in posters:
            p.start()
        for p in posters:
            p.join(10)
        assert done.wait(10)
        assert sorted(got) == list(range(3000))
        for k in range(3):  # each poster's items in its order
            mine = [x for x in got if x // 1000 == k]
            assert mine == sorted(mine)
    finally:
        io.close()


def test_a_readable_udp_socket_ends_the_wait(udp: UDPServer) -> None:
    io = EngineIO()
    io.watch(udp)
    try:
        with client("127.0.0.1") as c:
            c.sendto(b"ping", udp.addresses[0])
            started = time.monotonic()
            readable = io.wait(30.0)
            assert time.monotonic() - started < 5.0
            assert readable == udp.sockets
            out: collections.deque[Any] = collections.deque()
            assert udp.read(readable[0], 10, 0, out) == 1
            assert list(out) == [(b"ping", c.getsockname(), udp.addresses[0])]
            assert udp.read(readable[0], 10, 0, out) == 0  # drained: no blocking
    finally:
        io.close()


# --- the read path and the shield -----------------------------------------------------------------


def test_read_admits_through_the_shield_and_sheds_unknown_sources_under_load() -> None:
    shield = Shield(AbusePolicy(trusted=(), shed_backlog=100, requests_per_second=1, request_burst=5))
    udp = UDPServer([Listener("127.0.0.1", free_port())], shield=shield)
    udp.start()
    phone, stranger, banned = client("127.0.0.2"), client("127.0.0.4"), client("127.0.0.3")
    try:
        shield.auth_succeeded("127.0.0.2")
        shield.ban("127.0.0.3", 60, "test")
        target, sock = udp.addresses[0], udp.sockets[0]

        def burst(backlog: int, limit: int = 100) -> tuple[int, list[str]]:
            for s in (phone, stranger, banned):
                s.sendto(b"x", target)
            time.sleep(0.05)  # loopback delivers at once; a little margin for a busy machine
            out: collections.deque[Any] = collections.deque()
            n = udp.read(sock, limit, backlog, out)
            return n, [peer[0] for _, peer, _ in out]

        assert burst(0) == (3, ["127.0.0.2", "127.0.0.4"])  # the banned source costs nothing further
        n, admitted = burst(150)  # over shed_backlog: only the known phone gets in
        assert (n, admitted) == (3, ["127.0.0.2"])
        for _ in range(8):  # the stranger spends its bucket (5 at once, 1/s), the phone too
            burst(0)
        n, admitted = burst(0)
        assert n == 3 and "127.0.0.4" not in admitted
        # the limit bounds one read; the rest stays for the next turn
        for s in (phone, stranger, banned):
            s.sendto(b"y", target)
        time.sleep(0.05)
        out: collections.deque[Any] = collections.deque()
        assert udp.read(sock, 1, 0, out) == 1
        assert udp.read(sock, 10, 0, out) == 2
    finally:
        for s in (phone, stranger, banned):
            s.close()
        udp.stop()


def test_backlog_passed_to_the_shield_grows_with_what_one_read_admits() -> None:
    """One read of a flood: past shed_backlog within the read, strangers are shed."""
    shield = Shield(AbusePolicy(trusted=(), shed_backlog=10, requests_per_second=0))
    udp = UDPServer([Listener("127.0.0.1", free_port())], shield=shield)
    udp.start()
    try:
        with client("127.0.0.5") as c:
            for _ in range(30):
                c.sendto(b"z", udp.addresses[0])
            time.sleep(0.05)
            out: collections.deque[Any] = collections.deque()
            assert udp.read(udp.sockets[0], 100, 0, out) == 30
            assert len(out) == 11  # admitted while the backlog was 0..10
    finally:
        udp.stop()


# --- sends never wait --------------------------------------------------------------------------


def unix_pair(tmp_path: Path) -> tuple[socket.socket, socket.socket, str]:
    """A non-blocking sender and a receiver that does not read: AF_UNIX datagrams push back."""
    path = str(tmp_path / "rx.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tx.bind(str(tmp_path / "tx.sock"))
    tx.setblocking(False)
    return tx, rx, path


def test_a_full_socket_queues_in_order_and_flushes_when_writable(tmp_path: Path) -> None:
    tx, rx, path = unix_pair(tmp_path)
    outbox = DatagramOutbox()
    try:
        sent = 0
        started = time.monotonic()
        while tx not in outbox.waiting and sent < 100_000:
            assert outbox.send(tx, b"%d" % sent, path)
            sent += 1
        assert tx in outbox.waiting, "the receiver never pushed back"
        for _ in range(50):  # more while it is full: queued behind, never waiting
            assert outbox.send(tx, b"%d" % sent, path)
            sent += 1
        assert time.monotonic() - started < 5.0
        rx.setblocking(False)
        received: list[bytes] = []
        for _ in range(10_000):
            try:
                while True:
                    received.append(rx.recv(100))
            except BlockingIOError:
                pass
            if tx not in outbox.waiting:
                break
            outbox.flush(tx)
        try:
            while True:
                received.append(rx.recv(100))
        except BlockingIOError:
            pass
        assert tx not in outbox.waiting
        assert received == [b"%d" % i for i in range(sent)]
        assert outbox.dropped == 0
    finally:
        tx.close()
        rx.close()


def test_the_queue_is_bounded_and_a_drop_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tx, rx, path = unix_pair(tmp_path)
    outbox = DatagramOutbox(max_queued=1000)
    try:
        results = [outbox.send(tx, b"x" * 100, path) for _ in range(5000)]
        assert tx in outbox.waiting and len(outbox.waiting[tx]) == 10
        assert results.count(False) == outbox.dropped > 0
        assert "full: dropped 1 datagram(s)" in caplog.text
    finally:
        tx.close()
        rx.close()


# --- a live engine ---------------------------------------------------------------------------------


def test_the_engine_answers_over_udp_serves_submit_and_stops_promptly(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.db")
    udp = UDPServer([Listener("127.0.0.1", free_port())], shield=Shield(AbusePolicy()))
    udp.start()
    engine = Engine(store, realm="test", limits=ParserLimits(), registrar_policy=RegistrarPolicy())
    engine.udp = udp
    engine.listen_ports["udp"] = udp.addresses[0][1]
    engine.start()
    try:
        with client("127.0.0.1") as c:
            for i in range(20):  # one at a time, each waking an idle engine
                call_id = f"idle-{i}"
                c.sendto(options(udp.addresses[0], c.getsockname(), call_id), udp.addresses[0])
                reply = parse_message(c.recvfrom(65535)[0])
                assert isinstance(reply, Response) and reply.status == 200 and reply.call_id == call_id
            # many at once: read in bursts, all answered. Six bursts of 50, so the
            # replies of one burst fit the client's default receive buffer (~160
            # small datagrams): 300 at once overflowed it now and then.
            for b in range(6):
                burst = {f"burst-{b}-{i}" for i in range(50)}
                for call_id in sorted(burst):
                    c.sendto(options(udp.addresses[0], c.getsockname(), call_id), udp.addresses[0])
                answered = set()
                while answered != burst:
                    reply = parse_message(c.recvfrom(65535)[0])
                    assert isinstance(reply, Response) and reply.status == 200
                    answered.add(reply.call_id)
        assert engine.submit(lambda: engine.counters.received.get("OPTIONS")) == 320
        started = time.monotonic()
        engine.stop()
        assert engine._thread is not None and not engine._thread.is_alive()
        assert time.monotonic() - started < 2.0  # a post wakes it: no timer to wait out
    finally:
        engine.stop()
        udp.stop()
        store.close()


def test_gather_time_from_the_environment(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from warden.engine import _gather_seconds

    monkeypatch.delenv("WARDEN_GATHER_US", raising=False)
    assert _gather_seconds() == 0.001
    monkeypatch.setenv("WARDEN_GATHER_US", "250")
    assert _gather_seconds() == 0.00025
    monkeypatch.setenv("WARDEN_GATHER_US", "0")
    assert _gather_seconds() == 0.0
    for bad in ("abc", "-5", "nan", "inf"):
        monkeypatch.setenv("WARDEN_GATHER_US", bad)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="warden.engine"):
            assert _gather_seconds() == 0.001
        assert f"WARDEN_GATHER_US={bad!r}" in caplog.text
