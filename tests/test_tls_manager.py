"""TLSManager: clear errors for bad certificate files, enforce_fips refusals,
reporting, and reload that keeps the old certificate when the new one is bad."""

from __future__ import annotations

import datetime
import shutil
import ssl
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from helpers import PKI, client_context, handshake, make_pki, tls_server

from warden import _libssl
from warden.errors import CertificateError, TLSPolicyError
from warden.tls import TLSManager


def copy_pki(pki: PKI, dest: Path) -> PKI:
    dest.mkdir(exist_ok=True)
    for f in (pki.ca, pki.cert, pki.key):
        shutil.copy2(f, dest / f.name)
    return PKI(dest, dest / pki.ca.name, dest / pki.cert.name, dest / pki.key.name)


def self_signed(dest: Path, key: object, algorithm: hashes.HashAlgorithm | None = None) -> tuple[Path, Path]:
    """A throwaway certificate with the key and signature hash a test needs."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())  # type: ignore[attr-defined]
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, algorithm if algorithm is not None else hashes.SHA256())  # type: ignore[arg-type]
    )
    dest.mkdir(exist_ok=True)
    cert_file, key_file = dest / "server.crt", dest / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


def test_missing_files_are_named(pki: PKI, tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=f"certificate file not found: {tmp_path}/nope.crt"):
        TLSManager(tmp_path / "nope.crt", pki.key)
    with pytest.raises(CertificateError, match=f"private key file not found: {tmp_path}/nope.key"):
        TLSManager(pki.cert, tmp_path / "nope.key")


def test_world_readable_key_refused(pki: PKI, tmp_path: Path) -> None:
    local = copy_pki(pki, tmp_path)
    local.key.chmod(0o644)
    with pytest.raises(CertificateError, match=r"readable by others \(mode 0644\).*chmod 600"):
        TLSManager(local.cert, local.key)
    local.key.chmod(0o640)  # group-readable (root:warden) is the packaged layout
    TLSManager(local.cert, local.key)


def test_unreadable_key(pki: PKI, tmp_path: Path) -> None:
    (tmp_path / "dir.key").mkdir()
    with pytest.raises(CertificateError, match=f"private key file cannot be read: {tmp_path}/dir.key"):
        TLSManager(pki.cert, tmp_path / "dir.key")


def test_mismatched_key_garbage_and_encrypted(pki: PKI, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    with pytest.raises(CertificateError, match="private key does not match the certificate"):
        TLSManager(pki.cert, other.key)
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("hello\n")
    with pytest.raises(CertificateError, match="holds no PEM certificate"):
        TLSManager(garbage, pki.key)
    enc = tmp_path / "enc.key"
    key = serialization.load_pem_private_key(pki.key.read_bytes(), None)
    enc.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"secret")))
    enc.chmod(0o600)
    with pytest.raises(CertificateError, match="encrypted") as info:
        TLSManager(pki.cert, enc)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    "make_key, algorithm, reason",
    [
        (lambda: rsa.generate_private_key(65537, 1024), None, "RSA key of 1024 bits"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), None, "curve secp521r1 is outside P-256/P-384"),
    ],
)
def test_enforce_fips_refuses_weak_certificates(tmp_path: Path, make_key: object, algorithm: object, reason: str) -> None:
    cert, key = self_signed(tmp_path, make_key(), algorithm)  # type: ignore[operator,arg-type]
    with pytest.raises(TLSPolicyError, match=f"enforce_fips: cannot enforce the FIPS policy: .*{reason}"):
        TLSManager(cert, key, True, enforce_fips=True)


def test_enforce_fips_refuses_sha1_signature(tmp_path: Path) -> None:
    # cryptography no longer signs with SHA-1; the openssl binary still can
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-sha1", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=localhost", "-days", "30"], check=True, capture_output=True)
    key.chmod(0o600)
    with pytest.raises(TLSPolicyError, match="signed with SHA1"):
        TLSManager(cert, key, True, enforce_fips=True)


def test_enforce_fips_refuses_when_tls13_restriction_fails(pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """On an interpreter where the suites cannot be set, enforce_fips must refuse."""
    def unavailable(*_: object) -> None:
        raise _libssl.NativeTLSUnavailable("simulated")

    monkeypatch.setattr(_libssl, "set_ciphersuites", unavailable)
    with pytest.raises(TLSPolicyError, match="TLS 1.3 cipher suite restriction is not effective"):
        TLSManager(pki.cert, pki.key, True, enforce_fips=True)
    manager = TLSManager(pki.cert, pki.key, True)  # without enforce: runs, and says so
    assert manager.report()["tls13_restricted"] is False


def test_enforce_needs_fips_mode(pki: PKI) -> None:
    with pytest.raises(TLSPolicyError, match="enforce_fips needs fips_mode"):
        TLSManager(pki.cert, pki.key, False, enforce_fips=True)


def test_report_says_what_is_enforced(pki: PKI) -> None:
    report = TLSManager(pki.cert, pki.key, True, enforce_fips=True).report()
    assert report["policy"] == "fips" and report["minimum_version"] == "TLSv1.2"
    assert report["tls13_suites"] == ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"]
    assert set(report["tls12_ciphers"]) == {
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256"}
    cert = report["certificate"]
    assert cert["subject"] == "CN=localhost" and {"localhost", "127.0.0.1", "::1"} <= set(cert["sans"])
    assert (cert["key_type"], cert["key_size"], cert["signature_hash"]) == ("RSA", 2048, "sha256")
    assert 800 < cert["expires_in_days"] <= 825
    normal = TLSManager(pki.cert, pki.key).report()
    assert "TLS_CHACHA20_POLY1305_SHA256" in normal["tls13_suites"]
    assert not any(k in str(normal) for k in ("PRIVATE KEY", "BEGIN"))


def test_client_context_same_policy(pki: PKI) -> None:
    manager = TLSManager(pki.cert, pki.key, ca_file=pki.ca)
    ctx = manager.client_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.verify_mode == ssl.CERT_REQUIRED
    with tls_server(manager) as server:
        host, port = server.addresses[0]
        with ctx.wrap_socket(__import__("socket").create_connection((host, port)), server_hostname="localhost") as s:
            assert s.version() == "TLSv1.3"


def test_reload_applies_new_certificate_and_keeps_old_on_error(pki: PKI, tmp_path: Path) -> None:
    live = copy_pki(pki, tmp_path / "live")
    manager = TLSManager(live.cert, live.key)
    with tls_server(manager) as server:
        address = server.addresses[0]
        held = client_context(pki.ca).wrap_socket(__import__("socket").create_connection(address), server_hostname="localhost")
        new = make_pki(tmp_path / "new")
        shutil.copy2(new.cert, live.cert)
        shutil.copy2(new.key, live.key)
        manager.reload()
        assert handshake(client_context(new.ca), address).ok  # new connections: new certificate
        assert not handshake(client_context(pki.ca), address).ok
        held.sendall(b"still here")  # the connection made before the reload lives on
        assert held.recv(100) == b"still here"
        live.key.write_text("broken")
        with pytest.raises(CertificateError):
            manager.reload()
        assert handshake(client_context(new.ca), address).ok  # old (the new-before-broken) one in force
        held.close()


@pytest.mark.parametrize("profile", ["modern", "intermediate", "legacy-phones", "fips"])
def test_profiles_never_allow_weak_ciphers_or_old_versions(pki: PKI, profile: str) -> None:
    manager = TLSManager(pki.cert, pki.key, profile == "fips", policy=None if profile == "fips" else profile)
    report = manager.report()
    assert report["policy"] == profile
    ctx = manager.server_context()
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    for name in report["tls12_ciphers"]:
        assert not any(weak in name for weak in ("RC4", "DES", "NULL", "EXP", "MD5", "PSK", "SRP", "ADH", "AECDH")), name
    tls12 = set(report["tls12_ciphers"])
    if profile == "modern":
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3 and report["minimum_version"] == "TLSv1.3"
    elif profile == "intermediate":
        assert tls12 and all(n.startswith("ECDHE-") and ("GCM" in n or "CHACHA" in n) for n in tls12), tls12
    elif profile == "legacy-phones":
        assert {"ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA", "AES128-SHA", "AES256-SHA"} <= tls12
    assert report["session_tickets"] == 2 and report["max_early_data"] == 0
    assert not ctx.options & ssl.OP_NO_TICKET


def test_profile_errors_are_named(pki: PKI) -> None:
    with pytest.raises(TLSPolicyError, match="unknown TLS profile 'paranoid'"):
        TLSManager(pki.cert, pki.key, policy="paranoid")
    with pytest.raises(TLSPolicyError, match="sips-5063: fips_mode forces the 'fips' profile; 'legacy-phones'"):
        TLSManager(pki.cert, pki.key, True, policy="legacy-phones", listener="sips-5063")
    with pytest.raises(TLSPolicyError, match="verify_client required needs a client CA file"):
        TLSManager(pki.cert, pki.key, verify_client="required")
    with pytest.raises(TLSPolicyError, match="needs both its certificate and its key"):
        TLSManager(pki.cert, pki.key, ecdsa_cert_file=pki.cert)


def test_dual_certificates_reported_and_checked(pki: PKI, tmp_path: Path) -> None:
    from helpers import make_ecdsa_leaf

    ec_cert, ec_key = make_ecdsa_leaf(pki, tmp_path / "ec")
    manager = TLSManager(pki.cert, pki.key, ecdsa_cert_file=ec_cert, ecdsa_key_file=ec_key)
    report = manager.report()
    assert report["certificate"]["key_type"] == "RSA" and report["ecdsa_certificate"]["curve"] == "secp256r1"
    assert "ECDSA certificate" in manager.describe()
    with pytest.raises(CertificateError, match="holds a RSA key, not an ECDSA one"):
        TLSManager(pki.cert, pki.key, ecdsa_cert_file=pki.cert, ecdsa_key_file=pki.key)
    with pytest.raises(CertificateError, match="already an ECDSA certificate"):
        TLSManager(ec_cert, ec_key, ecdsa_cert_file=ec_cert, ecdsa_key_file=ec_key)
    with tls_server(manager) as server:
        address = ("127.0.0.1", server.addresses[0][1])
        for cipher, kind in (("ECDHE-ECDSA-AES256-GCM-SHA384", ec.EllipticCurvePublicKey),
                             ("ECDHE-RSA-AES256-GCM-SHA384", rsa.RSAPublicKey)):
            ctx = client_context(pki.ca, maximum=ssl.TLSVersion.TLSv1_2, ciphers=cipher)
            with socket.create_connection(address, timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                der = tls.getpeercert(binary_form=True)
                assert tls.cipher()[0] == cipher
            assert isinstance(x509.load_der_x509_certificate(der).public_key(), kind)
