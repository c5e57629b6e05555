"""Counters of TLS handshakes, and failure reasons an admin understands.

OpenSSL's reasons (``UNSUPPORTED_PROTOCOL``, ``WRONG_VERSION_NUMBER``...) are
mapped to a few plain phrases so logs and ``/metrics`` say *why* a phone
failed: too old a protocol, no shared cipher, not TLS at all, a timeout.
"""

from __future__ import annotations

import collections
import ssl
import threading

__all__ = ["DEPRECATED_PROTOCOL", "TLS12_REFUSED", "HandshakeStats", "classify_handshake_error", "describe_failure"]

_REASONS = {
    "UNSUPPORTED_PROTOCOL": "protocol too old",
    "UNKNOWN_PROTOCOL": "protocol too old",
    "VERSION_TOO_LOW": "protocol too old",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol too old",
    "NO_SHARED_CIPHER": "no shared cipher",
    "NO_CIPHERS_AVAILABLE": "no shared cipher",
    "NO_SUITABLE_KEY_SHARE": "no shared group",
    "NO_SHARED_GROUPS": "no shared group",
    "NO_SHARED_SIGNATURE_ALGORITHMS": "no shared signature algorithm",
    "WRONG_VERSION_NUMBER": "not TLS",
    "HTTP_REQUEST": "not TLS (plain HTTP)",
    "HTTPS_PROXY_REQUEST": "not TLS (proxy request)",
    "UNEXPECTED_MESSAGE": "not TLS",
    "RECORD_LAYER_FAILURE": "not TLS",
    "PACKET_LENGTH_TOO_LONG": "not TLS",
    "TLSV1_ALERT_UNKNOWN_CA": "bad certificate (peer does not trust our CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "bad certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "bad certificate (expired)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "client certificate missing",
    "CERTIFICATE_VERIFY_FAILED": "bad client certificate",
}


def describe_failure(code: str) -> str:
    """The reason for an OpenSSL reason code (``UNSUPPORTED_PROTOCOL``) or one of
    ``timeout``, ``eof``, ``TLS12_REFUSED``, as processes other than this one
    (the API's workers) report them."""
    special = {"timeout": "timeout", "eof": "closed during handshake", "TLS12_REFUSED": TLS12_REFUSED}
    if code in special:
        return special[code]
    if code in _REASONS:
        return _REASONS[code]
    return "closed during handshake" if "EOF" in code else f"TLS error ({code.lower() or 'unknown'})"


def classify_handshake_error(exc: BaseException) -> str:
    """A short reason for a failed handshake."""
    if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)):
        return "closed during handshake"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _REASONS:
            return _REASONS[reason]
        if "EOF" in str(exc) or reason == "UNEXPECTED_EOF_WHILE_READING":
            return "closed during handshake"
        return f"TLS error ({reason.lower() or 'unknown'})"
    return "closed during handshake"


DEPRECATED_PROTOCOL = "protocol too old"
"""The reason of SSLv3/TLS 1.0/TLS 1.1 attempts, logged at WARNING as deprecated-protocol attempts."""
TLS12_REFUSED = "TLS 1.2 refused (listener is TLS 1.3 only)"
"""A TLS 1.2 client at a ``modern`` listener: refused, but not a deprecated protocol."""


class HandshakeStats:
    """Thread-safe handshake counters by (transport, version, cipher) and reason,
    of one listener (``listener``: ``sips``, ``sips-5063``, ``api``...)."""

    def __init__(self, listener: str = "") -> None:
        self.listener = listener
        self._lock = threading.Lock()
        self.ok: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.failures: collections.Counter[tuple[str, str]] = collections.Counter()
        self.deprecated: collections.Counter[tuple[str, str]] = collections.Counter()
        """SSLv3/TLS 1.0/TLS 1.1 attempts by (transport, version the ClientHello offered)."""

    def succeeded(self, transport: str, version: str, cipher: str) -> None:
        with self._lock:
            self.ok[(transport, version, cipher)] += 1

    def failed(self, transport: str, reason: str) -> None:
        with self._lock:
            self.failures[(transport, reason)] += 1

    def deprecated_attempt(self, transport: str, version: str) -> None:
        with self._lock:
            self.deprecated[(transport, version)] += 1

    def snapshot(self) -> dict[str, list[dict[str, object]]]:
        """Plain data for the control channel and the API."""
        with self._lock:
            return {
                "handshakes": [
                    {"listener": self.listener, "transport": t, "version": v, "cipher": c, "count": n}
                    for (t, v, c), n in sorted(self.ok.items())
                ],
                "failures": [
                    {"listener": self.listener, "transport": t, "reason": r, "count": n}
                    for (t, r), n in sorted(self.failures.items())
                ],
                "deprecated": [
                    {"listener": self.listener, "transport": t, "version": v, "count": n}
                    for (t, v), n in sorted(self.deprecated.items())
                ],
            }
