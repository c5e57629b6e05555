"""Processes and measurements for the SIP benchmark (bench/sip/run.py).

Everything a run starts goes through :class:`Children`, which starts each
child in its own session (a Ctrl-C in the terminal reaches only the
benchmark, which then stops them itself, by pid), with the open-file limit
raised to the hard limit and a parent-death signal so that not even a
``kill -9`` of the benchmark leaves a PBX, sipp or stunnel behind.

Measurements come from /proc: a process's CPU time (utime + stime, all
threads) and memory (VmRSS, VmHWM), and the machine's busy time from
/proc/stat, so a step can say how much CPU the PBX, the load generator and
everything else on the machine used while it ran.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCENARIOS = ROOT / "bench" / "sipp"
for _p in (str(ROOT), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from helpers import (  # tests/helpers.py: plain functions, no pytest
    LOOPBACK,
    PKI,
    free_port,
    make_pki,
)

from warden.control import ControlClient
from warden.store import Store

__all__ = [
    "LOOPBACK",
    "PBX",
    "PKI",
    "REALM",
    "ROOT",
    "SCENARIOS",
    "Children",
    "CpuWindow",
    "SippRun",
    "Stunnel",
    "free_port",
    "loadavg",
    "machine_info",
    "make_pki",
    "password",
    "require_tools",
]

REALM = "warden"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_PR_SET_PDEATHSIG = 1

#: The Debian package that brings each tool the benchmark drives.
TOOLS = {"sipp": "sip-tester", "stunnel4": "stunnel4"}


def password(number: str) -> str:
    """Every benchmark extension's password (the PBX stores only its HA1 hashes)."""
    return f"secret{number}"


def require_tools() -> dict[str, str]:
    """Paths of sipp and stunnel, or SystemExit naming the missing Debian packages."""
    found: dict[str, str] = {}
    missing = []
    for tool, package in TOOLS.items():
        path = shutil.which(tool) or (shutil.which("stunnel") if tool == "stunnel4" else None)
        if path is None:
            missing.append(f"{tool} (Debian package {package})")
        else:
            found[tool] = path
    if missing:
        raise SystemExit("missing: " + ", ".join(missing) + "\ninstall with: apt-get install "
                         + " ".join(TOOLS[t.split()[0]] for t in missing))
    return found


# -- /proc ---------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) of a live process, None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon (KB) and thread count of a live process."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "Threads"):
            out[key] = int(value.split()[0])
    return out


def _machine_busy() -> tuple[float, float]:
    """(busy, irq + softirq) CPU seconds of the whole machine since boot.

    Interrupt time is apart: on loopback it is mostly the kernel moving
    our own packets, and with IRQ time accounting it is charged to no process.
    """
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in parts[:8]]  # user nice system idle iowait irq softirq steal
    irq = ticks[5] + ticks[6]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / CLK_TCK, irq / CLK_TCK


def _all_cpu() -> dict[int, tuple[str, float]]:
    """comm and CPU seconds of every process now."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        comm = text[text.find("(") + 1:text.rfind(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def listen_drops() -> int:
    """The machine's TcpExt ListenDrops counter: connections dropped because an accept queue was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table.get("ListenDrops", 0))
    return 0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def time_wait_sockets() -> int:
    """TCP sockets in TIME_WAIT on the machine (each holds a local port for 60 s)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            parts = line.split()
            return int(parts[parts.index("tw") + 1])
    return 0


def tcp_socket_memory_kb() -> int:
    """Kernel memory of all TCP sockets on the machine (KB), from /proc/net/sockstat."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            parts = line.split()
            return int(parts[parts.index("mem") + 1]) * PAGE_KB
    return 0


@dataclass
class CpuWindow:
    """CPU used during a window: by the PBX, by our load generators, by the rest of the machine.

    Percentages are of one core (the machine has ``os.cpu_count()`` of them,
    so the whole machine is 100 % x cores). "others" is the machine's busy
    time minus interrupts, the PBX and the generators: other people's work,
    the kernel's own threads and processes that started and ended inside the
    window (tick-based accounting: a few % either way).
    """

    pbx_pid: int
    generator_pids: Sequence[int] = ()
    """Generators alive for the whole window (their CPU is read from /proc)."""
    exited_pids: Sequence[int] = ()
    """Generators that exit inside the window (their CPU comes from wait4, given to stop())."""
    started: float = 0.0
    _pbx0: float = 0.0
    _gen0: dict[int, float] = field(default_factory=dict)
    _busy0: float = 0.0
    _irq0: float = 0.0
    _drops0: int = 0
    _procs0: dict[int, tuple[str, float]] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    def start(self) -> CpuWindow:
        self.started = time.monotonic()
        self._pbx0 = proc_cpu(self.pbx_pid) or 0.0
        self._gen0 = {pid: proc_cpu(pid) or 0.0 for pid in self.generator_pids}
        self._busy0, self._irq0 = _machine_busy()
        self._drops0 = listen_drops()
        self._procs0 = _all_cpu()
        return self

    def stop(self, extra_generator_seconds: float = 0.0) -> dict[str, Any]:
        """Close the window; ``extra_generator_seconds``: CPU of generators that exited inside it."""
        wall = max(1e-6, time.monotonic() - self.started)
        pbx = (proc_cpu(self.pbx_pid) or self._pbx0) - self._pbx0
        gen = extra_generator_seconds
        per_pid: dict[str, float] = {}
        for pid, t0 in self._gen0.items():
            t1 = proc_cpu(pid)
            if t1 is not None:
                gen += t1 - t0
                per_pid[str(pid)] = round(100 * (t1 - t0) / wall, 1)
        busy1, irq1 = _machine_busy()
        busy = busy1 - self._busy0
        irq = irq1 - self._irq0
        procs1 = _all_cpu()
        ours = {self.pbx_pid, os.getpid(), *self.generator_pids, *self.exited_pids}
        others: dict[str, float] = {}
        for pid, (comm, t1) in procs1.items():
            if pid in ours:
                continue
            t0 = self._procs0.get(pid, (comm, 0.0))[1]
            if t1 - t0 > 0.01 * wall:
                others[comm] = others.get(comm, 0.0) + (t1 - t0)
        top = sorted(others.items(), key=lambda kv: -kv[1])[:3]
        mem = proc_memory(self.pbx_pid)
        self.result = {
            "wall_s": round(wall, 2),
            "pbx_cpu_pct": round(100 * pbx / wall, 1),
            "generator_cpu_pct": round(100 * gen / wall, 1),
            "generator_cpu_pct_by_pid": per_pid,
            "machine_busy_pct": round(100 * busy / wall, 1),
            "irq_softirq_pct": round(100 * irq / wall, 1),
            "others_cpu_pct": round(max(0.0, 100 * (busy - irq - pbx - gen) / wall), 1),
            "others_top": [f"{name} {100 * sec / wall:.0f}%" for name, sec in top],
            "pbx_rss_kb": mem.get("VmRSS", 0),
            "pbx_hwm_kb": mem.get("VmHWM", 0),
            "pbx_threads": mem.get("Threads", 0),
            "loadavg_end": loadavg(),
            "tcp_listen_drops": listen_drops() - self._drops0,
        }
        return self.result


def machine_info() -> dict[str, Any]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        text = (out.stdout + out.stderr).strip().splitlines()
        return next((line.strip() for line in text if line.strip() and "inetd" not in line), "?")
    import ssl
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1048576, 1),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "openssl": ssl.OPENSSL_VERSION,
        "sipp": version(["sipp", "-v"]),
        "stunnel": version([shutil.which("stunnel4") or "stunnel", "-version"]),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


# -- children ------------------------------------------------------------------------------


def _child_setup() -> None:
    """In the child before exec: more open files; die with the benchmark."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Children:
    """Every process the benchmark starts; :meth:`stop_all` ends them by pid."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[Any]]] = []

    def popen(self, name: str, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        kw.setdefault("stdin", subprocess.DEVNULL)
        # preexec_fn is safe here: the benchmark starts no threads of its own
        proc = subprocess.Popen(list(cmd), start_new_session=True, preexec_fn=_child_setup, **kw)  # noqa: PLW1509
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self.procs)):
            self.stop(proc)


def wait_rusage(proc: subprocess.Popen[Any], deadline: float) -> float | None:
    """Wait for ``proc`` until ``deadline`` (monotonic); its CPU seconds, None on timeout.

    Uses wait4 so the child's own CPU time is known after it exited.
    """
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


# -- the PBX -----------------------------------------------------------------------------


class PBX:
    """``python -m warden --config <tmp> run`` on loopback with UDP, TCP and TLS."""

    def __init__(self, children: Children, workdir: Path, pki: PKI, *, rtp_range: tuple[int, int],
                 level: str = "warning") -> None:
        self.children = children
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.udp_port = free_port()  # UDP and TCP share it, like 5060
        self.tls_port = free_port()
        self.store_path = workdir / "warden.db"
        self.config = workdir / "config.yml"
        self.log = workdir / "pbx.log"
        self.rtp_range = rtp_range
        self.level = level
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def tcp_port(self) -> int:
        return self.udp_port

    def add_extensions(self, numbers: Iterable[str]) -> int:
        store = Store(str(self.store_path))
        n = 0
        try:
            for number in numbers:
                store.add_extension(number, password(number), realm=REALM)
                n += 1
        finally:
            store.close()
        return n

    def _config_text(self) -> str:
        pki = self.pki
        return f"""# written by bench/sip/run.py
sip:
  listen: [{LOOPBACK}]
  udp_port: {self.udp_port}
  tcp_port: {self.tcp_port}
  tls_port: {self.tls_port}
  realm: {REALM}
  digest_algorithms: [MD5]
  tls_handshake_timeout: 10
api:
  enabled: false
  bind: {LOOPBACK}
  port: {free_port()}
  ssl: {{enabled: true, cert_file: {pki.cert}, key_file: {pki.key}}}
security:
  enable_tls: true
  tls_cert_file: {pki.cert}
  tls_key_file: {pki.key}
  tls_ca_file: {pki.ca}
media:
  rtp_port_min: {self.rtp_range[0]}
  rtp_port_max: {self.rtp_range[1]}
store: {{path: {self.store_path}}}
logging: {{level: {self.level}, file: ""}}
"""

    def start(self, timeout: float = 20.0) -> None:
        self.config.write_text(self._config_text())
        with open(self.log, "ab") as out:
            self.proc = self.children.popen(
                "pbx", [sys.executable, "-m", "warden", "--config", str(self.config), "run"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the PBX exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if self.control("status", timeout=2.0):
                    break
            except Exception:  # noqa: BLE001, S110 -- not up yet: socket missing or refusing
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the PBX did not answer on its control socket in {timeout}s:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def control(self, op: str, timeout: float = 10.0, **args: Any) -> Any:
        with ControlClient(self.store_path.parent / "warden.sock", timeout=timeout) as client:
            return client.call(op, **args)

    def bindings_from(self, port: int) -> int:
        """How many unexpired bindings have ``port`` as their source port."""
        return self.bindings_by_port().get(port, 0)

    def bindings_by_port(self) -> dict[int, int]:
        """Unexpired bindings per source port (read from the store: SQLite in WAL
        mode may be read while the PBX writes, and the control channel's
        ``registrations.list`` answer is capped at 1 MB, about 2,000 bindings)."""
        store = Store(str(self.store_path))
        try:
            counts: dict[int, int] = {}
            for b in store.bindings(now=time.time()):
                counts[b.source_port] = counts.get(b.source_port, 0) + 1
            return counts
        finally:
            store.close()

    def memory(self) -> dict[str, int]:
        return proc_memory(self.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_summary(self) -> dict[str, Any]:
        """Counts of WARNING / ERROR lines and tracebacks in the PBX's log, with a few samples."""
        text = self.output()
        lines = text.splitlines()
        errors = [line for line in lines if " ERROR " in line or "Traceback" in line or " CRITICAL " in line]
        warnings = [line for line in lines if " WARNING " in line]
        return {"errors": len(errors), "warnings": len(warnings),
                "samples": (errors[:3] + warnings[:3])}

    def stop(self) -> None:
        if self.proc is not None:
            self.children.stop(self.proc, timeout=15)


# -- stunnel ---------------------------------------------------------------------------------


class Stunnel:
    """stunnel4 in client mode: plain TCP on loopback -> TLS to the PBX (certificate verified)."""

    def __init__(self, children: Children, workdir: Path, pki: PKI, connect_port: int, *, resume: bool,
                 name: str = "stunnel") -> None:
        self.children = children
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / f"{name}.conf"
        self.log = workdir / f"{name}.log"
        # debug = 4: warnings only (5 logs every connection, which costs at
        # thousands of connections per second). sessionResume = no makes each
        # new connection a full handshake, the worst case for the server.
        self.conf.write_text(
            "foreground = yes\n"
            f"pid = {workdir / (name + '.pid')}\n"
            "debug = 4\n"
            "socket = l:TCP_NODELAY=1\n"
            "socket = r:TCP_NODELAY=1\n"
            "[sip]\n"
            "client = yes\n"
            f"accept = {LOOPBACK}:{self.port}\n"
            f"connect = {LOOPBACK}:{connect_port}\n"
            f"CAfile = {pki.ca}\n"
            "verifyChain = yes\n"
            "checkHost = localhost\n"
            f"sessionResume = {'yes' if resume else 'no'}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 10.0) -> Stunnel:
        binary = shutil.which("stunnel4") or shutil.which("stunnel") or "stunnel4"
        with open(self.log, "ab") as out:
            self.proc = self.children.popen("stunnel", [binary, str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not _port_taken(self.port):  # probe by bind: a connect would open a TLS session
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stunnel did not listen on {self.port}:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.05)
        return self

    def errors(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if "LOG3" in line or "LOG4" in line]

    def stop(self) -> None:
        if self.proc is not None:
            self.children.stop(self.proc)


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


# -- sipp --------------------------------------------------------------------------------------


@dataclass
class SippRun:
    """One bounded sipp process and what it reported (its last -trace_stat row)."""

    children: Children
    workdir: Path
    name: str
    scenario: str
    target: tuple[str, int] | None
    transport: str = "u1"
    local_port: int = 0
    rows: Sequence[Sequence[str]] = ()
    calls: int = 1
    rate: float | None = None
    limit: int | None = None
    pause_ms: int | None = None
    timeout: float = 30.0
    extra: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    stats: dict[str, str] = field(default_factory=dict)
    cpu_s: float = 0.0
    elapsed: float = 0.0
    timed_out: bool = False
    _t0: float = 0.0

    def command(self) -> list[str]:
        if not self.local_port:
            self.local_port = free_port()
        self.stat_file = self.workdir / f"{self.name}.stat.csv"
        self.error_file = self.workdir / f"{self.name}.errors"
        cmd = ["sipp"]
        if self.target is not None:
            cmd.append(f"{self.target[0]}:{self.target[1]}")
        # SCENARIOS / an absolute path is that path: a scenario written elsewhere works too
        cmd += ["-sf", str(SCENARIOS / self.scenario), "-i", LOOPBACK, "-p", str(self.local_port),
                "-t", self.transport, "-m", str(self.calls), "-nostdin",
                "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
                "-trace_err", "-error_file", str(self.error_file)]
        if self.rows:
            inf = self.workdir / f"{self.name}.csv"
            inf.write_text("SEQUENTIAL\n" + "".join(";".join(r) + "\n" for r in self.rows))
            cmd += ["-inf", str(inf)]
        if self.rate is not None:
            cmd += ["-r", f"{self.rate:g}"]
        if self.limit is not None:
            cmd += ["-l", str(self.limit)]
        if self.pause_ms is not None:
            cmd += ["-d", str(self.pause_ms)]
        cmd += list(self.extra)
        return cmd

    def start(self) -> SippRun:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        self.cmdline = " ".join(cmd)
        with open(self.workdir / f"{self.name}.out", "wb") as out:
            self._t0 = time.monotonic()
            self.proc = self.children.popen(self.name, cmd, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait(self) -> SippRun:
        """Wait until sipp exits or its time is up (then stop it and mark the run timed out)."""
        assert self.proc is not None
        cpu = wait_rusage(self.proc, self._t0 + self.timeout)
        if cpu is None:
            self.timed_out = True
            self.proc.send_signal(signal.SIGTERM)
            cpu = wait_rusage(self.proc, time.monotonic() + 5)
            if cpu is None:
                self.proc.kill()
                cpu = wait_rusage(self.proc, time.monotonic() + 5) or 0.0
        self.cpu_s = cpu
        self.elapsed = time.monotonic() - self._t0
        self.children.procs = [(n, p) for n, p in self.children.procs if p is not self.proc]
        self.stats = _last_stats(self.stat_file)
        return self

    def stop(self) -> SippRun:
        """End a server-side sipp (uas) that is still waiting; read what it counted."""
        assert self.proc is not None
        if self.proc.poll() is None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        self.timeout = min(self.timeout, time.monotonic() - self._t0 + 5)
        return self.wait()

    def stat(self, key: str) -> int:
        try:
            return int(self.stats.get(key, "0"))
        except ValueError:
            return 0

    @property
    def successful(self) -> int:
        return self.stat("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self.stat("FailedCall(C)")

    @property
    def retransmissions(self) -> int:
        return self.stat("Retransmissions(C)")

    def failure_kinds(self) -> dict[str, int]:
        return {k[len("Failed"):-3]: int(v) for k, v in self.stats.items()
                if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)" and v.isdigit() and int(v)}

    def error_tail(self, n: int = 3) -> list[str]:
        try:
            lines = [line for line in self.error_file.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return []
        return lines[-n:]


def _last_stats(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    names = lines[0].split(";")
    return dict(zip(names, lines[-1].split(";")))


def dump_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
