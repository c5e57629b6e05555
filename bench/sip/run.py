"""SIP signalling benchmark: REGISTER/s, calls/s and TLS phones held by one Warden PBX.

Starts ``python -m warden --config <tmp config> run`` on loopback (UDP, TCP
and TLS on free ports, logging at --log-level (warning unless told), admin API off, the RTP range
--rtp-range), creates the extensions each phase needs in its store, and
measures:

1. register: REGISTER/s with digest auth (REGISTER, 401, REGISTER with
   credentials, 200; bench/sipp/register.xml) over
   - udp: UDP;
   - tcp: TCP, one connection (sipp -t t1);
   - tls: TLS, one persistent connection (sipp -t t1 over TCP through
     stunnel4 in client mode to the TLS port, which verifies the PBX);
   - tls-new: TLS, a new connection per REGISTER (sipp -t tn through
     stunnel: each call a new TCP connection, so a new TLS connection;
     ``sessionResume = no`` makes each a full handshake; tls-new-resume
     lets stunnel resume instead);
   - tls-new-py: the same from bench/sip/phones.py (asyncio + ssl, full
     handshakes) spread over 64 loopback source addresses. sipp binds every
     tn socket to one address, and from one address the kernel's search for
     a free port slows down as TIME_WAIT sockets pile up (60 s each): past a
     few hundred new connections a second sipp measures that, not the PBX.
   (tcp-new, sipp -t tn straight to the TCP port, is there to show it.)
2. calls: INVITE-BYE calls/s through the B2BUA: sipp uac (digest auth) over
   UDP -> PBX -> one sipp uas over UDP registered as --callees extensions,
   called round-robin (a callee in an answered call is busy by design, 486);
   every call gets its own relay ports since media is anchored. The callees
   are registered again from a fresh uas port before each step (an earlier,
   overloaded step leaves the PBX retransmitting BYEs to the old port).
3. phones: TLS phones held: bench/sip/phones.py workers open N TLS
   connections, each REGISTERs as its own extension and re-REGISTERs every
   --rereg-period seconds over its connection; the PBX's memory is read
   before and after.

A rate passes when every call of the step succeeded, with no
retransmission for REGISTER (calls report theirs), and the step ended on
time (the PBX kept up with the offered rate). Rates go up by a fixed step
from a start rate until the first failure, then --refine bisection steps
narrow the gap. CPU and memory of the PBX are read from /proc during each
step, with the CPU of the load generators (sipp, stunnel, the Python
clients) and of everything else on the machine: the generators share its
two cores with the PBX, and so does other people's work.

Every phase is bounded in steps and time; every process is started by
this script on loopback only and stopped by it, also on Ctrl-C or SIGTERM.

    python3 bench/sip/run.py [--quick] [--phases register,calls,phones]
        [--transports udp,tcp,tls,tls-new,tls-new-py] [--profile] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import datetime as dt
import json
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra import (
    LOOPBACK,
    PBX,
    PKI,
    ROOT,
    SCENARIOS,
    Children,
    CpuWindow,
    SippRun,
    Stunnel,
    dump_json,
    free_port,
    loadavg,
    machine_info,
    make_pki,
    password,
    proc_cpu,
    require_tools,
    tcp_socket_memory_kb,
    time_wait_sockets,
)

HERE = Path(__file__).resolve().parent

# Targets from issue 3 ("Benchmark") and the reference figures quoted there.
TARGETS = {"udp": 3000, "tls": 3000, "calls": 1000, "phones": 10000, "kb_per_conn": 60}
KAMAILIO = {"udp": 6900, "tls": 9800, "kb_per_conn": 124}
REFERENCE_NOTE = "Kamailio 5.6 figures as quoted in issue 3 for this machine; not measured by this benchmark"

SIPP_TRANSPORT = {"udp": "u1", "tcp": "t1", "tcp-new": "tn", "tls": "t1", "tls-new": "tn", "tls-new-resume": "tn",
                  "tls-new-py": ""}
NEW_CONNECTION = ("tcp-new", "tls-new", "tls-new-resume", "tls-new-py")
CHURN_SOURCES = 64  # loopback source addresses of the Python churn client (127.1.x.y)
TRANSPORT_LABEL = {
    "udp": "UDP",
    "tcp": "TCP, one connection",
    "tcp-new": "TCP, new connection per REGISTER",
    "tls": "TLS, one persistent connection",
    "tls-new": "TLS, new connection per REGISTER (full handshake)",
    "tls-new-resume": "TLS, new connection per REGISTER (session resumed)",
    "tls-new-py": "TLS, new connection per REGISTER (Python client, 64 source addresses)",
}


def auth_keyword(user: str) -> str:
    """sipp's [authentication] keyword for an injection field (it cannot hold [field0])."""
    return f"[authentication username={user} password={password(user)}]"


def say(text: str = "") -> None:
    print(text, flush=True)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def settle(pid: int, max_s: float = 20.0, idle_pct: float = 15.0) -> float:
    """Wait until the PBX is idle (a backlog from an overloaded step drained); seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        c0 = proc_cpu(pid) or 0.0
        time.sleep(0.5)
        c1 = proc_cpu(pid) or 0.0
        if (c1 - c0) / 0.5 * 100 < idle_pct:
            break
    return time.monotonic() - t0


def conditions(label: str) -> dict[str, Any]:
    """Machine load before a phase, as `uptime` shows it, and the busiest processes."""
    out = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
                         capture_output=True, text=True, check=False).stdout.splitlines()[:4]
    busiest = [" ".join(line.split()[::-1]) + "%" for line in out]
    info = {"loadavg": loadavg(), "busiest_by_lifetime_cpu": busiest}
    say(f"[{label}] load average {info['loadavg']}; busiest processes (ps lifetime %CPU): {', '.join(busiest)}")
    return info


# -- ramp ------------------------------------------------------------------------------


def ramp(step: Callable[[int], dict[str, Any]], *, start: int, increment: int, maximum: int, refine: int,
         minimum: int, deadline: Deadline, step_cost: float) -> tuple[int | None, int | None, list[dict[str, Any]]]:
    """Up by ``increment`` until the first failure, down by halves if the first step fails,
    then ``refine`` bisection steps. Returns (best passing rate, lowest failing rate, steps)."""
    steps: list[dict[str, Any]] = []
    best: int | None = None
    fail: int | None = None

    def run(rate: int) -> bool:
        result = step(rate)
        steps.append(result)
        return bool(result["ok"])

    rate = start
    while rate <= maximum and deadline.left() > step_cost:
        if run(rate):
            best = rate
            rate += increment
        else:
            fail = rate
            break
    if best is None and fail is not None:
        rate = fail // 2
        while rate >= minimum and deadline.left() > step_cost:
            if run(rate):
                best = rate
                break
            fail = rate
            rate //= 2
    grain = max(minimum, increment // 8)
    for _ in range(refine):
        if best is None or fail is None or fail - best <= grain or deadline.left() <= step_cost:
            break
        mid = (best + fail) // 2 // grain * grain
        if mid <= best:
            break
        if run(mid):
            best = mid
        else:
            fail = mid
    return best, fail, steps


# -- profiling ---------------------------------------------------------------------------------


class Profiler:
    """py-spy sampling the PBX during one extra step (not counted in the results)."""

    def __init__(self, binary: str | None, children: Children, workdir: Path) -> None:
        self.binary = binary
        self.children = children
        self.workdir = workdir

    def start(self, pid: int, seconds: float, name: str) -> tuple[subprocess.Popen[bytes], Path] | None:
        if not self.binary:
            return None
        out = self.workdir / f"profile-{name}.txt"
        proc = self.children.popen("py-spy", [
            self.binary, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
            "--rate", "97", "--format", "raw", "--threads", "--gil", "--output", str(out),
            # --native (C frames: the garbage collector, Cython code) needs py-spy to pause
            # the PBX for each sample, which itself makes a loaded step fail
            *(["--native"] if os.environ.get("WARDEN_PYSPY_NATIVE") else ["--nonblocking"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc, out

    def finish(self, handle: tuple[subprocess.Popen[bytes], Path] | None) -> dict[str, Any] | None:
        if handle is None:
            return None
        proc, out = handle
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            self.children.stop(proc)
        self.children.procs = [(n, p) for n, p in self.children.procs if p is not proc]
        return summarize_profile(out)


def _frame_name(frame: str) -> str:
    """``Class.func (warden/sip/auth.py:583)`` -> ``Class.func (auth.py)``."""
    if " (" not in frame:
        return frame
    func, where = frame.split(" (", 1)
    return f"{func} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})"


_PLUMBING = ("Thread._bootstrap", "Thread.run (", "Engine._run (", "Engine._turn (", "_IOWorker.run (")


def summarize_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """Shares of py-spy samples (taken with --gil: only the thread holding the GIL,
    i.e. where Python itself spends the PBX's one interpreter) from its raw output."""
    if not path.exists():
        return {"error": "no profile written"}
    self_counts: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        root, _, rest = stack.partition(";")
        threads[root.split("): ", 1)[-1] if "): " in root else root] += n
        names = [_frame_name(f) for f in rest.split(";")] if rest else [root]
        self_counts[names[-1]] += n
        for name in set(names):
            if not name.startswith(_PLUMBING):
                incl[name] += n
    if not total:
        return {"error": "no samples"}

    def share(counter: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, round(100 * c / total, 1)) for name, c in counter.most_common(k)]

    return {"samples": total, "threads": share(threads, 6), "self": share(self_counts, top),
            "inclusive": share(incl, top)}


# -- phase 1: REGISTER/s ---------------------------------------------------------------------


def stable_contact_scenario(workdir: Path) -> Path:
    """bench/sipp/register.xml with the Contact's port taken from field2.

    With ``-t tn`` sipp's [local_port] is the port of each call's own socket,
    so every REGISTER would add a new contact to its extension until the
    registrar's limit (10) refuses more; a phone keeps one Contact however
    it reconnects, and so does this copy.
    """
    text = (SCENARIOS / "register.xml").read_text()
    old = "Contact: <sip:[field0]@[local_ip]:[local_port];"
    if text.count(old) != 2:
        raise RuntimeError(f"bench/sipp/register.xml changed: expected two {old!r}")
    path = workdir / "register-stable-contact.xml"
    path.write_text(text.replace(old, "Contact: <sip:[field0]@[local_ip]:[field2];"))
    return path



class RegisterSteps:
    """The rate steps of one REGISTER transport against a running PBX."""

    def __init__(self, args: argparse.Namespace, children: Children, workdir: Path, pki: PKI, pbx: PBX,
                 transport: str, numbers: list[str], profiler: Profiler) -> None:
        self.children = children
        self.pbx = pbx
        self.transport = transport
        self.profiler = profiler
        self.duration = args.step_seconds
        self.sipp_transport = SIPP_TRANSPORT[transport]
        self.stunnel: Stunnel | None = None
        self.workers: PhoneWorkers | None = None
        self.target = (LOOPBACK, pbx.udp_port)
        if transport == "tls-new-py":
            self.workers = PhoneWorkers(children, args.phone_workers)
            n = args.phone_workers
            self.workers.call([{"op": "init", "host": LOOPBACK, "port": pbx.tls_port, "cafile": str(pki.ca),
                                "extensions": numbers[i::n]} for i in range(n)], timeout=30)
        elif transport.startswith("tls"):
            self.stunnel = Stunnel(children, workdir / f"stunnel-{transport}", pki, pbx.tls_port,
                                   resume=transport == "tls-new-resume").start()
            self.target = (LOOPBACK, self.stunnel.port)
        # One local port for every step of a transport: the Contact stays the
        # same, so each extension keeps one binding (re-registration) instead
        # of collecting one per step up to the registrar's contact limit.
        self.local_port = free_port()
        self.rows = [(n, auth_keyword(n), str(self.local_port)) for n in numbers]
        self.scenario = "register.xml"
        if self.sipp_transport == "tn":
            self.scenario = str(stable_contact_scenario(workdir))
        self.step_dir = workdir / f"register-{transport}"

    def step(self, rate: int, profile: bool = False) -> dict[str, Any]:
        if self.workers is not None:
            return self.churn_step(self.workers, rate, profile)
        duration, stunnel, pbx = self.duration, self.stunnel, self.pbx
        calls = int(rate * duration)
        extra: list[str] = []
        if self.sipp_transport == "tn":
            extra = ["-max_socket", str(min(16000, max(1000, rate * 4)))]
        run = SippRun(self.children, self.step_dir, f"reg-{rate}{'-profile' if profile else ''}", self.scenario,
                      self.target, transport=self.sipp_transport, local_port=self.local_port, rows=self.rows,
                      calls=calls, rate=rate, limit=max(200, rate * 2), timeout=duration * 2.5 + 20, extra=extra)
        load, tw = loadavg(), time_wait_sockets()
        run.start()
        prof = self.profiler.start(pbx.pid, duration - 1, f"register-{self.transport}") if profile else None
        window = CpuWindow(pbx.pid, [stunnel.pid] if stunnel else [], [run.proc.pid] if run.proc else []).start()
        run.wait()
        cpu = window.stop(extra_generator_seconds=run.cpu_s)
        on_time = run.elapsed <= duration * 1.05 + 0.5
        ok = (not run.timed_out and run.successful == calls and run.failed == 0
              and run.retransmissions == 0 and on_time)
        result = {
            "rate": rate, "calls": calls, "ok": ok, "successful": run.successful, "failed": run.failed,
            "retransmissions": run.retransmissions, "failures": run.failure_kinds(),
            "elapsed_s": round(run.elapsed, 2), "achieved_per_s": round(run.successful / max(run.elapsed, 1e-6)),
            "on_time": on_time, "timed_out": run.timed_out, "sipp_cpu_s": round(run.cpu_s, 2),
            "loadavg_before": load, "time_wait_before": tw, **cpu, "command": run.cmdline,
            "sipp_cpu_pct": round(100 * run.cpu_s / max(cpu["wall_s"], 1e-6), 1),
            "stunnel_cpu_pct": cpu["generator_cpu_pct_by_pid"].get(str(stunnel.pid)) if stunnel else None,
        }
        if not ok and run.error_tail():
            result["sipp_errors"] = run.error_tail()
        if stunnel is not None and not ok:
            result["stunnel_errors"] = stunnel.errors()[-3:]
        if prof is not None:
            result["profile"] = self.profiler.finish(prof)
        say(step_line(self.transport, result))
        result["settle_s"] = round(settle(pbx.pid), 1)
        return result

    def churn_step(self, workers: PhoneWorkers, rate: int, profile: bool) -> dict[str, Any]:
        """One step of new TLS connections from the Python client (phones.py churn)."""
        duration, pbx, n = self.duration, self.pbx, len(workers.procs)
        per_worker = CHURN_SOURCES // n
        load, tw = loadavg(), time_wait_sockets()
        prof = self.profiler.start(pbx.pid, duration - 1, f"register-{self.transport}") if profile else None
        window = CpuWindow(pbx.pid, workers.pids).start()
        t0 = time.monotonic()
        replies = workers.call([{
            "op": "churn", "rate": rate / n, "seconds": duration,
            "sources": [f"127.1.{i}.{k + 1}" for k in range(per_worker)]} for i in range(n)],
            timeout=duration * 3 + 30)
        elapsed = time.monotonic() - t0
        cpu = window.stop()
        calls = sum(r.get("requested", 0) for r in replies)
        successful = sum(r.get("registered", 0) for r in replies)
        late = sum(r.get("late_starts", 0) for r in replies)
        errors = _merge_counts([r.get("errors", {}) for r in replies])
        on_time = elapsed <= duration * 1.05 + 0.5 and late == 0
        ok = successful == calls == int(rate / n * duration) * n and not errors and on_time
        result = {
            "rate": rate, "calls": calls, "ok": ok, "successful": successful, "failed": calls - successful,
            "retransmissions": 0, "failures": errors, "late_starts": late, "elapsed_s": round(elapsed, 2),
            "achieved_per_s": round(successful / max(elapsed, 1e-6)), "on_time": on_time, "timed_out": False,
            "latency": [r.get("latency") for r in replies], "worker_errors": [r["error"] for r in replies if "error" in r],
            "loadavg_before": load, "time_wait_before": tw, **cpu,
            "client_cpu_pct": cpu["generator_cpu_pct"], "sipp_cpu_pct": 0.0, "stunnel_cpu_pct": None,
        }
        if prof is not None:
            result["profile"] = self.profiler.finish(prof)
        say(step_line(self.transport, result))
        result["settle_s"] = round(settle(pbx.pid), 1)
        return result

    def close(self) -> None:
        if self.stunnel is not None:
            self.stunnel.stop()
        if self.workers is not None:
            self.workers.call([{"op": "close"}] * len(self.workers.procs), timeout=30)
            for proc in self.workers.procs:
                self.children.stop(proc)


def phase_register(args: argparse.Namespace, children: Children, workdir: Path, pki: PKI,
                   deadline: Deadline, profiler: Profiler) -> dict[str, Any]:
    out: dict[str, Any] = {"conditions": conditions("register"), "transports": {}}
    pbx = PBX(children, workdir / "pbx-register", pki, rtp_range=args.rtp_range, level=args.log_level)
    sets = {t: [str(200000 + 10000 * i + k) for k in range(args.reg_extensions)]
            for i, t in enumerate(args.transports)}
    pbx.add_extensions(n for numbers in sets.values() for n in numbers)
    pbx.start()
    out["pbx_start_rss_kb"] = pbx.memory().get("VmRSS", 0)
    say(f"PBX pid {pbx.pid}: udp/tcp {pbx.udp_port}, tls {pbx.tls_port}; "
        f"{sum(len(s) for s in sets.values())} extensions; RSS {out['pbx_start_rss_kb'] // 1024} MB")
    duration = args.step_seconds
    try:
        for i, transport in enumerate(args.transports):
            label = TRANSPORT_LABEL[transport]
            say(f"\n== REGISTER/s over {label}")
            # an equal share of what is left to each transport still to run
            mine = Deadline(max(0.0, deadline.left()) / (len(args.transports) - i))
            steps_of = RegisterSteps(args, children, workdir, pki, pbx, transport, sets[transport], profiler)
            start, increment = args.reg_start, args.reg_step
            if transport in NEW_CONNECTION:  # a handshake per REGISTER: start lower, finer steps
                start, increment = max(50, start // 2), max(50, increment // 2)
            try:
                best, fail, steps = ramp(steps_of.step, start=start, increment=increment,
                                         maximum=args.reg_max, refine=args.refine, minimum=25, deadline=mine,
                                         step_cost=duration + 4)
                entry: dict[str, Any] = {"label": label, "best": best, "first_failed": fail, "steps": steps}
                if best:
                    entry["at_best"] = next(s for s in steps if s["rate"] == best and s["ok"])
                if args.profile and best and deadline.left() > duration + 4:
                    say(f"   profiling one more step at {best}/s (not counted)")
                    entry["profile"] = steps_of.step(best, profile=True).get("profile")
            finally:
                steps_of.close()
            out["transports"][transport] = entry
            settle(pbx.pid)
    finally:
        out["pbx_end_memory_kb"] = pbx.memory()
        pbx.stop()
        out["pbx_log"] = pbx.log_summary()
    return out


def step_line(name: str, r: dict[str, Any]) -> str:
    verdict = "PASS" if r["ok"] else "FAIL"
    why = []
    if r.get("failed"):
        why.append(f"{r['failed']} failed {r.get('failures') or ''}".strip())
    if r.get("retransmissions"):
        why.append(f"{r['retransmissions']} retrans")
    if not r.get("on_time", True):
        why.append("late")
    if r.get("timed_out"):
        why.append("timed out")
    return (f"   {name:<15} {r['rate']:>6}/s  {r['successful']:>6}/{r['calls']:<6} in {r['elapsed_s']:>5.1f}s"
            f"  pbx {r['pbx_cpu_pct']:>5.1f}% cpu {r['pbx_rss_kb'] / 1024:>6.1f} MB"
            f"  gen {r['generator_cpu_pct']:>5.1f}%  irq {r['irq_softirq_pct']:>4.1f}%  others {r['others_cpu_pct']:>5.1f}%"
            f"  {verdict}{'  (' + '; '.join(why) + ')' if why else ''}")


# -- phase 2: calls/s ------------------------------------------------------------------------------


def phase_calls(args: argparse.Namespace, children: Children, workdir: Path, pki: PKI,
                deadline: Deadline, profiler: Profiler) -> dict[str, Any]:
    out: dict[str, Any] = {"conditions": conditions("calls")}
    pbx = PBX(children, workdir / "pbx-calls", pki, rtp_range=args.rtp_range, level=args.log_level)
    callers = [str(300000 + i) for i in range(args.callers)]
    callees = [str(400000 + i) for i in range(args.callees)]
    pbx.add_extensions(callers + callees)
    pbx.start()
    say(f"\n== INVITE-BYE calls/s through the B2BUA (UDP both legs, hold {args.call_hold_ms} ms, "
        f"{len(callees)} callee extensions on one sipp uas, registered again from a fresh port before each step, "
        f"{len(callers)} callers)")
    step_dir = workdir / "calls"
    duration = args.step_seconds
    try:
        callee_rows = [(n, auth_keyword(n)) for n in callees]

        def register_callees(tag: str) -> int:
            """REGISTER every callee from a fresh port, where the uas of the next step will listen.

            A fresh port per step: after an overloaded step the PBX still
            retransmits requests of its unfinished transactions (BYEs for up to
            32 s, RFC 3261 Timer F) to the old uas's port; a new uas there would
            take them for calls of its own and fail them. Each callee first
            removes its old binding (``Contact: *``, as a phone that moved
            does): left in place, every call would also fork to the dead ports
            of the earlier steps, one more each step.
            """
            port = free_port()
            reg = SippRun(children, step_dir, f"callees-register-{tag}", "register-replace.xml",
                          (LOOPBACK, pbx.udp_port), transport="u1", local_port=port, rows=callee_rows,
                          calls=len(callees), rate=min(1500, len(callees)), limit=500,
                          timeout=len(callees) / 250 + 30).start().wait()
            by_port = pbx.bindings_by_port()
            on_uas, elsewhere = by_port.get(port, 0), sum(n for p, n in by_port.items() if p != port)
            if on_uas < len(callees) or elsewhere:
                raise RuntimeError(f"{on_uas} of {len(callees)} callees registered from port {port}, "
                                   f"{elsewhere} bindings left elsewhere: {reg.failure_kinds()}")
            return port

        out["callees_registered"] = len(callees)
        rows = [(callers[i % len(callers)], callees[i % len(callees)], auth_keyword(callers[i % len(callers)]))
                for i in range(len(callees))]
        hold = args.call_hold_ms

        def step(rate: int, profile: bool = False) -> dict[str, Any]:
            calls = int(rate * duration)
            tag = f"{rate}{'-profile' if profile else ''}"
            budget = duration * 2.5 + hold / 1000 + 20
            waited = wait_no_calls(pbx, 40.0)
            uas_port = register_callees(tag)
            settle(pbx.pid)
            uas = SippRun(children, step_dir, f"uas-{tag}", "uas.xml", None, transport="u1",
                          local_port=uas_port, calls=calls, timeout=budget + 10).start()
            time.sleep(0.3)
            uac = SippRun(children, step_dir, f"uac-{tag}", "uac.xml", (LOOPBACK, pbx.udp_port), transport="u1",
                          rows=rows, calls=calls, rate=rate, limit=max(100, int(rate * (hold / 1000 + 1) * 2)),
                          pause_ms=hold, timeout=budget)
            load = loadavg()
            uac.start()
            prof = profiler.start(pbx.pid, duration - 1, "calls") if profile else None
            window = CpuWindow(pbx.pid, [], [p.pid for p in (uac.proc, uas.proc) if p]).start()
            uac.wait()
            uas.timeout = (time.monotonic() - uas._t0) + 3
            uas.wait()
            cpu = window.stop(extra_generator_seconds=uac.cpu_s + uas.cpu_s)
            on_time = uac.elapsed <= duration * 1.05 + hold / 1000 + 1.0
            ok = (not uac.timed_out and uac.successful == calls and uac.failed == 0 and uas.failed == 0
                  and on_time)
            result = {
                "rate": rate, "calls": calls, "ok": ok, "successful": uac.successful, "failed": uac.failed,
                "waited_for_previous_calls_s": waited,
                "failures": uac.failure_kinds(), "uas_successful": uas.successful, "uas_failed": uas.failed,
                "uas_failures": uas.failure_kinds(), "uas_stopped_waiting": uas.timed_out,
                "retransmissions": uac.retransmissions + uas.retransmissions,
                "elapsed_s": round(uac.elapsed, 2), "achieved_per_s": round(uac.successful / max(uac.elapsed, 1e-6)),
                "on_time": on_time, "timed_out": uac.timed_out, "loadavg_before": load,
                "sipp_cpu_s": round(uac.cpu_s + uas.cpu_s, 2), **cpu, "command": uac.cmdline,
                "uas_command": uas.cmdline,
            }
            if not ok:
                result["sipp_errors"] = uac.error_tail() + uas.error_tail()
            if prof is not None:
                result["profile"] = profiler.finish(prof)
            say(step_line("calls", result) + (f"  [{result['retransmissions']} retrans]"
                                               if result["retransmissions"] and result["ok"] else ""))
            result["settle_s"] = round(settle(pbx.pid), 1)
            try:
                live = pbx.control("calls.list", timeout=20)
                result["calls_left_in_pbx"] = len(live)
            except Exception as exc:  # noqa: BLE001 -- reported, the phase goes on
                result["calls_left_in_pbx"] = f"{type(exc).__name__}: {exc}"
            return result

        best, fail, steps = ramp(step, start=args.call_start, increment=args.call_step, maximum=args.call_max,
                                 refine=args.refine, minimum=10, deadline=deadline,
                                 step_cost=duration + hold / 1000 + 5)
        out.update({"best": best, "first_failed": fail, "steps": steps, "hold_ms": hold,
                    "callees": len(callees), "callers": len(callers)})
        if best:
            out["at_best"] = next(s for s in steps if s["rate"] == best and s["ok"])
        if args.profile and best and deadline.left() > duration + 5:
            say(f"   profiling one more step at {best}/s (not counted)")
            out["profile"] = step(best, profile=True).get("profile")
    finally:
        out["pbx_end_memory_kb"] = pbx.memory()
        pbx.stop()
        out["pbx_log"] = pbx.log_summary()
    return out


def wait_no_calls(pbx: PBX, max_s: float) -> float | str:
    """Wait until the PBX has no call left (a failed step can leave some until they time out)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        try:
            if not pbx.control("calls.list", timeout=20):
                return round(time.monotonic() - t0, 1)
        except Exception as exc:  # noqa: BLE001 -- reported, the phase goes on
            return f"{type(exc).__name__}: {exc}"
        time.sleep(1.0)
    return f"calls still up after {max_s:.0f}s"


# -- phase 3: TLS phones held ----------------------------------------------------------------------


class PhoneWorkers:
    """bench/sip/phones.py processes driven over their stdin/stdout, one JSON line each way."""

    def __init__(self, children: Children, count: int) -> None:
        self.procs = [children.popen("phones", [sys.executable, str(HERE / "phones.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=ROOT) for _ in range(count)]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def send(self, messages: list[dict[str, Any]]) -> None:
        for proc, msg in zip(self.procs, messages):
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(msg) + "\n").encode())
            proc.stdin.flush()

    def replies(self, timeout: float) -> list[dict[str, Any]]:
        """One reply per worker, or an error entry for a worker that did not answer in time."""
        end = time.monotonic() + timeout
        out: dict[int, dict[str, Any]] = {}
        waiting = {p.stdout.fileno(): i for i, p in enumerate(self.procs) if p.stdout is not None}
        while waiting and time.monotonic() < end:
            ready, _, _ = select.select(list(waiting), [], [], max(0.0, end - time.monotonic()))
            for fd in ready:
                i = waiting.pop(fd)
                stdout = self.procs[i].stdout
                assert stdout is not None
                line = stdout.readline()
                out[i] = json.loads(line) if line else {"error": "worker exited"}
        for i in waiting.values():
            out[i] = {"error": f"no answer in {timeout:.0f}s"}
        return [out[i] for i in range(len(self.procs))]

    def call(self, messages: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        self.send(messages)
        return self.replies(timeout)


def _merge_counts(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d or {})
    return dict(total)


def phase_phones(args: argparse.Namespace, children: Children, workdir: Path, pki: PKI,
                 deadline: Deadline, profiler: Profiler) -> dict[str, Any]:
    out: dict[str, Any] = {"conditions": conditions("phones"), "levels": []}
    levels = sorted(args.phones)
    pbx = PBX(children, workdir / "pbx-phones", pki, rtp_range=args.rtp_range, level=args.log_level)
    numbers = [str(500000 + i) for i in range(levels[-1])]
    pbx.add_extensions(numbers)
    pbx.start()
    time.sleep(1.0)
    base = pbx.memory()
    base_tcp_kb = tcp_socket_memory_kb()
    out["pbx_rss_before_kb"] = base.get("VmRSS", 0)
    say(f"\n== TLS phones held ({', '.join(map(str, levels))}; {args.phone_workers} client processes; "
        f"re-REGISTER every {args.rereg_period:g} s) -- PBX RSS before: {base.get('VmRSS', 0) / 1024:.1f} MB")
    workers = PhoneWorkers(children, args.phone_workers)
    connected = 0
    try:
        shares = [numbers[i::args.phone_workers] for i in range(args.phone_workers)]
        workers.call([{"op": "init", "host": LOOPBACK, "port": pbx.tls_port, "cafile": str(pki.ca),
                       "extensions": s} for s in shares], timeout=30)
        for level in levels:
            if deadline.left() < 30:
                say(f"   time budget spent: stopping before {level} phones")
                out["stopped_early"] = f"time budget spent before {level}"
                break
            delta = level - connected
            per = [delta // args.phone_workers + (1 if i < delta % args.phone_workers else 0)
                   for i in range(args.phone_workers)]
            load = loadavg()
            window = CpuWindow(pbx.pid, workers.pids).start()
            t0 = time.monotonic()
            replies = workers.call([{"op": "connect", "count": n, "concurrency": args.phone_concurrency}
                                    for n in per], timeout=max(60.0, min(deadline.left(), delta / 20 + 60)))
            seconds = time.monotonic() - t0
            cpu = window.stop()
            registered = sum(r.get("registered", 0) for r in replies)
            failed = delta - registered
            connected += registered
            time.sleep(args.settle_seconds)
            mem = pbx.memory()
            tls = pbx.control("tls.stats", timeout=30).get("sips", {})
            rss_delta = mem.get("VmRSS", 0) - base.get("VmRSS", 0)
            entry = {
                "phones": level, "open_in_pbx": tls.get("open_connections"), "registered": registered,
                "failed": failed, "errors": _merge_counts([r.get("errors", {}) for r in replies]),
                "worker_errors": [r["error"] for r in replies if "error" in r],
                "connect_seconds": round(seconds, 2), "phones_per_s": round(registered / max(seconds, 1e-6)),
                "handshake_latency": [r.get("handshake") for r in replies],
                "register_latency": [r.get("register") for r in replies],
                "tls_versions": _merge_counts([r.get("tls_versions", {}) for r in replies]),
                "pbx_rss_kb": mem.get("VmRSS", 0), "pbx_hwm_kb": mem.get("VmHWM", 0),
                "pbx_threads": mem.get("Threads", 0),
                "kb_per_connection": round(rss_delta / max(connected, 1), 1),
                "kernel_tcp_memory_delta_kb": tcp_socket_memory_kb() - base_tcp_kb,
                "loadavg_before": load, "while_connecting": cpu,
            }
            prev = out["levels"][-1] if out["levels"] else None
            if prev:
                entry["kb_per_connection_incremental"] = round(
                    (entry["pbx_rss_kb"] - prev["pbx_rss_kb"]) / max(registered, 1), 1)
            out["levels"].append(entry)
            say(f"   {level:>6} phones: {registered}/{delta} new registered in {seconds:.1f}s "
                f"({entry['phones_per_s']}/s handshake+REGISTER), {failed} failed, server open "
                f"{entry['open_in_pbx']}; PBX RSS {entry['pbx_rss_kb'] / 1024:.1f} MB = "
                f"{entry['kb_per_connection']} KB/connection; pbx cpu {cpu['pbx_cpu_pct']}%, "
                f"clients {cpu['generator_cpu_pct']}%, others {cpu['others_cpu_pct']}%")
            if failed:
                say(f"   failures: {entry['errors']} {entry['worker_errors']}")
                break
        out["reached"] = connected
        period = args.rereg_period
        hold_s = args.hold_seconds if args.hold_seconds is not None else period
        hold_s = min(hold_s, max(0.0, deadline.left() - 20))
        if connected and hold_s >= 5:
            say(f"   holding {connected} phones for {hold_s:.0f}s, each re-REGISTERing every {period:g}s ...")
            prof = profiler.start(pbx.pid, min(hold_s, 20), "phones-hold") if args.profile else None
            window = CpuWindow(pbx.pid, workers.pids).start()
            replies = workers.call([{"op": "hold", "seconds": hold_s, "period": period}] * args.phone_workers,
                                   timeout=hold_s + 60)
            cpu = window.stop()
            status = workers.call([{"op": "status"}] * args.phone_workers, timeout=30)
            tls = pbx.control("tls.stats", timeout=30).get("sips", {})
            mem = pbx.memory()
            hold = {
                "phones": connected, "seconds": hold_s, "period": period,
                "reregistered": sum(r.get("reregistered", 0) for r in replies),
                "failed": sum(r.get("failed", 0) for r in replies),
                "errors": _merge_counts([r.get("errors", {}) for r in replies]),
                "worker_errors": [r["error"] for r in replies if "error" in r],
                "latency": [r.get("latency") for r in replies],
                "closed_by_server": sum(s.get("closed_by_server", 0) for s in status),
                "open_in_pbx": tls.get("open_connections"), "pbx_rss_kb": mem.get("VmRSS", 0),
                "pbx_hwm_kb": mem.get("VmHWM", 0),
                "kb_per_connection": round((mem.get("VmRSS", 0) - base.get("VmRSS", 0)) / max(connected, 1), 1),
                "cpu": cpu,
            }
            if prof is not None:
                hold["profile"] = profiler.finish(prof)
            out["hold"] = hold
            say(f"   re-REGISTERs: {hold['reregistered']} ok, {hold['failed']} failed, "
                f"{hold['closed_by_server']} connections closed by the server; PBX RSS {hold['pbx_rss_kb'] / 1024:.1f} MB "
                f"({hold['kb_per_connection']} KB/connection), pbx cpu {cpu['pbx_cpu_pct']}%")
        workers.call([{"op": "close"}] * args.phone_workers, timeout=30)
    finally:
        for proc in workers.procs:
            children.stop(proc)
        out["pbx_end_memory_kb"] = pbx.memory()
        pbx.stop()
        out["pbx_log"] = pbx.log_summary()
    return out


# -- report ------------------------------------------------------------------------------------------


def _ratio(value: float | None, target: float) -> str:
    return "-" if not value else f"{value / target:.2f}x"


def summary_rows(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    reg = results.get("register", {}).get("transports", {})
    for transport, entry in reg.items():
        best = entry.get("best")
        at = entry.get("at_best") or {}
        target = TARGETS.get(transport)
        ref = KAMAILIO.get(transport)
        fail = entry.get("first_failed")
        note = f"fails at {fail}/s" if fail else "no failure up to max"
        if at:
            if transport == "tls-new-py":
                gen = f"Python clients {at['client_cpu_pct']:.0f}%"
            else:
                gen = f"sipp {at['sipp_cpu_pct']:.0f}%" + (f" + stunnel {at['stunnel_cpu_pct']:.0f}%"
                                                           if at.get("stunnel_cpu_pct") is not None else "")
            note += f"; at best: {gen}, others {at['others_cpu_pct']:.0f}%, load {at['loadavg_before']}"
        failed_step = next((s for s in entry.get("steps", []) if s["rate"] == fail), None)
        if failed_step and transport in NEW_CONNECTION and transport != "tls-new-py":
            note += (f"; at {fail}/s: pbx {failed_step['pbx_cpu_pct']:.0f}%, sipp {failed_step['sipp_cpu_pct']:.0f}%"
                     f", {failed_step.get('time_wait_before', '?')} TIME_WAIT sockets at start")
        rows.append([
            f"REGISTER/s, {TRANSPORT_LABEL[transport]}", f"{best:,}" if best else f"< {fail or '?'}",
            f">= {target:,}" if target else "-", _ratio(best, target) if target else "-",
            f"{ref:,} ({_ratio(best, ref)})" if ref else "-",
            f"{at['pbx_cpu_pct']:.0f}" if at else "-", f"{at['pbx_rss_kb'] / 1024:.0f}" if at else "-", note,
        ])
    calls = results.get("calls")
    if calls and "steps" in calls:
        best = calls.get("best")
        at = calls.get("at_best") or {}
        fail = calls.get("first_failed")
        note = f"hold {calls['hold_ms']} ms; fails at {fail}/s" if fail else f"hold {calls['hold_ms']} ms"
        if at:
            note += (f"; {at['retransmissions']} retrans at best; gen {at['generator_cpu_pct']:.0f}%, "
                     f"others {at['others_cpu_pct']:.0f}%, load {at['loadavg_before']}")
        rows.append(["INVITE-BYE calls/s (UDP, B2BUA, media anchored)", f"{best:,}" if best else f"< {fail or '?'}",
                     ">= 1,000", _ratio(best, TARGETS["calls"]), "-",
                     f"{at['pbx_cpu_pct']:.0f}" if at else "-", f"{at['pbx_rss_kb'] / 1024:.0f}" if at else "-", note])
    phones = results.get("phones")
    if phones and phones.get("levels"):
        reached = phones.get("reached", 0)
        last = phones["levels"][-1]
        hold = phones.get("hold", {})
        kb = hold.get("kb_per_connection", last["kb_per_connection"])
        ok_hold = hold and hold.get("failed") == 0 and hold.get("closed_by_server") == 0
        tried = ", ".join(f"{lv['phones']:,}" for lv in phones["levels"])
        note = (f"levels tried {tried}; held {hold.get('seconds', 0):.0f}s re-registering every "
                f"{hold.get('period', 0):.0f}s: {hold.get('reregistered', 0)} re-REGISTERs, "
                f"{hold.get('failed', '?')} failed, {hold.get('closed_by_server', '?')} dropped"
                if hold else f"levels tried {tried}; not held")
        rows.append(["TLS phones held, 0 failures", f"{reached:,}" + ("" if ok_hold or not hold else " (failures)"),
                     ">= 10,000", _ratio(reached, TARGETS["phones"]), "-",
                     f"{hold.get('cpu', {}).get('pbx_cpu_pct', 0):.0f}" if hold else "-",
                     f"{(hold.get('pbx_rss_kb') or last['pbx_rss_kb']) / 1024:.0f}", note])
        rss_span = (f"{phones.get('pbx_rss_before_kb', 0) / 1024:.0f} -> "
                    f"{(hold.get('pbx_rss_kb') or last['pbx_rss_kb']) / 1024:.0f}")
        rows.append(["PBX memory per TLS connection (KB, RSS delta / N)", f"{kb:.1f}", "< 60",
                     f"{kb / 60:.2f}x of the budget" if kb > 0 else "-",
                     f"{KAMAILIO['kb_per_conn']} KB ({kb / KAMAILIO['kb_per_conn']:.2f}x)", "-", rss_span,
                     (f"at {reached:,} connections; kernel socket buffers are not in RSS "
                      f"(machine-wide TCP memory {last['kernel_tcp_memory_delta_kb']:+,} KB)")])
        rates = "; ".join(f"{lv['phones_per_s']:,}/s to {lv['phones']:,} (pbx {lv['while_connecting']['pbx_cpu_pct']:.0f}%, "
                          f"clients {lv['while_connecting']['generator_cpu_pct']:.0f}%, "
                          f"others {lv['while_connecting']['others_cpu_pct']:.0f}%)" for lv in phones["levels"])
        best = max(phones["levels"], key=lambda lv: lv["phones_per_s"])
        rows.append(["TLS handshakes/s while connecting (each + REGISTER with digest)", f"{best['phones_per_s']:,}",
                     "-", "-", "-", f"{best['while_connecting']['pbx_cpu_pct']:.0f}", "-",
                     f"{tls_versions_note(phones)}; {rates}"])
    return rows


def tls_versions_note(phones: dict[str, Any]) -> str:
    versions = _merge_counts([lv.get("tls_versions", {}) for lv in phones["levels"]])
    return "full handshakes, " + ", ".join(f"{k} {v}" for k, v in versions.items())


HEADER = ["measure", "Warden", "target", "ratio to target", "Kamailio 5.6 (issue, not measured)",
          "PBX CPU %", "PBX RSS MB", "notes"]


def table_text(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))
    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def table_markdown(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "|".join([" --- "] + [" ---: "] * 6 + [" --- "]) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# -- main --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a ~2 minute run: short steps, fewer of them, 1,000 phones")
    p.add_argument("--phases", default="register,calls,phones", help="which phases, comma-separated")
    p.add_argument("--transports", default="udp,tcp,tls,tls-new,tls-new-py",
                   help="REGISTER transports: udp, tcp, tls, tls-new, tls-new-py; also tcp-new, tls-new-resume")
    p.add_argument("--step-seconds", type=float, help="length of one rate step (default 8, quick 3)")
    p.add_argument("--refine", type=int, help="bisection steps after the first failure (default 1, quick 0)")
    p.add_argument("--reg-start", type=int, default=500)
    p.add_argument("--reg-step", type=int, default=500)
    p.add_argument("--reg-max", type=int, default=12000)
    p.add_argument("--reg-extensions", type=int, default=2000, help="extensions per REGISTER transport")
    p.add_argument("--call-start", type=int, default=100)
    p.add_argument("--call-step", type=int, default=100)
    p.add_argument("--call-max", type=int, default=3000)
    p.add_argument("--call-hold-ms", type=int, default=500, help="sipp -d: time between the ACK and the BYE")
    p.add_argument("--callees", type=int, help="callee extensions on the one uas (default 3000, quick 1000)")
    p.add_argument("--callers", type=int, default=100)
    p.add_argument("--phones", help="TLS phone levels (default 1000,5000,10000; quick 1000)")
    p.add_argument("--phone-workers", type=int, default=2)
    p.add_argument("--phone-concurrency", type=int, default=100, help="phones connecting at once per worker")
    p.add_argument("--rereg-period", type=float, help="seconds between a phone's REGISTERs (default 60, quick 15)")
    p.add_argument("--hold-seconds", type=float, help="how long the phones are held re-registering (default: one period)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                   help="the PBX's logging.level (the shipped config says info: about 3 lines per call)")
    p.add_argument("--settle-seconds", type=float, default=3.0)
    p.add_argument("--rtp-range", default="20000-32000", help="PBX media.rtp_port_min-max (outside the ephemeral range)")
    p.add_argument("--time-budget", type=float, help="seconds for the whole run (default 720, quick 180)")
    p.add_argument("--profile", action="store_true", help="sample the PBX with py-spy during one extra step per test")
    p.add_argument("--py-spy", default=None, help="py-spy binary (default: /tmp/benchtools/bin/py-spy or PATH)")
    p.add_argument("--json", default=str(HERE / "results.json"), help="where to write every figure")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, sipp traces)")
    args = p.parse_args(argv)
    q = args.quick
    args.step_seconds = args.step_seconds or (3.0 if q else 8.0)
    args.refine = args.refine if args.refine is not None else (0 if q else 1)
    args.callees = args.callees or (1000 if q else 3000)
    args.phones = [int(x) for x in (args.phones or ("1000" if q else "1000,5000,10000")).split(",")]
    args.rereg_period = args.rereg_period or (15.0 if q else 60.0)
    args.time_budget = args.time_budget or (180.0 if q else 720.0)
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    args.transports = [x.strip() for x in args.transports.split(",") if x.strip()]
    for t in args.transports:
        if t not in SIPP_TRANSPORT:
            p.error(f"unknown transport {t!r}")
    lo, hi = (int(x) for x in args.rtp_range.split("-"))
    args.rtp_range = (lo, hi)
    if q:
        args.reg_start = args.reg_start if args.reg_start != 500 else 1000
        args.reg_step = args.reg_step if args.reg_step != 500 else 1000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_tools()
    children = Children()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="warden-sipbench-"))
    py_spy = args.py_spy or (("/tmp/benchtools/bin/py-spy" if Path("/tmp/benchtools/bin/py-spy").exists()
                              else shutil.which("py-spy")) if args.profile else None)
    if args.profile and not py_spy:
        say("--profile: py-spy not found (python3 -m venv /tmp/benchtools && /tmp/benchtools/bin/pip install py-spy)")
    profiler = Profiler(py_spy if args.profile else None, children, workdir)
    started = dt.datetime.now().astimezone()
    results: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "bench/sip/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "targets": TARGETS, "reference_kamailio_from_issue": KAMAILIO, "reference_note": REFERENCE_NOTE,
        "settings": {k: v for k, v in vars(args).items()},
    }
    say(f"Warden SIP benchmark {results['date']} on {results['machine']['cpu']} x{results['machine']['cores']}; "
        f"scratch {workdir}")
    overall = Deadline(args.time_budget)
    shares = {"register": 0.45, "calls": 0.2, "phones": 0.35}
    planned = sum(shares[n] for n in args.phases if n in shares) or 1.0
    spare = 0.0
    t0 = time.monotonic()
    status = 0
    try:
        pki = make_pki(workdir / "pki")
        phases = {"register": phase_register, "calls": phase_calls, "phones": phase_phones}
        for name in args.phases:
            if name not in phases:
                raise SystemExit(f"unknown phase {name!r}")
            if overall.left() < 20:
                say(f"time budget spent: phase {name} skipped")
                results[name] = {"skipped": "time budget spent"}
                continue
            # each phase gets its share of the budget plus what earlier phases left unused
            allowed = min(overall.left(), args.time_budget * shares[name] / planned + spare)
            deadline = Deadline(allowed)
            try:
                results[name] = phases[name](args, children, workdir, pki, deadline, profiler)
                spare = max(0.0, deadline.left())
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 -- one broken phase must not hide the others' figures
                say(f"phase {name} failed: {type(exc).__name__}: {exc}")
                results[name] = {**results.get(name, {}), "error": f"{type(exc).__name__}: {exc}"}
                status = 1
    except KeyboardInterrupt as exc:
        say(f"\ninterrupted ({str(exc) or 'SIGINT'}): stopping everything this run started")
        results["interrupted"] = True
        status = 130
    finally:
        children.stop_all()
        results["seconds"] = round(time.monotonic() - t0, 1)
        rows = summary_rows(results)
        results["table_markdown"] = table_markdown(rows)
        dump_json(Path(args.json), results)
        say("\n" + table_text(rows))
        say(f"\nreference: {REFERENCE_NOTE}")
        say(f"whole run: {results['seconds']} s; figures in {args.json}")
        for name in ("register", "calls", "phones"):
            prof = results.get(name, {})
            profiles = ([(t, e.get("profile")) for t, e in prof.get("transports", {}).items()]
                        if name == "register" else [(name, prof.get("profile") or prof.get("hold", {}).get("profile"))])
            for label, summary in profiles:
                if summary and "self" in summary:
                    say(f"\nprofile {label} (py-spy --gil): {summary['samples']} samples; threads "
                        + ", ".join(f"{t} {s}%" for t, s in summary["threads"]))
                    say("  self:      " + "; ".join(f"{f} {s}%" for f, s in summary["self"][:8]))
                    say("  inclusive: " + "; ".join(f"{f} {s}%" for f, s in summary["inclusive"][:10]))
        if args.keep:
            say(f"scratch kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
