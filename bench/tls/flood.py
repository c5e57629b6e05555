"""TLS handshake flood: warden-pbx's SIPS port next to nginx, same certificate, same run.

Issue #7 acceptance: several clients doing full TLS 1.3 handshakes (no
resumption) and closing each connection with a TCP RST, for 60 s, against a
real ``warden-pbx run`` while phones are registered over TLS; afterwards the
PBX is alive and every phone re-REGISTERs over the connection it kept (200).
The same flood then goes to nginx (Debian's), started here on a free port with
a throwaway config serving the same certificate and key, TLS 1.3,
``worker_processes`` = the core count. Target: PBX >= 0.7x nginx.

The load generator is ``hsflood`` (bench/tls/hsflood.c, compiled here with
gcc against libssl): C costs the client side about a third of what a Python
client would, so on a small machine the generator is not what limits the
rate. The run reports for each server the handshakes per second, the
server's CPU per handshake (from /proc: all its processes and threads) and
the generator's CPU, so a reader can see who was saturated.

    .venv/bin/python bench/tls/flood.py                 # 60 s per server, 4 clients, 20 phones
    .venv/bin/python bench/tls/flood.py --seconds 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _p in (str(ROOT), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from helpers import PKI, PBXProcess, free_port, loopback_config, make_pki  # noqa: E402  (tests/helpers.py: no pytest)
from phones import TLSPhone  # noqa: E402

from warden.store import Store  # noqa: E402

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def build_client(out_dir: Path) -> Path:
    """Compile hsflood.c (gcc and libssl-dev, see the Makefile's APT_BENCH)."""
    binary = out_dir / "hsflood"
    cmd = ["gcc", "-O2", "-Wall", "-o", str(binary), str(HERE / "hsflood.c"), "-lssl", "-lcrypto"]
    subprocess.run(cmd, check=True)
    return binary


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all threads), from /proc."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def flood(client: Path, port: int, ca: Path, seconds: float, clients: int, server_pids: list[int]) -> dict[str, Any]:
    """Run ``clients`` hsflood processes for ``seconds``; measure everyone's CPU."""
    cpu0, busy0 = cpu_seconds(server_pids), machine_busy()
    start = time.monotonic()
    procs = [
        subprocess.Popen([str(client), "127.0.0.1", str(port), str(ca), str(seconds)], stdout=subprocess.PIPE, text=True)
        for _ in range(clients)
    ]
    ok = failed = 0
    gen_cpu = 0.0
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 60)
        fields = dict(item.split("=") for item in out.split())
        ok, failed, gen_cpu = ok + int(fields["ok"]), failed + int(fields["failed"]), gen_cpu + float(fields["cpu"])
    elapsed = time.monotonic() - start
    cpu1, busy1 = cpu_seconds(server_pids), machine_busy()
    server_cpu = cpu1 - cpu0
    machine_cpu = (busy1[0] - busy0[0]) / TICKS
    cores = os.cpu_count() or 1
    return {
        "seconds": round(elapsed, 2),
        "clients": clients,
        "handshakes": ok,
        "failed": failed,
        "handshakes_per_s": round(ok / elapsed, 1),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_handshake": round(1000 * server_cpu / max(ok, 1), 3),
        "generator_cpu_s": round(gen_cpu, 2),
        "generator_cpu_ms_per_handshake": round(1000 * gen_cpu / max(ok, 1), 3),
        "machine_busy_pct": round(100 * machine_cpu / (elapsed * cores), 1),
        "other_cpu_s": round(machine_cpu - server_cpu - gen_cpu, 2),
    }


def nginx_config(pki: PKI, port: int, workdir: Path, workers: int) -> str:
    return f"""
worker_processes {workers};
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl backlog=1024;
        ssl_certificate {pki.cert};
        ssl_certificate_key {pki.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{ return 204; }}
    }}
}}
"""


def wait_listening(port: int, proc: subprocess.Popen[Any] | None = None, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout}s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        sys.exit("nginx not found: sudo tools/ensure-apt.sh nginx (make bench does it)")
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cores": cores,
        "openssl": subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip(),
        "nginx": subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip(),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
    }
    with tempfile.TemporaryDirectory(prefix="warden-flood-") as tmp:
        work = Path(tmp)
        client = build_client(work)
        pki = make_pki(work / "pki")

        # -- warden-pbx ------------------------------------------------------
        pbx_dir = work / "pbx"
        (pbx_dir / "var").mkdir(parents=True)
        store = Store(pbx_dir / "var" / "warden.db")
        numbers = [str(3000 + i) for i in range(args.phones)]
        for n in numbers:
            store.add_extension(n, f"secret-{n}", realm="warden")
        store.close()
        port = free_port()
        pbx = PBXProcess(pbx_dir, loopback_config(pki, pbx_dir, 0, 0, port))
        phones: list[TLSPhone] = []
        try:
            pbx.start([("127.0.0.1", port)], timeout=40)
            assert pbx.proc is not None
            for n in numbers:
                phone = TLSPhone(("127.0.0.1", port), pki.ca, n, f"secret-{n}")
                phone.register()
                phones.append(phone)
            print(f"warden-pbx: {len(phones)} phones registered over TLS; flooding for {args.seconds}s "
                  f"with {args.clients} clients", flush=True)
            results["pbx"] = flood(client, port, pki.ca, args.seconds, args.clients, [pbx.proc.pid])
            alive = pbx.proc.poll() is None
            still = 0
            for phone in phones:
                try:
                    if phone.register().status == 200:
                        still += 1
                except (OSError, AssertionError, TimeoutError, ConnectionError) as exc:
                    print(f"  phone {phone.user}: {type(exc).__name__}: {exc}", flush=True)
            results["pbx"].update(alive_after=alive, phones=len(phones), phones_reregistered_200=still)
            results["pbx"]["log_lines"] = len(pbx.output().splitlines())
        finally:
            for phone in phones:
                phone.close()
            if pbx.proc is not None:
                pbx.stop()

        # -- nginx -----------------------------------------------------------
        ngx_dir = work / "nginx"
        ngx_dir.mkdir()
        port = free_port()
        conf = ngx_dir / "nginx.conf"
        conf.write_text(nginx_config(pki, port, ngx_dir, cores))
        proc = subprocess.Popen([nginx, "-e", str(ngx_dir / "error.log"), "-p", str(ngx_dir), "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_listening(port, proc)
            time.sleep(0.5)  # workers up
            print(f"nginx: {cores} workers; flooding for {args.seconds}s with {args.clients} clients", flush=True)
            results["nginx"] = flood(client, port, pki.ca, args.seconds, args.clients, [proc.pid, *children_of(proc.pid)])
            results["nginx"]["alive_after"] = proc.poll() is None
        finally:
            proc.send_signal(signal.SIGQUIT)  # graceful: master and workers exit
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    results["ratio_handshakes_per_s"] = round(results["pbx"]["handshakes_per_s"] / max(results["nginx"]["handshakes_per_s"], 0.1), 2)
    results["ratio_cpu_per_handshake"] = round(
        results["nginx"]["server_cpu_ms_per_handshake"] / max(results["pbx"]["server_cpu_ms_per_handshake"], 1e-6), 2)
    results["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="flood duration per server (default 60)")
    parser.add_argument("--clients", type=int, default=4, help="hsflood client processes (default 4)")
    parser.add_argument("--phones", type=int, default=20, help="phones registered over TLS during the flood")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = run(args)
    print(json.dumps(results, indent=2))
    p, n = results["pbx"], results["nginx"]
    print(f"\n{'server':<12}{'hs/s':>10}{'server ms CPU/hs':>18}{'generator ms CPU/hs':>21}{'machine busy':>14}")
    for name, r in (("warden-pbx", p), ("nginx", n)):
        print(f"{name:<12}{r['handshakes_per_s']:>10.1f}{r['server_cpu_ms_per_handshake']:>18.3f}"
              f"{r['generator_cpu_ms_per_handshake']:>21.3f}{r['machine_busy_pct']:>13.1f}%")
    print(f"PBX/nginx: {results['ratio_handshakes_per_s']}x handshakes/s, "
          f"{results['ratio_cpu_per_handshake']}x CPU efficiency (target >= 0.7x)")
    print(f"PBX alive after the flood: {p['alive_after']}; phones re-registered: "
          f"{p['phones_reregistered_200']}/{p['phones']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    ok = p["alive_after"] and p["phones_reregistered_200"] == p["phones"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
