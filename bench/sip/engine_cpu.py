"""Engine CPU per operation, in process, without sockets (robust on a noisy machine).

Feeds an :class:`warden.engine.Engine` the datagrams phones would send and
takes what it would send from a stand-in UDP server, all on this thread. Each
engine turn is what the engine's loop does with a full queue: a store batch
around ``--wave`` datagrams and the timers, then one flush. Only the turns
are timed (``time.thread_time()``), so the figure is the engine's own CPU per
operation (parse, transactions, registrar or B2BUA, auth, store, SDP,
serialise) whatever else runs on the machine; the phones' side is not in it.
Not a rate: the transport threads and the kernel's socket work are not in it
either (see ``bench/sip/run.py`` for rates).

    python3 bench/sip/engine_cpu.py                       # REGISTER pairs over UDP
    python3 bench/sip/engine_cpu.py --scenario calls      # INVITE-BYE calls, media anchored
    python3 bench/sip/engine_cpu.py --profile 30          # and the 30 costliest functions (cProfile)
    python3 bench/sip/engine_cpu.py --scenario calls -n 48000 --rate 1000   # steady state at 1,000 calls/s

``--rate`` drives the monotonic clock (timers, the 32 s transaction lifetimes
over UDP) as if the operations came at that rate, so a run longer than 32
simulated seconds shows the heap and the garbage collector as a PBX under
that load has them (as fast as possible, -n 8000 ends before any UDP
transaction does).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import os
import pstats
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from warden.core.registrar import RegistrarPolicy  # noqa: E402
from warden.engine import Engine  # noqa: E402

try:
    from warden.engine import tune_gc
except ImportError:  # older trees
    tune_gc = None  # type: ignore[assignment]
from warden.sip.auth import answer_challenge, format_credentials, parse_challenge  # noqa: E402
from warden.sip.message import ParserLimits  # noqa: E402
from warden.store import Binding, Store  # noqa: E402

REALM = "bench.local"
PASSWORD = "benchpassword1"
PBX = ("127.0.0.1", 5060)
SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
       b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class FakeUDP:
    """Collects what the engine sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, peer: tuple[str, int], local: object = None) -> bool:
        self.sent.append((data, peer))
        return True


class Bench:
    def __init__(self, store: Store, engine: Engine, udp: FakeUDP) -> None:
        self.store, self.engine, self.udp = store, engine, udp
        self.cpu = 0.0
        self.batch = getattr(store, "batch", contextlib.nullcontext)  # older trees: a commit per write

    def turn(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> list[tuple[bytes, tuple[str, int]]]:
        """One timed engine turn; returns what the engine sent."""
        engine = self.engine
        del self.udp.sent[:]
        t0 = time.thread_time()
        with self.batch():
            for data, peer in datagrams:
                engine._datagram(data, peer, PBX)
            engine._fire_timers()
        engine._flush()
        self.cpu += time.thread_time() - t0
        return list(self.udp.sent)


_WWW = re.compile(rb"^WWW-Authenticate: (.*)$", re.M | re.I)


def _authorization(challenge: bytes, user: str, method: str, uri: str) -> str:
    chal = parse_challenge(_WWW.search(challenge).group(1).decode().strip())  # type: ignore[union-attr]
    creds = answer_challenge(chal, username=user, method=method, uri=uri, password=PASSWORD, cnonce="0a4f113b")
    return f"Authorization: {format_credentials(creds)}\r\n"


def _header(msg: bytes, name: str) -> str:
    m = re.search(rb"^" + name.encode() + rb": *(.*?)\r$", msg, re.M | re.I)
    assert m is not None, (name, msg[:200])
    return m.group(1).decode()


# -- REGISTER ------------------------------------------------------------------------------


def register(ext: str, port: int, n: int, cseq: int, auth_line: str = "") -> bytes:
    return (
        f"REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{n}-{cseq};rport\r\n"
        f"From: <sip:{ext}@127.0.0.1>;tag={n}SIPpTag{n}\r\n"
        f"To: <sip:{ext}@127.0.0.1>\r\n"
        f"Call-ID: {n}-bench@127.0.0.1\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{ext}@127.0.0.1:{port};transport=udp>\r\n"
        f"{auth_line}"
        f"Max-Forwards: 70\r\nExpires: 3600\r\nUser-Agent: sipp\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def register_wave(b: Bench, first: int, wave: int, extensions: int) -> None:
    """``wave`` phones register at once: their first REGISTERs are one engine
    turn, their answers to the 401s the next."""
    phones = [(str(10000 + n % extensions), 20000 + n % 1000, n) for n in range(first, first + wave)]
    sent = b.turn([(register(ext, port, n, 1), ("127.0.0.1", port)) for ext, port, n in phones])
    assert len(sent) == wave and all(d.startswith(b"SIP/2.0 401") for d, _ in sent), sent[:1]
    answers = [(register(ext, port, n, 2, _authorization(d, ext, "REGISTER", "sip:127.0.0.1:5060")), ("127.0.0.1", port))
               for (ext, port, n), (d, _) in zip(phones, sent)]
    sent = b.turn(answers)
    assert len(sent) == wave and all(d.startswith(b"SIP/2.0 200") for d, _ in sent), sent[:1]


# -- calls -----------------------------------------------------------------------------------

CALLER_PORT, CALLEE_PORT = 21000, 22000


def invite(caller: str, callee: str, n: int, cseq: int, auth_line: str = "") -> bytes:
    body = SDP if cseq == 2 else b""
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"INVITE sip:{callee}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{CALLER_PORT};branch=z9hG4bK-c{n}-{cseq};rport\r\n"
        f"From: <sip:{caller}@127.0.0.1>;tag={n}SIPpTag00{n}\r\n"
        f"To: <sip:{callee}@127.0.0.1>\r\n"
        f"Call-ID: {n}-call@127.0.0.1\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        f"Contact: <sip:{caller}@127.0.0.1:{CALLER_PORT};transport=udp>\r\n"
        f"{auth_line}Max-Forwards: 70\r\nUser-Agent: sipp\r\n{ctype}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def in_dialog(method: str, ruri: str, caller: str, callee: str, n: int, cseq: int, to_tag: str, branch: str) -> bytes:
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{CALLER_PORT};branch=z9hG4bK-c{n}-{branch};rport\r\n"
        f"From: <sip:{caller}@127.0.0.1>;tag={n}SIPpTag00{n}\r\n"
        f"To: <sip:{callee}@127.0.0.1>;tag={to_tag}\r\n"
        f"Call-ID: {n}-call@127.0.0.1\r\n"
        f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def uas_response(req: bytes, status: str, n: int, body: bytes = b"") -> bytes:
    """What the callee (sipp uas.xml) answers to ``req``."""
    vias = "".join(f"Via: {v}\r\n" for v in re.findall(rb"^Via: *(.*?)\r$", req, re.M)[0:1] for v in [v.decode()])
    to = _header(req, "To")
    if ";tag=" not in to:
        to += f";tag={n}SIPpTag01{n}"
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"SIP/2.0 {status}\r\n{vias}From: {_header(req, 'From')}\r\nTo: {to}\r\n"
        f"Call-ID: {_header(req, 'Call-ID')}\r\nCSeq: {_header(req, 'CSeq')}\r\n"
        f"Contact: <sip:127.0.0.1:{CALLEE_PORT};transport=udp>\r\n{ctype}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _by_peer(sent: list[tuple[bytes, tuple[str, int]]], port: int) -> list[bytes]:
    return [d for d, peer in sent if peer[1] == port]


def call_wave(b: Bench, first: int, wave: int, callees: int) -> None:
    """``wave`` calls through their whole life, step by step, each step one engine turn."""
    caller = "10000"
    calls = [(str(11000 + n % callees), n) for n in range(first, first + wave)]
    caller_peer, callee_peer = ("127.0.0.1", CALLER_PORT), ("127.0.0.1", CALLEE_PORT)

    def only(sent: list[bytes], start: bytes, leg: str = "a") -> list[bytes]:
        """One ``start`` message per call of the wave, in call order (a timer's
        retransmission of an earlier message may come along: it is ignored)."""
        first: dict[str, bytes] = {}
        for d in sent:
            if d.startswith(start):
                first.setdefault(_header(d, "Call-ID"), d)
        if leg == "b":  # the PBX makes its own Call-IDs towards the callee: keep send order
            out = [d for d in sent if d.startswith(start)][-wave:]
        else:
            out = [first[f"{n}-call@127.0.0.1"] for _, n in calls if f"{n}-call@127.0.0.1" in first]
        assert len(out) == wave, (start, len(out), sent[:1])
        return out

    # INVITE without credentials -> 401; ACK it
    sent = b.turn([(invite(caller, callee, n, 1), caller_peer) for callee, n in calls])
    challenges = only(_by_peer(sent, CALLER_PORT), b"SIP/2.0 401")
    b.turn([(in_dialog("ACK", f"sip:{callee}@127.0.0.1:5060", caller, callee, n, 1,
                       _header(ch, "To").split("tag=")[1], "1"), caller_peer)
            for (callee, n), ch in zip(calls, challenges)])
    # INVITE with credentials and SDP -> INVITE to the callee
    sent = b.turn([(invite(caller, callee, n, 2, _authorization(ch, caller, "INVITE", f"sip:{callee}@127.0.0.1:5060")),
                    caller_peer) for (callee, n), ch in zip(calls, challenges)])
    forwarded = only(_by_peer(sent, CALLEE_PORT), b"INVITE ", "b")
    # the callee rings then answers: 180 and 200 (two turns, as they come in two datagrams)
    b.turn([(uas_response(inv, "180 Ringing", n), callee_peer) for (_, n), inv in zip(calls, forwarded)])
    sent = b.turn([(uas_response(inv, "200 OK", n, SDP), callee_peer) for (_, n), inv in zip(calls, forwarded)])
    oks = only(_by_peer(sent, CALLER_PORT), b"SIP/2.0 200")
    only(_by_peer(sent, CALLEE_PORT), b"ACK ", "b")
    # the caller ACKs, then hangs up
    dialogs = [(_header(ok, "To").split("tag=")[1], _header(ok, "Contact").strip("<>")) for ok in oks]
    b.turn([(in_dialog("ACK", contact, caller, callee, n, 2, tag, "3"), caller_peer)
            for (callee, n), (tag, contact) in zip(calls, dialogs)])
    sent = b.turn([(in_dialog("BYE", contact, caller, callee, n, 3, tag, "4"), caller_peer)
                   for (callee, n), (tag, contact) in zip(calls, dialogs)])
    byes = only(_by_peer(sent, CALLEE_PORT), b"BYE ", "b")
    to_caller = _by_peer(sent, CALLER_PORT)  # the PBX answers the BYE itself or relays the callee's 200
    sent = b.turn([(uas_response(bye, "200 OK", n), callee_peer) for (_, n), bye in zip(calls, byes)])
    only(to_caller + _by_peer(sent, CALLER_PORT), b"SIP/2.0 200")


class GCWatch:
    """Wall time spent in the garbage collector, per generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.spent = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.spent[info["generation"]] += time.perf_counter() - self._t0
            self.runs[info["generation"]] += 1

    def close(self) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self, wall: float) -> str:
        total = sum(self.spent)
        per_gen = ", ".join(f"gen{g} {n} x {self.spent[g] / n * 1e3:.2f} ms" for g, n in enumerate(self.runs) if n)
        return f"{total:.3f} s ({100 * total / wall:.1f} % of wall){': ' + per_gen if per_gen else ''}"


def print_objects(top: int) -> None:
    counts = Counter(type(o).__qualname__ for o in gc.get_objects())
    for name, n in counts.most_common(top):
        print(f"  {n:9d}  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", choices=("register", "calls"), default="register")
    ap.add_argument("-n", type=int, default=0, help="operations (default 4000 registrations, 2000 calls)")
    ap.add_argument("--extensions", type=int, default=2000, help="registering extensions / callees")
    ap.add_argument("--wave", type=int, default=16,
                    help="operations in step, i.e. requests per engine turn (default 16)")
    ap.add_argument("--rtp-range", default="40000-48000", help="RTP ports for the calls (media anchored)")
    ap.add_argument("--default-gc", action="store_true", help="leave the garbage collector as Python sets it")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print the N costliest functions")
    ap.add_argument("--sort", default="tottime", help="pstats sort key for --profile (tottime, cumulative)")
    ap.add_argument("--rate", type=float, default=0.0, metavar="OPS",
                    help="advance the monotonic clock as if OPS operations came per second")
    ap.add_argument("--objects", type=int, default=0, metavar="N",
                    help="print the N commonest objects the garbage collector tracks after the run")
    args = ap.parse_args()
    n_ops = args.n or (4000 if args.scenario == "register" else 2000)

    media = None
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store.db")
        try:
            step: Callable[[Bench, int], None]
            if args.scenario == "register":
                for i in range(args.extensions):
                    store.add_extension(str(10000 + i), PASSWORD, realm=REALM)
                engine = Engine(store, realm=REALM, limits=ParserLimits(), registrar_policy=RegistrarPolicy())

                def step(b: Bench, first: int) -> None:
                    register_wave(b, first, args.wave, args.extensions)
                what = "registration (REGISTER, 401, REGISTER, 200)"
            else:
                from warden.media.anchor import MediaPlane

                low, high = (int(p) for p in args.rtp_range.split("-"))
                media = MediaPlane(low, high)
                media.start()
                store.add_extension("10000", PASSWORD, realm=REALM)
                now = time.time()
                for i in range(args.extensions):
                    ext = str(11000 + i)
                    store.add_extension(ext, PASSWORD, realm=REALM)
                    store.upsert_binding(Binding(
                        aor=ext, contact=f"sip:{ext}@127.0.0.1:{CALLEE_PORT}", expires_at=now + 3600,
                        call_id=f"reg-{ext}", cseq=1, transport="udp", source_host="127.0.0.1",
                        source_port=CALLEE_PORT, registered_at=now))
                engine = Engine(store, realm=REALM, limits=ParserLimits(), registrar_policy=RegistrarPolicy(),
                                media=media)

                def step(b: Bench, first: int) -> None:
                    call_wave(b, first, args.wave, args.extensions)
                what = "call (INVITE, 401, ACK, INVITE, 100, 180, 200, ACK, BYE, 200 on both legs)"
            if not args.default_gc and tune_gc is not None:
                tune_gc()  # as the service does once started
            udp = engine.udp = FakeUDP()
            engine.listen_ports = {"udp": 5060}
            bench = Bench(store, engine, udp)
            if args.rate:
                clock = [time.monotonic()]
                time.monotonic = lambda: clock[0]  # type: ignore[assignment]
                inner = step

                def step(b: Bench, first: int) -> None:
                    inner(b, first)
                    clock[0] += args.wave / args.rate
            for first in range(0, 10 * args.wave, args.wave):  # warm-up
                step(bench, first)
            bench.cpu = 0.0
            prof = cProfile.Profile() if args.profile else None
            gc_watch = GCWatch()
            w0 = time.perf_counter()
            if prof:
                prof.enable()
            for first in range(10 * args.wave, 10 * args.wave + n_ops, args.wave):
                step(bench, first)
            if prof:
                prof.disable()
            wall = time.perf_counter() - w0
            gc_watch.close()
            print(f"{args.scenario}: {n_ops} x {args.wave} per engine turn: "
                  f"{bench.cpu / n_ops * 1e6:.0f} us engine CPU per {what}"
                  f" (wall {wall:.2f} s{', profiled' if prof else ''}"
                  f"{f', clock at {args.rate:g}/s' if args.rate else ''})")
            print(f"garbage collector: {gc_watch.summary(wall)}; "
                  f"{len(gc.get_objects())} tracked objects at the end")
            if args.objects:
                print_objects(args.objects)
            if prof:
                pstats.Stats(prof).sort_stats(args.sort).print_stats(args.profile)
                if os.environ.get('WARDEN_PROFILE_OUT'):
                    prof.dump_stats(os.environ['WARDEN_PROFILE_OUT'])
        finally:
            if media is not None:
                media.stop()
            store.close()


if __name__ == "__main__":
    main()
