"""The TLS policy every Warden listener and client uses.

``TLSManager`` turns a certificate, a key and the FIPS switch into server and
client ``SSLContext`` objects that all follow one policy: TLS 1.2 minimum and
no maximum (so TLS 1.3 whenever the peer can), no compression, no
renegotiation, server cipher order, ECDHE groups chosen here. It is a leaf:
stdlib, ``cryptography`` and ``warden.errors`` only, so the SIPS transport,
the API and outgoing clients can all import it.

Strategy for FIPS: TLS 1.2 ciphers go through ``set_ciphers``; TLS 1.3 suites,
groups and signature algorithms have no Python API, so ``warden._libssl``
sets them on the context and we then *check* the effect with
``get_ciphers()``. ``enforce_fips`` turns any gap into a refusal to start.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import ssl
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from . import _libssl
from .errors import CertificateError, TLSPolicyError

__all__ = ["CertificateInfo", "TLSManager", "TLSPolicy", "POLICIES", "FIPS_TLS13_SUITES", "expiry_level", "inspect_certificate"]

log = logging.getLogger("warden.tls")

# Mozilla's "intermediate" TLS 1.2 list without DHE (ECDHE AEAD only, issue #7),
# AES-256-GCM first as before. "HIGH" also let in CBC, RSA key exchange, CCM,
# ARIA and Camellia, which sslyze's Mozilla intermediate check refuses.
_INTERMEDIATE_TLS12 = ":".join(
    [
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
ALL_TLS13_SUITES = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
FIPS_TLS13_SUITES = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"
_FIPS_TLS12_RSA = "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256"
_FIPS_TLS12_ECDSA = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"
_FIPS_SIGALGS = ":".join(
    [
        "ECDSA+SHA256", "ECDSA+SHA384", "ECDSA+SHA512",
        "rsa_pss_rsae_sha256", "rsa_pss_rsae_sha384", "rsa_pss_rsae_sha512",
        "rsa_pss_pss_sha256", "rsa_pss_pss_sha384", "rsa_pss_pss_sha512",
        "RSA+SHA256", "RSA+SHA384", "RSA+SHA512",
    ]
)
_FIPS_CURVES = {"secp256r1", "secp384r1"}
_WEAK_SIGNATURE_HASHES = {"md5", "sha1"}


@dataclass(frozen=True, slots=True)
class TLSPolicy:
    """What a listener negotiates; one row of ``POLICIES``."""

    name: str
    tls12_ciphers: str
    """OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are separate)."""
    tls13_suites: str
    """TLS 1.3 suites in OpenSSL's colon syntax."""
    groups: str
    """ECDHE groups, most preferred first."""
    sigalgs: str | None = None
    """Signature algorithms; None keeps OpenSSL's defaults."""
    ecdsa_tls12_ciphers: str = ""
    """Put in front of ``tls12_ciphers`` when the key is ECDSA."""
    fips: bool = False


POLICIES: dict[str, TLSPolicy] = {
    "intermediate": TLSPolicy(
        name="intermediate",
        tls12_ciphers=_INTERMEDIATE_TLS12,
        tls13_suites=ALL_TLS13_SUITES,
        groups="X25519:P-256:P-384",
    ),
    "fips": TLSPolicy(
        name="fips",
        tls12_ciphers=_FIPS_TLS12_RSA,
        ecdsa_tls12_ciphers=_FIPS_TLS12_ECDSA,
        tls13_suites=FIPS_TLS13_SUITES,
        groups="P-256:P-384",
        sigalgs=_FIPS_SIGALGS,
        fips=True,
    ),
}


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What an admin wants to know about the certificate being served."""

    subject: str
    issuer: str
    sans: tuple[str, ...]
    key_type: str
    """``RSA``, ``EC`` or the algorithm name."""
    key_size: int
    curve: str | None
    signature_hash: str | None
    not_after: datetime.datetime
    chain_length: int
    serial: int = field(repr=False, default=0)

    @property
    def expires_in_days(self) -> float:
        """Days until expiry (negative once expired)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        return (self.not_after - now).total_seconds() / 86400


def _pem_blocks(data: bytes) -> list[bytes]:
    return re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    # cryptography >= 42 has the aware property; Debian 12's 38 only the naive one.
    aware = getattr(cert, "not_valid_after_utc", None)
    if aware is not None:
        return aware  # type: ignore[no-any-return]
    return cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def _describe_key(key: Any) -> tuple[str, int, str | None]:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size, None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size, key.curve.name
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, None
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456, None
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size, None
    return type(key).__name__, 0, None


def _public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[no-any-return]


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CertificateError(f"{what} not found: {path}") from None
    except PermissionError:
        raise CertificateError(f"{what} not readable (permission denied): {path}") from None
    except OSError as exc:
        raise CertificateError(f"{what} cannot be read: {path}: {exc.strerror}") from None


def inspect_certificate(cert_file: str, key_file: str) -> tuple[CertificateInfo, list[x509.Certificate]]:
    """Load and check a certificate chain and its key; raise CertificateError.

    Checks the things ``SSLContext.load_cert_chain`` reports only as "PEM lib":
    missing or unreadable files, garbage, an encrypted or world-readable key,
    and a key that does not belong to the certificate.
    """
    cert_pem = _read(cert_file, "certificate file")
    blocks = _pem_blocks(cert_pem)
    if not blocks:
        raise CertificateError(f"certificate file holds no PEM certificate: {cert_file}")
    try:
        chain = [x509.load_pem_x509_certificate(b) for b in blocks]
    except ValueError as exc:
        raise CertificateError(f"certificate file is not a valid certificate: {cert_file}: {exc}") from None
    key_pem = _read(key_file, "private key file")
    mode = os.stat(key_file).st_mode
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise CertificateError(
            f"private key file is readable by others (mode {stat.S_IMODE(mode):04o}): {key_file}; "
            f"run: chmod 600 {key_file}"
        )
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertificateError(f"private key file is encrypted; an unencrypted key (mode 0600) is needed: {key_file}") from None
    except ValueError:
        raise CertificateError(f"private key file is not a valid PEM private key: {key_file}") from None
    leaf = chain[0]
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise CertificateError(
            f"private key does not match the certificate: {key_file} vs {cert_file} "
            "(the first certificate in the file must be the server's own)"
        )
    key_type, key_size, curve = _describe_key(leaf.public_key())
    try:
        sans = tuple(
            str(name.value)
            for name in leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        sans = ()
    algo = leaf.signature_hash_algorithm
    info = CertificateInfo(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        sans=sans,
        key_type=key_type,
        key_size=key_size,
        curve=curve,
        signature_hash=algo.name if algo is not None else None,
        not_after=_not_after(leaf),
        chain_length=len(chain),
        serial=leaf.serial_number,
    )
    return info, chain


EXPIRY_WARNING_DAYS = 30
EXPIRY_CRITICAL_DAYS = 7


def expiry_level(info: CertificateInfo) -> tuple[int, str]:
    """Monitoring status of a certificate's expiry: (0 OK | 1 WARNING | 2 CRITICAL, line).

    The numbers are the Nagios/monitoring-plugin exit codes, so ``warden-pbx
    cert check`` can be a check command as it is.
    """
    days = info.expires_in_days
    when = info.not_after.strftime("%Y-%m-%d")
    if days < 0:
        return 2, f"CRITICAL: {info.subject} expired on {when}"
    if days < EXPIRY_CRITICAL_DAYS:
        return 2, f"CRITICAL: {info.subject} expires on {when} (in {days:.1f} days)"
    if days < EXPIRY_WARNING_DAYS:
        return 1, f"WARNING: {info.subject} expires on {when} (in {days:.0f} days)"
    return 0, f"OK: {info.subject} expires on {when} (in {days:.0f} days)"


def fips_certificate_problems(info: CertificateInfo, chain: list[x509.Certificate]) -> list[str]:
    """Reasons the certificate chain breaks the FIPS policy (empty when fine)."""
    problems = []
    if info.key_type == "RSA" and info.key_size < 2048:
        problems.append(f"RSA key of {info.key_size} bits is under the FIPS minimum of 2048")
    elif info.key_type == "EC" and info.curve not in _FIPS_CURVES:
        problems.append(f"EC key on curve {info.curve} is outside P-256/P-384")
    elif info.key_type not in ("RSA", "EC"):
        problems.append(f"{info.key_type} keys are not allowed in FIPS mode (use RSA >= 2048 or ECDSA P-256/P-384)")
    for cert in chain:
        algo = cert.signature_hash_algorithm
        if algo is not None and algo.name in _WEAK_SIGNATURE_HASHES:
            problems.append(
                f"certificate '{cert.subject.rfc4514_string()}' is signed with {algo.name.upper()}"
            )
    return problems


class TLSManager:
    """Builds, reports and reloads the TLS contexts of one policy.

    Construction fails fast with ``CertificateError``/``TLSPolicyError`` whose
    message names the file or the rule. ``server_context()`` is safe to call
    from any thread; ``reload()`` swaps in new contexts atomically and keeps
    the old ones when the new files are bad.
    """

    def __init__(
        self,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        fips_mode: bool = False,
        *,
        enforce_fips: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        policy: str | None = None,
    ) -> None:
        if enforce_fips and not fips_mode:
            raise TLSPolicyError("enforce_fips needs fips_mode")
        name = "fips" if fips_mode else (policy or "intermediate")
        if fips_mode and policy not in (None, "fips"):
            raise TLSPolicyError(f"fips_mode forces the 'fips' policy; '{policy}' was asked for")
        if name not in POLICIES:
            raise TLSPolicyError(f"unknown TLS policy '{name}' (known: {', '.join(POLICIES)})")
        self.policy = POLICIES[name]
        self.cert_file = os.fspath(cert_file)
        self.key_file = os.fspath(key_file)
        self.ca_file = os.fspath(ca_file) if ca_file else None
        self.fips_mode = fips_mode
        self.enforce_fips = enforce_fips
        self._lock = threading.Lock()
        self.tls13_restricted = False
        self.certificate, self._server = self._build()

    @classmethod
    def from_config(cls, security: Any) -> "TLSManager":
        """Build from a ``warden.config.SecurityConfig``."""
        return cls(
            security.tls_cert_file,
            security.tls_key_file,
            security.fips_mode,
            enforce_fips=security.enforce_fips,
            ca_file=security.tls_ca_file or None,
        )

    @classmethod
    def for_api(cls, cfg: Any) -> "TLSManager":
        """The admin API's manager: ``api.ssl`` files, ``security``'s policy."""
        return cls(
            cfg.api.ssl.cert_file,
            cfg.api.ssl.key_file,
            cfg.security.fips_mode,
            enforce_fips=cfg.security.enforce_fips,
            ca_file=cfg.security.tls_ca_file or None,
        )

    # -- contexts --------------------------------------------------------------

    def _apply_policy(self, ctx: ssl.SSLContext, key_type: str | None) -> bool:
        """Set versions, ciphers and groups; return whether TLS 1.3 is as asked."""
        policy = self.policy
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
        ciphers = policy.tls12_ciphers
        if key_type == "EC" and policy.ecdsa_tls12_ciphers:
            ciphers = f"{policy.ecdsa_tls12_ciphers}:{ciphers}"
        ctx.set_ciphers(ciphers)
        try:
            _libssl.set_groups(ctx, policy.groups)
            if policy.sigalgs:
                _libssl.set_sigalgs(ctx, policy.sigalgs)
            _libssl.set_ciphersuites(ctx, policy.tls13_suites)
        except (_libssl.NativeTLSUnavailable, ssl.SSLError) as exc:
            log.warning("TLS 1.3 suites/groups could not be restricted: %s", exc)
        wanted = set(policy.tls13_suites.split(":"))
        got = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"}
        return bool(got) and got <= wanted

    def _build(self) -> tuple[CertificateInfo, ssl.SSLContext]:
        info, chain = inspect_certificate(self.cert_file, self.key_file)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        restricted = self._apply_policy(ctx, info.key_type)
        if self.policy.fips:
            problems = fips_certificate_problems(info, chain)
            if not restricted:
                problems.insert(0, "the TLS 1.3 cipher suite restriction is not effective in this Python/OpenSSL")
            if problems and self.enforce_fips:
                raise TLSPolicyError("enforce_fips: cannot enforce the FIPS policy: " + "; ".join(problems))
            for problem in problems:
                log.warning("FIPS policy not fully enforced: %s", problem)
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        except ssl.SSLError as exc:
            raise CertificateError(f"OpenSSL rejected {self.cert_file} / {self.key_file}: {exc.reason or exc}") from None
        self.tls13_restricted = restricted
        return info, ctx

    def server_context(self) -> ssl.SSLContext:
        """The current server context (a new one after each ``reload``)."""
        with self._lock:
            return self._server

    def client_context(self, cafile: str | os.PathLike[str] | None = None, *, verify: bool = True) -> ssl.SSLContext:
        """A client context with the same policy, verifying against ``cafile``
        (default: the configured CA, else the system store)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._apply_policy(ctx, None)
        if verify:
            ca = os.fspath(cafile) if cafile else self.ca_file
            if ca:
                ctx.load_verify_locations(ca)
            else:
                ctx.load_default_certs()
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def log_expiry(self) -> None:
        """WARNING under 30 days, ERROR under 7 (or expired), so monitoring of the log sees it."""
        level, line = expiry_level(self.certificate)
        if level:
            log.log(logging.ERROR if level == 2 else logging.WARNING, "certificate %s: %s", self.cert_file, line)

    def reload(self) -> CertificateInfo:
        """Re-read certificate and key; on any error keep the old context."""
        info, ctx = self._build()
        with self._lock:
            self.certificate, self._server = info, ctx
        log.info("TLS certificate reloaded: %s, expires %s", info.subject, info.not_after.date())
        return info

    # -- reporting -------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """What is enforced, for logs and the API (no secrets)."""
        ctx = self.server_context()
        ciphers = ctx.get_ciphers()
        info = self.certificate
        return {
            "policy": self.policy.name,
            "fips_mode": self.fips_mode,
            "enforce_fips": self.enforce_fips,
            "minimum_version": "TLSv1.2",
            "maximum_version": "TLSv1.3" if ssl.HAS_TLSv1_3 else "TLSv1.2",
            "tls12_ciphers": [c["name"] for c in ciphers if c["protocol"] == "TLSv1.2"],
            "tls13_suites": [c["name"] for c in ciphers if c["protocol"] == "TLSv1.3"],
            "tls13_restricted": self.tls13_restricted,
            "groups": self.policy.groups.split(":"),
            "openssl": ssl.OPENSSL_VERSION,
            "certificate": {
                "file": self.cert_file,
                "subject": info.subject,
                "issuer": info.issuer,
                "sans": list(info.sans),
                "key_type": info.key_type,
                "key_size": info.key_size,
                "curve": info.curve,
                "signature_hash": info.signature_hash,
                "not_after": info.not_after.isoformat(),
                "expires_in_days": round(info.expires_in_days, 1),
                "chain_length": info.chain_length,
            },
        }

    def describe(self) -> str:
        """One log line summarising the policy."""
        r = self.report()
        c = r["certificate"]
        return (
            f"TLS policy {r['policy']}: TLS 1.2+ (1.3 preferred), "
            f"{len(r['tls12_ciphers'])} TLS 1.2 ciphers, TLS 1.3 suites {','.join(r['tls13_suites'])}; "
            f"certificate {c['subject']} ({c['key_type']} {c['key_size']}) "
            f"SANs {','.join(c['sans'])}, expires in {c['expires_in_days']:.0f} days"
        )

