"""Handshake telemetry end to end: real handshakes, real ``warden-pbx run``, real HTTPS scrapes.

What an admin relies on: every handshake on every listener (SIPS and the API,
whose handshakes happen in gunicorn worker processes) is counted by version,
cipher and outcome, failures by reason, SSLv3/TLS 1.0/1.1 attempts by
version; ``/metrics`` serves it in Prometheus text format to a token or a
trusted address only; registrations carry the phone's User-Agent and TLS
parameters, also after a restart; ``warden-pbx tls report`` shows it all.
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
import warnings
from pathlib import Path
from typing import Any

import pytest

import helpers
from exposition import ExpositionError, Family, parse
from helpers import PKI, PBXProcess, client_context, free_port, handshake, negotiated, openssl_s_client, tls_config

from warden import config
from warden.api.prometheus import Exposition
from warden.handshakes import hello_version
from warden.store import Store

pytestmark = pytest.mark.skipif(not helpers.have("openssl"), reason="needs the openssl command")

PASSWORD = "telemetry-secret-1"


# --- sans-I/O parts ---------------------------------------------------------------------------------


def _client_hello(minimum: ssl.TLSVersion, maximum: ssl.TLSVersion) -> bytes:
    """The bytes a real Python ssl client sends first."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
        ctx.minimum_version, ctx.maximum_version = minimum, maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_offered_version_from_real_client_hellos() -> None:
    v = ssl.TLSVersion
    assert hello_version(_client_hello(v.TLSv1, v.TLSv1_1)) == "TLSv1.1"
    assert hello_version(_client_hello(v.TLSv1, v.TLSv1)) == "TLSv1"
    assert hello_version(_client_hello(v.TLSv1_2, v.TLSv1_2)) == "TLSv1.2"
    # TLS 1.3 clients say 1.2 in client_version (1.3 is in an extension): not deprecated
    assert hello_version(_client_hello(v.TLSv1_2, v.TLSv1_3)) == "TLSv1.2"
    assert hello_version(helpers.sslv3_client_hello()) == "SSLv3"
    assert hello_version(helpers.sslv2_client_hello()) == "SSLv2"
    assert hello_version(b"GET / HTTP/1.1\r\n") is None
    assert hello_version(_client_hello(v.TLSv1, v.TLSv1_1)[:10]) is None  # too short to tell


def test_exposition_escapes_and_parses_back_strictly() -> None:
    out = Exposition()
    out.declare("demo_events_total", "counter", "events\nby kind \\ path")
    out.declare("demo_level", "gauge", "a level")
    tricky = 'a "quoted" \\ value\nwith a newline'
    out.add("demo_events_total", 3, {"kind": tricky, "listener": "sips"})
    out.add("demo_events_total", 2, {"kind": tricky, "listener": "sips"})  # same series adds up
    out.add("demo_level", float("inf"))
    text = out.render()
    assert '\\"quoted\\" \\\\ value\\nwith' in text
    fams = parse(text)
    assert fams["demo_events_total"].type == "counter"
    assert fams["demo_events_total"].help == "events\nby kind \\ path"
    assert fams["demo_events_total"].get(kind=tricky, listener="sips") == 5
    assert fams["demo_level"].get() == float("inf")
    with pytest.raises(ValueError):
        out.declare("demo_events", "counter", "a counter without _total")
    # the parser is strict: these are refused
    for bad in ('demo 1\n', '# TYPE x gauge\nx{a="\\q"} 1\n', '# TYPE x gauge\nx 1\nx 2\n',
                '# TYPE x gauge\nx{a="1"} 1', '# TYPE x counter\nx 1\n', '# TYPE x gauge\ny 1\n'):
        with pytest.raises(ExpositionError):
            parse(bad)


def test_trusted_addresses_for_metrics_without_a_token(tmp_path: Path) -> None:
    from warden.api.auth import trusted_address
    from warden.errors import ConfigError

    default = config.Config().api.metrics_without_token
    assert default == ("127.0.0.0/8", "::1/128")
    assert trusted_address("127.0.0.2", default) and trusted_address("::1", default)
    assert trusted_address("::ffff:127.0.0.1", default)  # a dual-stack listener's view of IPv4 loopback
    assert not trusted_address("192.0.2.7", default) and not trusted_address("::ffff:192.0.2.7", default)
    assert not trusted_address("127.0.0.2", ("127.0.0.1/32",))
    assert not trusted_address("127.0.0.1", ()) and not trusted_address(None, default)
    assert not trusted_address("not-an-address", default)
    bad = tmp_path / "bad.yml"
    bad.write_text("api:\n  metrics_without_token: [127.0.0.1, banana]\n")
    with pytest.raises(ConfigError, match="api.metrics_without_token.*banana"):
        config.load(bad, check_files=False)


# --- against a real warden-pbx run -------------------------------------------------------------------


def _https(port: int, path: str, ca: Path, *, token: str | None = None, source: str = "127.0.0.1",
           ) -> tuple[int, dict[str, str], bytes]:
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10, source_address=(source, 0))
    conn.host = "127.0.0.1"  # connect to the IPv4 loopback; the certificate is for "localhost"
    try:
        conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10,
                                                              source_address=(source, 0)),
                                    server_hostname="localhost")
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _wait(check: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ExpositionError, KeyError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout}s (last: {last!r})")


def _garbage(port: int, data: bytes) -> None:
    """A plain-TCP client that speaks something else on a TLS port."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.settimeout(5)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass


def _start(tmp_path: Path, pki: PKI, name: str = "pbx", *, trusted: str = "[127.0.0.1/32]",
           ports: tuple[int, int] | None = None) -> tuple[PBXProcess, int, int, dict[str, str]]:
    sips, api = ports or (free_port(), free_port())
    text = tls_config(pki, sips, api_port=api).replace(
        f"  port: {api}\n", f"  port: {api}\n  workers: 2\n  metrics_without_token: {trusted}\n")
    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    proc = PBXProcess(workdir, text)
    cfg = config.load(proc.config, check_files=False)
    tokens: dict[str, str] = {}
    with Store(cfg.store.path) as store:
        if store.get_extension("1001") is None:
            for number in ("1001", "1002"):
                store.add_extension(number, PASSWORD, realm=cfg.sip.realm)
            tokens = {role: store.create_token(f"t-{role}", role)[1] for role in ("admin", "viewer")}
    proc.start([("127.0.0.1", sips), ("127.0.0.1", api)])
    _wait(lambda: _https(api, "/api/v1/health", pki.ca)[0] == 200, "API answers")
    return proc, sips, api, tokens


def _scrape(api: int, ca: Path) -> dict[str, Family]:
    status, headers, body = _https(api, "/metrics", ca)
    assert status == 200, body
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(body.decode("utf-8"))


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def test_metrics_count_real_handshakes_on_sips_and_api(tmp_path: Path, pki: PKI) -> None:
    proc, sips, api, tokens = _start(tmp_path, pki)
    try:
        old = ("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        for port in (sips, api):
            assert negotiated(openssl_s_client(("127.0.0.1", port), "-tls1_2", cafile=pki.ca).stdout)[0] == "TLSv1.2"
            assert negotiated(openssl_s_client(("127.0.0.1", port), *old, cafile=pki.ca).stdout) == (None, None)
        assert handshake(client_context(pki.ca), ("127.0.0.1", sips), echo=False).version == "TLSv1.3"
        _garbage(sips, b"OPTIONS sip:1001@127.0.0.1 SIP/2.0\r\n\r\n")
        _garbage(api, b"GET /metrics HTTP/1.0\r\n\r\n")

        def counted() -> dict[str, Family] | None:
            fams = _scrape(api, pki.ca)
            fail = fams["warden_tls_handshake_failures_total"]
            ok = (fail.get(listener="api", reason="protocol too old") == 1
                  and fail.get(listener="api", reason="not TLS (plain HTTP)") == 1
                  and fams["warden_tls_deprecated_protocol_attempts_total"].get(listener="api", version="TLSv1.1") == 1
                  # earlier scrapes by this test (Python's ssl), reported by whichever worker served them
                  and fams["warden_tls_handshakes_total"].total(listener="api", outcome="success",
                                                                version="TLSv1.3") >= 2)
            return fams if ok else None

        fams = _wait(counted, "the API workers' handshake counts reach the PBX")
        hs = fams["warden_tls_handshakes_total"]
        assert hs.type == "counter"
        # SIPS: one TLS 1.2 (openssl), one TLS 1.3 (Python); failures: TLS 1.1 refused, garbage is not TLS
        assert hs.total(listener="sips", outcome="success", version="TLSv1.2") == 1
        assert hs.total(listener="sips", outcome="success", version="TLSv1.3") == 1
        fail = fams["warden_tls_handshake_failures_total"]
        assert fail.get(listener="sips", reason="protocol too old") == 1
        assert fail.get(listener="sips", reason="not TLS") == 1
        for listener in ("sips", "api"):
            assert hs.get(listener=listener, outcome="failure", version="", cipher="") == fail.total(listener=listener)
        dep = fams["warden_tls_deprecated_protocol_attempts_total"]
        assert dep.get(listener="sips", version="TLSv1.1") == 1
        assert dep.total() == 2  # the TLS 1.2 and 1.3 clients are not counted as deprecated
        # API: the openssl TLS 1.2 one, and TLS 1.3 scrapes by this test (Python's ssl)
        assert hs.total(listener="api", outcome="success", version="TLSv1.2") == 1
        assert hs.total(listener="api", outcome="success", version="TLSv1.3") >= 2
        # the logs say it at WARNING, with the peer
        out = proc.output()
        assert out.count("deprecated-protocol attempt") == 2, out[-3000:]
        assert "TLS handshake on sips from 127.0.0.1" in out and "TLSv1.1 offered" in out

        # certificate expiry, per listener, from the same certificate file
        from warden.tls import inspect_certificate

        info, _chain = inspect_certificate(str(pki.cert), str(pki.key))
        for listener in ("sips", "api"):
            exp = fams["warden_tls_certificate_expiry_seconds"].total(listener=listener)
            assert abs(exp - (info.not_after.timestamp() - time.time())) < 120
            assert fams["warden_tls_certificate_expiry_level"].total(listener=listener) == 0
            assert fams["warden_tls_certificate_not_after_timestamp_seconds"].total(listener=listener) == \
                info.not_after.timestamp()
        assert fams["warden_pbx_up"].get() == 1
        assert 0 < fams["warden_pbx_uptime_seconds"].get() < 600
        assert fams["warden_registrations"].get(transport="tls") == 0
        assert fams["warden_calls_active"].get() == 0
        assert fams["warden_sip_malformed_messages_total"].type == "counter"

        # the same numbers in the API's TLS statistics
        status, _h, body = _https(api, "/api/v1/tls/stats", pki.ca, token=tokens["viewer"])
        stats = json.loads(body)["listeners"]
        assert status == 200 and {"sips", "api"} <= set(stats)
        assert {"listener": "api", "transport": "tls", "version": "TLSv1.1", "count": 1} in stats["api"]["deprecated"]

        # a gunicorn worker killed outright: the totals live in the PBX and survive it
        before = hs.total(listener="api", outcome="success")
        master = next(p for p in _children(proc.proc.pid) if b"gunicorn" in Path(f"/proc/{p}/cmdline").read_bytes())
        workers = _children(master)
        assert len(workers) == 2
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        _wait(lambda: len(set(_children(master)) - set(workers)) == 2, "gunicorn replaces both workers")

        def grown() -> dict[str, Family] | None:
            fams = _scrape(api, pki.ca)  # each scrape is one more API handshake, reported within 2 s
            return fams if fams["warden_tls_handshakes_total"].total(listener="api", outcome="success") > before \
                else None

        after = _wait(grown, "the totals go on from where they were")
        assert after["warden_tls_handshake_failures_total"].get(listener="api", reason="protocol too old") == 1
    finally:
        proc.stop()


def test_metrics_need_a_token_from_an_untrusted_address(tmp_path: Path, pki: PKI) -> None:
    """Only 127.0.0.1 is trusted here; 127.0.0.2 is loopback too, yet an untrusted client."""
    proc, _sips, api, tokens = _start(tmp_path, pki)
    try:
        assert _https(api, "/metrics", pki.ca, source="127.0.0.1")[0] == 200
        status, headers, body = _https(api, "/metrics", pki.ca, source="127.0.0.2")
        assert status == 401 and headers["content-type"] == "application/problem+json"
        assert json.loads(body)["status"] == 401 and headers["www-authenticate"].startswith("Bearer")
        status, _h, body = _https(api, "/metrics", pki.ca, source="127.0.0.2", token=tokens["viewer"])
        assert status == 200 and b"# TYPE warden_tls_handshakes_total counter" in body
        # a wrong token is refused even from the trusted address (it asked to be checked)
        assert _https(api, "/metrics", pki.ca, source="127.0.0.1", token="wdn_wrong")[0] == 401
        # other routes are unaffected by the trusted list
        assert _https(api, "/api/v1/status", pki.ca, source="127.0.0.1")[0] == 401
    finally:
        proc.stop()


def _tls_report(proc: PBXProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warden", "--config", str(proc.config), "tls", "report", *extra],
                          capture_output=True, text=True, timeout=30)


def test_registrations_show_user_agent_and_tls_in_api_and_report_and_survive_restart(
        tmp_path: Path, pki: PKI) -> None:
    from phones import TLSPhone

    proc, sips, api, tokens = _start(tmp_path, pki)
    tls12 = ssl.create_default_context(cafile=str(pki.ca))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    tls12.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    phones = [TLSPhone(("127.0.0.1", sips), pki.ca, "1001", PASSWORD, user_agent="Yealink SIP-T54W 96.86.0.70"),
              TLSPhone(("127.0.0.1", sips), pki.ca, "1002", PASSWORD, user_agent="Polycom/5.9 \"VVX\"",
                       context=tls12)]
    try:
        for phone in phones:
            assert phone.register().status == 200
        status, _h, body = _https(api, "/api/v1/registrations", pki.ca, token=tokens["viewer"])
        assert status == 200
        items = {r["aor"]: r for r in json.loads(body)["items"]}
        assert items["1001"]["user_agent"] == "Yealink SIP-T54W 96.86.0.70"
        assert items["1001"]["tls_version"] == "TLSv1.3" and items["1001"]["tls_cipher"].startswith("TLS_")
        assert items["1002"] | {} and items["1002"]["user_agent"] == 'Polycom/5.9 "VVX"'
        assert (items["1002"]["tls_version"], items["1002"]["tls_cipher"]) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")

        report = _tls_report(proc)
        assert report.returncode == 0, report.stderr
        lines = report.stdout.splitlines()
        yealink = next(line for line in lines if line.startswith("Yealink SIP-T54W 96.86.0.70"))
        polycom = next(line for line in lines if line.startswith('Polycom/5.9 "VVX"'))
        assert "TLSv1.3" in yealink and yealink.rstrip().endswith("1001")
        assert "TLSv1.2" in polycom and "ECDHE-RSA-AES128-GCM-SHA256" in polycom
        # aligned: the columns start at the same offsets on every row of the phones table
        header = next(line for line in lines if line.startswith("USER-AGENT"))
        assert yealink.index("tls ") == polycom.index("tls ") == header.index("TRANSPORT")
        sips_rows = [line for line in lines if line.startswith("sips ") and "TLSv1." in line]
        assert any("TLSv1.2" in r and "ECDHE-RSA-AES128-GCM-SHA256" in r for r in sips_rows), report.stdout
        as_json = json.loads(_tls_report(proc, "--json").stdout)
        assert {p["user_agent"] for p in as_json["phones"]} == {"Yealink SIP-T54W 96.86.0.70", 'Polycom/5.9 "VVX"'}

        fams = _scrape(api, pki.ca)
        assert fams["warden_registrations"].get(transport="tls") == 2
        assert fams["warden_sip_requests_received_total"].get(method="REGISTER") == 4
        assert fams["warden_sip_responses_sent_total"].get(code="401") == 2
    finally:
        for phone in phones:
            phone.close()
        assert proc.stop() == 0

    # not running: a clear error, exit 1
    down = _tls_report(proc)
    assert down.returncode == 1 and "PBX not running" in down.stderr and "Traceback" not in down.stderr

    # the bindings, with their User-Agent and TLS parameters, survive a restart
    again, _sips, api2, _tokens = _start(tmp_path, pki, ports=(sips, api))
    try:
        status, _h, body = _https(api2, "/api/v1/registrations", pki.ca, token=tokens["viewer"])
        items = {r["aor"]: r for r in json.loads(body)["items"]}
        assert json.loads(body)["source"] == "pbx"
        assert items["1001"]["user_agent"] == "Yealink SIP-T54W 96.86.0.70"
        assert items["1002"]["tls_cipher"] == "ECDHE-RSA-AES128-GCM-SHA256"
        report = _tls_report(again)
        assert report.returncode == 0 and 'Polycom/5.9 "VVX"' in report.stdout
    finally:
        again.stop()


@pytest.mark.skipif(not helpers.have("baresip"), reason="needs baresip")
def test_baresip_phone_shows_its_user_agent_and_tls(tmp_path: Path, pki: PKI) -> None:
    from phones import BaresipPhone, rtp_range

    from helpers import free_port_block

    proc, sips, api, tokens = _start(tmp_path, pki)
    phone = BaresipPhone(tmp_path / "baresip", "1001", PASSWORD, pbx_port=sips, ca=pki.ca,
                         sip_port=free_port_block(6), tone=440.0, rtp_ports=rtp_range())
    try:
        phone.start()
        phone.wait_for(r"\{0/TLS/v4\} 200 OK")
        status, _h, body = _https(api, "/api/v1/registrations", pki.ca, token=tokens["viewer"])
        [reg] = json.loads(body)["items"]
        assert status == 200 and reg["aor"] == "1001" and reg["transport"] == "tls"
        assert reg["user_agent"].startswith("baresip v"), reg
        assert reg["tls_version"] == "TLSv1.3" and reg["tls_cipher"].startswith("TLS_")
        report = _tls_report(proc)
        row = next(line for line in report.stdout.splitlines() if line.startswith("baresip v"))
        assert "TLSv1.3" in row and row.rstrip().endswith("1001")
    finally:
        phone.stop()
        proc.stop()


def test_bad_handshake_reports_are_refused_and_the_pbx_keeps_serving(tmp_path: Path, pki: PKI) -> None:
    from warden.control import ControlClient, ControlError
    from warden.control.location import control_path

    proc, sips, api, _tokens = _start(tmp_path, pki)
    try:
        client = ControlClient(control_path(config.load(proc.config, check_files=False)))
        for bad in ({"ok": [], "failed": []}, {"pid": "1", "ok": [], "failed": []},
                    {"pid": 1, "ok": {}, "failed": []}, {"pid": 1, "ok": [], "failed": [], "deprecated": "TLSv1.1"}):
            with pytest.raises(ControlError) as err:
                client.call("tls.api_report", **bad)
            assert err.value.status == 400
        # malformed items inside a report are skipped, the rest counts
        assert client.call("tls.api_report", pid=1, ok=[["TLSv1.3", "TLS_AES_128_GCM_SHA256", 2], ["x"]],
                           failed=[["UNSUPPORTED_PROTOCOL", "many"]], deprecated=[["TLSv1", 3]])["stored"]
        fams = _scrape(api, pki.ca)
        assert fams["warden_tls_handshakes_total"].get(
            listener="api", outcome="success", version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256") == 2
        assert fams["warden_tls_deprecated_protocol_attempts_total"].get(listener="api", version="TLSv1") == 3
        assert handshake(client_context(pki.ca), ("127.0.0.1", sips), echo=False).ok
        client.close()
    finally:
        proc.stop()
