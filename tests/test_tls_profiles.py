"""TLS profiles per listener, dual certificates, mutual TLS and session
tickets, proved against a real ``warden-pbx run`` with ``openssl s_client``,
Python's ssl and SIP phones over real sockets."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI, ROOT, free_port, make_client_cert, make_ecdsa_leaf, openssl_s_client
from phones import TLSPhone

from warden.control import ControlClient
from warden.store import Store
from warden.tls import POLICIES

LO = "127.0.0.1"
OLD = ("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")


def write_config(pki: PKI, tmp: Path, *, tls: int, listeners: str = "", security: str = "",
                 api_port: int = 0, api_profile: str = "") -> str:
    return f"""
sip:
  listen: [127.0.0.1]
  udp_port: 0
  tcp_port: 0
  tls_port: {tls}
  tls_handshake_timeout: 2
  tls_listeners: {listeners or '[]'}
api:
  enabled: {'true' if api_port else 'false'}
  bind: 127.0.0.1
  port: {api_port or 9000}
  workers: 1
  ssl: {{enabled: true, cert_file: {pki.cert}, key_file: {pki.key}{f', profile: {api_profile}' if api_profile else ''}}}
security:
  tls_cert_file: {pki.cert}
  tls_key_file: {pki.key}
  tls_ca_file: {pki.ca}
{security}
store: {{path: {tmp}/var/warden.db}}
logging: {{level: info, file: ""}}
"""


def add_extensions(tmp: Path, *numbers: str) -> None:
    store = Store(tmp / "var" / "warden.db")
    for n in numbers:
        store.add_extension(n, f"secret-{n}", realm="warden")
    store.close()


def s_client(port: int, *args: str, pki: PKI) -> str:
    return openssl_s_client((LO, port), *args, cafile=pki.ca, hold=0.3).stdout


def connected(out: str) -> tuple[str, str] | None:
    """(protocol, cipher) of a completed handshake in s_client's output, else None."""
    proto = re.search(r"^\s*Protocol\s*:\s*(\S+)", out, re.M)
    cipher = re.search(r"^\s*Cipher\s*:\s*(\S+)", out, re.M)
    if not proto or not cipher or cipher.group(1) in ("0000", "(NONE)"):
        return None
    return proto.group(1), cipher.group(1)


def tls_stats(pbx: Any) -> dict[str, Any]:
    with ControlClient(pbx.workdir.parent / "var" / "warden.sock") as client:
        return client.call("tls.stats")  # type: ignore[no-any-return]


def failures(stats: dict[str, Any], listener: str) -> dict[str, int]:
    return {f["reason"]: f["count"] for f in stats[listener]["failures"]}


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.fixture()
def profiles_pbx(pki: PKI, pbx_factory: Any, tmp_path: Path) -> Any:
    """One PBX: the main SIPS port (intermediate), a legacy-phones and a modern listener, the API."""
    main, legacy, modern, api = free_port(), free_port(), free_port(), free_port()
    listeners = f"[{{port: {legacy}, profile: legacy-phones}}, {{port: {modern}, profile: modern, name: modern-only}}]"
    text = write_config(pki, tmp_path, tls=main, listeners=listeners, api_port=api)
    add_extensions(tmp_path, "1001")
    pbx = pbx_factory(text, [(LO, main), (LO, legacy), (LO, modern), (LO, api)])
    pbx.ports = {"sips": main, f"sips-{legacy}": legacy, "modern-only": modern, "api": api}
    return pbx


def test_each_listener_negotiates_its_profile(profiles_pbx: Any, pki: PKI, tmp_path: Path) -> None:
    ports = profiles_pbx.ports
    legacy_name = next(n for n in ports if n.startswith("sips-"))
    cbc = ("-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA")

    assert connected(s_client(ports[legacy_name], *cbc, pki=pki)) == ("TLSv1.2", "ECDHE-RSA-AES128-SHA")
    assert connected(s_client(ports[legacy_name], "-tls1_2", "-cipher", "AES256-SHA", pki=pki)) == ("TLSv1.2", "AES256-SHA")
    assert connected(s_client(ports["sips"], *cbc, pki=pki)) is None
    assert connected(s_client(ports["api"], *cbc, pki=pki)) is None
    assert connected(s_client(ports["modern-only"], "-tls1_2", pki=pki)) is None
    assert connected(s_client(ports["modern-only"], "-tls1_3", pki=pki))[0] == "TLSv1.3"  # type: ignore[index]
    # what legacy-phones still never allows
    for weak in ("DES-CBC3-SHA", "RC4-SHA", "NULL-SHA256", "EXP-RC4-MD5"):
        out = s_client(ports[legacy_name], "-tls1_2", "-cipher", f"{weak}@SECLEVEL=0", pki=pki)
        assert connected(out) is None, out
    # the default (intermediate) TLS 1.2 choice is ECDHE with AEAD
    proto, cipher = connected(s_client(ports["sips"], "-tls1_2", pki=pki)) or ("", "")
    assert proto == "TLSv1.2" and cipher.startswith("ECDHE-RSA-") and ("GCM" in cipher or "CHACHA" in cipher)

    for name, port in ports.items():
        out = s_client(port, *OLD, pki=pki)
        assert connected(out) is None, f"{name} accepted TLS 1.1:\n{out}"

    for name in ports:
        pattern = (rf"WARNING\]? .*TLS handshake on {name} from 127\.0\.0\.1:\d+ failed: protocol too old "
                   r"\(deprecated-protocol attempt")
        assert wait_for(lambda: re.search(pattern, profiles_pbx.output())), \
            f"no deprecated-protocol WARNING for {name}:\n{profiles_pbx.output()[-3000:]}"
    stats = wait_for(lambda: (s := tls_stats(profiles_pbx)) and all(
        n in s and failures(s, n).get("protocol too old") for n in ports) and s, timeout=10)
    for name in ports:
        assert failures(stats, name)["protocol too old"] == 1, stats[name]
        assert all(f["listener"] == name for f in stats[name]["failures"])
    assert failures(stats, "modern-only")["TLS 1.2 refused (listener is TLS 1.3 only)"] == 1  # not a deprecated one
    assert failures(stats, "sips")["no shared cipher"] >= 1 and failures(stats, "api")["no shared cipher"] >= 1
    assert stats["api"]["profile"] == "intermediate"
    assert connected(s_client(ports["api"], "-tls1_2", pki=pki)) == ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")
    stats = wait_for(lambda: (s := tls_stats(profiles_pbx)) and s["api"]["handshakes"] and s, timeout=10)
    assert [(h["listener"], h["version"], h["cipher"]) for h in stats["api"]["handshakes"]] == [
        ("api", "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")]
    legacy_ok = {(h["version"], h["cipher"]) for h in stats[legacy_name]["handshakes"]}
    assert ("TLSv1.2", "ECDHE-RSA-AES128-SHA") in legacy_ok and ("TLSv1.2", "AES256-SHA") in legacy_ok
    assert stats[legacy_name]["profile"] == "legacy-phones" and stats["modern-only"]["profile"] == "modern"

    # SIP really works on an extra listener, and the flow's TLS parameters reach the registrar
    phone = TLSPhone((LO, ports[legacy_name]), pki.ca, "1001", "secret-1001")
    try:
        assert phone.register().status == 200
    finally:
        phone.close()
    with ControlClient(profiles_pbx.workdir.parent / "var" / "warden.sock") as client:
        regs = client.call("registrations.list")
        status = client.call("status")
    assert regs[0]["tls_version"] == "TLSv1.3"
    names = {(lst["name"], lst["port"]) for lst in status["listeners"]}
    assert {("sips", ports["sips"]), (legacy_name, ports[legacy_name]), ("modern-only", ports["modern-only"])} <= names
    assert status["tls_listeners"]["modern-only"]["minimum_version"] == "TLSv1.3"
    assert status["tls_listeners"][legacy_name]["max_early_data"] == 0


def run_pbx(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warden", "--config", str(config), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("where", ["security", "listener", "api"])
def test_fips_mode_refuses_any_other_profile(pki: PKI, tmp_path: Path, where: str) -> None:
    port = free_port()
    security = "  fips_mode: true\n" + ("  tls_profile: intermediate\n" if where == "security" else "")
    listeners = f"[{{port: {free_port()}, profile: legacy-phones}}]" if where == "listener" else ""
    config = tmp_path / "config.yml"
    config.write_text(write_config(pki, tmp_path, tls=port, listeners=listeners, security=security,
                                   api_profile="modern" if where == "api" else ""))
    result = run_pbx(config, "run")
    assert result.returncode == 2, result
    key = {"security": "security.tls_profile", "listener": r"sip.tls_listeners\[0\].profile",
           "api": "api.ssl.profile"}[where]
    assert re.search(rf"config.yml:\d+: {key} asks for the '\w[\w-]*' profile, but security.fips_mode forces 'fips'",
                     result.stderr), result.stderr
    with socket.socket() as s:
        assert s.connect_ex((LO, port)) != 0  # nothing started


def test_fips_mode_with_fips_profiles_starts_fips_everywhere(pki: PKI, pbx_factory: Any, tmp_path: Path) -> None:
    main, extra = free_port(), free_port()
    pbx = pbx_factory(write_config(pki, tmp_path, tls=main, listeners=f"[{{port: {extra}, profile: fips}}]",
                                   security="  fips_mode: true\n"), [(LO, main), (LO, extra)])
    for port in (main, extra):
        assert connected(s_client(port, "-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256", pki=pki)) is None
        assert connected(s_client(port, "-tls1_2", pki=pki)) == ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")
    assert "profile fips" in pbx.output()


def test_config_errors_for_listener_lists_name_file_line_and_key(pki: PKI, tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(write_config(pki, tmp_path, tls=free_port(),
                                   listeners="\n    - {port: 5063, profil: legacy-phones}\n    - 7"))
    result = run_pbx(config, "check-config")
    assert result.returncode == 2
    assert re.search(r"config.yml:9: sip.tls_listeners\[0\].profil is not a known setting "
                     r"\(did you mean sip.tls_listeners\[0\].profile\?\)", result.stderr), result.stderr
    assert re.search(r"config.yml:9: sip.tls_listeners\[0\].profile is required", result.stderr)
    assert re.search(r"config.yml:10: sip.tls_listeners\[1\] must be a mapping of settings", result.stderr)


def test_profiles_match_the_config_schema() -> None:
    from warden.config import TLS_PROFILES

    assert tuple(POLICIES) == TLS_PROFILES


# -- dual certificates -------------------------------------------------------------------------


def server_key_kind(out: str) -> str | None:
    """'EC' or 'RSA': the type of the certificate the server presented."""
    m = re.search(r"^Server public key is (\d+) bit", out, re.M)
    if not m:
        return None
    return "EC" if m.group(1) == "256" else "RSA"


def test_dual_certificates_serve_ecdsa_or_rsa_as_the_client_supports(pki: PKI, pbx_factory: Any,
                                                                    tmp_path: Path) -> None:
    ec_cert, ec_key = make_ecdsa_leaf(pki, tmp_path / "ecdsa")
    main, legacy = free_port(), free_port()
    security = f"  tls_ecdsa_cert_file: {ec_cert}\n  tls_ecdsa_key_file: {ec_key}\n"
    pbx = pbx_factory(write_config(pki, tmp_path, tls=main, security=security,
                                   listeners=f"[{{port: {legacy}, profile: legacy-phones}}]"), [(LO, main), (LO, legacy)])
    for port in (main, legacy):
        out = s_client(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", pki=pki)
        assert connected(out) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256") and server_key_kind(out) == "EC", out
        assert "Verify return code: 0 (ok)" in out
        out = s_client(port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", pki=pki)
        assert connected(out) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256") and server_key_kind(out) == "RSA", out
        out = s_client(port, "-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256", pki=pki)
        assert server_key_kind(out) == "EC" and "Verify return code: 0 (ok)" in out, out
        out = s_client(port, "-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256", pki=pki)
        assert server_key_kind(out) == "RSA" and "Verify return code: 0 (ok)" in out, out
    assert "ECDSA certificate" in pbx.output()


def test_dual_certificates_must_be_one_rsa_and_one_ecdsa(pki: PKI, tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    security = f"  tls_ecdsa_cert_file: {pki.cert}\n  tls_ecdsa_key_file: {pki.key}\n"
    config.write_text(write_config(pki, tmp_path, tls=free_port(), security=security))
    result = run_pbx(config, "check-config")
    assert result.returncode == 2 and "holds a RSA key, not an ECDSA one" in result.stderr, result.stderr


# -- session tickets --------------------------------------------------------------------------------


def options_round_trip(sock: ssl.SSLSocket) -> bytes:
    """An OPTIONS and its answer: also lets the client read the TLS 1.3 tickets."""
    local = sock.getsockname()
    sock.sendall((f"OPTIONS sip:{LO} SIP/2.0\r\nVia: SIP/2.0/TLS {local[0]}:{local[1]};branch=z9hG4bK{time.time_ns()}\r\n"
                  f"From: <sip:probe@{LO}>;tag=1\r\nTo: <sip:{LO}>\r\nCall-ID: {time.time_ns()}\r\nCSeq: 1 OPTIONS\r\n"
                  "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
    return sock.recv(65536)


def test_tls13_session_tickets_resume_and_0rtt_is_never_offered(pki: PKI, pbx_factory: Any, tmp_path: Path) -> None:
    main, modern = free_port(), free_port()
    pbx = pbx_factory(write_config(pki, tmp_path, tls=main, listeners=f"[{{port: {modern}, profile: modern}}]"),
                      [(LO, main), (LO, modern)])
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    for port in (main, modern):
        with socket.create_connection((LO, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.3" and not tls.session_reused
            assert options_round_trip(tls).startswith(b"SIP/2.0 200")
            session = tls.session
        assert session is not None and session.has_ticket
        with socket.create_connection((LO, port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            assert tls.session_reused, f"no TLS 1.3 resumption on port {port}"
            assert options_round_trip(tls).startswith(b"SIP/2.0 200")
    sess = tmp_path / "sess.pem"
    out = s_client(main, "-tls1_3", "-sess_out", str(sess), pki=pki)
    assert re.search(r"Max Early Data: 0\b", out), out  # the tickets allow no 0-RTT
    early = tmp_path / "early.txt"
    early.write_bytes(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    out = s_client(main, "-tls1_3", "-sess_in", str(sess), "-early_data", str(early), pki=pki)
    assert "Reused, TLSv1.3" in out and "Early data was accepted" not in out, out
    assert pbx.proc.poll() is None


# -- mutual TLS ---------------------------------------------------------------------------------------


def test_client_certificates_required_and_bound_to_the_extension(pki: PKI, pbx_factory: Any, tmp_path: Path) -> None:
    from helpers import temp_pki

    c1001 = make_client_cert(pki, tmp_path / "clients", "1001")
    main, optional = free_port(), free_port()
    security = (f"  tls_verify_client: required\n  tls_client_ca_file: {pki.ca}\n"
                "  tls_client_cert_binds_extension: true\n")
    listeners = f"[{{port: {optional}, profile: intermediate, verify_client: optional, name: phones-opt}}]"
    add_extensions(tmp_path, "1001", "1002")
    pbx = pbx_factory(write_config(pki, tmp_path, tls=main, security=security, listeners=listeners),
                      [(LO, main), (LO, optional)])

    # no certificate: refused in the handshake (TLS 1.3 reports it on the first read)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        phone = TLSPhone((LO, main), pki.ca, "1001", "secret-1001")
        try:
            phone.register()
        finally:
            phone.close()
    # a certificate from another CA: refused too
    with temp_pki() as other:
        stranger = make_client_cert(other, tmp_path / "stranger", "1001")
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            phone = TLSPhone((LO, main), pki.ca, "1001", "secret-1001", cert=stranger)
            try:
                phone.register()
            finally:
                phone.close()
    stats = wait_for(lambda: (s := tls_stats(pbx)) and len(failures(s, "sips")) >= 2 and s)
    assert failures(stats, "sips").get("client certificate missing") == 1, stats["sips"]
    assert failures(stats, "sips").get("bad client certificate") == 1, stats["sips"]
    assert not stats["sips"]["handshakes"]

    # the CA's certificate for 1001 registers 1001 (digest still asked) ...
    phone = TLSPhone((LO, main), pki.ca, "1001", "secret-1001", cert=c1001)
    try:
        assert phone.register().status == 200
    finally:
        phone.close()
    # ... but not 1002, even with 1002's password
    phone = TLSPhone((LO, main), pki.ca, "1002", "secret-1002", cert=c1001)
    try:
        refused = phone.register(expect=403)
        assert "Certificate" in refused.reason
    finally:
        phone.close()
    assert "REGISTER from 127.0.0.1" in pbx.output() and "its client certificate names 1001" in pbx.output()

    # optional: no certificate is digest only; a certificate still binds
    for cert, user, status in ((None, "1002", 200), (c1001, "1002", 403), (c1001, "1001", 200)):
        phone = TLSPhone((LO, optional), pki.ca, user, f"secret-{user}", cert=cert)
        try:
            assert phone.register(expect=status).status == status
        finally:
            phone.close()


def test_certificate_names_from_getpeercert() -> None:
    from warden.transport.stream import certificate_names

    cert = {"subject": ((("organizationName", "Acme"),), (("commonName", "1001"),)),
            "subjectAltName": (("URI", "sip:1001@pbx.example"), ("URI", "sips:2001@pbx.example;x=1"),
                               ("URI", "https://example.com/"), ("URI", "sip:pbx.example"), ("DNS", "phone1"))}
    assert certificate_names(cert) == ("1001", "2001", "phone1")
    assert certificate_names({}) == ()


def test_a_resumed_session_keeps_the_client_certificate_identity(pki: PKI, tmp_path: Path) -> None:
    """Resumption must not bypass the certificate binding: the identity comes with the session."""
    from warden.tls import TLSManager
    from warden.transport import Listener, StreamServer

    class Names:
        def on_open(self, conn: Any) -> None: ...

        def on_data(self, conn: Any, data: bytes) -> None:
            conn.send(repr(conn.peer_cert_names).encode())

        def on_close(self, conn: Any, reason: str) -> None: ...

    cert = make_client_cert(pki, tmp_path / "clients", "1001")
    manager = TLSManager(pki.cert, pki.key, verify_client="optional", client_ca_file=pki.ca)
    server = StreamServer([Listener(LO, 0)], Names(), context_factory=manager.server_context, name="mtls")
    server.start()
    try:
        address = (LO, server.addresses[0][1])
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.load_cert_chain(*cert)
        session = None
        for attempt in range(2):
            with socket.create_connection(address, timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"?")
                assert tls.recv(100) == b"('1001',)"
                assert tls.session_reused is (attempt == 1)
                session = tls.session
        plain = ssl.create_default_context(cafile=str(pki.ca))
        with socket.create_connection(address, timeout=5) as raw, plain.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"?")
            assert tls.recv(100) == b"None"
    finally:
        server.stop()


def test_a_listener_port_in_use_stops_start_with_its_address(pki: PKI, tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind((LO, 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        config = tmp_path / "config.yml"
        config.write_text(write_config(pki, tmp_path, tls=free_port(), listeners=f"[{{port: {port}, profile: modern}}]"))
        result = run_pbx(config, "run")
        assert result.returncode == 1, result
        assert f"cannot bind 127.0.0.1:{port}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    finally:
        busy.close()


def test_sighup_applies_a_new_api_profile(pki: PKI, pbx_factory: Any, tmp_path: Path) -> None:
    import signal

    main, api = free_port(), free_port()
    pbx = pbx_factory(write_config(pki, tmp_path, tls=main, api_port=api), [(LO, main), (LO, api)])
    assert connected(s_client(api, "-tls1_2", pki=pki)) is not None
    pbx.config.write_text(write_config(pki, tmp_path, tls=main, api_port=api, api_profile="modern"))
    assert pbx.proc is not None
    pbx.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "TLS on api: profile modern" in pbx.output(), timeout=15), pbx.output()[-3000:]
    # the old workers finish gracefully; new connections get the new profile
    assert wait_for(lambda: connected(s_client(api, "-tls1_2", pki=pki)) is None, timeout=15)
    assert connected(s_client(api, "-tls1_3", pki=pki)) is not None
