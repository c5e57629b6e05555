"""Readiness reaches systemd: a real notify socket receives READY=1 once the
listeners are up, RELOADING=1/READY=1 on SIGHUP and STOPPING=1 on SIGTERM."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

from helpers import PKI, client_context, free_port, handshake, tls_config


def test_notify_ready_reload_stopping(pki: PKI, pbx_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    try:
        port = free_port()
        proc = pbx_factory(tls_config(pki, port), [("127.0.0.1", port)], env={"NOTIFY_SOCKET": str(path)})
        ready = sock.recv(4096).decode()
        assert "READY=1" in ready
        assert handshake(client_context(pki.ca), ("127.0.0.1", port), echo=False).ok  # ready means serving
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        assert "RELOADING=1" in sock.recv(4096).decode()
        assert "READY=1" in sock.recv(4096).decode()
        proc.stop(signal.SIGTERM)
        assert "STOPPING=1" in sock.recv(4096).decode()
    finally:
        sock.close()
