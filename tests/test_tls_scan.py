"""sslyze against a real ``warden-pbx run``: the SIPS port and the API port, per profile (issue #7 item 7).

For each TLS profile the table below says exactly which protocols, TLS 1.2
ciphers and TLS 1.3 suites a listener accepts (RSA certificate); the scan
must find exactly those, plus: forward secrecy with ECDHE, the chain complete
up to the test CA, compression off, secure renegotiation only and
client-initiated renegotiation refused. The default profile must pass
sslyze's Mozilla "intermediate" check.

The scanner runs as a subprocess (``python -m sslyze --json_out``) so the
same test works on Debian's python, which has no sslyze package: there it uses
the dev venv's interpreter (``WARDEN_SSLYZE_PYTHON``, set by ``make
test-debian``, or ``.venv/bin/python``) and is skipped, saying so, when no
interpreter with sslyze exists.

The scan PKI's leaf is valid for 365 days: Mozilla's intermediate profile
refuses leaves living longer than 366 days (``warden-pbx cert generate``
defaults to 825, Apple's maximum), and the CA is passed with
``--certinfo_ca_file`` so the chain validates against it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI, ROOT, free_port

from warden import certtool, config, tls

ECDHE_AEAD = frozenset({
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
})
LEGACY_ECDHE = frozenset({
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
})
LEGACY_RSA_KEX = frozenset({
    "TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256", "TLS_RSA_WITH_AES_256_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_256_GCM_SHA384",
})
ALL_TLS13 = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"})
FORBIDDEN = re.compile(r"RC4|3DES|_DES_|NULL|EXPORT|anon|MD5|_PSK_|SRP", re.I)


@dataclass(frozen=True)
class Profile:
    name: str
    config: str
    """YAML lines merged into ``security:`` (SIPS) and ``api.ssl:`` (API)."""
    protocols: frozenset[str]
    tls12: frozenset[str]
    tls13: frozenset[str]
    no_forward_secrecy: frozenset[str] = frozenset()
    """TLS 1.2 suites of the profile that use RSA key exchange on purpose."""
    mozilla: str | None = None
    """The Mozilla configuration sslyze must find the listener compliant with."""
    needs: tuple[str, ...] = ()
    """Config keys (``section.key``) the profile needs; missing ones skip it."""


PROFILES = [
    Profile(
        "intermediate", "", frozenset({"TLS_1_2", "TLS_1_3"}), ECDHE_AEAD, ALL_TLS13, mozilla="intermediate",
    ),
    # Mozilla's "modern" wants an ECDSA certificate living <= 90 days; the profile is
    # checked against its own row (TLS 1.3 only) instead.
    Profile(
        "modern", "profile: modern", frozenset({"TLS_1_3"}), frozenset(), ALL_TLS13,
        needs=("security.tls_profile", "api.ssl.profile"),
    ),
    # intermediate + the CBC (SHA-1/SHA-2 MAC) suites of older phone firmware, ECDHE
    # first, then RSA key exchange; never RC4, 3DES, export or NULL, never < TLS 1.2.
    Profile(
        "legacy-phones", "profile: legacy-phones", frozenset({"TLS_1_2", "TLS_1_3"}),
        ECDHE_AEAD | LEGACY_ECDHE | LEGACY_RSA_KEX, ALL_TLS13, no_forward_secrecy=LEGACY_RSA_KEX,
        needs=("security.tls_profile", "api.ssl.profile"),
    ),
    Profile(
        "fips", "fips_mode: true", frozenset({"TLS_1_2", "TLS_1_3"}),
        frozenset({
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_RSA_WITH_AES_256_GCM_SHA384", "TLS_RSA_WITH_AES_128_GCM_SHA256",
        }),
        frozenset({"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"}),
        no_forward_secrecy=frozenset({"TLS_RSA_WITH_AES_256_GCM_SHA384", "TLS_RSA_WITH_AES_128_GCM_SHA256"}),
    ),
]
ALL_PROTOCOLS = {"SSL_2_0", "SSL_3_0", "TLS_1_0", "TLS_1_1", "TLS_1_2", "TLS_1_3"}


def _config_keys() -> set[str]:
    keys = set()

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None):
                walk(f.type, f"{prefix}{f.name}.")  # type: ignore[arg-type]
            keys.add(prefix + f.name)

    walk(config.SecurityConfig, "security.")
    walk(config.APIConfig, "api.")
    keys |= {f"api.ssl.{f.name}" for f in dataclasses.fields(config.APISSLConfig)}
    return keys


def _missing(profile: Profile) -> list[str]:
    keys = _config_keys()
    missing = [k for k in profile.needs if k not in keys]
    if profile.name not in tls.POLICIES and not missing:
        missing.append(f"warden.tls.POLICIES['{profile.name}']")
    return missing


def _scanner() -> list[str] | None:
    """A command running sslyze, or None. Debian 12 has no sslyze package."""
    candidates = [os.environ.get("WARDEN_SSLYZE_PYTHON", ""), sys.executable, str(ROOT / ".venv" / "bin" / "python")]
    for python in filter(None, candidates):
        if Path(python).exists() and subprocess.run(
            [python, "-c", "import sslyze"], capture_output=True, timeout=60
        ).returncode == 0:
            return [python, "-m", "sslyze"]
    return None


@pytest.fixture(scope="module")
def sslyze() -> list[str]:
    cmd = _scanner()
    if cmd is None:
        pytest.skip("sslyze is not importable here (Debian 12 does not package it): run `make venv` first, "
                    "or set WARDEN_SSLYZE_PYTHON to an interpreter that has it")
    return cmd


@pytest.fixture(scope="module")
def scan_pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    out = tmp_path_factory.mktemp("scan-pki")
    files = certtool.generate(out, key_type="rsa2048", sans=["localhost", "127.0.0.1"], days=365)
    return PKI(out, files.ca_cert, files.server_cert, files.server_key)


def _pbx_config(pki: PKI, profile: Profile, tls_port: int, api_port: int, tmp: Path) -> str:
    security_extra = api_extra = ""
    if profile.config.startswith("profile:"):
        security_extra = f"\n  tls_{profile.config}"
        api_extra = f", {profile.config}"
    elif profile.config:
        security_extra = f"\n  {profile.config}"
    return f"""
sip: {{listen: [127.0.0.1], udp_port: 0, tcp_port: 0, tls_port: {tls_port}}}
api:
  enabled: true
  bind: 127.0.0.1
  port: {api_port}
  ssl: {{enabled: true, cert_file: {pki.cert}, key_file: {pki.key}{api_extra}}}
security:
  tls_cert_file: {pki.cert}
  tls_key_file: {pki.key}
  tls_ca_file: {pki.ca}{security_extra}
store: {{path: {tmp}/warden.db}}
logging: {{level: info, file: ""}}
"""


@pytest.fixture(scope="module", params=PROFILES, ids=lambda p: p.name)
def profile_pbx(request: pytest.FixtureRequest, scan_pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Profile, dict[str, int]]]:
    from helpers import PBXProcess

    profile: Profile = request.param
    missing = _missing(profile)
    if missing:
        pytest.skip(f"profile {profile.name!r} is not supported yet: missing config key {', '.join(missing)}")
    tmp = tmp_path_factory.mktemp(f"scan-{profile.name}")
    ports = {"sips": free_port(), "api": free_port()}
    pbx = PBXProcess(tmp, _pbx_config(scan_pki, profile, ports["sips"], ports["api"], tmp))
    try:
        pbx.start([("127.0.0.1", ports["sips"]), ("127.0.0.1", ports["api"])], timeout=40)
        yield profile, ports
    finally:
        if pbx.proc is not None:
            pbx.stop()


def _scan(sslyze: list[str], port: int, ca: Path, mozilla: str | None, out: Path) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    cmd = [
        *sslyze, "--json_out", str(out), "--certinfo_ca_file", str(ca), "--sni", "localhost",
        "--mozilla_config", mozilla or "disable",
        "--certinfo", "--sslv2", "--sslv3", "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3",
        "--compression", "--reneg", "--elliptic_curves",
        f"127.0.0.1:{port}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.exists(), f"sslyze wrote no JSON (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    doc = json.loads(out.read_text())
    [server] = doc["server_scan_results"]
    assert server["scan_status"] == "COMPLETED", server.get("connectivity_error_trace") or server
    return server["scan_result"], proc


def _result(scan: dict[str, Any], name: str) -> dict[str, Any]:
    attempt = scan[name]
    assert attempt["status"] == "COMPLETED", f"{name}: {attempt.get('error_reason')} {attempt.get('error_trace', '')[-2000:]}"
    return attempt["result"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("listener", ["sips", "api"])
def test_scan_matches_profile(profile_pbx: tuple[Profile, dict[str, int]], listener: str, sslyze: list[str],
                              scan_pki: PKI, tmp_path: Path) -> None:
    profile, ports = profile_pbx
    scan, proc = _scan(sslyze, ports[listener], scan_pki.ca, profile.mozilla, tmp_path / "scan.json")

    accepted: dict[str, set[str]] = {}
    ephemeral: dict[str, Any] = {}
    for version in ALL_PROTOCOLS:
        result = _result(scan, f"{version.lower()}_cipher_suites")
        for suite in result["accepted_cipher_suites"]:
            accepted.setdefault(version, set()).add(suite["cipher_suite"]["name"])
            ephemeral[suite["cipher_suite"]["name"]] = suite["ephemeral_key"]
    assert set(accepted) == profile.protocols, f"{listener}: protocols {sorted(accepted)}"
    assert accepted.get("TLS_1_2", set()) == profile.tls12, (
        f"{listener} TLS 1.2: extra {sorted(accepted.get('TLS_1_2', set()) - profile.tls12)}, "
        f"missing {sorted(profile.tls12 - accepted.get('TLS_1_2', set()))}"
    )
    assert accepted.get("TLS_1_3", set()) == profile.tls13
    assert not [s for suites in accepted.values() for s in suites if FORBIDDEN.search(s)]

    # forward secrecy: every suite but the profile's deliberate RSA-kex ones uses an ephemeral ECDH key
    for name, key in ephemeral.items():
        if name in profile.no_forward_secrecy:
            assert key is None, name
        else:
            assert key is not None and key["type_name"] == "ECDH", f"{name}: no ephemeral ECDH key ({key})"

    cert = _result(scan, "certificate_info")
    [deployment] = cert["certificate_deployments"]
    assert len(deployment["received_certificate_chain"]) == 2  # leaf + our CA: the chain is complete
    assert deployment["received_chain_has_valid_order"]
    supplied = [r for r in deployment["path_validation_results"] if r["trust_store"]["name"] == "Supplied CA file"]
    assert supplied and supplied[0]["verified_certificate_chain"], supplied

    assert _result(scan, "tls_compression")["supports_compression"] is False
    if "TLS_1_2" in profile.protocols:
        reneg = _result(scan, "session_renegotiation")
        assert reneg["supports_secure_renegotiation"] is True  # never the insecure (pre-RFC 5746) kind
        assert reneg["is_vulnerable_to_client_renegotiation_dos"] is False
        assert reneg["client_renegotiations_success_count"] == 0  # client-initiated renegotiation refused

    if profile.mozilla:
        assert proc.returncode == 0, f"not compliant with Mozilla {profile.mozilla}:\n{proc.stdout[-2500:]}"
        assert ": OK - Compliant." in proc.stdout, proc.stdout[-2500:]


@pytest.mark.parametrize("listener", ["sips", "api"])
def test_tls12_client_gets_forward_secrecy(profile_pbx: tuple[Profile, dict[str, int]], listener: str, scan_pki: PKI) -> None:
    """A TLS 1.2 client offering everything gets an ECDHE cipher: the server's order prefers FS."""
    profile, ports = profile_pbx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(scan_pki.ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    # RSA key exchange first in the client's list: the server's preference must win
    ctx.set_ciphers("AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA:AES256-SHA:"
                    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")
    if "TLS_1_2" not in profile.protocols:  # a TLS 1.3-only listener refuses the client outright
        with socket.create_connection(("127.0.0.1", ports[listener]), timeout=10) as raw:
            with pytest.raises(ssl.SSLError):
                ctx.wrap_socket(raw, server_hostname="localhost")
        return
    with socket.create_connection(("127.0.0.1", ports[listener]), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            cipher = s.cipher()
    assert cipher is not None and cipher[0].startswith("ECDHE-"), cipher
