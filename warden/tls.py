"""The TLS policy every Warden listener and client uses.

``TLSManager`` turns a certificate (optionally an RSA and an ECDSA one), a
key, a profile and the FIPS switch into server and client ``SSLContext``
objects that follow one profile (``POLICIES``: ``modern``, ``intermediate``,
``legacy-phones``, ``fips``): never below TLS 1.2, no compression, no
renegotiation, server cipher order, ECDHE groups chosen here, TLS 1.3 session
tickets on and 0-RTT early data never accepted (it is replayable, and SIP
REGISTER/INVITE are not idempotent). Each TLS listener has its own manager. It is a leaf:
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

__all__ = [
    "CertificateInfo", "TLSManager", "TLSPolicy", "POLICIES", "PROFILES", "FIPS_TLS13_SUITES", "VERIFY_CLIENT",
    "expiry_level", "inspect_certificate",
]

log = logging.getLogger("warden.tls")

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
# ECDHE with AEAD only: forward secrecy and no CBC (Mozilla "intermediate" minus DHE),
# AES-256-GCM first. sslyze's Mozilla intermediate check refuses CBC, RSA key
# exchange, CCM, ARIA and Camellia, which OpenSSL's "HIGH" lets in.
_ECDHE_AEAD = ":".join([
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
# What older Yealink/Polycom/Avaya firmware offers: CBC with SHA-1/SHA-256 MACs,
# with ECDHE first, then plain RSA key exchange. Never RC4, 3DES, export or NULL.
_LEGACY_CBC = ":".join([
    "ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384",
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA256", "AES256-SHA256", "AES128-SHA", "AES256-SHA",
])
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
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    """Never below TLS 1.2; ``modern`` raises it to 1.3."""


POLICIES: dict[str, TLSPolicy] = {
    "modern": TLSPolicy(
        name="modern",
        tls12_ciphers=_ECDHE_AEAD,  # for the client side only; servers refuse TLS 1.2
        tls13_suites=ALL_TLS13_SUITES,
        groups="X25519:P-256:P-384",
        minimum_version=ssl.TLSVersion.TLSv1_3,
    ),
    "intermediate": TLSPolicy(
        name="intermediate",
        tls12_ciphers=_ECDHE_AEAD,
        tls13_suites=ALL_TLS13_SUITES,
        groups="X25519:P-256:P-384",
    ),
    "legacy-phones": TLSPolicy(
        name="legacy-phones",
        tls12_ciphers=f"{_ECDHE_AEAD}:{_LEGACY_CBC}",
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
PROFILES: tuple[str, ...] = tuple(POLICIES)
"""The profile names a listener may ask for (``security.tls_profile`` etc.)."""
VERIFY_CLIENT: dict[str, ssl.VerifyMode] = {
    "none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED,
}
SESSION_TICKETS = 2
"""TLS 1.3 tickets sent after a full handshake (OpenSSL's default), so a phone can resume."""


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
    """Builds, reports and reloads the TLS contexts of one listener's profile.

    Construction fails fast with ``CertificateError``/``TLSPolicyError`` whose
    message names the file or the rule. ``server_context()`` is safe to call
    from any thread; ``reload()`` swaps in new contexts atomically and keeps
    the old ones when the new files are bad.

    Dual certificates: with ``ecdsa_cert_file``/``ecdsa_key_file`` both chains
    are loaded into one context; OpenSSL then serves ECDSA to clients that
    offer ECDSA signature algorithms / ECDHE-ECDSA suites and RSA to the rest.
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
        ecdsa_cert_file: str | os.PathLike[str] | None = None,
        ecdsa_key_file: str | os.PathLike[str] | None = None,
        verify_client: str = "none",
        client_ca_file: str | os.PathLike[str] | None = None,
        listener: str = "sips",
    ) -> None:
        if enforce_fips and not fips_mode:
            raise TLSPolicyError("enforce_fips needs fips_mode")
        name = "fips" if fips_mode else (policy or "intermediate")
        if fips_mode and policy not in (None, "fips"):
            raise TLSPolicyError(f"{listener}: fips_mode forces the 'fips' profile; '{policy}' was asked for")
        if name not in POLICIES:
            raise TLSPolicyError(f"{listener}: unknown TLS profile '{name}' (known: {', '.join(POLICIES)})")
        if verify_client not in VERIFY_CLIENT:
            raise TLSPolicyError(f"{listener}: verify_client must be one of {', '.join(VERIFY_CLIENT)}, got {verify_client!r}")
        if verify_client != "none" and not client_ca_file:
            raise TLSPolicyError(f"{listener}: verify_client {verify_client} needs a client CA file")
        if bool(ecdsa_cert_file) != bool(ecdsa_key_file):
            raise TLSPolicyError(f"{listener}: an ECDSA certificate needs both its certificate and its key file")
        self.policy = POLICIES[name]
        self.listener = listener
        self.cert_file = os.fspath(cert_file)
        self.key_file = os.fspath(key_file)
        self.ecdsa_cert_file = os.fspath(ecdsa_cert_file) if ecdsa_cert_file else None
        self.ecdsa_key_file = os.fspath(ecdsa_key_file) if ecdsa_key_file else None
        self.ca_file = os.fspath(ca_file) if ca_file else None
        self.verify_client = verify_client
        self.client_ca_file = os.fspath(client_ca_file) if client_ca_file else None
        self.fips_mode = fips_mode
        self.enforce_fips = enforce_fips
        self._lock = threading.Lock()
        self.tls13_restricted = False
        self.ecdsa_certificate: CertificateInfo | None = None
        self.certificate, self.ecdsa_certificate, self._server = self._build()

    @classmethod
    def from_config(cls, security: Any) -> "TLSManager":
        """The main SIPS listener's manager, from a ``warden.config.SecurityConfig``."""
        return cls(
            security.tls_cert_file,
            security.tls_key_file,
            security.fips_mode,
            enforce_fips=security.enforce_fips,
            ca_file=security.tls_ca_file or None,
            policy=_asked(security, security, "tls_profile"),
            ecdsa_cert_file=getattr(security, "tls_ecdsa_cert_file", "") or None,
            ecdsa_key_file=getattr(security, "tls_ecdsa_key_file", "") or None,
            verify_client=getattr(security, "tls_verify_client", "none"),
            client_ca_file=getattr(security, "tls_client_ca_file", "") or None,
        )

    @classmethod
    def for_listener(cls, cfg: Any, listener: Any) -> "TLSManager":
        """An extra SIPS listener's manager (``sip.tls_listeners`` item); empty
        fields fall back to ``security``'s."""
        sec = cfg.security
        own_cert = bool(listener.cert_file)
        return cls(
            listener.cert_file or sec.tls_cert_file,
            listener.key_file or sec.tls_key_file,
            sec.fips_mode,
            enforce_fips=sec.enforce_fips,
            ca_file=sec.tls_ca_file or None,
            policy=_asked(sec, listener, "profile"),
            # the listener's own RSA certificate does not inherit the main ECDSA one
            ecdsa_cert_file=listener.ecdsa_cert_file or (None if own_cert else sec.tls_ecdsa_cert_file or None),
            ecdsa_key_file=listener.ecdsa_key_file or (None if own_cert else sec.tls_ecdsa_key_file or None),
            verify_client=listener.verify_client or sec.tls_verify_client,
            client_ca_file=listener.client_ca_file or sec.tls_client_ca_file or None,
            listener=listener.label,
        )

    @classmethod
    def for_api(cls, cfg: Any) -> "TLSManager":
        """The admin API's manager: ``api.ssl`` files and profile, ``security``'s FIPS switch."""
        return cls(
            cfg.api.ssl.cert_file,
            cfg.api.ssl.key_file,
            cfg.security.fips_mode,
            enforce_fips=cfg.security.enforce_fips,
            ca_file=cfg.security.tls_ca_file or None,
            policy=_asked(cfg.security, cfg.api.ssl, "profile"),
            listener="api",
        )

    # -- contexts --------------------------------------------------------------

    def _apply_policy(self, ctx: ssl.SSLContext, key_types: set[str]) -> bool:
        """Set versions, ciphers and groups; return whether TLS 1.3 is as asked."""
        policy = self.policy
        ctx.minimum_version = policy.minimum_version
        ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
        ciphers = policy.tls12_ciphers
        if "EC" in key_types and policy.ecdsa_tls12_ciphers:
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

    def _build(self) -> tuple[CertificateInfo, CertificateInfo | None, ssl.SSLContext]:
        info, chain = inspect_certificate(self.cert_file, self.key_file)
        pairs = [(info, chain, self.cert_file, self.key_file)]
        ecdsa_info = None
        if self.ecdsa_cert_file and self.ecdsa_key_file:
            ecdsa_info, ecdsa_chain = inspect_certificate(self.ecdsa_cert_file, self.ecdsa_key_file)
            if ecdsa_info.key_type != "EC":
                raise CertificateError(f"{self.ecdsa_cert_file} holds a {ecdsa_info.key_type} key, not an ECDSA one")
            if info.key_type == "EC":
                raise CertificateError(
                    f"{self.cert_file} is already an ECDSA certificate; the second certificate must be the other "
                    "kind (the main one RSA, the ECDSA one EC)"
                )
            pairs.append((ecdsa_info, ecdsa_chain, self.ecdsa_cert_file, self.ecdsa_key_file))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        restricted = self._apply_policy(ctx, {p[0].key_type for p in pairs})
        if self.policy.fips:
            problems = [p for pair in pairs for p in fips_certificate_problems(pair[0], pair[1])]
            if not restricted:
                problems.insert(0, "the TLS 1.3 cipher suite restriction is not effective in this Python/OpenSSL")
            if problems and self.enforce_fips:
                raise TLSPolicyError("enforce_fips: cannot enforce the FIPS policy: " + "; ".join(problems))
            for problem in problems:
                log.warning("FIPS policy not fully enforced: %s", problem)
        for _info, _chain, cert_file, key_file in pairs:
            try:
                ctx.load_cert_chain(cert_file, key_file)
            except ssl.SSLError as exc:
                raise CertificateError(f"OpenSSL rejected {cert_file} / {key_file}: {exc.reason or exc}") from None
        if self.verify_client != "none":
            assert self.client_ca_file is not None
            _read(self.client_ca_file, "client CA file")
            try:
                ctx.load_verify_locations(self.client_ca_file)
            except ssl.SSLError as exc:
                raise CertificateError(f"client CA file is not a PEM CA bundle: {self.client_ca_file}: {exc.reason or exc}") from None
            ctx.verify_mode = VERIFY_CLIENT[self.verify_client]
        # TLS 1.3 resumption: tickets on (returning phones skip the certificate
        # exchange); early data off, as 0-RTT requests can be replayed.
        if hasattr(ctx, "num_tickets"):
            ctx.num_tickets = SESSION_TICKETS
        ctx.options &= ~ssl.OP_NO_TICKET
        try:
            _libssl.set_max_early_data(ctx, 0)
        except (_libssl.NativeTLSUnavailable, ssl.SSLError) as exc:
            log.debug("cannot set max_early_data explicitly (OpenSSL's default is 0 already): %s", exc)
        self.tls13_restricted = restricted
        return info, ecdsa_info, ctx

    def server_context(self) -> ssl.SSLContext:
        """The current server context (a new one after each ``reload``)."""
        with self._lock:
            return self._server

    def client_context(self, cafile: str | os.PathLike[str] | None = None, *, verify: bool = True) -> ssl.SSLContext:
        """A client context with the same policy, verifying against ``cafile``
        (default: the configured CA, else the system store)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._apply_policy(ctx, set())
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
        for info, file in ((self.certificate, self.cert_file), (self.ecdsa_certificate, self.ecdsa_cert_file)):
            if info is None:
                continue
            level, line = expiry_level(info)
            if level:
                log.log(logging.ERROR if level == 2 else logging.WARNING, "certificate %s: %s", file, line)

    def reload(self) -> CertificateInfo:
        """Re-read certificates, keys and the client CA; on any error keep the old context."""
        info, ecdsa_info, ctx = self._build()
        with self._lock:
            self.certificate, self.ecdsa_certificate, self._server = info, ecdsa_info, ctx
        log.info("TLS certificate of %s reloaded: %s, expires %s", self.listener, info.subject, info.not_after.date())
        return info

    # -- reporting -------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """What is enforced, for logs and the API (no secrets)."""
        ctx = self.server_context()
        ciphers = ctx.get_ciphers()
        try:
            early_data: int | None = _libssl.get_max_early_data(ctx)
        except _libssl.NativeTLSUnavailable:
            early_data = None
        return {
            "listener": self.listener,
            "policy": self.policy.name,
            "fips_mode": self.fips_mode,
            "enforce_fips": self.enforce_fips,
            "minimum_version": "TLSv1.3" if self.policy.minimum_version is ssl.TLSVersion.TLSv1_3 else "TLSv1.2",
            "maximum_version": "TLSv1.3" if ssl.HAS_TLSv1_3 else "TLSv1.2",
            "tls12_ciphers": [] if self.policy.minimum_version is ssl.TLSVersion.TLSv1_3
            # CBC-SHA suites are labelled SSLv3/TLSv1.0 (their first version); they run in TLS 1.2 only here
            else [c["name"] for c in ciphers if c["protocol"] != "TLSv1.3"],
            "tls13_suites": [c["name"] for c in ciphers if c["protocol"] == "TLSv1.3"],
            "tls13_restricted": self.tls13_restricted,
            "groups": self.policy.groups.split(":"),
            "session_tickets": getattr(ctx, "num_tickets", None),
            "max_early_data": early_data,
            "verify_client": self.verify_client,
            "client_ca_file": self.client_ca_file,
            "openssl": ssl.OPENSSL_VERSION,
            "certificate": _cert_report(self.cert_file, self.certificate),
            "ecdsa_certificate": _cert_report(self.ecdsa_cert_file, self.ecdsa_certificate)
            if self.ecdsa_certificate is not None else None,
        }

    def describe(self) -> str:
        """One log line summarising the policy."""
        r = self.report()
        c = r["certificate"]
        versions = "TLS 1.3 only" if r["minimum_version"] == "TLSv1.3" else "TLS 1.2+ (1.3 preferred)"
        extra = ""
        if r["ecdsa_certificate"]:
            e = r["ecdsa_certificate"]
            extra += f"; ECDSA certificate {e['subject']} ({e['curve']})"
        if self.verify_client != "none":
            extra += f"; client certificates {self.verify_client} (CA {self.client_ca_file})"
        return (
            f"TLS on {self.listener}: profile {r['policy']}: {versions}, "
            f"{len(r['tls12_ciphers'])} TLS 1.2 ciphers, TLS 1.3 suites {','.join(r['tls13_suites'])}; "
            f"certificate {c['subject']} ({c['key_type']} {c['key_size']}) "
            f"SANs {','.join(c['sans'])}, expires in {c['expires_in_days']:.0f} days{extra}"
        )


def _asked(security: Any, section: Any, key: str) -> str | None:
    """The profile a config section asks for; None (meaning ``fips``) under
    ``fips_mode``, whose other requests the config loader has already refused."""
    if security.fips_mode:
        return None
    return getattr(section, key, None) or None


def _cert_report(file: str | None, info: CertificateInfo) -> dict[str, Any]:
    return {
        "file": file,
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
    }
