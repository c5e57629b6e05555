"""Engine CPU per operation, in process, without sockets (robust on a noisy machine).

Feeds an :class:`warden.engine.Engine` the datagrams a phone would send and
takes what it would send from a stand-in UDP server, all on this thread, so
``time.thread_time()`` over N operations is the engine's own CPU per
operation (parse, transactions, registrar, auth, store, serialise), whatever
else runs on the machine. Not a rate: the transport threads and the kernel's
socket work are not in it (see ``bench/sip/run.py`` for rates).

    python3 bench/sip/engine_cpu.py                 # REGISTER pairs over UDP
    python3 bench/sip/engine_cpu.py --profile 20    # and the 20 costliest functions (cProfile)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from warden.core.registrar import RegistrarPolicy  # noqa: E402
from warden.engine import Engine  # noqa: E402
from warden.sip.auth import answer_challenge, format_credentials, parse_challenge  # noqa: E402
from warden.sip.message import ParserLimits  # noqa: E402
from warden.store import Store  # noqa: E402

REALM = "bench.local"
PASSWORD = "benchpassword1"


class FakeUDP:
    """Collects what the engine sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, peer: tuple[str, int], local: object = None) -> bool:
        self.sent.append((data, peer))
        return True


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


_WWW = re.compile(rb"^WWW-Authenticate: (.*)$", re.M | re.I)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=4000, help="REGISTER pairs (default 4000)")
    ap.add_argument("--extensions", type=int, default=2000)
    ap.add_argument("--wave", type=int, default=16,
                    help="phones registering at once, i.e. requests per engine turn (default 16)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print the N costliest functions")
    ap.add_argument("--sort", default="tottime", help="pstats sort key for --profile (tottime, cumulative)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store.db")
        for i in range(args.extensions):
            store.add_extension(str(10000 + i), PASSWORD, realm=REALM)
        engine = Engine(store, realm=REALM, limits=ParserLimits(), registrar_policy=RegistrarPolicy())
        udp = engine.udp = FakeUDP()
        engine.listen_ports = {"udp": 5060}
        local = ("127.0.0.1", 5060)

        batch = getattr(store, "batch", contextlib.nullcontext)  # older trees: a commit per write

        def wave(first: int) -> None:
            """``args.wave`` phones register at once: their first REGISTERs are one
            engine turn (one store batch, one flush), their answers the next, as
            when the engine's queue holds that many requests."""
            ns = range(first, first + args.wave)
            with batch():
                for n in ns:
                    engine._datagram(register(ext_of(n), port_of(n), n, 1), ("127.0.0.1", port_of(n)), local)
            del udp.sent[:]
            engine._flush()
            challenges = [data for data, _ in udp.sent]
            with batch():
                for n, data in zip(ns, challenges):
                    assert data.startswith(b"SIP/2.0 401"), data[:40]
                    line = answer(n, data)
                    engine._datagram(register(ext_of(n), port_of(n), n, 2, line), ("127.0.0.1", port_of(n)), local)
            del udp.sent[:]
            engine._flush()
            for data, _ in udp.sent:
                assert data.startswith(b"SIP/2.0 200"), data[:60]

        def ext_of(n: int) -> str:
            return str(10000 + n % args.extensions)

        def port_of(n: int) -> int:
            return 20000 + n % 1000

        def answer(n: int, challenge: bytes) -> str:
            chal = parse_challenge(_WWW.search(challenge).group(1).decode().strip())
            creds = answer_challenge(chal, username=ext_of(n), method="REGISTER", uri="sip:127.0.0.1:5060",
                                     password=PASSWORD, cnonce="0a4f113b")
            return f"Authorization: {format_credentials(creds)}\r\n"

        for n in range(0, 400, args.wave):  # warm-up: the first registrations insert rows
            wave(n)
        # the client's side (building requests, answering challenges) is measured alone and subtracted
        fake = b'SIP/2.0 401 x\r\nWWW-Authenticate: Digest realm="bench.local", nonce="abc", algorithm=MD5, qop="auth"\r\n'
        t0 = time.thread_time()
        for n in range(args.n):
            register(ext_of(n), port_of(n), n, 1)
            register(ext_of(n), port_of(n), n, 2, answer(n, fake))
        client = time.thread_time() - t0
        prof = cProfile.Profile() if args.profile else None
        t0 = time.thread_time()
        w0 = time.perf_counter()
        if prof:
            prof.enable()
        for n in range(400, 400 + args.n, args.wave):
            wave(n)
        if prof:
            prof.disable()
        total = time.thread_time() - t0
        wall = time.perf_counter() - w0
        engine_cpu = total - client
        print(f"{args.n} REGISTER pairs, {args.wave} per engine turn: {engine_cpu / args.n * 1e6:.0f} us engine CPU per registration "
              f"({total / args.n * 1e6:.0f} us with the client's {client / args.n * 1e6:.0f} us; "
              f"wall {wall:.2f} s, {'profiled' if prof else 'not profiled'})")
        if prof:
            pstats.Stats(prof).sort_stats(args.sort).print_stats(args.profile)
        store.close()


if __name__ == "__main__":
    main()
