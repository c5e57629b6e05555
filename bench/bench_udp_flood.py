"""A UDP OPTIONS flood against `warden-pbx run`: a registered phone's latency with the abuse
shield on (per-source bucket + shedding) against the same PBX with the flooders trusted (no
limits), in the same run; plus the shield's own cost per datagram.

Run from the repository root (loopback only, ephemeral ports, bounded):

    .venv/bin/python bench/bench_udp_flood.py [--seconds 4] [--sources 1,40]

The phone (127.0.0.2) registers, then sends OPTIONS every 0.25 s, retransmitting like RFC 3261
Timer E (0.5 s, doubling), while one Python thread floods from 127.0.1.x. "recovery" is how long
after the flood a fresh OPTIONS takes: an unbounded queue still holds the flood then.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import helpers  # noqa: E402
import test_abuse as t  # noqa: E402
from phones import UDPPhone  # noqa: E402

from warden.core.abuse import AbuseGuard, AbusePolicy  # noqa: E402
from warden.store import Store  # noqa: E402
from warden.transport.shield import Shield  # noqa: E402


def guard_cost() -> tuple[float, float, float]:
    """µs per ``admit``: the guard for an untrusted source under its rate and for a trusted one,
    and the whole hook the UDP thread runs (Shield: lock, clock, guard)."""
    policy = AbusePolicy(trusted=("10.0.0.0/8",), requests_per_second=1e9, request_burst=10**9)
    g = AbuseGuard(policy)
    n = 200_000
    now = time.monotonic()
    untrusted = timeit.timeit(lambda: g.admit("203.0.113.7", now), number=n) / n * 1e6
    trusted = timeit.timeit(lambda: g.admit("10.1.2.3", now), number=n) / n * 1e6
    shield = Shield(policy)
    hook = timeit.timeit(lambda: shield.admit("203.0.113.7", 0), number=n) / n * 1e6
    return untrusted, trusted, hook


def run_one(pki: helpers.PKI, work: Path, shield: bool, sources: int, seconds: float) -> dict[str, float]:
    udp, tcp, tls = helpers.free_port(), helpers.free_port(), helpers.free_port()
    work.mkdir()
    text = t.pbx_config(pki, udp, tcp, tls)
    if not shield:
        text = text.replace("  trusted: []", "  trusted: [127.0.0.0/8]")
    pbx = helpers.PBXProcess(work, text)
    pbx.start([("127.0.0.1", tls)])
    try:
        store = Store(work / "var" / "warden.db")
        store.add_extension("1001", t.PASSWORD, realm="warden")
        store.close()
        phone = UDPPhone(("127.0.0.1", udp), "1001", t.PASSWORD, bind="127.0.0.2")
        assert phone.register().status == 200
        sent: list[int] = []
        latencies: list[float] = []
        lost: list[int] = []
        flooders = [f"127.0.1.{i + 1}" for i in range(sources)]
        flood = threading.Thread(target=t._flood, args=(("127.0.0.1", udp), flooders, seconds, sent))
        probe = threading.Thread(target=t._probe, args=(phone, seconds, latencies, lost))
        flood.start()
        probe.start()
        flood.join()
        probe.join()
        after: list[float] = []
        t._probe(phone, 0.01, after, [])
        phone.close()
        return {
            "sent_per_s": sent[0] / seconds,
            "answered": len(latencies),
            "lost": len(lost),
            "median_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
            "max_ms": max(latencies) * 1000 if latencies else float("nan"),
            "recovery_s": after[0] if after else float("inf"),
        }
    finally:
        pbx.stop()


def _s(seconds: float) -> str:
    return "> 8 s (unanswered)" if seconds == float("inf") else f"{seconds:.2f} s"


def _ratio(off: float, on: float) -> str:
    return "off: none within 8 s" if off == float("inf") else f"{off / on:.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--sources", default="1,40")
    args = parser.parse_args()
    untrusted, trusted, hook = guard_cost()
    print(f"AbuseGuard.admit: {untrusted:.2f} µs per datagram (untrusted, bucket), {trusted:.2f} µs (trusted); "
          f"the whole Shield.admit hook: {hook:.2f} µs")
    with tempfile.TemporaryDirectory(prefix="warden-flood-") as d:
        base = Path(d)
        pki = helpers.make_pki(base / "pki")
        print("| flood sources | shield | flood sent/s | phone OPTIONS answered | lost | median | max | next OPTIONS after the flood |")
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n in (int(x) for x in args.sources.split(",")):
            results = {}
            for shield in (False, True):
                r = results[shield] = run_one(pki, base / f"{n}-{shield}", shield, n, args.seconds)
                print(f"| {n} | {'on' if shield else 'off (trusted)'} | {r['sent_per_s']:,.0f} | {r['answered']} "
                      f"| {r['lost']} | {r['median_ms']:.0f} ms | {r['max_ms']:.0f} ms | {_s(r['recovery_s'])} |",
                      flush=True)
            off, on = results[False], results[True]
            print(f"|   | ratio off/on | | | | {off['median_ms'] / on['median_ms']:.1f}x | "
                  f"{off['max_ms'] / on['max_ms']:.1f}x | {_ratio(off['recovery_s'], on['recovery_s'])} |")


if __name__ == "__main__":
    main()
