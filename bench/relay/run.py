"""RTP relay benchmark: Cython relay vs its pure-Python twin vs rtpengine (userspace).

For each number of concurrent G.711 streams N (a call is two streams, one
each way; 172-byte RTP packets at 50 pps each, so N * 50 pps through the
relay), every relay gets the same load from a C generator (gen.c, compiled
here with gcc) on loopback, and a point passes when

- loss < 0.1 % (--max-loss) over the measured window,
- p99 latency <= 2 ms (--p99-ms), send-to-receive through the relay (two
  loopback hops, the relay, and up to one generator tick),
- the generator kept its schedule (p99 send lateness <= 1 ms) and every
  packet came back on the right socket, unchanged in size and marker.

Relays under test:

- direct: no relay, the phones talk to each other: the latency floor and
  the generator's own limit on this machine;
- cython / pure: warden_ext.relay / warden.media.pure.relay, each in its
  own process (relay_server.py) with one relay thread, as in the PBX;
- rtpengine: Debian's rtpengine-daemon, userspace forwarding (table = -1),
  started with --config-file (it exits silently without one) and driven
  over its ng control protocol (bencode over UDP): offer/answer per call to
  allocate its ports, delete afterwards; its default worker threads;
- cython+engine / pure+engine: the same relays with a second Python thread
  in the process spinning on pure-Python work, standing in for the PBX's
  SIP engine thread: what the relay then competes for is the GIL.

Conditions: the machine is shared (2 cores, other engineers' tests may run
meanwhile), so by default each relay (all its threads) is pinned to CPU 0
under SCHED_FIFO priority 1 and the generator to CPU 1 at priority 2
(--sched other / --relay-cpu -1 / --gen-cpu -1 turn that off). Without it
the kernel's 3 ms scheduler slices given to other busy processes dominate
every p99 figure. The generator works on a fixed tick (--quantum-us, 200
us): it sends what is due and collects what came back once per tick, so it
can offer about 200,000 pps from one core; arrivals come in bursts of one
tick's worth.

The relays run one at a time, all in this one run, interleaved per N so
that background load hits them alike; an implementation stops at its first
failed point (--keep-going runs them all) and its rate is the highest
N * 50 that passed below that (a failed point is re-run once first,
--retries). "GEN" marks a point where the generator
itself fell behind: it says nothing about the relay, and a rate that ends
there is a lower bound. Each point takes about warmup + duration + drain.

    python bench/relay/run.py [--streams 250,500,...] [--duration 3]
        [--impls direct,cython,pure,rtpengine,cython+engine,pure+engine]
        [--json results.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RATE = 50  # packets per second per stream (20 ms G.711)
SIZE = 172  # 12-byte RTP header + 160 bytes of G.711
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Command prefixes for the relays under test and for the generator; set from
# --sched in main(). The generator gets the higher priority: it is the
# instrument, and must not queue behind the relay it measures.
SCHED: list[str] = []
GEN_SCHED: list[str] = []


# -- helpers ------------------------------------------------------------------------


def build_gen(out_dir: Path) -> Path:
    exe = out_dir / "gen"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(HERE / "gen.c")], check=True)
    return exe


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def busiest() -> str:
    out = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
                         capture_output=True, text=True, check=False).stdout.splitlines()[:3]
    return ", ".join(" ".join(line.split()[::-1]) + "%" for line in out)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class GenSockets:
    """The phones' sockets: ``k`` per side, bound by us, inherited by gen."""

    def __init__(self, host: str, k: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.a: list[socket.socket] = []
        self.b: list[socket.socket] = []
        for side in (self.a, self.b):
            for _ in range(k):
                s = socket.socket(family, socket.SOCK_DGRAM)
                side.append(s)
                s.bind((host, 0))
                # A big receive buffer so a descheduled generator queues
                # rather than drops (its delay still counts as latency).
                try:
                    s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)

    def addr_a(self, call: int) -> tuple[str, int]:
        host, port = self.a[call % len(self.a)].getsockname()[:2]
        return host, port

    def addr_b(self, call: int) -> tuple[str, int]:
        host, port = self.b[call % len(self.b)].getsockname()[:2]
        return host, port

    def fds(self) -> list[int]:
        return [s.fileno() for s in self.a + self.b]

    def close(self) -> None:
        for s in self.a + self.b:
            s.close()


# -- relays under test --------------------------------------------------------------


class Direct:
    """No relay: each phone sends straight to the other (generator floor)."""

    name = "direct"
    pid: int | None = None

    def setup(self, gen: GenSockets, calls: int) -> list[tuple[str, int, str, int]]:
        return [(*gen.addr_b(c), *gen.addr_a(c)) for c in range(calls)]

    def teardown(self) -> dict[str, Any]:
        return {}


class WardenRelay:
    """warden_ext.relay or warden.media.pure.relay in bench/relay/relay_server.py."""

    def __init__(self, name: str, host: str) -> None:
        self.impl, _, extra = name.partition("+")
        self.engine = extra == "engine"
        self.name = name
        self.host = host
        self.proc: subprocess.Popen[str] | None = None
        self.pid: int | None = None

    def setup(self, gen: GenSockets, calls: int) -> list[tuple[str, int, str, int]]:
        peers = [[*gen.addr_a(c), *gen.addr_b(c)] for c in range(calls)]
        self.proc = subprocess.Popen(
            [*SCHED, sys.executable, str(HERE / "relay_server.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        assert self.proc.stdin and self.proc.stdout
        request = {"impl": self.impl, "host": self.host, "engine": self.engine, "peers": peers}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        self.pid = reply["pid"]
        return [(self.host, pa, self.host, pb) for pa, pb in reply["ports"]]

    def teardown(self) -> dict[str, Any]:
        assert self.proc and self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            self.proc.wait(10)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            self.proc.wait()
            return {}
        return json.loads(line) if line else {}


def _bencode(value: Any) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(map(_bencode, value)) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(_bencode(k) + _bencode(v) for k, v in sorted(value.items())) + b"e"
    raise TypeError(type(value))


def _bdecode(data: bytes, i: int = 0) -> tuple[Any, int]:
    c = data[i:i + 1]
    if c == b"i":
        j = data.index(b"e", i)
        return int(data[i + 1:j]), j + 1
    if c in (b"l", b"d"):
        i += 1
        items = []
        while data[i:i + 1] != b"e":
            item, i = _bdecode(data, i)
            items.append(item)
        if c == b"l":
            return items, i + 1
        return {k.decode(): v for k, v in zip(items[::2], items[1::2])}, i + 1
    j = data.index(b":", i)
    n = int(data[i:j])
    return data[j + 1:j + 1 + n], j + 1 + n


class RtpEngine:
    """rtpengine-daemon in userspace (table = -1), driven over ng (bencode/UDP)."""

    name = "rtpengine"

    def __init__(self, host: str, workdir: Path) -> None:
        self.host = host
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.unavailable: str | None = None
        self.calls: list[tuple[str, str]] = []
        self._cookies = itertools.count(1)
        self._point = 0
        self.ng = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ng.bind(("127.0.0.1", 0))
        self.ng.settimeout(2.0)
        self.version = ""

    def start(self) -> None:
        exe = shutil.which("rtpengine")
        if exe is None:
            self.unavailable = "rtpengine not on PATH (apt-get install rtpengine-daemon)"
            return
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        self.ng_addr = probe.getsockname()
        probe.close()
        conf = self.workdir / "rtpengine.conf"
        conf.write_text(
            "[rtpengine]\n"
            "table = -1\n"
            f"interface = {self.host}\n"
            f"listen-ng = 127.0.0.1:{self.ng_addr[1]}\n"
            "port-min = 30000\n"
            "port-max = 60000\n"
            "delete-delay = 0\n"
            "log-level = 4\n"
            "log-stderr = true\n"
            "foreground = true\n"
        )
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
        self.version = (version.stdout + version.stderr).strip()
        self.log = open(self.workdir / "rtpengine.log", "wb")  # noqa: SIM115 (open while it runs)
        self.proc = subprocess.Popen(
            [*SCHED, exe, f"--config-file={conf}", "--config-section=rtpengine"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.unavailable = f"rtpengine exited with {self.proc.returncode}, see {self.log.name}"
                return
            try:
                if self._cmd({"command": "ping"}, timeout=0.3).get("result") == b"pong":
                    return
            except OSError:
                pass
        self.unavailable = "rtpengine did not answer ng ping within 10 s"

    def _cmd(self, msg: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
        cookie = b"w%d" % next(self._cookies)  # unique: rtpengine caches replies per cookie
        self.ng.settimeout(timeout)
        self.ng.sendto(cookie + b" " + _bencode(msg), self.ng_addr)
        while True:
            data = self.ng.recv(65535)
            got, _, body = data.partition(b" ")
            if got == cookie:
                reply, _ = _bdecode(body)
                assert isinstance(reply, dict)
                return reply

    @staticmethod
    def _sdp(host: str, port: int) -> str:
        ip = "IP6" if ":" in host else "IP4"
        return (
            f"v=0\r\no=- 1 1 IN {ip} {host}\r\ns=-\r\nc=IN {ip} {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        )

    def setup(self, gen: GenSockets, calls: int) -> list[tuple[str, int, str, int]]:
        self._point += 1
        targets = []
        for c in range(calls):
            call_id = f"bench-{self._point}-{c}"
            offer = self._cmd({"command": "offer", "call-id": call_id, "from-tag": "a",
                               "sdp": self._sdp(*gen.addr_a(c))})
            answer = self._cmd({"command": "answer", "call-id": call_id, "from-tag": "a",
                                "to-tag": "b", "sdp": self._sdp(*gen.addr_b(c))})
            if offer.get("result") != b"ok" or answer.get("result") != b"ok":
                raise RuntimeError(f"rtpengine refused call {c}: {offer} {answer}")
            self.calls.append((call_id, "a"))
            port_b = int(re.search(rb"m=audio (\d+)", offer["sdp"]).group(1))  # type: ignore[union-attr]
            port_a = int(re.search(rb"m=audio (\d+)", answer["sdp"]).group(1))  # type: ignore[union-attr]
            targets.append((self.host, port_a, self.host, port_b))
        return targets

    def teardown(self) -> dict[str, Any]:
        for call_id, tag in self.calls:
            try:
                self._cmd({"command": "delete", "call-id": call_id, "from-tag": tag})
            except OSError:
                pass
        self.calls.clear()
        return {}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.ng.close()


# -- one point ---------------------------------------------------------------------


@dataclass
class Point:
    impl: str
    streams: int
    gen: dict[str, Any] = field(default_factory=dict)
    relay: dict[str, Any] = field(default_factory=dict)
    relay_cpu_pct: float | None = None  # of one core, over the generator's whole run
    relay_cpu_us_per_packet: float | None = None
    verdict: str = ""
    why: str = ""

    @property
    def pps(self) -> int:
        return self.streams * RATE


def judge(p: Point, args: argparse.Namespace) -> None:
    g = p.gen
    problems = []
    if g["late_p99_us"] > args.max_late_us:
        problems.append(f"generator late p99 {g['late_p99_us']:.0f} us")
    if g["misrouted"] or g["bad"]:
        problems.append(f"misrouted {g['misrouted']} bad {g['bad']}")
    if g["loss_pct"] >= args.max_loss:
        problems.append(f"loss {g['loss_pct']:.3f} %")
    if g["lat_p99_us"] > args.p99_ms * 1000:
        problems.append(f"p99 {g['lat_p99_us'] / 1000:.2f} ms")
    if not problems:
        p.verdict = "pass"
    elif g["late_p99_us"] > args.max_late_us:
        p.verdict = "GEN"  # the generator could not keep up: no verdict on the relay
    else:
        p.verdict = "FAIL"
    p.why = "; ".join(problems)


def run_point(relay: Any, streams: int, args: argparse.Namespace, gen_exe: Path, tmp: Path) -> Point:
    calls = streams // 2
    gen = GenSockets(args.host, args.gen_sockets)
    point = Point(relay.name, streams)
    try:
        targets = relay.setup(gen, calls)
        tfile = tmp / "targets.txt"
        tfile.write_text("".join(f"{ah} {ap} {bh} {bp}\n" for ah, ap, bh, bp in targets))
        fds = gen.fds()
        k = args.gen_sockets
        cmd = [
            *GEN_SCHED, str(gen_exe),
            "--a-fds", ",".join(map(str, fds[:k])), "--b-fds", ",".join(map(str, fds[k:])),
            "--targets", str(tfile), "--rate", str(RATE), "--size", str(SIZE),
            "--warmup", str(args.warmup), "--duration", str(args.duration), "--drain", str(args.drain),
            "--quantum-us", str(args.quantum_us),
        ]
        cpu0 = cpu_seconds(relay.pid) if relay.pid else None
        t0 = time.monotonic()
        out = subprocess.run(cmd, pass_fds=fds, capture_output=True, text=True, check=False,
                             timeout=args.warmup + args.duration + args.drain + 30)
        wall = time.monotonic() - t0
        if relay.pid and cpu0 is not None:
            used = cpu_seconds(relay.pid) - cpu0
            point.relay_cpu_pct = 100 * used / wall
            # Packets flow during warm-up and measurement (not the drain).
            point.relay_cpu_us_per_packet = 1e6 * used / (streams * RATE * (args.warmup + args.duration))
        if out.returncode != 0:
            raise RuntimeError(f"gen failed: {out.stderr}")
        point.gen = json.loads(out.stdout)
    finally:
        point.relay = relay.teardown()
        gen.close()
    judge(point, args)
    return point


# -- report ------------------------------------------------------------------------


def best_rate(points: list[Point]) -> tuple[int, bool]:
    """Highest passing pps below the first failure, and whether it is only a floor."""
    best = 0
    for p in sorted(points, key=lambda p: p.streams):
        if p.verdict != "pass":
            return best, p.verdict == "GEN"
        best = p.pps
    return best, True


def cell(p: Point | None) -> str:
    if p is None:
        return "-"
    g = p.gen
    cpu = f" cpu {p.relay_cpu_pct:.0f}%" if p.relay_cpu_pct is not None else f" gen {g['gen_cpu_pct']:.0f}%"
    return (f"{p.verdict:4} loss {g['loss_pct']:.3f}% p50 {g['lat_p50_us'] / 1000:.2f} "
            f"p99 {g['lat_p99_us'] / 1000:.2f} ms{cpu}")


def report(results: dict[str, list[Point]], impls: list[str], streams: list[int],
           args: argparse.Namespace) -> str:
    lines = []
    header = "| streams | pps | " + " | ".join(impls) + " |"
    lines.append(header)
    lines.append("|" + "---|" * (2 + len(impls)))
    for n in streams:
        row = [str(n), str(n * RATE)]
        for impl in impls:
            match = [p for p in results.get(impl, []) if p.streams == n]
            row.append(cell(match[0] if match else None))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    rates: dict[str, tuple[int, bool]] = {}
    for impl in impls:
        rate, floor = best_rate(results.get(impl, []))
        rates[impl] = (rate, floor)
        note = " (at least: not reached a failure / generator-bound)" if floor and rate else ""
        lines.append(f"highest passing rate  {impl:10} {rate:7d} pps{note}")
    def ratio(a: str, b: str) -> None:
        if a in rates and b in rates and rates[b][0]:
            ra, fa = rates[a]
            rb, fb = rates[b]
            prefix = ">=" if fa and not fb else ("~" if fa and fb else "")
            lines.append(f"ratio {a}/{b}: {prefix}{ra / rb:.2f}x")
        elif a in rates and b in rates:
            lines.append(f"ratio {a}/{b}: n/a ({b} passed no point)")
    ratio("cython", "rtpengine")
    ratio("cython", "pure")
    ratio("cython+engine", "pure+engine")
    lines.append("")
    lines.append("relay CPU per relayed packet (us, all threads, incl. kernel time), by streams:")
    for impl in impls:
        if "+engine" in impl:
            continue  # the engine thread burns whatever CPU the relay leaves
        costs = [f"{p.streams}: {p.relay_cpu_us_per_packet:.1f}" for p in results.get(impl, [])
                 if p.relay_cpu_us_per_packet is not None and p.verdict == "pass"]
        if costs:
            lines.append(f"  {impl:14} " + ", ".join(costs))
    at_1000 = [p for p in results.get("cython", []) if p.streams == 1000]
    if at_1000:
        p = at_1000[0]
        lines.append(f"cython at 1000 streams: {p.verdict}, p99 {p.gen['lat_p99_us'] / 1000:.2f} ms, "
                     f"loss {p.gen['loss_pct']:.3f} %")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="250,1000,1500,2000,2250,2500,3000,3500,4000,5000,6000",
                    help="comma-separated stream counts (two per call), ascending")
    ap.add_argument("--impls", default="direct,cython,pure,rtpengine,cython+engine,pure+engine")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--drain", type=float, default=0.5)
    ap.add_argument("--p99-ms", type=float, default=2.0)
    ap.add_argument("--max-loss", type=float, default=0.1, help="percent")
    ap.add_argument("--max-late-us", type=float, default=1000.0, help="generator p99 send lateness")
    ap.add_argument("--quantum-us", type=int, default=200,
                    help="generator tick: sends and receives in bursts of this period")
    ap.add_argument("--gen-sockets", type=int, default=8, help="phone sockets per side")
    ap.add_argument("--retries", type=int, default=1,
                    help="re-run a point that did not pass this many times (a passing re-run counts)")
    ap.add_argument("--keep-going", action="store_true", help="do not stop an impl at its first failure")
    ap.add_argument("--sched", choices=("fifo", "other"), default="fifo",
                    help="fifo: run the relays under SCHED_FIFO priority 1 and the generator at 2 (chrt), "
                         "so that other work on the machine cannot delay them by a whole "
                         "scheduler slice; other: normal scheduling")
    ap.add_argument("--relay-cpu", type=int, default=0,
                    help="pin every relay (all its threads) to this CPU; -1: no pinning")
    ap.add_argument("--gen-cpu", type=int, default=1, help="pin the generator to this CPU; -1: no pinning")
    ap.add_argument("--json", type=Path, help="write every point here")
    args = ap.parse_args()
    if args.relay_cpu >= 0:
        SCHED[:] = ["taskset", "-c", str(args.relay_cpu)]
    if args.gen_cpu >= 0:
        GEN_SCHED[:] = ["taskset", "-c", str(args.gen_cpu)]
    if args.sched == "fifo":
        SCHED[:] += ["chrt", "-f", "1"]
        GEN_SCHED[:] += ["chrt", "-f", "2"]
    streams = sorted(int(s) for s in args.streams.split(","))
    impls = args.impls.split(",")
    if "cython" in impls:
        import importlib

        sys.path.insert(0, str(ROOT))
        mod = importlib.import_module("warden_ext.relay")
        if not str(mod.__file__).endswith(".so"):
            print("warden_ext.relay is not compiled: python setup.py build_ext --inplace", file=sys.stderr)
            return 2

    print(f"# relay benchmark: {os.cpu_count()} CPUs ({cpu_model()}), kernel {os.uname().release}, "
          f"load {loadavg()}, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"# busiest other processes: {busiest()}")
    print(f"# {RATE} pps x {SIZE} B per stream; warmup {args.warmup}s, measure {args.duration}s, "
          f"drain {args.drain}s; pass: loss < {args.max_loss}%, p99 <= {args.p99_ms} ms, "
          f"generator late p99 <= {args.max_late_us:.0f} us")
    print(f"# scheduling {args.sched}; relay on CPU {args.relay_cpu}, generator on CPU {args.gen_cpu} "
          f"(-1: not pinned); generator tick {args.quantum_us} us, {args.gen_sockets} sockets per side")
    results: dict[str, list[Point]] = {}
    with tempfile.TemporaryDirectory(prefix="relaybench-") as tmpdir:
        tmp = Path(tmpdir)
        gen_exe = build_gen(tmp)
        relays: dict[str, Any] = {}
        engine: RtpEngine | None = None
        for impl in impls:
            if impl == "direct":
                relays[impl] = Direct()
            elif impl in ("cython", "pure", "cython+engine", "pure+engine"):
                relays[impl] = WardenRelay(impl, args.host)
            elif impl == "rtpengine":
                engine = RtpEngine(args.host, tmp)
                engine.start()
                if engine.unavailable:
                    print(f"# rtpengine skipped: {engine.unavailable}")
                    engine.stop()
                    engine = None
                    continue
                print(f"# rtpengine: {engine.version}, userspace (table = -1), default threads")
                relays[impl] = engine
            else:
                ap.error(f"unknown impl {impl}")
        stopped: set[str] = set()
        try:
            for n in streams:
                for impl, relay in relays.items():
                    if impl in stopped:
                        continue
                    point = run_point(relay, n, args, gen_exe, tmp)
                    for _ in range(args.retries):
                        if point.verdict == "pass":
                            break
                        print(f"{n:5d} streams {n * RATE:6d} pps  {impl:9}  {cell(point)}  "
                              f"[{point.why}] -> retrying once", flush=True)
                        again = run_point(relay, n, args, gen_exe, tmp)
                        # A generator that fell behind says nothing: a relay
                        # failure seen first still stands.
                        if not (again.verdict == "GEN" and point.verdict == "FAIL"):
                            point = again
                    results.setdefault(impl, []).append(point)
                    print(f"{n:5d} streams {n * RATE:6d} pps  {impl:9}  {cell(point)}"
                          + (f"  [{point.why}]" if point.why else ""), flush=True)
                    if point.verdict != "pass" and not args.keep_going:
                        stopped.add(impl)
        finally:
            if engine is not None:
                engine.stop()
    print(f"# load after: {loadavg()}; busiest other processes: {busiest()}")
    print()
    print(report(results, [i for i in impls if i in results], streams, args))
    if args.json:
        args.json.write_text(json.dumps(
            {impl: [p.__dict__ for p in pts] for impl, pts in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
