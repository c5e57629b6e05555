"""A short TLS handshake flood against a running PBX (issue #7 acceptance, the
60 s version with the nginx comparison is bench/tls/flood.py).

Client threads do full TLS 1.3 handshakes (never resuming) and close each
connection with a TCP RST (SO_LINGER 0) for 10 s while phones are registered
over TLS. Afterwards the PBX is alive, has logged no traceback, every phone
re-REGISTERs over the connection it kept (200), and a new phone registers.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from pathlib import Path
from typing import Any

from helpers import PKI, free_port
from phones import TLSPhone

from warden.store import Store

SECONDS = 10.0
THREADS = 3
PHONES = 5


def rst_handshakes(address: tuple[str, int], ca: Path, until: float, counts: dict[str, int], lock: threading.Lock) -> None:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    while time.monotonic() < until:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.settimeout(5)
        key = "failed"
        try:
            raw.connect(address)
            tls = ctx.wrap_socket(raw, server_hostname="localhost")  # a new session every time
            if tls.version() == "TLSv1.3" and not tls.session_reused:
                key = "ok"
            tls.close()  # no close_notify; SO_LINGER 0 turns the close into a RST
        except (OSError, ssl.SSLError):
            raw.close()
        with lock:
            counts[key] += 1


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_handshake_flood_leaves_phones_registered(pki: PKI, pbx_factory: Any, tmp_path: Path) -> None:
    tls = free_port()
    store = Store(tmp_path / "var" / "warden.db")
    numbers = [str(4000 + i) for i in range(PHONES + 1)]
    for n in numbers:
        store.add_extension(n, f"secret-{n}", realm="warden")
    store.close()
    pbx = pbx_factory(f"""
sip: {{listen: [127.0.0.1], udp_port: 0, tcp_port: 0, tls_port: {tls}}}
api: {{enabled: false, bind: 127.0.0.1, ssl: {{enabled: true, cert_file: {pki.cert}, key_file: {pki.key}}}}}
security: {{tls_cert_file: {pki.cert}, tls_key_file: {pki.key}, tls_ca_file: {pki.ca}}}
store: {{path: {tmp_path}/var/warden.db}}
logging: {{level: info, file: ""}}
""", [("127.0.0.1", tls)])
    address = ("127.0.0.1", tls)
    phones = [TLSPhone(address, pki.ca, n, f"secret-{n}") for n in numbers[:PHONES]]
    try:
        for phone in phones:
            assert phone.register().status == 200
        rss_before = _rss_kib(pbx.proc.pid)
        counts, lock = {"ok": 0, "failed": 0}, threading.Lock()
        until = time.monotonic() + SECONDS
        threads = [threading.Thread(target=rst_handshakes, args=(address, pki.ca, until, counts, lock), daemon=True)
                   for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SECONDS + 30)
        assert not any(t.is_alive() for t in threads)
        assert pbx.proc.poll() is None, pbx.output()[-3000:]
        assert counts["ok"] >= 100, counts  # the flood really happened (hundreds per second normally)
        grown = _rss_kib(pbx.proc.pid) - rss_before
        assert grown < 64 * 1024, f"PBX grew by {grown} KiB over {counts['ok']} handshakes: connections leak"
        for phone in phones:
            assert phone.register().status == 200, f"phone {phone.user} lost its registration"
        late = TLSPhone(address, pki.ca, numbers[-1], f"secret-{numbers[-1]}")
        try:
            assert late.register().status == 200
        finally:
            late.close()
    finally:
        for phone in phones:
            phone.close()
    assert "Traceback" not in pbx.output()
