"""SIGHUP re-reads the config: live settings change without dropping
connections; a broken config is refused and the running one stays."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI, free_port, run_in_thread, same_ca_dir
from phones import TLSPhone, UDPPhone, rtp_range

from warden import certtool
from warden.store import Store


def config(pki: PKI, tmp: Path, udp: int, tls: int, require_tls: bool) -> str:
    return f"""
sip: {{listen: [127.0.0.1], udp_port: {udp}, tcp_port: 0, tls_port: {tls}}}
api: {{enabled: false, bind: 127.0.0.1, ssl: {{enabled: true, cert_file: {pki.cert}, key_file: {pki.key}}}}}
security: {{tls_cert_file: {pki.cert}, tls_key_file: {pki.key}, tls_ca_file: {pki.ca}, require_tls: {str(require_tls).lower()}}}
store: {{path: {tmp}/var/warden.db}}
logging: {{level: info, file: ""}}
"""


def hup_and_wait(pbx: Any, marker: str, timeout: float = 10) -> None:
    seen = pbx.output().count(marker)
    assert pbx.proc is not None
    pbx.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while pbx.output().count(marker) <= seen:
        assert time.monotonic() < deadline, f"no {marker!r} after SIGHUP:\n{pbx.output()[-2000:]}"
        time.sleep(0.1)


def test_sighup_applies_require_tls_and_refuses_a_broken_config(pki: PKI, pbx_factory: Any, tmp_path: Path) -> None:
    udp, tls = free_port(), free_port()
    store = Store(tmp_path / "var" / "warden.db")
    store.add_extension("1001", "secret-1001", realm="warden")
    store.close()
    pbx = pbx_factory(config(pki, tmp_path, udp, tls, False), [("127.0.0.1", tls)])
    tls_phone = TLSPhone(("127.0.0.1", tls), pki.ca, "1001", "secret-1001")
    udp_phone = UDPPhone(("127.0.0.1", udp), "1001", "secret-1001")
    try:
        assert tls_phone.register().status == 200
        assert udp_phone.register().status == 200

        pbx.config.write_text(config(pki, tmp_path, udp, tls, True))
        hup_and_wait(pbx, "configuration reloaded")
        assert udp_phone.register().status == 403  # REGISTER over UDP now refused
        assert tls_phone.register().status == 200  # and the TLS phone's connection lived through it

        pbx.config.write_text("security:\n  require_tls: maybe\n")
        hup_and_wait(pbx, "reload refused")
        assert "security.require_tls must be true or false" in pbx.output()
        assert udp_phone.register().status == 403  # the running settings stayed
        assert tls_phone.register().status == 200

        pbx.config.write_text(config(pki, tmp_path, udp + 1 if udp < 32000 else udp - 1, tls, False))
        hup_and_wait(pbx, "configuration reloaded")
        assert "sip listeners changed; that takes a restart" in pbx.output()
        assert udp_phone.register().status == 200  # require_tls off again; the old UDP port still serves
    finally:
        tls_phone.close()
        udp_phone.close()


def peer_certificate(port: int, ca: Path) -> bytes:
    """DER of the certificate a new handshake on ``port`` gets."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def leaf_der(cert_file: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert_file.read_text().split("-----END CERTIFICATE-----")[0]
                                    + "-----END CERTIFICATE-----\n")


def test_sighup_new_certificates_on_every_listener_while_a_tls_call_continues(
        pki: PKI, pbx_factory: Any, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = certs / "server.crt", certs / "server.key"
    shutil.copy2(pki.cert, cert)
    shutil.copy2(pki.key, key)
    main, legacy = free_port(), free_port()
    lo, hi = rtp_range()
    text = f"""
sip: {{listen: [127.0.0.1], udp_port: 0, tcp_port: 0, tls_port: {main},
       tls_listeners: [{{port: {legacy}, profile: legacy-phones}}]}}
api: {{enabled: false, bind: 127.0.0.1, ssl: {{enabled: true, cert_file: {cert}, key_file: {key}}}}}
security: {{tls_cert_file: {cert}, tls_key_file: {key}, tls_ca_file: {pki.ca}}}
media: {{rtp_port_min: {lo}, rtp_port_max: {hi}}}
store: {{path: {tmp_path}/var/warden.db}}
logging: {{level: info, file: ""}}
"""
    store = Store(tmp_path / "var" / "warden.db")
    for n in ("1001", "1002"):
        store.add_extension(n, f"secret-{n}", realm="warden")
    store.close()
    pbx = pbx_factory(text, [("127.0.0.1", main), ("127.0.0.1", legacy)])
    old = leaf_der(cert)
    assert peer_certificate(main, pki.ca) == old and peer_certificate(legacy, pki.ca) == old

    caller = TLSPhone(("127.0.0.1", main), pki.ca, "1001", "secret-1001")
    callee = TLSPhone(("127.0.0.1", legacy), pki.ca, "1002", "secret-1002")
    try:
        caller.register()
        callee.register()
        answered = run_in_thread(callee.answer, 40000)
        call = caller.call("1002", 40002)
        answered.join(10)

        fresh = certtool.generate(same_ca_dir(pki, tmp_path / "new"), sans=["localhost", "127.0.0.1"],
                                  common_name="reloaded.warden.test")
        os.replace(fresh.server_key, key)
        os.replace(fresh.server_cert, cert)
        hup_and_wait(pbx, "configuration reloaded")
        new = leaf_der(cert)
        assert new != old
        assert peer_certificate(main, pki.ca) == new, "main listener still serves the old certificate"
        assert peer_certificate(legacy, pki.ca) == new, "extra listener still serves the old certificate"

        key.write_text("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
        hup_and_wait(pbx, "reload refused")
        assert "private key file is not a valid PEM private key" in pbx.output()
        assert peer_certificate(main, pki.ca) == new and peer_certificate(legacy, pki.ca) == new

        # the call set up before both reloads ends normally, over the same connections
        byes: list[Any] = []
        hung = run_in_thread(lambda: byes.append(callee.answer_bye()))
        assert caller.hang_up(call).status == 200
        hung.join(10)
        assert byes and byes[0].method == "BYE"
        assert caller.register().status == 200 and callee.register().status == 200

        # a listener more (and a new profile on the old one) is a restart, said in the log
        shutil.copy2(pki.key, key)
        shutil.copy2(pki.cert, cert)
        extra = free_port()
        pbx.config.write_text(text.replace(f"profile: legacy-phones}}]", f"profile: modern}}, {{port: {extra}, profile: modern}}]"))
        hup_and_wait(pbx, "configuration reloaded")
        assert f"sip.tls_listeners (added sips-{extra}) changed; that takes a restart" in pbx.output()
        assert peer_certificate(legacy, pki.ca) == old  # the files were put back: served again
        assert f"TLS on sips-{legacy}: profile modern" in pbx.output()
        with pytest.raises(ssl.SSLError):
            ctx = ssl.create_default_context(cafile=str(pki.ca))
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            with socket.create_connection(("127.0.0.1", legacy), timeout=5) as raw:
                ctx.wrap_socket(raw, server_hostname="localhost").close()
        assert callee.register().status == 200  # the TLS 1.3 flow on it lives on
    finally:
        caller.close()
        callee.close()


def warden_cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warden", "--config", str(config_file), *args],
                          capture_output=True, text=True, timeout=30)


def test_reload_command_applies_new_certificates_and_refuses_a_broken_key(
        pki: PKI, pbx_factory: Any, tmp_path: Path) -> None:
    """``warden-pbx reload`` does what SIGHUP does and says whether it took."""
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = certs / "server.crt", certs / "server.key"
    shutil.copy2(pki.cert, cert)
    shutil.copy2(pki.key, key)
    udp, tls = free_port(), free_port()
    text = config(pki, tmp_path, udp, tls, False).replace(str(pki.cert), str(cert)).replace(str(pki.key), str(key))
    pbx = pbx_factory(text, [("127.0.0.1", tls)])
    store = Store(tmp_path / "var" / "warden.db")
    store.add_extension("1001", "secret-1001", realm="warden")
    store.close()
    phone = TLSPhone(("127.0.0.1", tls), pki.ca, "1001", "secret-1001")
    try:
        assert phone.register().status == 200
        fresh = certtool.generate(same_ca_dir(pki, tmp_path / "new"), sans=["localhost", "127.0.0.1"],
                                  common_name="reloaded.warden.test")
        os.replace(fresh.server_key, key)
        os.replace(fresh.server_cert, cert)
        done = warden_cli(pbx.config, "reload")
        assert done.returncode == 0, done.stderr
        assert "reloaded" in done.stdout
        assert peer_certificate(tls, pki.ca) == leaf_der(cert)

        key.write_text("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
        refused = warden_cli(pbx.config, "reload")
        assert refused.returncode == 1
        assert "reload refused" in refused.stderr and "private key" in refused.stderr
        assert peer_certificate(tls, pki.ca) == leaf_der(cert)  # the new certificate still serves
        assert phone.register().status == 200  # over the connection made before both reloads
    finally:
        phone.close()
    pbx.stop()
    gone = warden_cli(pbx.config, "reload")
    assert gone.returncode == 2 and "not running" in gone.stderr
