"""The admin API under REAL gunicorn over REAL TLS, on every gunicorn at hand.

Each test runs once per flavour: this interpreter's gunicorn (21+: the
``ssl_context`` hook) and Debian 12's ``/usr/bin/python3`` with gunicorn 20.1
(no hook: the workers' ``ssl.wrap_socket`` is redirected), importing this
tree through PYTHONPATH. Both must behave identically: TLS 1.3 negotiated,
TLS 1.1 refused, the FIPS lists in FIPS mode, auth and roles, no 5xx and no
schema violation under schemathesis, and health answering through a
slowloris attack. ``WARDEN_TEST_GUNICORN_PYTHONS`` (colon-separated
interpreters, e.g. venvs with gunicorn 21.2 or 23.0) adds more flavours.
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
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import helpers
from test_api_support import FakePBX, Server, gunicorn, gunicorn_flavours, https, wait_listening, write_config

from warden import config
from warden.api import control_path
from warden.api.supervisor import APISupervisor
from warden.sip.auth import ha1
from warden.store import Store

pytestmark = pytest.mark.skipif(not helpers.have("openssl"), reason="needs the openssl command")

FLAVOURS = gunicorn_flavours()
PASSWORD = "correct-horse-battery"


@dataclass
class Served:
    server: Server
    pki: helpers.PKI
    cfg: config.Config
    tokens: dict[str, str]
    label: str
    version: str
    fake: FakePBX

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.port)


def _serve(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pki: helpers.PKI,
           *, fips: bool) -> Iterator[Served]:
    label, python, version = request.param
    workdir = tmp_path_factory.mktemp(f"{label}{'-fips' if fips else ''}")
    port = helpers.free_port()
    path = write_config(workdir, pki, port=port, fips=fips)
    cfg = config.load(path, check_files=False)
    with Store(cfg.store.path) as s:
        tokens = {role: s.create_token(f"t-{role}", role)[1] for role in ("admin", "viewer")}
    # A fake PBX answers the control operations, so calls/tls/reload give 200 rather than 503;
    # the throttle is raised because schemathesis probes with wrong tokens on purpose.
    with FakePBX(control_path(cfg), pki) as fake:
        with gunicorn(python, workdir, path, port, env={"WARDEN_API_AUTH_FAILURES": "100000"}) as server:
            yield Served(server, pki, cfg, tokens, label, version, fake)
            output = server.output()
    assert "Traceback" not in output, output[-4000:]


def _ids(flavour: tuple[str, str, str]) -> str:
    return flavour[0]


@pytest.fixture(scope="module", params=FLAVOURS, ids=_ids)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           pki: helpers.PKI) -> Iterator[Served]:
    yield from _serve(request, tmp_path_factory, pki, fips=False)


@pytest.fixture(scope="module", params=FLAVOURS, ids=_ids)
def served_fips(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                pki: helpers.PKI) -> Iterator[Served]:
    yield from _serve(request, tmp_path_factory, pki, fips=True)


def s_client(served: Served, *args: str) -> tuple[str | None, str | None, str]:
    out = helpers.openssl_s_client(served.address, *args, cafile=served.pki.ca).stdout
    protocol, cipher = helpers.negotiated(out)
    return protocol, cipher, out


# --- TLS ----------------------------------------------------------------------------------------


def test_flavours_cover_both_tls_code_paths() -> None:
    versions = [tuple(int(x) for x in v.split(".")[:2]) for _, _, v in FLAVOURS]
    assert versions, "no gunicorn to test"
    if any(label.startswith("debian") for label, _, _ in FLAVOURS):
        assert any(v < (21, 0) for v in versions), versions  # Debian 12's 20.1: no ssl_context hook


def test_openssl_gets_tls13_and_tls11_is_refused(served: Served) -> None:
    protocol, cipher, out = s_client(served, "-tls1_3")
    assert "Protocol  : TLSv1.3" in out and "Verify return code: 0 (ok)" in out, out
    assert protocol == "TLSv1.3" and cipher == "TLS_AES_256_GCM_SHA384"
    protocol, cipher, out = s_client(served, "-tls1_2")
    assert protocol == "TLSv1.2" and cipher == "ECDHE-RSA-AES256-GCM-SHA384", out
    protocol, cipher, out = s_client(served, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert protocol is None and cipher is None, out


def test_workers_push_their_handshake_counts_to_the_pbx(served: Served) -> None:
    """On every gunicorn: completed, refused and not-TLS handshakes reach the PBX (control op tls.api_report)."""
    before = served.fake.recorded_counts()
    protocol, cipher, _out = s_client(served, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert (protocol, cipher) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
    # TLS 1.0: no other test here offers it, so its count is this test's alone (-tls1_1 is the TLS test's)
    assert s_client(served, "-tls1", "-cipher", "DEFAULT@SECLEVEL=0")[:2] == (None, None)
    with socket.create_connection(served.address, timeout=5) as plain:
        plain.sendall(b"GET /api/v1/health HTTP/1.0\r\n\r\n")
        plain.settimeout(5)
        try:
            while plain.recv(4096):
                pass
        except OSError:
            pass

    def grew(kind: str, key: tuple[str, ...]) -> int:
        return served.fake.recorded_counts()[kind].get(key, 0) - before[kind].get(key, 0)

    deadline = time.monotonic() + 15  # workers report every 2 s
    wanted = [("handshakes", ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")), ("failures", ("HTTP_REQUEST",)),
              ("deprecated", ("TLSv1",))]
    while time.monotonic() < deadline and not all(grew(*w) >= 1 for w in wanted):
        time.sleep(0.1)
    assert [grew(*w) for w in wanted] == [1, 1, 1], served.fake.recorded[-5:]
    assert grew("failures", ("UNSUPPORTED_PROTOCOL",)) >= 1  # the TLS 1.0 refusal (and maybe an earlier test's)
    assert all(isinstance(push["pid"], int) for push in served.fake.recorded)


def test_metrics_text_from_the_pbx_answer(served: Served) -> None:
    from exposition import parse

    reply = https(served.server.port, "GET", "/metrics", cafile=served.pki.ca, token=served.tokens["viewer"])
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = parse(reply.body.decode())
    assert fams["warden_tls_certificate_expiry_level"].get(listener="sips", subject='CN=a "quoted" \\ name',
                                                                 key_type="RSA") == 0
    assert fams["warden_sip_requests_received_total"].get(method="other") == 1  # the odd method is folded
    assert fams["warden_tls_handshake_failures_total"].get(listener="sips", reason="UNSUPPORTED_PROTOCOL") == 1
    assert fams["warden_tls_certificate_expiry_seconds"].total(listener="api") > 0  # the API's own certificate
    assert https(served.server.port, "GET", "/metrics", cafile=served.pki.ca, token="wdn_wrong").status == 401


def test_fips_mode_refuses_chacha20_in_tls12_and_tls13(served_fips: Served) -> None:
    protocol, _, out = s_client(served_fips, "-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256")
    assert protocol is None, out
    protocol, _, out = s_client(served_fips, "-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305")
    assert protocol is None, out
    protocol, cipher, out = s_client(served_fips, "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256")
    assert (protocol, cipher) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256"), out
    assert "TLS error" in served_fips.server.output()  # refusals are logged, one line each


def test_python_requests_gets_tls13(served: Served) -> None:
    requests = pytest.importorskip("requests")
    with requests.Session() as session:
        resp = session.get(f"https://localhost:{served.server.port}/api/v1/health",
                           verify=str(served.pki.ca), stream=True, timeout=10)
        version = resp.raw.connection.sock.version()
        assert resp.json()["status"] == "ok"
    assert version == "TLSv1.3"


# --- the admin's curl flow ----------------------------------------------------------------------


def test_health_tokens_roles_and_create(served: Served) -> None:
    port, ca, tokens = served.server.port, served.pki.ca, served.tokens
    health = https(port, "GET", "/api/v1/health", cafile=ca)
    assert health.status == 200 and health.json() == {"status": "ok", "pbx": "running"}
    assert health.tls_version == "TLSv1.3"
    anon = https(port, "GET", "/api/v1/extensions", cafile=ca)
    assert anon.status == 401 and anon.headers["content-type"] == "application/problem+json"
    assert anon.headers["www-authenticate"].startswith('Bearer realm="warden"')
    assert https(port, "GET", "/api/v1/extensions", cafile=ca, token=tokens["viewer"]).status == 200
    body = {"number": "7001", "password": PASSWORD, "display_name": "Flow"}
    denied = https(port, "POST", "/api/v1/extensions", cafile=ca, token=tokens["viewer"], body=body)
    assert denied.status == 403 and denied.json()["status"] == 403
    created = https(port, "POST", "/api/v1/extensions", cafile=ca, token=tokens["admin"], body=body)
    assert created.status == 201, created.body
    assert created.headers["location"].endswith("/api/v1/extensions/7001")
    assert "password" not in created.json()
    with Store(served.cfg.store.path) as s:
        ext = s.get_extension("7001")
    assert ext is not None and ext.display_name == "Flow"
    assert ext.ha1_sha256 == ha1("7001", served.cfg.sip.realm, PASSWORD, "SHA-256")
    listed = https(port, "GET", "/api/v1/extensions/7001", cafile=ca, token=tokens["viewer"])
    assert listed.status == 200 and listed.json()["number"] == "7001"
    status = https(port, "GET", "/api/v1/status", cafile=ca, token=tokens["viewer"]).json()
    assert status["pbx"] == "running" and status["api"]["tls"]["minimum_version"] == "TLSv1.2"


def test_oversized_bodies_and_request_lines_are_problems_not_html(served: Served) -> None:
    port, ca, admin = served.server.port, served.pki.ca, served.tokens["admin"]
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(served.address, timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        # chunked: no Content-Length to refuse up front; counted as it is read
        head = (f"POST /api/v1/extensions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {admin}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        chunk = b"x" * 70000
        tls.sendall(head.encode() + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n")
        reply = b""
        while data := tls.recv(65536):
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"application/problem+json" in reply
    long_line = https(port, "GET", "/api/v1/cdrs?caller=" + "1" * 9000, cafile=ca, token=admin)
    assert long_line.status in (400, 414) and long_line.headers["content-type"] == "application/problem+json"
    assert long_line.json()["status"] == long_line.status


# --- property-based fuzzing against the served OpenAPI document ----------------------------------


SCHEMATHESIS_TOML = """
[checks.negative_data_rejection]
# 413/414 are rejections too (a body or request line over the limit); 5xx is never accepted.
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429"]
"""


def test_schemathesis_finds_no_5xx_and_no_schema_violation(served: Served, tmp_path: Path) -> None:
    pytest.importorskip("schemathesis")
    st = Path(sys.executable).parent / "st"
    if not st.exists():
        pytest.skip("schemathesis CLI (st) not installed beside this interpreter")
    toml = tmp_path / "schemathesis.toml"
    toml.write_text(SCHEMATHESIS_TOML)
    cmd = [str(st), "--config-file", str(toml), "--no-color", "run",
           f"https://localhost:{served.server.port}/api/v1/openapi.json",
           "--checks", "all", "--max-examples", "20", "--workers", "1",
           "--request-timeout", "10", "--tls-verify", str(served.pki.ca),
           "-H", f"Authorization: Bearer {served.tokens['admin']}"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    tail = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    assert "No issues found" in run.stdout, tail


# --- slow clients ---------------------------------------------------------------------------------


def test_slowloris_does_not_stop_health(served: Served) -> None:
    stop = threading.Event()
    kinds = ["line"] * 20 + ["header"] * 20 + ["tcp"] * 10
    threads = [threading.Thread(target=helpers.slow_http_client, args=(served.address, k, stop, served.pki.ca), daemon=True)
               for k in kinds]
    for t in threads:
        t.start()
    time.sleep(0.5)
    started = time.monotonic()
    try:
        reply = https(served.server.port, "GET", "/api/v1/health", cafile=served.pki.ca, timeout=15)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert reply.status == 200
    assert elapsed < 15, elapsed
    print(f"{served.label}: health answered in {elapsed:.1f} s under 50 slow connections")
    assert "request not complete within" in served.server.output()


# --- plain HTTP for a local reverse proxy ----------------------------------------------------------


@pytest.mark.skipif(not FLAVOURS, reason="needs gunicorn")
def test_ssl_off_serves_plain_http_on_loopback_only(tmp_path: Path, pki: helpers.PKI) -> None:
    _, python, _ = FLAVOURS[-1]
    port = helpers.free_port()
    path = write_config(tmp_path, pki, port=port, ssl_on=False)
    with gunicorn(python, tmp_path, path, port) as server:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/v1/health")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
        conn.close()
        assert "plain HTTP on loopback only" in server.output()
    public = write_config(tmp_path, pki, port=port, ssl_on=False, bind="0.0.0.0")
    run = subprocess.run([python, "-m", "gunicorn", "-c", "python:warden.api.gunicorn_conf", "warden.api.wsgi:app"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(helpers.ROOT), "WARDEN_CONFIG": str(public)})
    assert run.returncode != 0
    assert "api.bind must be a loopback address when api.ssl.enabled is false" in run.stderr
    assert "Traceback" not in run.stderr


# --- supervision ----------------------------------------------------------------------------------


def _health(port: int, ca: Path) -> int:
    try:
        return https(port, "GET", "/api/v1/health", cafile=ca, timeout=5).status
    except OSError:
        return 0


def _wait(predicate: Any, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not FLAVOURS or FLAVOURS[0][1] != sys.executable, reason="needs gunicorn in this interpreter")
def test_supervisor_starts_restarts_and_stops_gunicorn(tmp_path: Path, pki: helpers.PKI) -> None:
    port = helpers.free_port()
    path = write_config(tmp_path, pki, port=port, workers=1)
    cfg = config.load(path, check_files=False)
    sup = APISupervisor(str(path), cfg, min_backoff=0.2, stop_timeout=10)
    sup.start()
    try:
        assert _wait(lambda: _health(port, pki.ca) == 200), "API did not come up"
        assert sup.alive()
        first = sup.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert _wait(lambda: sup.pid not in (None, first) and _health(port, pki.ca) == 200), "no restart"
        assert sup.restarts == 1
        assert sup.reload()
    finally:
        sup.stop()
    assert not sup.alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


SUPERVISED_PARENT = """
import sys, time
from warden import config
from warden.api.supervisor import APISupervisor
sup = APISupervisor(sys.argv[1], config.load(sys.argv[1], check_files=False))
sup.start()
print(sup.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not FLAVOURS or FLAVOURS[0][1] != sys.executable, reason="needs gunicorn in this interpreter")
def test_gunicorn_stops_when_the_pbx_is_killed(tmp_path: Path, pki: helpers.PKI) -> None:
    port = helpers.free_port()
    path = write_config(tmp_path, pki, port=port, workers=1)
    parent = subprocess.Popen([sys.executable, "-c", SUPERVISED_PARENT, str(path)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(helpers.ROOT)})
    child = -1
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        wait_listening(port, None, None)
        parent.kill()  # kill -9 of the PBX: no chance to stop its API
        parent.wait()
        assert _wait(lambda: not _pid_alive(child), 15), "gunicorn outlived the PBX"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if _pid_alive(child):
            os.kill(child, signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not yet reaped by init) is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
