"""Full TLS 1.3 handshakes vs resumed ones (session tickets) against a real PBX.

Starts ``warden-pbx run`` (SIPS on a loopback port, RSA 2048 certificate,
nothing else), then times N sequential connections that each complete a
handshake and one SIP OPTIONS round trip (which also delivers the tickets),
first without a session (full handshake: certificate, RSA signature, ECDHE),
then resuming the first connection's ticket (PSK + ECDHE, no certificate, no
signature). Prints connections per second and the ratio. The PBX process's
CPU time per connection comes from /proc, so it is the server's cost, not the
client's.

    python3 bench/bench_tls_resumption.py [--count 300] [--profile intermediate]
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import helpers  # noqa: E402


def options(sock: ssl.SSLSocket, n: int) -> None:
    local = sock.getsockname()
    sock.sendall((f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {local[0]}:{local[1]};branch=z9hG4bKb{n}\r\n"
                  f"From: <sip:bench@127.0.0.1>;tag={n}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: bench-{n}\r\n"
                  "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
    if not sock.recv(65536).startswith(b"SIP/2.0 200"):
        raise RuntimeError("no 200 to OPTIONS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(address: tuple[str, int], ctx: ssl.SSLContext, count: int, session: ssl.SSLSession | None,
        pid: int) -> tuple[float, float, int]:
    reused = 0
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    for n in range(count):
        with socket.create_connection(address, timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            options(tls, n)
            reused += tls.session_reused
    return time.perf_counter() - t0, cpu_seconds(pid) - cpu0, reused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--profile", default="intermediate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pki = helpers.make_pki(Path(tmp) / "pki")
        port = helpers.free_port()
        text = helpers.tls_config(pki, port).replace("level: debug", "level: warning")
        text = text.replace("  fips_mode: false", f"  fips_mode: false\n  tls_profile: {args.profile}")
        workdir = Path(tmp) / "pbx"
        workdir.mkdir()
        with helpers.PBXProcess(workdir, text) as pbx:
            pbx.start([("127.0.0.1", port)])
            assert pbx.proc is not None
            address = ("127.0.0.1", port)
            ctx = ssl.create_default_context(cafile=str(pki.ca))
            with socket.create_connection(address) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                options(tls, 0)
                session = tls.session
            run(address, ctx, 20, None, pbx.proc.pid)  # warm-up
            full_wall, full_cpu, _ = run(address, ctx, args.count, None, pbx.proc.pid)
            res_wall, res_cpu, reused = run(address, ctx, args.count, session, pbx.proc.pid)
    print(f"TLS 1.3, profile {args.profile}, RSA 2048, {args.count} sequential connections each")
    print(f"{'':10} {'conn/s':>8} {'PBX CPU ms/conn':>16}")
    print(f"{'full':10} {args.count / full_wall:8.0f} {1000 * full_cpu / args.count:16.2f}")
    print(f"{'resumed':10} {args.count / res_wall:8.0f} {1000 * res_cpu / args.count:16.2f}"
          f"   ({reused}/{args.count} resumed)")
    print(f"resumed vs full: {full_wall / res_wall:.2f}x connections/s, "
          f"{full_cpu / res_cpu if res_cpu else float('inf'):.2f}x less PBX CPU per connection")
    return 0 if reused == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
