"""Shared test helpers: certificates, free ports, TLS clients, a PBX process.

Plain functions (no pytest import) so ``tests/test_tls13_support.py`` can run
as a script with only the standard library and the project installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from warden import _libssl, certtool  # noqa: E402
from warden.tls import TLSManager  # noqa: E402
from warden.transport import Connection, Listener, StreamServer  # noqa: E402

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class PKI:
    """A generated CA and server certificate."""

    dir: Path
    ca: Path
    cert: Path
    key: Path


def make_pki(out_dir: Path, key_type: str = "rsa2048") -> PKI:
    files = certtool.generate(out_dir, key_type=key_type, sans=["localhost", "127.0.0.1", "::1"])
    return PKI(out_dir, files.ca_cert, files.server_cert, files.server_key)


def same_ca_dir(pki: PKI, out_dir: Path) -> Path:
    """``out_dir`` holding a copy of ``pki``'s CA (certificate and key), for certtool to sign more with."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "ca.key"):
        shutil.copy2(pki.dir / name, out_dir / name)
    return out_dir


def make_ecdsa_leaf(pki: PKI, out_dir: Path) -> tuple[Path, Path]:
    """An ECDSA P-256 server certificate for the same names, signed by ``pki``'s (RSA) CA."""
    files = certtool.generate(same_ca_dir(pki, out_dir), key_type="ecdsa-p256",
                              sans=["localhost", "127.0.0.1", "::1"])
    return files.server_cert, files.server_key


def make_client_cert(pki: PKI, out_dir: Path, extension: str) -> tuple[Path, Path]:
    """A phone's client certificate for ``extension`` (CN and sip: URI SAN) signed by ``pki``'s CA."""
    return certtool.generate_client(same_ca_dir(pki, out_dir), extension, force=True)


_HANDED_OUT: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM, host: str = LOOPBACK) -> int:
    """A port free for both TCP and UDP on loopback right now.

    Chosen below the kernel's ephemeral range (32768+), where outgoing
    connections of sipp, stunnel or other suites would otherwise take it
    between our check and the server's bind, and never the same port twice
    in one test run.
    """
    return free_port_block(1, host)


def free_port_block(count: int, host: str = LOOPBACK) -> int:
    """A base port such that base .. base+count-1 are free for TCP and UDP now.

    Phones like baresip open several ports next to each other (SIP, SIP+1 for
    TLS, a console port), so a single free port is not enough.
    """
    import random

    for _ in range(500):
        base = random.randrange(20000, 32700 - count)
        if any(port in _HANDED_OUT for port in range(base, base + count)):
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind((host, port))
            _HANDED_OUT.update(range(base, base + count))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {count} free ports")


class EchoHandler:
    """Stream handler that echoes data back (proves the connection is usable)."""

    def on_open(self, conn: Connection) -> None:
        pass

    def on_data(self, conn: Connection, data: bytes) -> None:
        conn.send(data)

    def on_close(self, conn: Connection, reason: str) -> None:
        pass


@contextlib.contextmanager
def tls_server(manager: TLSManager, host: str = LOOPBACK, handshake_timeout: float = 5.0) -> Iterator[StreamServer]:
    """Warden's real TLS stream server on an ephemeral loopback port."""
    server = StreamServer(
        [Listener(host, 0)], EchoHandler(), context_factory=manager.server_context,
        handshake_timeout=handshake_timeout, name="test-tls",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client_context(
    cafile: Path | None,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    tls13_suites: str | None = None,
    seclevel0: bool = False,
) -> ssl.SSLContext:
    """A client as a phone or browser would be, optionally made old-fashioned."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile is not None:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
    if ciphers or seclevel0:
        ctx.set_ciphers(f"{ciphers or 'ALL:COMPLEMENTOFALL'}{':@SECLEVEL=0' if seclevel0 else ''}")
    if tls13_suites:
        _libssl.set_ciphersuites(ctx, tls13_suites)
    return ctx


@dataclass(frozen=True)
class Handshake:
    version: str | None
    cipher: str | None
    error: str | None  # OpenSSL reason, e.g. TLSV1_ALERT_PROTOCOL_VERSION

    @property
    def ok(self) -> bool:
        return self.error is None


def handshake(ctx: ssl.SSLContext, address: tuple[str, int], server_hostname: str = "localhost",
              echo: bool = True) -> Handshake:
    """Connect, handshake, optionally check an echo round trip, close."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as raw:
        raw.settimeout(5)
        raw.connect(address)
        try:
            with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                version, cipher = tls.version(), tls.cipher()
                if echo:
                    tls.sendall(b"ping\r\n")
                    assert tls.recv(100) == b"ping\r\n"
                return Handshake(version, cipher[0] if cipher else None, None)
        except ssl.SSLError as exc:
            return Handshake(None, None, exc.reason or str(exc))
        except (ConnectionResetError, BrokenPipeError) as exc:
            return Handshake(None, None, type(exc).__name__)


def raw_hello_response(address: tuple[str, int], hello: bytes, timeout: float = 3.0) -> bytes:
    """Send a hand-made ClientHello; return what the server answers (may be b'')."""
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(hello)
        chunks = []
        with contextlib.suppress(socket.timeout, ConnectionResetError):
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks)


def sslv3_client_hello() -> bytes:
    """An SSL 3.0 ClientHello (OpenSSL can no longer send one, so we build it)."""
    body = b"\x03\x00" + os.urandom(32) + b"\x00" + b"\x00\x04\x00\x2f\x00\x0a" + b"\x01\x00"
    handshake_msg = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x00" + len(handshake_msg).to_bytes(2, "big") + handshake_msg


def sslv2_client_hello() -> bytes:
    """An SSL 2.0 ClientHello in the old two-byte record format."""
    specs = b"\x01\x00\x80" + b"\x07\x00\xc0" + b"\x00\x00\x2f"
    challenge = os.urandom(16)
    msg = b"\x01" + b"\x00\x02" + len(specs).to_bytes(2, "big") + b"\x00\x00" + len(challenge).to_bytes(2, "big") + specs + challenge
    return (0x8000 | len(msg)).to_bytes(2, "big") + msg


def is_server_hello(response: bytes) -> bool:
    """True if the answer starts with a TLS handshake record holding ServerHello."""
    return len(response) >= 6 and response[0] == 0x16 and response[5] == 0x02


def openssl_s_client(address: tuple[str, int], *args: str, cafile: Path | None = None,
                     hold: float = 0.5, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """Run the real ``openssl s_client``; keep stdin open ``hold`` s so TLS 1.3
    session tickets (and the ``Protocol  :`` line) arrive before it quits."""
    host, port = address
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cmd = ["openssl", "s_client", "-connect", target, "-servername", "localhost", *args]
    if cafile:
        cmd += ["-CAfile", str(cafile)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(hold)
    try:
        out, _ = proc.communicate("", timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def negotiated(output: str) -> tuple[str | None, str | None]:
    """(protocol, cipher) from s_client output, or Nones when no handshake."""
    protocol = cipher = None
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("New, ") and "Cipher is" in line:
            parts = line.split(",")
            protocol = parts[1].strip()
            cipher = line.rsplit("Cipher is", 1)[1].strip()
            if cipher == "(NONE)":
                return None, None
        elif line.startswith("Protocol  :") and protocol is None:
            protocol = line.split(":", 1)[1].strip()
    return protocol, cipher


class PBXProcess:
    """``warden-pbx run`` in a subprocess with a config written for the test."""

    def __init__(self, workdir: Path, config_text: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config = workdir / "config.yml"
        self.config.write_text(config_text)
        self.log = workdir / "stderr.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_for: list[tuple[str, int]], timeout: float = 15) -> None:
        self._stderr = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "warden", "--config", str(self.config), "run"],
            cwd=ROOT, stdout=self._stderr, stderr=subprocess.STDOUT, env=self.env,
        )
        deadline = time.monotonic() + timeout
        for address in wait_for:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"warden-pbx exited {self.proc.returncode}:\n{self.output()}")
                try:
                    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
                    with socket.socket(family) as s:
                        s.settimeout(0.5)
                        s.connect(address)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{address} not listening after {timeout}s:\n{self.output()}") from None
                    time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return int(self.proc.returncode)

    def __enter__(self) -> "PBXProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def tls_config(pki: PKI, port: int, *, fips: bool = False, extra: str = "", api_port: int = 0) -> str:
    """A minimal config for a PBX serving SIPS on loopback (and the API on ``api_port``)."""
    return f"""
sip:
  listen: [127.0.0.1, "::1"]
  udp_port: 0
  tcp_port: 0
  tls_port: {port}
  tls_handshake_timeout: 2
api:
  enabled: {'true' if api_port else 'false'}
  bind: 127.0.0.1
  port: {api_port or 9000}
  ssl: {{enabled: true, cert_file: {pki.cert}, key_file: {pki.key}}}
security:
  enable_tls: true
  tls_cert_file: {pki.cert}
  tls_key_file: {pki.key}
  tls_ca_file: {pki.ca}
  fips_mode: {'true' if fips else 'false'}
logging:
  level: debug
  file: ""
{extra}
"""


def loopback_config(pki: PKI, workdir: Path, udp: int, tcp: int, tls: int) -> str:
    """The shipped defaults but for loopback ports, files and the store (logging at info, as installed)."""
    return f"""
sip: {{listen: [127.0.0.1], udp_port: {udp}, tcp_port: {tcp}, tls_port: {tls}}}
api: {{enabled: false, bind: 127.0.0.1, ssl: {{enabled: true, cert_file: {pki.cert}, key_file: {pki.key}}}}}
security: {{tls_cert_file: {pki.cert}, tls_key_file: {pki.key}, tls_ca_file: {pki.ca}}}
store: {{path: {workdir}/var/warden.db}}
logging: {{level: info, file: ""}}
"""


@contextlib.contextmanager
def temp_pki(key_type: str = "rsa2048") -> Iterator[PKI]:
    with tempfile.TemporaryDirectory(prefix="warden-pki-") as d:
        yield make_pki(Path(d), key_type)


def slow_http_client(address: tuple[str, int], kind: str, stop: threading.Event, ca: Path) -> None:
    """A slowloris client of an HTTPS server, until ``stop`` (kinds: tcp, line, header)."""
    try:
        raw = socket.create_connection(address, timeout=30)
    except OSError:
        return
    try:
        if kind == "tcp":  # the first byte of a TLS record, then nothing
            raw.sendall(b"\x16")
            stop.wait(30)
            return
        ctx = ssl.create_default_context(cafile=str(ca))
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        if kind == "line":  # a partial request line, one byte a second
            for byte in b"GET /api/v1/health HTTP/1.1":
                tls.sendall(bytes([byte]))
                if stop.wait(1.0):
                    return
        else:  # a request line, then a header a second, never the blank line
            tls.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n")
            while not stop.wait(1.0):
                tls.sendall(b"X-Slow: 1\r\n")
    except OSError:
        return  # the server hung up on us: the point
    finally:
        raw.close()


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def run_in_thread(fn: Any, *args: Any) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t
