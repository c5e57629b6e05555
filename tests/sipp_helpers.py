"""sipp and stunnel as real peers of a running PBX, for the acceptance tests.

Debian's sipp (sip-tester 3.6) has no TLS, so the TLS legs run sipp over TCP
through ``stunnel`` in client mode: the PBX sees a real TLS connection from
stunnel, which verifies the PBX's certificate against the test CA. The
scenarios live in ``bench/sipp/`` (the benchmarks drive the same files).

Every process started here is bounded (call count, ``-timeout``, a
subprocess timeout) and stopped by whoever started it; everything listens
on 127.0.0.1 only.

Strategy for reading results: sipp's exit status says little, so each run
writes its statistics (``-trace_stat``) and, when asked, every message it
sent and received (``-trace_msg``). :func:`parse_trace` turns the latter into
:class:`SipMessage` objects so a test can check statuses and headers exactly.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from helpers import LOOPBACK, PKI, ROOT, PBXProcess, free_port

from warden.control import ControlClient
from warden.store import Store


def _scenario_dir() -> Path:
    """``bench/sipp`` of this checkout, or of the checkout a scratch copy of the
    tests runs inside (``make test-debian`` copies no ``bench/``)."""
    for base in (ROOT, *ROOT.parents):
        candidate = base / "bench" / "sipp"
        if (candidate / "register.xml").exists():
            return candidate
    return ROOT / "bench" / "sipp"


SCENARIOS = _scenario_dir()
SIPP = shutil.which("sipp")
STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
REALM = "warden"

_SEPARATOR = "-" * 47


def auth_keyword(user: str, password: str) -> str:
    """sipp's ``[authentication]`` keyword for an injection field (it cannot hold ``[field0]``)."""
    return f"[authentication username={user} password={password}]"


# -- messages -------------------------------------------------------------------------


@dataclass
class SipMessage:
    """One message from a sipp trace, as sipp sent or received it."""

    direction: str
    """``sent`` or ``received``."""
    start_line: str
    headers: list[tuple[str, str]]
    body: str = ""

    @property
    def status(self) -> int | None:
        """The status code of a response, None for a request."""
        if not self.start_line.startswith("SIP/2.0 "):
            return None
        return int(self.start_line.split()[1])

    @property
    def method(self) -> str | None:
        """The method of a request, None for a response."""
        return None if self.status is not None else self.start_line.split()[0]

    @property
    def cseq_method(self) -> str:
        return (self.header("CSeq") or " ").split()[-1]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        """Every value of header ``name`` (comma-separated Via values split apart)."""
        out: list[str] = []
        for key, value in self.headers:
            if key.lower() == name.lower():
                out += [v.strip() for v in value.split(",")] if key.lower() == "via" else [value]
        return out

    def __str__(self) -> str:
        return "\n".join([self.start_line, *(f"{k}: {v}" for k, v in self.headers)])


def parse_trace(path: Path) -> list[SipMessage]:
    """The messages of a sipp ``-trace_msg`` file, in order."""
    if not path.exists():
        return []
    messages: list[SipMessage] = []
    blocks = path.read_text(errors="replace").split(_SEPARATOR)
    for block in blocks[1:]:
        lines = block.split("\n")
        # lines[0]: rest of the separator line (time), lines[1]: "UDP message sent (..)"
        if len(lines) < 4:
            continue
        what = lines[1]
        direction = "sent" if " sent " in what else "received" if " received " in what else ""
        if not direction:
            continue
        text = [line.rstrip("\r") for line in lines[2:]]
        while text and not text[0]:
            text.pop(0)
        if not text:
            continue
        headers: list[tuple[str, str]] = []
        i = 1
        while i < len(text) and text[i]:
            name, _, value = text[i].partition(":")
            headers.append((name.strip(), value.strip()))
            i += 1
        messages.append(SipMessage(direction, text[0], headers, "\n".join(text[i + 1:]).strip()))
    return messages


# -- sipp ---------------------------------------------------------------------------------


@dataclass
class SippResult:
    """What one sipp run did."""

    returncode: int
    stats: dict[str, str]
    messages: list[SipMessage]
    output: str
    errors: str

    @property
    def successful(self) -> int:
        return int(self.stats.get("SuccessfulCall(C)", "0"))

    @property
    def failed(self) -> int:
        return int(self.stats.get("FailedCall(C)", "0"))

    def received(self, status: int | None = None, method: str | None = None) -> list[SipMessage]:
        return [m for m in self.messages if m.direction == "received"
                and (status is None or m.status == status)
                and (method is None or m.method == method or (m.status is not None and m.cseq_method == method))]

    def sent(self, method: str | None = None) -> list[SipMessage]:
        return [m for m in self.messages if m.direction == "sent" and (method is None or m.method == method)]

    def explain(self) -> str:
        """Enough to diagnose a failed run in an assertion message."""
        tail = "\n".join(self.output.splitlines()[-40:])
        return f"sipp exit {self.returncode}, stats {self.stats_summary()}\n{tail}\nerrors:\n{self.errors[-3000:]}"

    def stats_summary(self) -> dict[str, str]:
        keys = ("SuccessfulCall(C)", "FailedCall(C)", "FailedUnexpectedMessage(C)", "FailedMaxUDPRetrans(C)",
                "FailedTimeoutOnRecv(C)", "DeadCallMsgs(C)", "Retransmissions(C)")
        return {k: self.stats.get(k, "?") for k in keys}


class Sipp:
    """One sipp process with its traces in ``workdir``.

    ``target`` is ``(host, port)`` for a client scenario, None for a server
    (uas) one. ``rows`` fill a SEQUENTIAL injection file (``-inf``).
    """

    def __init__(self, workdir: Path, name: str, scenario: str, *, target: tuple[str, int] | None,
                 transport: str = "u1", local_port: int | None = None, rows: Iterable[Sequence[str]] = (),
                 calls: int = 1, rate: float | None = None, limit: int | None = None, pause_ms: int | None = None,
                 timeout: float = 30.0, trace_msg: bool = True, extra: Sequence[str] = ()) -> None:
        if SIPP is None:
            raise RuntimeError("sipp is not installed (Debian package sip-tester)")
        self.workdir = workdir
        self.name = name
        self.timeout = timeout
        self.local_port = local_port or free_port()
        self.trace = workdir / f"{name}.msgs"
        self.stat_file = workdir / f"{name}.stat.csv"
        self.error_file = workdir / f"{name}.errors"
        self.out_file = workdir / f"{name}.out"
        cmd: list[str] = [SIPP]
        if target is not None:
            cmd.append(f"{target[0]}:{target[1]}")
        cmd += ["-sf", str(SCENARIOS / scenario), "-i", LOOPBACK, "-p", str(self.local_port), "-t", transport,
                "-m", str(calls), "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin",
                "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
                "-trace_err", "-error_file", str(self.error_file)]
        rows = list(rows)
        if rows:
            inf = workdir / f"{name}.csv"
            inf.write_text("SEQUENTIAL\n" + "".join(";".join(r) + "\n" for r in rows))
            cmd += ["-inf", str(inf)]
        if rate is not None:
            cmd += ["-r", str(rate)]
        if limit is not None:
            cmd += ["-l", str(limit)]
        if pause_ms is not None:
            cmd += ["-d", str(pause_ms)]
        if trace_msg:
            cmd += ["-trace_msg", "-message_file", str(self.trace)]
        cmd += list(extra)
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Sipp":
        self._out = open(self.out_file, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait(self) -> SippResult:
        """Wait (bounded by the run's own timeout plus a margin) and collect the results."""
        assert self.proc is not None
        try:
            self.proc.wait(self.timeout + 15)
        except subprocess.TimeoutExpired:
            self.stop()
        self._out.close()
        return SippResult(
            returncode=int(self.proc.returncode),
            stats=_last_stats(self.stat_file),
            messages=parse_trace(self.trace),
            output=self.out_file.read_text(errors="replace"),
            errors=self.error_file.read_text(errors="replace") if self.error_file.exists() else "",
        )

    def run(self) -> SippResult:
        return self.start().wait()

    def kill(self) -> None:
        """SIGKILL: the process vanishes without a word, its sockets simply close."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def stop(self) -> None:
        """Stop this sipp (by its own pid) if it still runs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _last_stats(path: Path) -> dict[str, str]:
    """The last row of a ``-trace_stat`` file, by column name (cumulative counters end in ``(C)``)."""
    if not path.exists():
        return {}
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    names = lines[0].split(";")
    return dict(zip(names, lines[-1].split(";")))


# -- stunnel --------------------------------------------------------------------------------


class Stunnel:
    """stunnel in client mode: plain TCP on 127.0.0.1:``port`` -> TLS to the PBX, verified."""

    def __init__(self, workdir: Path, pki: PKI, connect_port: int) -> None:
        if STUNNEL is None:
            raise RuntimeError("stunnel is not installed (Debian package stunnel4)")
        self.binary = STUNNEL
        self.workdir = workdir
        self.port = free_port()
        self.conf = workdir / "stunnel.conf"
        self.log = workdir / "stunnel.log"
        self.conf.write_text(
            "foreground = yes\n"
            f"pid = {workdir / 'stunnel.pid'}\n"
            "debug = 5\n"
            "socket = l:TCP_NODELAY=1\n"
            "socket = r:TCP_NODELAY=1\n"
            "[sip]\n"
            "client = yes\n"
            f"accept = {LOOPBACK}:{self.port}\n"
            f"connect = {LOOPBACK}:{connect_port}\n"
            f"CAfile = {pki.ca}\n"
            "verifyChain = yes\n"
            "checkHost = localhost\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    def start(self, timeout: float = 10.0) -> "Stunnel":
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen([self.binary, str(self.conf)], stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _port_taken(self.port):  # probing by bind: a connect would open a TLS session
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stunnel did not listen on {self.port}:\n{self.output()}")
            time.sleep(0.05)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(AttributeError):
            self._log.close()


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


# -- the PBX ----------------------------------------------------------------------------------


@dataclass
class PBXPorts:
    """Where a test PBX listens (UDP and TCP share a port, like 5060)."""

    udp: int = field(default_factory=free_port)
    tls: int = field(default_factory=free_port)

    @property
    def tcp(self) -> int:
        return self.udp


def pbx_config(pki: PKI, store_path: Path, ports: PBXPorts, *, level: str = "info", extra: str = "") -> str:
    """A PBX on 127.0.0.1 with UDP, TCP and TLS, MD5 challenged first (sipp knows only MD5)."""
    return f"""
sip:
  listen: [{LOOPBACK}]
  udp_port: {ports.udp}
  tcp_port: {ports.tcp}
  tls_port: {ports.tls}
  realm: {REALM}
  digest_algorithms: [MD5, SHA-256]
  tls_handshake_timeout: 5
api:
  enabled: false
  bind: {LOOPBACK}
  ssl: {{enabled: true, cert_file: {pki.cert}, key_file: {pki.key}}}
security:
  enable_tls: true
  tls_cert_file: {pki.cert}
  tls_key_file: {pki.key}
  tls_ca_file: {pki.ca}
store: {{path: {store_path}}}
logging: {{level: {level}, file: ""}}
{extra}
"""


def add_extensions(store_path: Path, numbers: Iterable[str]) -> None:
    """Create extensions with password ``secret<number>`` before the PBX runs."""
    store = Store(str(store_path))
    try:
        for number in numbers:
            store.add_extension(number, password(number), realm=REALM)
    finally:
        store.close()


def password(number: str) -> str:
    return f"secret{number}"


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout``; return its last truth."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


@dataclass
class RunningPBX:
    """A PBX process started for a test, with what the test needs to reach it."""

    process: PBXProcess
    ports: PBXPorts
    store_path: Path
    workdir: Path

    @property
    def control_path(self) -> Path:
        return self.store_path.parent / "warden.sock"

    def control(self, op: str, **args: object) -> object:
        with ControlClient(self.control_path) as client:
            return client.call(op, **args)

    def registrations(self, aor: str | None = None) -> list[dict[str, object]]:
        result = self.control("registrations.list", **({"aor": aor} if aor else {}))
        assert isinstance(result, list)
        return result

    def calls(self) -> list[dict[str, object]]:
        result = self.control("calls.list")
        assert isinstance(result, list)
        return result

    def store(self) -> Store:
        """A second Store on the PBX's database (SQLite WAL: safe to read while it runs)."""
        return Store(str(self.store_path))

    def output(self) -> str:
        return self.process.output()

    def target(self, transport: str) -> tuple[str, int]:
        return LOOPBACK, self.ports.udp if transport in ("udp", "tcp") else self.ports.tls


def start_pbx(pbx_factory: Callable[..., PBXProcess], pki: PKI, workdir: Path, extensions: Iterable[str], *,
              level: str = "info") -> RunningPBX:
    """Create the store with ``extensions``, then start a PBX (``pbx_factory`` of
    conftest, which stops it at teardown) on fresh loopback ports."""
    workdir.mkdir(parents=True, exist_ok=True)
    store_path = workdir / "warden.db"
    add_extensions(store_path, extensions)
    ports = PBXPorts()
    proc = pbx_factory(pbx_config(pki, store_path, ports, level=level),
                       [(LOOPBACK, ports.tcp), (LOOPBACK, ports.tls)])
    return RunningPBX(proc, ports, store_path, workdir)
