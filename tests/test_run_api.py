"""``warden-pbx run`` serves the admin API too: gunicorn under the PBX's
supervision, TLS from the same policy; an API crash does not touch SIP."""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

from helpers import PKI, client_context, free_port, handshake, negotiated, openssl_s_client, tls_config


def get(url: str, ca: Path, token: str | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_api(url: str, ca: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get(url, ca)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"API at {url} did not answer in {timeout}s")
        time.sleep(0.2)


def gunicorn_master(pbx_pid: int) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pbx_pid and b"gunicorn" in cmd:
                return int(entry)
    raise AssertionError(f"no gunicorn child of {pbx_pid}")


def test_run_serves_api_over_tls13_and_survives_api_crash(pki: PKI, pbx_factory: Any) -> None:
    sips, api = free_port(), free_port()
    pbx = pbx_factory(tls_config(pki, sips, api_port=api), [("127.0.0.1", sips)])
    health = f"https://localhost:{api}/api/v1/health"
    wait_api(health, pki.ca)
    status, body = get(health, pki.ca)
    assert status == 200 and body["status"] == "ok" and body["pbx"] == "running"
    out = openssl_s_client(("127.0.0.1", api), "-tls1_3", cafile=pki.ca).stdout
    assert "Protocol  : TLSv1.3" in out and "Verify return code: 0 (ok)" in out
    assert negotiated(openssl_s_client(("127.0.0.1", api), "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0",
                                       cafile=pki.ca).stdout) == (None, None)
    assert get(f"https://localhost:{api}/api/v1/extensions", pki.ca)[0] == 401

    held = client_context(pki.ca).wrap_socket(__import__("socket").create_connection(("127.0.0.1", sips)),
                                              server_hostname="localhost")
    assert pbx.proc is not None
    master = gunicorn_master(pbx.proc.pid)
    os.kill(master, signal.SIGKILL)  # the API dies...
    time.sleep(0.5)
    assert handshake(client_context(pki.ca), ("127.0.0.1", sips), echo=False).ok  # ...SIP does not
    held.sendall(b"\r\n\r\n")  # a keep-alive on the flow made before the crash
    held.settimeout(3)
    assert held.recv(10) == b"\r\n"
    wait_api(health, pki.ca)  # and the supervisor brings the API back
    assert gunicorn_master(pbx.proc.pid) != master
    held.close()
    assert pbx.stop(signal.SIGTERM) == 0
    time.sleep(0.5)
    try:
        get(health, pki.ca)
        raise AssertionError("API still answering after the PBX stopped")
    except OSError:
        pass


def post(url: str, ca: Path, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_extension_created_over_the_api_registers_over_tls(pki: PKI, pbx_factory: Any) -> None:
    import subprocess
    import sys

    from phones import TLSPhone

    sips, api = free_port(), free_port()
    pbx = pbx_factory(tls_config(pki, sips, api_port=api), [("127.0.0.1", sips)])
    base = f"https://localhost:{api}/api/v1"
    wait_api(f"{base}/health", pki.ca)

    def token(role: str) -> str:
        out = subprocess.run([sys.executable, "-m", "warden", "--config", str(pbx.config), "api", "token", "create",
                              "--name", role, "--role", role], capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.strip().splitlines()[-1]

    admin, viewer = token("admin"), token("viewer")
    assert get(f"{base}/extensions", pki.ca, viewer)[0] == 200
    assert post(f"{base}/extensions", pki.ca, viewer, {"number": "1005", "password": "api-made-secret"})[0] == 403
    status, created = post(f"{base}/extensions", pki.ca, admin,
                           {"number": "1005", "password": "api-made-secret", "display_name": "From API"})
    assert status == 201 and created["number"] == "1005" and "password" not in created
    phone = TLSPhone(("127.0.0.1", sips), pki.ca, "1005", "api-made-secret")
    try:
        assert phone.register().status == 200
    finally:
        phone.close()
    status, regs = get(f"{base}/registrations", pki.ca, viewer)
    assert status == 200
    items = regs["items"] if isinstance(regs, dict) else regs
    assert any(r["aor"] == "1005" and r["transport"] == "tls" for r in items)
