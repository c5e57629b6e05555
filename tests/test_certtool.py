"""Tests for warden.certtool: files, chain, extensions, overwrite rules, real TLS.

Verification uses independent tools (the openssl binary and Python's ssl
module), not the code under test, so a wrong extension cannot pass unnoticed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from warden import certtool
from warden.errors import CertificateError

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "generate_ssl_cert.py"
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed")

_PEM_END = b"-----END CERTIFICATE-----"


def load_chain(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, in order.

    ``x509.load_pem_x509_certificates`` only exists from cryptography 39 on;
    Debian 12 has 38.
    """
    blocks = path.read_bytes().split(_PEM_END)
    return [
        x509.load_pem_x509_certificate(block + _PEM_END)
        for block in blocks
        if block.strip()
    ]


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans_of(
    cert: x509.Certificate,
) -> tuple[list[str], list[Any]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)


def valid_span(cert: x509.Certificate) -> tuple[datetime.datetime, datetime.datetime]:
    """(not_before, not_after) as aware UTC on cryptography 38 and 42+ alike."""
    before = getattr(cert, "not_valid_before_utc", None)
    after = getattr(cert, "not_valid_after_utc", None)
    if before is None or after is None:
        utc = datetime.timezone.utc
        return cert.not_valid_before.replace(tzinfo=utc), cert.not_valid_after.replace(tzinfo=utc)
    return before, after


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def openssl_verify(ca: Path, cert: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, "verify", *extra, "-CAfile", str(ca), str(cert)],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A clean environment without PYTHONPATH proves the script finds the package itself.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        check=False,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def default_certs(tmp_path_factory: pytest.TempPathFactory) -> certtool.GeneratedFiles:
    """One default generation shared by the read-only tests (RSA keygen is slow)."""
    return certtool.generate(tmp_path_factory.mktemp("default") / "certs")


# -- files and chain ---------------------------------------------------------


def test_creates_out_dir_and_files(default_certs: certtool.GeneratedFiles) -> None:
    out_dir = default_certs.server_cert.parent
    assert mode_of(out_dir) == 0o755
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
    ]
    assert default_certs.ca_reused is False


def test_key_and_cert_modes(default_certs: certtool.GeneratedFiles) -> None:
    assert mode_of(default_certs.server_key) == 0o600
    assert mode_of(default_certs.ca_key) == 0o600
    assert mode_of(default_certs.server_cert) == 0o644
    assert mode_of(default_certs.ca_cert) == 0o644


def test_key_mode_ignores_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        files = certtool.generate(tmp_path, key_type="ecdsa-p256")
    finally:
        os.umask(old)
    assert mode_of(files.server_key) == 0o600
    assert mode_of(files.ca_key) == 0o600


def test_keys_are_unencrypted_pem_matching_certs(default_certs: certtool.GeneratedFiles) -> None:
    for key_path, cert_path in (
        (default_certs.server_key, default_certs.server_cert),
        (default_certs.ca_key, default_certs.ca_cert),
    ):
        key = load_pem_private_key(key_path.read_bytes(), password=None)
        cert = load_chain(cert_path)[0]
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def test_chain_is_leaf_then_ca(default_certs: certtool.GeneratedFiles) -> None:
    chain = load_chain(default_certs.server_cert)
    ca = load_cert(default_certs.ca_cert)
    assert len(chain) == 2
    leaf, second = chain
    assert second == ca
    assert leaf.issuer == ca.subject
    assert leaf.subject != ca.subject


@needs_openssl
def test_openssl_verify(default_certs: certtool.GeneratedFiles) -> None:
    result = openssl_verify(default_certs.ca_cert, default_certs.server_cert)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{default_certs.server_cert}: OK"


@needs_openssl
def test_openssl_verify_strict(default_certs: certtool.GeneratedFiles) -> None:
    result = openssl_verify(
        default_certs.ca_cert, default_certs.server_cert, "-x509_strict", "-purpose", "sslserver"
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- certificate contents ----------------------------------------------------


def test_ca_extensions(default_certs: certtool.GeneratedFiles) -> None:
    ca = load_cert(default_certs.ca_cert)
    assert ca.subject == ca.issuer
    cn = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(cn, str)
    expected = f"Warden PBX Local CA ({socket.gethostname()})"
    if len(expected) <= 64:
        assert cn == expected
    else:  # cut to the X.520 limit
        assert cn.startswith("Warden PBX Local CA (") and len(cn) == 64
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())


def test_leaf_extensions(default_certs: certtool.GeneratedFiles) -> None:
    leaf, ca = load_chain(default_certs.server_cert)
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    assert not ku.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_signature_hash_is_sha256(default_certs: certtool.GeneratedFiles) -> None:
    for cert in load_chain(default_certs.server_cert):
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_validity(default_certs: certtool.GeneratedFiles) -> None:
    leaf, ca = load_chain(default_certs.server_cert)
    leaf_start, leaf_end = valid_span(leaf)
    ca_start, ca_end = valid_span(ca)
    now = datetime.datetime.now(datetime.timezone.utc)
    # Backdated 5 minutes so phones with a slightly slow clock accept it.
    assert datetime.timedelta(minutes=4) < now - leaf_start < datetime.timedelta(minutes=10)
    assert leaf_end - leaf_start == datetime.timedelta(days=825, minutes=5)
    assert ca_end - ca_start == datetime.timedelta(days=3650, minutes=5)
    assert leaf.serial_number != ca.serial_number


def test_default_sans(default_certs: certtool.GeneratedFiles) -> None:
    leaf = load_chain(default_certs.server_cert)[0]
    dns, ips = sans_of(leaf)
    assert "localhost" in dns
    assert socket.gethostname().lower() in dns
    assert ipaddress.ip_address("127.0.0.1") in ips
    assert ipaddress.ip_address("::1") in ips
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "localhost"


def test_custom_sans_dns_ipv4_ipv6(tmp_path: Path) -> None:
    files = certtool.generate(
        tmp_path,
        sans=["pbx.example.com", "10.1.2.3", "2001:db8::5", "[fe80::1]", "sip.example.com"],
        key_type="ecdsa-p256",
    )
    leaf = load_chain(files.server_cert)[0]
    dns, ips = sans_of(leaf)
    assert dns == ["pbx.example.com", "sip.example.com"]
    assert ips == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("2001:db8::5"),
        ipaddress.ip_address("fe80::1"),
    ]
    assert "localhost" not in dns  # explicit SANs replace the defaults
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "pbx.example.com"


def test_common_name_override(tmp_path: Path) -> None:
    files = certtool.generate(
        tmp_path, sans=["pbx.example.com"], common_name="Warden PBX", key_type="ecdsa-p256"
    )
    leaf = load_chain(files.server_cert)[0]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Warden PBX"


@pytest.mark.parametrize(
    ("key_type", "size"),
    [("rsa2048", 2048), ("rsa3072", 3072), ("rsa4096", 4096), ("ecdsa-p256", None)],
)
def test_key_types(tmp_path: Path, key_type: str, size: int | None) -> None:
    files = certtool.generate(tmp_path, sans=["localhost"], key_type=key_type)
    server_key = load_pem_private_key(files.server_key.read_bytes(), password=None)
    ca_key = load_pem_private_key(files.ca_key.read_bytes(), password=None)
    leaf = load_chain(files.server_cert)[0]
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    for key in (server_key, ca_key):
        if size is None:
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            assert isinstance(key.curve, ec.SECP256R1)
        else:
            assert isinstance(key, rsa.RSAPrivateKey)
            assert key.key_size == size
    assert ku.digital_signature
    assert ku.key_encipherment == (size is not None)
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)


def test_rejects_unknown_key_type(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="unknown key type"):
        certtool.generate(tmp_path / "certs", key_type="dsa1024")
    assert not (tmp_path / "certs").exists()


# -- overwrite rules and CA reuse ---------------------------------------------


@pytest.mark.parametrize("name", ["server.crt", "server.key"])
def test_refuses_to_overwrite_without_force(tmp_path: Path, name: str) -> None:
    existing = tmp_path / name
    existing.write_bytes(b"precious\n")
    with pytest.raises(CertificateError) as info:
        certtool.generate(tmp_path, key_type="ecdsa-p256")
    message = str(info.value)
    assert name in message and "--force" in message
    assert existing.read_bytes() == b"precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_force_overwrites_everything(tmp_path: Path) -> None:
    first = certtool.generate(tmp_path, key_type="ecdsa-p256")
    old = {p: p.read_bytes() for p in (first.ca_cert, first.ca_key, first.server_cert, first.server_key)}
    second = certtool.generate(tmp_path, key_type="ecdsa-p256", force=True)
    assert second.ca_reused is False
    for path, data in old.items():
        assert path.read_bytes() != data, path
    assert mode_of(second.server_key) == 0o600
    assert mode_of(second.ca_key) == 0o600
    assert mode_of(second.server_cert) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
    ]  # no staging files left behind
    if OPENSSL:
        result = openssl_verify(second.ca_cert, second.server_cert)
        assert result.stdout.strip() == f"{second.server_cert}: OK"


def test_reuses_existing_ca(tmp_path: Path) -> None:
    first = certtool.generate(tmp_path, sans=["old.example.com"], key_type="ecdsa-p256")
    ca_cert = first.ca_cert.read_bytes()
    ca_key = first.ca_key.read_bytes()
    old_leaf = load_chain(first.server_cert)[0]
    first.server_cert.unlink()
    first.server_key.unlink()

    second = certtool.generate(tmp_path, sans=["new.example.com"], key_type="ecdsa-p256")
    assert second.ca_reused is True
    assert second.ca_cert.read_bytes() == ca_cert
    assert second.ca_key.read_bytes() == ca_key
    new_leaf, chain_ca = load_chain(second.server_cert)
    assert new_leaf.serial_number != old_leaf.serial_number
    assert sans_of(new_leaf)[0] == ["new.example.com"]
    assert chain_ca == x509.load_pem_x509_certificate(ca_cert)
    if OPENSSL:
        result = openssl_verify(second.ca_cert, second.server_cert)
        assert result.stdout.strip() == f"{second.server_cert}: OK"


def test_half_present_ca_is_an_error(tmp_path: Path) -> None:
    first = certtool.generate(tmp_path, key_type="ecdsa-p256")
    for path in (first.server_cert, first.server_key, first.ca_key):
        path.unlink()
    with pytest.raises(CertificateError, match="ca.key is missing"):
        certtool.generate(tmp_path, key_type="ecdsa-p256")
    assert not first.server_cert.exists()


def test_mismatched_ca_key_is_an_error(tmp_path: Path) -> None:
    a = certtool.generate(tmp_path / "a", key_type="ecdsa-p256")
    b = certtool.generate(tmp_path / "b", key_type="ecdsa-p256")
    shutil.copy(b.ca_key, a.ca_key)
    a.server_cert.unlink()
    a.server_key.unlink()
    with pytest.raises(CertificateError, match="does not belong"):
        certtool.generate(tmp_path / "a", key_type="ecdsa-p256")


# -- real TLS handshake -------------------------------------------------------


def test_tls_handshake_verifies(default_certs: certtool.GeneratedFiles) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(default_certs.server_cert, default_certs.server_key)
    client_ctx = ssl.create_default_context(cafile=str(default_certs.ca_cert))
    # Python 3.13 turns strict checking on by default; prove the certs already pass it.
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT

    errors: list[Exception] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve_one() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"SIP/2.0 200 OK\r\n\r\n")
            except Exception as exc:  # reported to the main thread below
                errors.append(exc)

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            peer = tls.getpeercert()
            data = tls.recv(64)
        thread.join(10)

    assert not errors, errors
    assert data == b"SIP/2.0 200 OK\r\n\r\n"
    assert peer is not None
    assert ("DNS", "localhost") in peer["subjectAltName"]


# -- CLI ------------------------------------------------------------------------


def test_script_end_to_end(tmp_path: Path) -> None:
    assert os.access(SCRIPT, os.X_OK)
    out_dir = tmp_path / "certs"
    result = run_script(
        "--out-dir", str(out_dir),
        "--san", "pbx.example.com,192.0.2.10",
        "--san", "2001:db8::10",
        "--key-type", "ecdsa-p256",
        "--days", "30",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for name in ("ca.crt", "ca.key", "server.crt", "server.key"):
        assert name in result.stdout
        assert (out_dir / name).is_file()
    assert "pbx.example.com, 192.0.2.10, 2001:db8::10" in result.stdout
    assert "ecdsa-p256" in result.stdout
    assert f"openssl verify -CAfile {out_dir / 'ca.crt'} {out_dir / 'server.crt'}" in result.stdout
    assert "openssl s_client" in result.stdout
    leaf = load_chain(out_dir / "server.crt")[0]
    dns, ips = sans_of(leaf)
    assert dns == ["pbx.example.com"]
    assert ips == [ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("2001:db8::10")]
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)


def test_script_default_out_dir_is_relative_to_cwd(tmp_path: Path) -> None:
    result = run_script("--key-type", "ecdsa-p256", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "certs" / "server.crt").is_file()


def test_script_refuses_existing_files(tmp_path: Path) -> None:
    first = run_script("--out-dir", str(tmp_path), "--key-type", "ecdsa-p256", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "server.crt").read_bytes()

    again = run_script("--out-dir", str(tmp_path), "--key-type", "ecdsa-p256", cwd=tmp_path)
    assert again.returncode != 0
    assert "Traceback" not in again.stderr
    lines = again.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and "--force" in lines[0]
    assert (tmp_path / "server.crt").read_bytes() == before

    forced = run_script(
        "--out-dir", str(tmp_path), "--key-type", "ecdsa-p256", "--force", cwd=tmp_path
    )
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "server.crt").read_bytes() != before


def test_main_returns_one_on_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "server.key").write_text("x")
    assert certtool.main(["--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_force_keeps_the_group_a_packaged_key_was_given(tmp_path: Path) -> None:
    """A packaged server.key is 0640 root:warden: regenerating must not lock the service out."""
    files = certtool.generate(tmp_path)
    os.chown(files.server_key, -1, 65534)
    files.server_key.chmod(0o640)
    certtool.generate(tmp_path, force=True)
    st = files.server_key.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, 65534)
    assert stat.S_IMODE(files.ca_key.stat().st_mode) == 0o600  # an untouched mode stays private


def test_client_certificate_for_an_extension(tmp_path: Path) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    files = certtool.generate(tmp_path, sans=["localhost"])
    cert_path, key_path = certtool.generate_client(tmp_path, "1001", domain="pbx.example")
    assert cert_path.name == "client-1001.crt" and stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=1001"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["sip:1001@pbx.example"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(files.ca_cert), "-purpose", "sslclient",
                             str(cert_path)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    with pytest.raises(CertificateError, match="already exists"):
        certtool.generate_client(tmp_path, "1001")
    with pytest.raises(CertificateError, match="invalid extension"):
        certtool.generate_client(tmp_path, "10 01")
    with pytest.raises(CertificateError, match="no CA in"):
        certtool.generate_client(tmp_path / "empty", "1001")
