"""``warden-pbx run`` as an admin sees it: the SIPS port checked with the real
``openssl s_client``, bad clients dropped, clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from typing import Any

import pytest
from helpers import PKI, client_context, free_port, handshake, negotiated, openssl_s_client, tls_config

LO = "127.0.0.1"


@pytest.fixture()
def pbx(pki: PKI, pbx_factory: Any) -> Any:
    port = free_port()
    proc = pbx_factory(tls_config(pki, port), [(LO, port), ("::1", port)])
    proc.address = (LO, port)
    return proc


@pytest.fixture()
def fips_pbx(pki: PKI, pbx_factory: Any) -> Any:
    port = free_port()
    proc = pbx_factory(tls_config(pki, port, fips=True), [(LO, port)])
    proc.address = (LO, port)
    return proc


def test_s_client_sees_tls13_and_verifies(pbx: Any, pki: PKI) -> None:
    out = openssl_s_client(pbx.address, "-tls1_3", cafile=pki.ca).stdout
    assert "Protocol  : TLSv1.3" in out, out
    assert "Verify return code: 0 (ok)" in out
    out6 = openssl_s_client(("::1", pbx.address[1]), "-tls1_3", cafile=pki.ca).stdout
    assert negotiated(out6)[0] == "TLSv1.3"


def test_s_client_tls12_gets_ecdhe_aes_gcm(pbx: Any, pki: PKI) -> None:
    protocol, cipher = negotiated(openssl_s_client(pbx.address, "-tls1_2", cafile=pki.ca).stdout)
    assert protocol == "TLSv1.2"
    assert cipher is not None and cipher.startswith("ECDHE-RSA-AES") and "GCM" in cipher


@pytest.mark.parametrize("flag", ["-tls1_1", "-tls1"])
def test_s_client_old_protocols_fail(pbx: Any, pki: PKI, flag: str) -> None:
    result = openssl_s_client(pbx.address, flag, "-cipher", "DEFAULT@SECLEVEL=0", cafile=pki.ca)
    assert negotiated(result.stdout) == (None, None), result.stdout
    assert "alert protocol version" in result.stdout
    assert "protocol too old" in pbx.output()


def test_fips_process_restricts_tls12_and_tls13(fips_pbx: Any, pki: PKI) -> None:
    def run(*args: str) -> tuple[str | None, str | None]:
        return negotiated(openssl_s_client(fips_pbx.address, *args, cafile=pki.ca).stdout)

    assert run("-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256") == (None, None)
    assert run("-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256") == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    assert run("-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305") == (None, None)
    assert run("-tls1_2") == ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")


def test_normal_process_allows_chacha(pbx: Any, pki: PKI) -> None:
    out = openssl_s_client(pbx.address, "-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256", cafile=pki.ca).stdout
    assert negotiated(out) == ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")


def test_bad_clients_do_not_stop_good_ones(pbx: Any, pki: PKI) -> None:
    silent = [socket.create_connection(pbx.address) for _ in range(20)]  # never send a byte
    garbage = socket.create_connection(pbx.address)
    garbage.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 4)
    half = socket.create_connection(pbx.address)
    half.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello header, then nothing
    try:
        ok = handshake(client_context(pki.ca), pbx.address, echo=False)
        assert ok.version == "TLSv1.3", ok
        # the silent ones are dropped once the 2 s handshake timeout passes
        deadline = time.monotonic() + 6
        for s in silent:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            assert s.recv(1) == b"", "silent client was not dropped"
        assert "timed out" in pbx.output()
        assert "not TLS" in pbx.output()
    finally:
        for s in [*silent, garbage, half]:
            s.close()
    assert handshake(client_context(pki.ca), pbx.address, echo=False).ok


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown(pbx: Any, pki: PKI, sig: int) -> None:
    held = client_context(pki.ca).wrap_socket(socket.create_connection(pbx.address), server_hostname="localhost")
    try:
        assert pbx.stop(sig) == 0
        out = pbx.output()
        assert "shutting down" in out and "stopped" in out
        assert "Traceback" not in out
        held.settimeout(3)
        try:
            assert held.recv(1) == b""
        except (ssl.SSLError, ConnectionResetError):
            pass
    finally:
        held.close()
    with pytest.raises(OSError):
        socket.create_connection(pbx.address, timeout=1).close()
