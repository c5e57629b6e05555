"""G.711 throughput, compiled (warden_ext.g711) against pure (warden.media.pure.g711).

Converts one 20 ms frame per call, as the relay will, so per-call overhead
counts. Each measurement stops at --frames frames or after --seconds,
whichever comes first, so a slow pure build cannot make the run unbounded.

    python bench/bench_g711.py [--frames 50000] [--seconds 2.0]
"""

from __future__ import annotations

import argparse
import math
import random
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

# Run from a checkout without installing: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SAMPLE_RATE = 8000
OPERATIONS = ("ulaw_encode", "ulaw_decode", "alaw_encode", "alaw_decode")


def _speech_like_frame(samples: int, seed: int) -> bytes:
    """A frame of tone plus noise spread over all segments, not silence."""
    rng = random.Random(seed)
    values = [
        max(-32768, min(32767, int(12000 * math.sin(i / 7.0) + rng.gauss(0, 3000))))
        for i in range(samples)
    ]
    return struct.pack(f"<{samples}h", *values)


def _throughput(
    convert: Callable[[bytes], bytes],
    frame: bytes,
    samples: int,
    frames: int,
    seconds: float,
) -> float:
    """Samples per second converting ``frame`` once per call."""
    done = 0
    batch = 500
    start = time.perf_counter()
    deadline = start + seconds
    while done < frames:
        for _ in range(min(batch, frames - done)):
            convert(frame)
        done += min(batch, frames - done)
        if time.perf_counter() >= deadline:
            break
    return done * samples / (time.perf_counter() - start)


def _load() -> tuple[ModuleType, ModuleType]:
    try:
        import warden_ext.g711 as compiled
    except ImportError:
        sys.exit(
            "warden_ext.g711 is not built: run 'python setup.py build_ext --inplace'"
        )
    import warden.media.pure.g711 as pure

    return compiled, pure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--frames", type=int, default=50_000, help="frames per measurement"
    )
    parser.add_argument(
        "--frame-ms", type=int, default=20, help="frame length in ms at 8 kHz"
    )
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="time cap per measurement"
    )
    args = parser.parse_args(argv)
    if args.frames < 1 or args.frame_ms < 1 or args.seconds <= 0:
        parser.error("--frames, --frame-ms and --seconds must be positive")

    compiled, pure = _load()
    samples = SAMPLE_RATE * args.frame_ms // 1000
    pcm = _speech_like_frame(samples, seed=711)
    inputs = {
        "ulaw_encode": pcm,
        "alaw_encode": pcm,
        "ulaw_decode": compiled.ulaw_encode(pcm),
        "alaw_decode": compiled.alaw_encode(pcm),
    }
    print(
        f"{args.frames} frames of {args.frame_ms} ms ({samples} samples), "
        f"cap {args.seconds:g} s per measurement"
    )
    header = ("operation", "compiled Msamples/s", "pure Msamples/s", "ratio")
    print(f"{header[0]:<12} {header[1]:>20} {header[2]:>16} {header[3]:>7}")
    for name in OPERATIONS:
        rates = [
            _throughput(
                getattr(module, name), inputs[name], samples, args.frames, args.seconds
            )
            for module in (compiled, pure)
        ]
        print(
            f"{name:<12} {rates[0] / 1e6:>20.1f} {rates[1] / 1e6:>16.2f} "
            f"{rates[0] / rates[1]:>6.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
