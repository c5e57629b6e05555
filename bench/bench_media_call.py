"""Media anchoring cost per call, as the B2BUA pays it, against a base build.

Per call: ``MediaPlane.open_call``, ``relay_sdp`` for the offer (a side) and
the answer (b side), and ``close`` of the call opened ``--hold`` seconds
earlier, with the relay thread running and the monotonic clock advanced as
if ``--rate`` calls came per second (so reused ports go through their
quarantine as they would live). CPU time of the calling thread
(``time.thread_time``), median of ``--rounds`` rounds, base and new
interleaved.

The base is ``warden/media/anchor.py`` as of ``--base-ref`` (default: where
this branch left main), loaded from git and run against the current SIP and
relay modules, so the ratio is that of the anchoring code alone. Variants:

- **base**: that anchor.py (a fresh socket pair per leg, SDP through the object model);
- **new, no reuse**: this tree with ``max_idle=0`` (sockets bound and closed per call);
- **new**: this tree (idle pairs reused, SDP in one pass).

Run ``WARDEN_NO_EXTENSIONS=1`` for the pure-Python SIP and relay modules::

    .venv/bin/python bench/bench_media_call.py [-n 20000] [--rate 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from warden.media import accel  # noqa: E402
from warden.media import anchor as new_anchor  # noqa: E402

OFFER = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
         b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
ANSWER = (b"v=0\r\no=user2 4242 17 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
          b"t=0 0\r\nm=audio 6002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def load_base(ref: str) -> ModuleType:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:warden/media/anchor.py"],
                            check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("warden.media._base_anchor", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "warden.media"
    sys.modules[spec.name] = module
    exec(compile(source, f"{ref}:warden/media/anchor.py", "exec"), module.__dict__)
    return module


def default_ref() -> str:
    for args in (["merge-base", "HEAD", "main"], ["rev-parse", "HEAD~1"]):
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.strip()
    raise SystemExit("no git base found: pass --base-ref")


class Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def run(plane: Any, clock: Clock, n: int, rate: float, hold: float) -> float:
    """Thread CPU seconds per call for ``n`` calls (after a warm-up)."""
    live: collections.deque[Any] = collections.deque()
    keep = max(1, int(hold * rate))

    def calls(count: int) -> None:
        for _ in range(count):
            call = plane.open_call("127.0.0.1")
            call.relay_sdp(OFFER, "a")
            call.relay_sdp(ANSWER, "b")
            live.append(call)
            if len(live) > keep:
                live.popleft().close()
            clock.now += 1 / rate

    calls(int(3 * rate))  # warm-up: the idle pool reaches its steady size
    t0 = time.thread_time()
    calls(n)
    cpu = time.thread_time() - t0
    while live:
        live.popleft().close()
    return cpu / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="calls per round")
    ap.add_argument("--rate", type=float, default=1000.0, help="calls per second on the simulated clock")
    ap.add_argument("--hold", type=float, default=0.5, help="seconds a call stays up")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base-ref", default="", help="git ref of the base anchor.py")
    args = ap.parse_args()
    ref = args.base_ref or default_ref()
    base_anchor = load_base(ref)
    clock = Clock()
    real_monotonic = time.monotonic
    time.monotonic = clock  # type: ignore[assignment]
    variants: dict[str, Any] = {}
    try:
        variants["base"] = base_anchor.MediaPlane(20000, 29999)
        plane = new_anchor.MediaPlane(30000, 39999)
        plane.pool.max_idle = 0
        variants["new, no reuse"] = plane
        variants["new"] = new_anchor.MediaPlane(40000, 49999)
        for plane in variants.values():
            plane.start()
        results: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, plane in variants.items():
                results[name].append(run(plane, clock, args.n, args.rate, args.hold))
        pool = variants["new"].pool
        pool_line = f"  new: {pool.reused} pairs reused, {pool.retired} retired, {pool.idle()} idle at the end"
    finally:
        time.monotonic = real_monotonic  # type: ignore[assignment]
        for plane in variants.values():
            plane.stop()
    print(f"media anchoring per call ({accel.implementation()} SIP/relay modules; base {ref[:10]}; "
          f"{args.n} calls x {args.rounds} rounds at {args.rate:g}/s simulated, held {args.hold:g} s)")
    base = statistics.median(results["base"])
    for name, values in results.items():
        med = statistics.median(values)
        shown = " / ".join(f"{v * 1e6:.1f}" for v in values)
        print(f"  {name:14s} {med * 1e6:6.1f} us  ({shown})  {base / med:4.2f}x vs base")
    print(pool_line)


if __name__ == "__main__":
    main()
