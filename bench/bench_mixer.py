"""Conference mixer capacity: G.711 participants mixed in real time on one core.

Rooms of --room-size participants (PCMU and PCMA alternating), every one of
them talking: each tick pushes one 20 ms frame per participant into its
room's jitter buffer and then mixes every room, which is the whole
per-tick work of the media core (the worst case: a real conference has few
talkers, and a participant who is not talking costs less). The tick's CPU
time (``time.thread_time``, median over --ticks ticks after --warmup) is
measured for a growing number of rooms, doubling and then bisecting, to
find the most participants whose tick fits in 50 % and in 100 % of the
20 ms budget. The search stops at --max-participants, so a slow build
cannot make the run unbounded.

    python bench/bench_mixer.py [--room-size 10] [--ticks 15] [--warmup 5]

Rows: compiled ``Room.mix`` once per room, compiled ``mix_rooms`` (one GIL
release for all rooms), and the pure twin; ratios are against the pure twin.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

# Run from a checkout without installing: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from warden.media.pure import g711

FRAME = 160
CODECS = (("PCMU", 0, g711.ulaw_encode), ("PCMA", 8, g711.alaw_encode))
DISTINCT_FRAMES = 64


def _speech_like_frames(count: int, seed: int) -> list[bytes]:
    """Frames of a wandering tone plus noise, loud enough to use every segment."""
    rng = random.Random(seed)
    frames = []
    for n in range(count):
        freq = rng.uniform(150, 1200)
        values = [
            max(
                -32768,
                min(
                    32767,
                    int(
                        9000 * math.sin(2 * math.pi * freq * i / 8000)
                        + rng.gauss(0, 1500)
                    ),
                ),
            )
            for i in range(FRAME)
        ]
        frames.append(struct.pack(f"<{FRAME}h", *values))
    return frames


class Load:
    """``rooms`` rooms of ``size`` talking participants, ready to tick."""

    def __init__(self, module: ModuleType, rooms: int, size: int, pcm: list[bytes]):
        self.module = module
        self.rooms = []
        self.senders: list[tuple[Any, int, int, list[bytes]]] = []
        encoded = [[encode(frame) for frame in pcm] for _, _, encode in CODECS]
        pid = 0
        for _ in range(rooms):
            room = module.Room(max_participants=size)
            for member in range(size):
                law = member % 2
                room.add(pid, CODECS[law][0])
                self.senders.append((room.push, pid, CODECS[law][1], encoded[law]))
                pid += 1
            self.rooms.append(room)
        self.participants = pid
        self.tick_no = 0

    def push_all(self) -> None:
        n = self.tick_no
        seq = n & 0xFFFF
        ts = (n * FRAME) & 0xFFFFFFFF
        for push, pid, pt, frames in self.senders:
            push(pid, seq, ts, pt, frames[(n + pid) % DISTINCT_FRAMES])
        self.tick_no += 1

    def mix_each(self) -> None:
        for room in self.rooms:
            room.mix()

    def mix_batch(self) -> None:
        self.module.mix_rooms(self.rooms)


def _measure(
    load: Load, mix: Callable[[Load], None], ticks: int, warmup: int
) -> tuple[float, float]:
    """Median CPU seconds of one tick: (push phase, mix phase)."""
    pushes, mixes = [], []
    for n in range(warmup + ticks):
        t0 = time.thread_time()
        load.push_all()
        t1 = time.thread_time()
        mix(load)
        t2 = time.thread_time()
        if n >= warmup:
            pushes.append(t1 - t0)
            mixes.append(t2 - t1)
    return statistics.median(pushes), statistics.median(mixes)


class Search:
    """Largest room count whose median tick fits a budget (doubling, then bisecting)."""

    def __init__(
        self,
        module: ModuleType,
        mix: Callable[[Load], None],
        args: argparse.Namespace,
        pcm: list[bytes],
    ):
        self.module, self.mix, self.args, self.pcm = module, mix, args, pcm
        self.cache: dict[int, tuple[float, float]] = {}

    def tick(self, rooms: int) -> tuple[float, float]:
        if rooms not in self.cache:
            load = Load(self.module, rooms, self.args.room_size, self.pcm)
            self.cache[rooms] = _measure(
                load, self.mix, self.args.ticks, self.args.warmup
            )
        return self.cache[rooms]

    def fits(self, rooms: int, budget: float) -> bool:
        return sum(self.tick(rooms)) <= budget

    def largest(self, budget: float) -> tuple[int, bool]:
        """(rooms, capped): capped when --max-participants stopped the search."""
        cap = max(1, self.args.max_participants // self.args.room_size)
        if not self.fits(1, budget):
            return 0, False
        low, high = 1, 2
        while high <= cap and self.fits(high, budget):
            low, high = high, high * 2
        if high > cap:
            if self.fits(cap, budget):
                return cap, True
            high = cap
        while high - low > max(1, low // 100):  # 1 % precision is enough
            mid = (low + high) // 2
            if self.fits(mid, budget):
                low = mid
            else:
                high = mid
        return low, False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--room-size", type=int, default=10, help="participants per room"
    )
    parser.add_argument(
        "--ticks", type=int, default=15, help="measured ticks per point"
    )
    parser.add_argument("--warmup", type=int, default=5, help="ticks before measuring")
    parser.add_argument(
        "--budget-ms", type=float, default=20.0, help="tick budget (ms)"
    )
    parser.add_argument(
        "--max-participants", type=int, default=200_000, help="stop the search here"
    )
    parser.add_argument("--skip-pure", action="store_true", help="compiled rows only")
    args = parser.parse_args(argv)
    if min(args.room_size, args.ticks, args.max_participants) < 1 or args.warmup < 0:
        parser.error("--room-size, --ticks and --max-participants must be positive")
    if args.budget_ms <= 0:
        parser.error("--budget-ms must be positive")

    try:
        import warden_ext.mixer as compiled
    except ImportError:
        sys.exit(
            "warden_ext.mixer is not built: run 'python setup.py build_ext --inplace'"
        )
    import warden.media.pure.mixer as pure

    pcm = _speech_like_frames(DISTINCT_FRAMES, seed=2024)
    rows: list[tuple[str, ModuleType, Callable[[Load], None]]] = [
        ("compiled Room.mix", compiled, Load.mix_each),
        ("compiled mix_rooms", compiled, Load.mix_batch),
    ]
    if not args.skip_pure:
        rows.append(("pure Room.mix", pure, Load.mix_each))
    budget = args.budget_ms / 1000
    print(
        f"rooms of {args.room_size} talking G.711 participants (PCMU/PCMA alternating); "
        f"tick = push 1 frame each + mix every room; CPU time, median of "
        f"{args.ticks} ticks; budget {args.budget_ms:g} ms"
    )
    header = (
        f"{'implementation':<20} {'@50% budget':>12} {'@100% budget':>13} "
        f"{'us/participant':>15} {'(push':>7} {'+ mix)':>7} {'vs pure':>8}"
    )
    print(header)
    results = []
    for name, module, mix in rows:
        search = Search(module, mix, args, pcm)
        half, half_capped = search.largest(budget / 2)
        full, full_capped = search.largest(budget)
        push_s, mix_s = search.tick(max(full, 1))
        per = max(full, 1) * args.room_size
        results.append(
            (
                name,
                half * args.room_size,
                full * args.room_size,
                half_capped or full_capped,
                (push_s + mix_s) / per,
                push_s / per,
                mix_s / per,
            )
        )
    pure_full = results[-1][2] if not args.skip_pure else 0
    for name, half_p, full_p, capped, per, push_per, mix_per in results:
        ratio = f"{full_p / pure_full:7.1f}x" if pure_full else "      -"
        mark = "+" if capped else " "
        print(
            f"{name:<20} {half_p:>12,}{mark}{full_p:>12,}{mark} {per * 1e6:>14.2f} "
            f"{push_per * 1e6:>7.2f} {mix_per * 1e6:>7.2f} {ratio:>8}"
        )
    if any(row[3] for row in results):
        print("+ search stopped at --max-participants")
    return 0


if __name__ == "__main__":
    sys.exit(main())
