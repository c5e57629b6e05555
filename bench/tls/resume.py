"""Full vs resumed TLS 1.3 handshakes against warden-pbx's SIPS port.

Issue #7 item 3: TLS 1.3 session tickets let a returning phone skip the
certificate signature. Client processes (Python ``ssl``) open connections in a
loop for a fixed time: in the *full* run without a session, in the *resumed*
run passing ``session=`` (the ticket from their previous connection) and
checking ``session_reused``. Every connection sends a CRLFCRLF keep-alive and
reads the CRLF pong, so the server's tickets have arrived before the close.
Reported per run: connections per second, how many resumed, and the PBX's
CPU per connection (from /proc: all its threads). The PBX runs on the same
interpreter as this script, so ``/usr/bin/python3`` measures Debian 12's stack.

    .venv/bin/python bench/tls/resume.py                 # 15 s per run, 2 client processes
    .venv/bin/python bench/tls/resume.py --seconds 5 --json out.json
    /usr/bin/python3 bench/tls/resume.py --clients 1 --profile modern
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from flood import cpu_seconds, machine_busy  # noqa: E402  (also puts tests/ on sys.path)
from helpers import PBXProcess, free_port, loopback_config, make_pki  # noqa: E402

from warden.config import TLS_PROFILES  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def client(port: int, ca: str, seconds: float, resume: bool, out: Any) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    session = None
    done = reused = failed = 0
    cpu0 = time.process_time()
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost", session=session if resume else None) as tls:
                    tls.sendall(b"\r\n\r\n")  # RFC 5626 ping; the pong also brings the tickets in
                    if tls.recv(16) != b"\r\n":
                        raise ConnectionError("no pong")
                    done += 1
                    reused += tls.session_reused
                    session = tls.session
        except (OSError, ssl.SSLError):
            failed += 1
    out.put({"done": done, "reused": reused, "failed": failed, "cpu": time.process_time() - cpu0})


def measure(port: int, ca: Path, pid: int, seconds: float, clients: int, resume: bool) -> dict[str, Any]:
    queue: Any = multiprocessing.Queue()
    cpu0, busy0, start = cpu_seconds([pid]), machine_busy(), time.monotonic()
    procs = [multiprocessing.Process(target=client, args=(port, str(ca), seconds, resume, queue)) for _ in range(clients)]
    for p in procs:
        p.start()
    parts = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(10)
    elapsed = time.monotonic() - start
    server_cpu, busy1 = cpu_seconds([pid]) - cpu0, machine_busy()
    done = sum(p["done"] for p in parts)
    return {
        "mode": "resumed" if resume else "full",
        "seconds": round(elapsed, 2),
        "connections": done,
        "resumed": sum(p["reused"] for p in parts),
        "failed": sum(p["failed"] for p in parts),
        "connections_per_s": round(done / elapsed, 1),
        "server_cpu_ms_per_connection": round(1000 * server_cpu / max(done, 1), 3),
        "client_cpu_ms_per_connection": round(1000 * sum(p["cpu"] for p in parts) / max(done, 1), 3),
        "machine_busy_pct": round(100 * (busy1[0] - busy0[0]) / TICKS / (elapsed * (os.cpu_count() or 1)), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each run (default 15)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--profile", choices=TLS_PROFILES,
                        help="security.tls_profile of the SIPS listener (default: the shipped one)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "cores": os.cpu_count(),
                               "openssl": ssl.OPENSSL_VERSION,
                               "python": sys.version.split()[0], "profile": args.profile or "shipped default",
                               "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}
    with tempfile.TemporaryDirectory(prefix="warden-resume-") as tmp:
        work = Path(tmp)
        pki = make_pki(work / "pki")
        (work / "pbx" / "var").mkdir(parents=True)
        port = free_port()
        text = loopback_config(pki, work / "pbx", 0, 0, port)
        if args.profile:
            text = text.replace("security: {", f"security: {{tls_profile: {args.profile}, ", 1)
        pbx = PBXProcess(work / "pbx", text)
        try:
            pbx.start([("127.0.0.1", port)], timeout=40)
            assert pbx.proc is not None
            runs = [measure(port, pki.ca, pbx.proc.pid, args.seconds, args.clients, resume) for resume in (False, True)]
        finally:
            pbx.stop()
    full, resumed = runs
    results.update(full=full, resumed=resumed, loadavg_after=Path("/proc/loadavg").read_text().split()[:3])
    results["speedup_connections_per_s"] = round(resumed["connections_per_s"] / max(full["connections_per_s"], 0.1), 2)
    results["server_cpu_ratio_full_over_resumed"] = round(
        full["server_cpu_ms_per_connection"] / max(resumed["server_cpu_ms_per_connection"], 1e-6), 2)
    print(json.dumps(results, indent=2))
    print(f"\n{'mode':<9}{'conn/s':>9}{'resumed':>10}{'server ms CPU/conn':>20}{'client ms CPU/conn':>20}")
    for r in runs:
        print(f"{r['mode']:<9}{r['connections_per_s']:>9.1f}{r['resumed']:>10}{r['server_cpu_ms_per_connection']:>20.3f}"
              f"{r['client_cpu_ms_per_connection']:>20.3f}")
    print(f"resumed/full: {results['speedup_connections_per_s']}x connections/s; a full handshake costs the PBX "
          f"{results['server_cpu_ratio_full_over_resumed']}x the CPU of a resumed one")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if resumed["resumed"] > 0.9 * resumed["connections"] else 1


if __name__ == "__main__":
    sys.exit(main())
