"""Microseconds per SIP parse and serialise, compiled and pure, for real message shapes.

Times :func:`warden.sip.message.parse_message` on the messages a sipp call and
registration bring (INVITE with Authorization and SDP, 100/180/200 responses,
ACK, BYE, REGISTER with Authorization), ``bytes()`` of each parsed message,
and ``make_response`` + ``bytes()`` (what the engine does per answer). Each
figure is the best of ``--repeat`` timed loops (``time.perf_counter``), as
noise on a shared machine only ever adds time.

The pure-Python figures come from a child process with
``WARDEN_NO_EXTENSIONS=1``. ``--baseline REV`` exports ``warden/`` and
``setup.py`` of git revision ``REV`` into ``build/bench-baseline/REV``,
compiles its extensions there once (cached), and measures it in the same run,
so the ratios compare like with like on the same machine state.

    python3 bench/sip/parse.py                       # this tree, compiled and pure
    python3 bench/sip/parse.py --baseline a924844    # and the ratio to that commit
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
       b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
AUTH = ('Authorization: Digest username="10000",realm="bench.local",'
        'nonce="1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d.1700000000",uri="sip:11000@127.0.0.1:5060",'
        'response="0123456789abcdef0123456789abcdef",algorithm=MD5,cnonce="0a4f113b",qop=auth,nc=00000001\r\n')
HEAD = ("Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-7-2;rport\r\n"
        "From: sipp <sip:sipp@127.0.0.1:5061>;tag=7SIPpTag007\r\n")
TO = "To: <sip:11000@127.0.0.1:5060>"
TAIL = "Call-ID: 7-2134@127.0.0.1\r\n"
CONTACT = "Contact: sip:sipp@127.0.0.1:5061\r\n"

MESSAGES = {
    "INVITE auth+SDP": (
        f"INVITE sip:11000@127.0.0.1:5060 SIP/2.0\r\n{HEAD}{TO}\r\n{TAIL}CSeq: 2 INVITE\r\n{CONTACT}"
        f"{AUTH}Max-Forwards: 70\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n").encode() + SDP,
    "100 Trying": (
        f"SIP/2.0 100 Trying\r\n{HEAD}{TO}\r\n{TAIL}CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode(),
    "180 Ringing": (
        f"SIP/2.0 180 Ringing\r\n{HEAD}{TO};tag=7SIPpTag017\r\n{TAIL}CSeq: 1 INVITE\r\n"
        f"Contact: <sip:127.0.0.1:5062;transport=UDP>\r\nContent-Length: 0\r\n\r\n").encode(),
    "200 OK +SDP": (
        f"SIP/2.0 200 OK\r\n{HEAD}{TO};tag=7SIPpTag017\r\n{TAIL}CSeq: 1 INVITE\r\n"
        f"Contact: <sip:127.0.0.1:5062;transport=UDP>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n").encode() + SDP,
    "ACK": (
        f"ACK sip:127.0.0.1:5062;transport=UDP SIP/2.0\r\n{HEAD}{TO};tag=7SIPpTag017\r\n{TAIL}"
        f"CSeq: 1 ACK\r\n{CONTACT}Max-Forwards: 70\r\nSubject: Performance Test\r\n"
        f"Content-Length: 0\r\n\r\n").encode(),
    "BYE": (
        f"BYE sip:127.0.0.1:5062;transport=UDP SIP/2.0\r\n{HEAD}{TO};tag=7SIPpTag017\r\n{TAIL}"
        f"CSeq: 2 BYE\r\n{CONTACT}Max-Forwards: 70\r\nSubject: Performance Test\r\n"
        f"Content-Length: 0\r\n\r\n").encode(),
    "REGISTER auth": (
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:20001;branch=z9hG4bK-1-2;rport\r\n"
        "From: <sip:10001@127.0.0.1>;tag=1SIPpTag1\r\nTo: <sip:10001@127.0.0.1>\r\n"
        "Call-ID: 1-bench@127.0.0.1\r\nCSeq: 2 REGISTER\r\n"
        "Contact: <sip:10001@127.0.0.1:20001;transport=udp>\r\n"
        + AUTH.replace("11000@127.0.0.1:5060", "127.0.0.1:5060")
        + "Max-Forwards: 70\r\nExpires: 3600\r\nUser-Agent: sipp\r\nContent-Length: 0\r\n\r\n").encode(),
}


def _vary(data: bytes, i: int) -> bytes:
    """A copy with this iteration's branch, tags and Call-ID, as every new call has
    (so the parser's memos of URIs, name-addrs and Vias miss as for a new call)."""
    return (data.replace(b"z9hG4bK-", b"z9hG4bK-%d-" % i).replace(b"SIPpTag", b"SIPpTag%d" % i)
            .replace(b"Call-ID: ", b"Call-ID: %d-" % i))


def _best(fn, loops: list[list], wrap=None) -> float:  # type: ignore[no-untyped-def]
    """Best time per item of ``fn`` over each list in ``loops`` (``wrap`` prepares a
    list untimed). Every loop has its own messages, so no loop finds the
    parser's memos (URIs, name-addrs, Vias) warm from an earlier one."""
    best = float("inf")
    for inputs in loops:
        if wrap is not None:
            inputs = [wrap(x) for x in inputs]
        t0 = time.perf_counter()
        for x in inputs:
            fn(x)
        best = min(best, time.perf_counter() - t0)
    return best / len(loops[0]) * 1e6


def measure(n: int, repeat: int) -> dict[str, dict[str, float]]:
    """``{shape: {"parse": us, "bytes": us, "reply": us}}`` in this process."""
    from warden.sip import _select
    from warden.sip.message import Request, make_response, parse_message

    out: dict[str, dict[str, float]] = {"_": {"implementation": _select.implementation()}}  # type: ignore[dict-item]
    fresh = iter(range(10**9))
    for name, data in MESSAGES.items():
        def loops() -> list[list[bytes]]:
            return [[_vary(data, next(fresh)) for _ in range(n)] for _ in range(repeat)]
        msg = parse_message(data)  # checks that it parses
        row = {"parse": _best(parse_message, loops())}
        row["bytes"] = _best(bytes, loops(), parse_message)
        if isinstance(msg, Request) and msg.method != "ACK":
            row["reply"] = _best(lambda m: bytes(make_response(m, 200, to_tag="as7d6f5e")), loops(), parse_message)
        out[name] = row
    return out


def _child(where: Path, pure: bool, n: int, repeat: int) -> dict[str, dict[str, float]]:
    env = dict(os.environ, PYTHONPATH=str(where))
    env.pop("WARDEN_NO_EXTENSIONS", None)
    if pure:
        env["WARDEN_NO_EXTENSIONS"] = "1"
    script = f"import sys; sys.path.insert(0, {str(ROOT / 'bench' / 'sip')!r}); " \
             f"import json, parse; print(json.dumps(parse.measure({n}, {repeat})))"
    done = subprocess.run([sys.executable, "-c", script], cwd=where, env=env, capture_output=True,
                          text=True, timeout=600)
    if done.returncode:
        sys.exit(f"measuring {where} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _baseline_tree(rev: str) -> Path:
    """``warden/`` and ``setup.py`` of ``rev``, built once, under ``build/bench-baseline/``."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    where = ROOT / "build" / "bench-baseline" / sha
    if not (where / ".built").exists():
        where.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "warden", "warden_ext", "setup.py", "pyproject.toml",
                                  "README.md"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
        print(f"building the baseline {sha} in {where} ...", file=sys.stderr)
        # pip's isolated build brings the Cython that pyproject.toml asks for
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where / "dist"), "."],
                       cwd=where, check=True, capture_output=True, timeout=1800)
        with zipfile.ZipFile(next((where / "dist").glob("*.whl"))) as wheel:
            for member in wheel.namelist():
                if member.endswith(".so"):
                    (where / member).write_bytes(wheel.read(member))  # newer than the exported .py
        (where / ".built").touch()
    return where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="distinct messages per shape (default 2000)")
    ap.add_argument("--repeat", type=int, default=7, help="timed loops per figure, best kept (default 7)")
    ap.add_argument("--baseline", metavar="REV", help="also measure git revision REV, and print ratios")
    ap.add_argument("--json", metavar="FILE", help="write the figures there too")
    args = ap.parse_args()

    trees = {"this tree": ROOT}
    if args.baseline:
        trees[f"baseline {args.baseline}"] = _baseline_tree(args.baseline)
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for label, where in trees.items():
        for mode, pure in (("compiled", False), ("pure", True)):
            results[f"{label}, {mode}"] = _child(where, pure, args.n, args.repeat)
    cols = list(results)
    print(f"us per operation (best of {args.repeat} loops over {args.n} messages)")
    print(f"{'shape':17} {'op':6} " + " ".join(f"{c:>26}" for c in cols)
          + ("   ratio compiled   ratio pure" if args.baseline else ""))
    for name in MESSAGES:
        for op in ("parse", "bytes", "reply"):
            vals = [results[c].get(name, {}).get(op) for c in cols]
            if vals[0] is None:
                continue
            line = f"{name:17} {op:6} " + " ".join(f"{v:26.2f}" if v is not None else f"{'-':>26}" for v in vals)
            if args.baseline and None not in vals:
                line += f"   {vals[2] / vals[0]:13.2f}x   {vals[3] / vals[1]:9.2f}x"
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
