"""Shared pieces of the admin API tests (no tests here): config files, a fake PBX, gunicorn.

The fake PBX is a real :class:`warden.control.ControlServer` on the socket
the API looks for, answering the control operations with the shapes the PBX
side implements (``warden/service.py``); the gunicorn harness runs the real
``gunicorn -c python:warden.api.gunicorn_conf warden.api.wsgi:app`` under a
chosen interpreter (this one, or Debian 12's ``/usr/bin/python3`` with its
gunicorn 20.1).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helpers

from warden.control import ControlError, ControlServer
from warden.store import Binding
from warden.tls import TLSManager

ROOT = helpers.ROOT
DEBIAN_PYTHON = "/usr/bin/python3"


def write_config(workdir: Path, pki: helpers.PKI, *, port: int = 9000, fips: bool = False, ssl_on: bool = True,
                 workers: int = 2, level: str = "info", bind: str = "127.0.0.1") -> Path:
    """A config for the API alone (SIPS off) with its store under ``workdir/var``."""
    path = workdir / "config.yml"
    path.write_text(f"""
api:
  bind: {bind}
  port: {port}
  workers: {workers}
  ssl: {{enabled: {'true' if ssl_on else 'false'}, cert_file: {pki.cert}, key_file: {pki.key}}}
security:
  enable_tls: false
  tls_cert_file: {pki.cert}
  tls_key_file: {pki.key}
  tls_ca_file: {pki.ca}
  fips_mode: {'true' if fips else 'false'}
store:
  path: {workdir / 'var' / 'warden.db'}
logging:
  level: {level}
  file: ""
""")
    return path


# --- a fake PBX on the control socket ---------------------------------------------------------


class FakePBX:
    """The PBX's control operations, answered with the agreed shapes."""

    def __init__(self, path: Path, pki: helpers.PKI) -> None:
        self.path = path
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.recorded: list[dict[str, Any]] = []
        self.tls_report = TLSManager(pki.cert, pki.key).report()
        self.server = ControlServer(path)
        self.bans = {"203.0.113.7"}
        for op in ("status", "registrations.list", "calls.list", "tls.stats", "reload", "bans.list", "bans.lift",
                   "metrics", "tls.api_report"):
            self.server.register(op, self._handler(op))

    def _handler(self, op: str) -> Any:
        name = "op_" + op.replace(".", "_")

        def handle(args: dict[str, Any]) -> Any:
            self.calls.append((op, args))
            return getattr(self, name)(args)  # looked up per call: tests may replace it

        return handle

    def op_status(self, args: dict[str, Any]) -> Any:
        return {"version": "9.9.9-fake", "pid": os.getpid(), "uptime": 12.5,
                "listeners": [{"transport": "tls", "address": "127.0.0.1", "port": 5061},
                              {"transport": "udp", "address": "127.0.0.1", "port": 5060}],
                "tls": self.tls_report}

    def op_registrations_list(self, args: dict[str, Any]) -> Any:
        now = time.time()
        b = Binding(aor="1001", contact="sips:1001@192.0.2.10:5061;transport=tls", expires_at=now + 300,
                    call_id="reg-1", cseq=3, transport="tls", source_host="192.0.2.10", source_port=50412,
                    user_agent="Yealink T54W", tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384",
                    instance_id="<urn:uuid:00000000-0000-0000-0000-000000000001>", registered_at=now - 60)
        items = [{**b.to_dict(), "expires_in": 300, "flow_alive": True}]
        aor = args.get("aor")
        return [i for i in items if aor is None or i["aor"] == aor]

    def op_calls_list(self, args: dict[str, Any]) -> Any:
        now = time.time()
        return [{"id": 7, "caller": "1001", "callee": "1002", "state": "answered", "started_at": now - 30,
                 "answered_at": now - 25, "duration": 25.0,
                 "legs": [{"side": "a", "transport": "tls", "peer": "192.0.2.10:50412", "call_id": "c-a"},
                          {"side": "b", "transport": "udp", "peer": "192.0.2.11:5060", "call_id": "c-b"}]}]

    def op_tls_stats(self, args: dict[str, Any]) -> Any:
        return {"sips": {"handshakes": [{"transport": "tls", "version": "TLSv1.3",
                                         "cipher": "TLS_AES_256_GCM_SHA384", "count": 3}],
                         "failures": [{"transport": "tls", "reason": "UNSUPPORTED_PROTOCOL", "count": 1}],
                         "open_connections": 2}}

    def op_metrics(self, args: dict[str, Any]) -> Any:
        return {"uptime": 12.5, "tls": self.op_tls_stats(args), "registrations": {"udp": 0, "tcp": 0, "tls": 1},
                "calls": 1, "sip": {"requests_received": {"REGISTER": 4, "FOO\"\n": 1},
                                    "responses_sent": {"200": 3, "401": 1}, "malformed": 0, "dropped": 0},
                "certificates": [{"listener": "sips", "subject": 'CN=a "quoted" \\ name', "key_type": "RSA", "not_after": 1.9e9,
                                  "expires_in_seconds": 1e8, "level": 0}]}

    def op_tls_api_report(self, args: dict[str, Any]) -> Any:
        """An API worker's cumulative handshake counts, kept (the latest per pid) for the tests to read."""
        self.recorded.append(args)
        return {"stored": True}

    def recorded_counts(self) -> dict[str, dict[tuple[str, ...], int]]:
        """Totals over the workers' latest reports: handshakes by (version, cipher), failures by
        OpenSSL code, deprecated attempts by version."""
        latest = {push["pid"]: push for push in list(self.recorded)}
        out: dict[str, dict[tuple[str, ...], int]] = {"handshakes": {}, "failures": {}, "deprecated": {}}
        for push in latest.values():
            for kind, field in (("handshakes", "ok"), ("failures", "failed"), ("deprecated", "deprecated")):
                for *key, n in push.get(field, []):
                    out[kind][tuple(key)] = out[kind].get(tuple(key), 0) + n
        return out

    def op_reload(self, args: dict[str, Any]) -> Any:
        return {"reloaded": True, "certificate": "CN=localhost", "expires": "2030-01-01T00:00:00+00:00"}

    def op_bans_list(self, args: dict[str, Any]) -> Any:
        now = time.time()
        return [{"address": a, "reason": "10 failed authentications within 60 s", "banned_at": now - 30,
                 "expires_at": now + 570, "expires_in": 570, "dropped": 42} for a in sorted(self.bans)]

    def op_bans_lift(self, args: dict[str, Any]) -> Any:
        address = args.get("address")
        if address not in self.bans:
            raise ControlError(f"{address} is not banned", 404)
        self.bans.discard(address)
        return {"address": address, "lifted": True}

    def __enter__(self) -> "FakePBX":
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


# --- gunicorn -----------------------------------------------------------------------------------


def module_version(python: str, module: str) -> str | None:
    """``module.__version__`` under ``python``, or None if it cannot be imported."""
    try:
        out = subprocess.run([python, "-c", f"import {module}; print({module}.__version__)"],
                             capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def gunicorn_flavours() -> list[tuple[str, str, str]]:
    """``(label, python, gunicorn version)`` for this interpreter and Debian's, where gunicorn runs."""
    found: list[tuple[str, str, str]] = []
    here = module_version(sys.executable, "gunicorn")
    if here and module_version(sys.executable, "flask"):
        found.append((f"gunicorn-{here}", sys.executable, here))
    if os.path.exists(DEBIAN_PYTHON) and os.path.realpath(DEBIAN_PYTHON) != os.path.realpath(sys.executable):
        deb = module_version(DEBIAN_PYTHON, "gunicorn")
        if deb and deb != here and module_version(DEBIAN_PYTHON, "flask"):
            found.append((f"debian-gunicorn-{deb}", DEBIAN_PYTHON, deb))
    # More interpreters to try, e.g. venvs holding other gunicorn releases (colon-separated).
    for python in filter(None, os.environ.get("WARDEN_TEST_GUNICORN_PYTHONS", "").split(os.pathsep)):
        version = module_version(python, "gunicorn")
        if version and module_version(python, "flask"):
            found.append((f"extra-gunicorn-{version}", python, version))
    return found


@dataclass
class Server:
    """A running gunicorn serving the API."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    config: Path
    log: Path
    python: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None, log: Path | None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited {proc.returncode}:\n{log.read_text() if log else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                output = log.read_text() if log else ""
                raise RuntimeError(f"port {port} not listening after {timeout} s:\n{output}") from None
            time.sleep(0.05)


@contextmanager
def gunicorn(python: str, workdir: Path, config: Path, port: int, *,
             env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run the API's gunicorn under ``python`` until the block ends."""
    log = workdir / f"gunicorn-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "WARDEN_CONFIG": str(config), **(env or {})}
    full_env.pop("WARDEN_API_PARENT_PID", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [python, "-m", "gunicorn", "-c", "python:warden.api.gunicorn_conf", "warden.api.wsgi:app"],
            cwd=workdir, env=full_env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, workdir, config, log, python)
    try:
        wait_listening(port, proc, log)
        yield server
    finally:
        server.stop()


# --- an HTTPS client from the standard library (Debian's python has no requests) ---------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    tls_version: str | None

    def json(self) -> Any:
        return json.loads(self.body)


def https(port: int, method: str, path: str, *, cafile: Path, token: str | None = None, body: Any = None,
          headers: dict[str, str] | None = None, timeout: float = 10) -> Reply:
    """One request over verified TLS to ``localhost:port``."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=timeout)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        version = conn.sock.version() if conn.sock is not None else None  # type: ignore[union-attr]
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload, version)
    finally:
        conn.close()
