"""What UDP I/O adds to the engine's CPU: OPTIONS over real loopback sockets vs the same
OPTIONS handed to the engine in-process, measured in the same run.

An :class:`warden.engine.Engine` with a real UDPServer answers OPTIONS from a client
socket, one at a time (each wakes an idle engine: the worst case for hand-overs) and in
waves of --wave (several per engine turn). The CPU of the engine thread and of all the
PBX's threads is read from /proc per thread. The baseline is the same OPTIONS passed to
``Engine._datagram`` directly, one per turn (store batch, timers and flush included), so
the difference is the I/O and the loop: system calls, wake-ups, thread hand-overs.

Works on trees before the engine read its own sockets (UDPServer with a receiving
thread) too, to compare branches:

    .venv/bin/python bench/sip/udp_io.py [--n 5000] [--wave 8]
"""

from __future__ import annotations

import argparse
import inspect
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from warden.core.abuse import AbusePolicy  # noqa: E402
from warden.core.registrar import RegistrarPolicy  # noqa: E402
from warden.engine import Engine  # noqa: E402
from warden.sip.message import ParserLimits  # noqa: E402
from warden.store import Store  # noqa: E402
from warden.transport.shield import Shield  # noqa: E402
from warden.transport.stream import Listener  # noqa: E402
from warden.transport.udp import UDPServer  # noqa: E402

OWN_SOCKETS = "shield" in inspect.signature(UDPServer).parameters
"""This tree's engine reads the UDP sockets itself (else a receiving thread hands over)."""


def options(target: tuple[str, int], local: tuple[str, int], call_id: str) -> bytes:
    return (f"OPTIONS sip:{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{call_id};rport\r\n"
            f"From: <sip:probe@{local[0]}>;tag=abc\r\nTo: <sip:{target[0]}>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def thread_cpu(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pbx_cpu() -> float:
    """CPU of every thread but the client's (this one)."""
    me = threading.get_native_id()
    return sum(thread_cpu(int(t)) for t in os.listdir("/proc/self/task") if int(t) != me)


def live(store: Store, n: int, wave: int) -> dict[str, float]:
    shield = Shield(AbusePolicy())
    port = 20000 + os.getpid() % 10000
    listeners = [Listener("127.0.0.1", port)]
    udp: Any = UDPServer(listeners, shield=shield) if OWN_SOCKETS else UDPServer(listeners, None)  # type: ignore[arg-type]
    udp.start()
    engine = Engine(store, realm="bench", limits=ParserLimits(), registrar_policy=RegistrarPolicy())
    engine.shield = shield
    if not OWN_SOCKETS:
        udp.handler = engine.datagram  # type: ignore[attr-defined]
    engine.udp = udp
    engine.listen_ports["udp"] = port
    engine.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(5)
    target = ("127.0.0.1", port)
    try:
        assert engine._thread is not None
        tid = engine._thread.native_id
        assert tid is not None
        out: dict[str, float] = {}
        for label, size in (("one at a time", 1), (f"waves of {wave}", wave)):
            msgs = [options(target, client.getsockname(), f"{label[:3]}{i}") for i in range(n + 200)]
            for m in msgs[:200]:  # warm-up
                client.sendto(m, target)
                client.recvfrom(65535)
            e0, p0, w0 = thread_cpu(tid), pbx_cpu(), time.perf_counter()
            for i in range(200, n + 200, size):
                batch = msgs[i:i + size]
                for m in batch:
                    client.sendto(m, target)
                for _ in batch:
                    client.recvfrom(65535)
            out[f"{label}: engine thread"] = (thread_cpu(tid) - e0) / n * 1e6
            out[f"{label}: all PBX threads"] = (pbx_cpu() - p0) / n * 1e6
            out[f"{label}: wall"] = (time.perf_counter() - w0) / n * 1e6
        return out
    finally:
        client.close()
        engine.stop()
        udp.stop()


class _Collect:
    def send(self, data: bytes, peer: tuple[str, int], local: object = None) -> bool:
        return True


def direct(store: Store, n: int) -> float:
    engine = Engine(store, realm="bench", limits=ParserLimits(), registrar_policy=RegistrarPolicy())
    engine.udp = _Collect()
    engine.listen_ports["udp"] = 5060
    peer, local = ("127.0.0.1", 40000), ("127.0.0.1", 5060)
    msgs = [options(local, peer, f"d{i}") for i in range(n)]
    t0 = time.thread_time()
    for m in msgs:
        with store.batch():
            engine._datagram(m, peer, local)
            engine._fire_timers()
        engine._flush()
    return (time.thread_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="OPTIONS per measurement (default 5000)")
    ap.add_argument("--wave", type=int, default=8, help="OPTIONS sent before reading the answers (default 8)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store.db")
        try:
            base = direct(store, args.n)
            figures = live(store, args.n, args.wave)
        finally:
            store.close()
    kind = "engine reads its sockets" if OWN_SOCKETS else "receiving thread + queue"
    print(f"UDP I/O cost per OPTIONS ({kind}; CPU from /proc, 10 ms ticks; {args.n} OPTIONS each)")
    print(f"  in-process baseline (Engine._datagram, one per turn): {base:.0f} us engine CPU")
    for name, value in figures.items():
        ratio = f"  ({value / base:.2f}x baseline)" if "wall" not in name else ""
        print(f"  live, {name}: {value:.0f} us{ratio}")


if __name__ == "__main__":
    main()
