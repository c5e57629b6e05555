#!/usr/bin/env python3
"""TLS 1.3 support and the TLS policy, over real loopback sockets.

Runs under pytest and as a script (``python3 tests/test_tls13_support.py``,
non-zero exit on failure). Covers: (1) TLS 1.3 in Python's ssl; (2) the
TLSManager server context, served by Warden's own TLS server, negotiating
TLS 1.3 with a modern client and TLS 1.2 with a capped one; (3) the same for
the context the admin API builds from ``api.ssl``; (4) SSLv2/SSLv3/TLS 1.0/
TLS 1.1 refused and no weak cipher ever negotiated, in normal and FIPS mode.
"""

from __future__ import annotations

import re
import ssl
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402
from helpers import client_context, handshake  # noqa: E402

from warden import config  # noqa: E402
from warden.tls import TLSManager  # noqa: E402

WEAK = re.compile(r"RC4|DES|NULL|EXP|MD5|ADH|AECDH|anon|PSK|SRP|CBC3|IDEA|SEED", re.I)
FIPS_TLS12 = {"ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256"}
FIPS_TLS13 = {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"}


def all_tls12_ciphers() -> list[str]:
    """Every TLS 1.2 cipher this OpenSSL can offer, weak ones included."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return sorted({c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"})


class _TLSPolicyChecks:
    """Checks shared by both modes; subclasses pick the mode."""

    fips = False

    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory(prefix="warden-tls13-")
        cls.pki = helpers.make_pki(Path(cls._tmp.name))
        cls.manager = TLSManager(cls.pki.cert, cls.pki.key, cls.fips, ca_file=cls.pki.ca)
        cls._server_cm = helpers.tls_server(cls.manager)
        cls.server = cls._server_cm.__enter__()
        cls.address = cls.server.addresses[0]

    @classmethod
    def tearDownClass(cls) -> None:
        cls._server_cm.__exit__(None, None, None)
        cls._tmp.cleanup()

    def connect(self, **kw: object) -> helpers.Handshake:
        return handshake(client_context(self.pki.ca, **kw), self.address)  # type: ignore[arg-type]

    # (2) TLS 1.3 whenever the client can, TLS 1.2 when it cannot
    def test_negotiates_tls13_with_modern_client(self) -> None:
        result = self.connect()
        self.assertEqual(result.version, "TLSv1.3", result)
        expected = FIPS_TLS13 if self.fips else FIPS_TLS13 | {"TLS_CHACHA20_POLY1305_SHA256"}
        self.assertIn(result.cipher, expected)

    def test_negotiates_tls12_with_capped_client(self) -> None:
        result = self.connect(maximum=ssl.TLSVersion.TLSv1_2)
        self.assertEqual(result.version, "TLSv1.2", result)
        self.assertRegex(result.cipher or "", r"^ECDHE-(RSA|ECDSA)-AES(128|256)-GCM-SHA(256|384)$")

    def test_ipv6_loopback(self) -> None:
        with helpers.tls_server(self.manager, host="::1") as server:
            result = handshake(client_context(self.pki.ca), server.addresses[0])
        self.assertEqual(result.version, "TLSv1.3", result)

    # (4) old protocols refused
    def test_tls10_and_tls11_refused(self) -> None:
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            with self.subTest(version=version.name):
                # the client really offers the old version (SECLEVEL=0 lets it)
                result = self.connect(minimum=version, maximum=version, seclevel0=True)
                self.assertFalse(result.ok, result)
                self.assertIn(result.error, {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL"})

    def test_sslv3_and_sslv2_hellos_refused(self) -> None:
        for name, hello in (("SSLv3", helpers.sslv3_client_hello()), ("SSLv2", helpers.sslv2_client_hello())):
            with self.subTest(protocol=name):
                answer = helpers.raw_hello_response(self.address, hello)
                self.assertFalse(helpers.is_server_hello(answer), answer[:16].hex())
        # and the server keeps serving afterwards
        self.assertEqual(self.connect().version, "TLSv1.3")

    # (4) no weak cipher, ever
    def test_no_weak_tls12_cipher_negotiated(self) -> None:
        accepted = set()
        for name in all_tls12_ciphers():
            try:
                ctx = client_context(self.pki.ca, maximum=ssl.TLSVersion.TLSv1_2, ciphers=name, seclevel0=True)
            except ssl.SSLError:
                continue  # the client library cannot offer this one at all
            result = handshake(ctx, self.address, echo=False)
            if result.ok:
                self.assertEqual(result.cipher, name)
                accepted.add(name)
        self.assertTrue(accepted, "no TLS 1.2 cipher accepted at all")
        weak = {c for c in accepted if WEAK.search(c) or not ("GCM" in c or "CHACHA" in c or "CCM" in c or "SHA" in c)}
        self.assertEqual(weak, set(), f"weak ciphers accepted: {sorted(weak)}")
        if self.fips:
            self.assertEqual(accepted, FIPS_TLS12)
        else:
            self.assertIn("ECDHE-RSA-AES256-GCM-SHA384", accepted)
            self.assertIn("ECDHE-RSA-CHACHA20-POLY1305", accepted)

    def test_tls13_suites(self) -> None:
        for suite in ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"):
            with self.subTest(suite=suite):
                result = self.connect(minimum=ssl.TLSVersion.TLSv1_3, tls13_suites=suite)
                if self.fips and suite not in FIPS_TLS13:
                    self.assertFalse(result.ok, f"FIPS server accepted {suite}")
                else:
                    self.assertEqual((result.version, result.cipher), ("TLSv1.3", suite))

    def test_fips_groups(self) -> None:
        """X25519 is not FIPS-approved: a client offering only X25519 fails in FIPS mode."""
        ctx = client_context(self.pki.ca)
        from warden import _libssl

        _libssl.set_groups(ctx, "X25519")
        result = handshake(ctx, self.address)
        self.assertEqual(result.ok, not self.fips, result)


class NormalModeTest(_TLSPolicyChecks, unittest.TestCase):
    fips = False


class FIPSModeTest(_TLSPolicyChecks, unittest.TestCase):
    fips = True


class ECDSAFIPSTest(unittest.TestCase):
    def test_ecdsa_key_gets_ecdsa_ciphers(self) -> None:
        with helpers.temp_pki("ecdsa-p256") as pki:
            manager = TLSManager(pki.cert, pki.key, True, enforce_fips=True, ca_file=pki.ca)
            with helpers.tls_server(manager) as server:
                r12 = handshake(client_context(pki.ca, maximum=ssl.TLSVersion.TLSv1_2), server.addresses[0])
                r13 = handshake(client_context(pki.ca), server.addresses[0])
        self.assertEqual(r12.cipher, "ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertEqual(r13.version, "TLSv1.3")


class PythonSSLTest(unittest.TestCase):
    # (1) the interpreter can do TLS 1.3 at all
    def test_tls13_available(self) -> None:
        self.assertTrue(ssl.HAS_TLSv1_3)
        self.assertGreaterEqual(ssl.OPENSSL_VERSION_INFO[:3], (1, 1, 1))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.assertIn("TLSv1.3", {c["protocol"] for c in ctx.get_ciphers()})


class APIContextTest(unittest.TestCase):
    # (3) the admin API's context: built from api.ssl with the shared policy
    def test_api_context_negotiates_tls13_and_tls12(self) -> None:
        with helpers.temp_pki() as pki, tempfile.TemporaryDirectory() as d:
            cfg_file = Path(d) / "config.yml"
            cfg_file.write_text(helpers.tls_config(pki, 5061))
            cfg = config.load(cfg_file)
            manager = TLSManager.for_api(cfg)
            with helpers.tls_server(manager) as server:
                addr = server.addresses[0]
                r13 = handshake(client_context(pki.ca), addr)
                r12 = handshake(client_context(pki.ca, maximum=ssl.TLSVersion.TLSv1_2), addr)
                r11 = handshake(client_context(pki.ca, minimum=ssl.TLSVersion.TLSv1_1,
                                               maximum=ssl.TLSVersion.TLSv1_1, seclevel0=True), addr)
        self.assertEqual(r13.version, "TLSv1.3")
        self.assertEqual(r12.version, "TLSv1.2")
        self.assertFalse(r11.ok)


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False, verbosity=2).result.wasSuccessful() else 1)
