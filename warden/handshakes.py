"""What a TLS handshake attempt tells an admin: a failure reason, the version a client offered.

A leaf (standard library only) shared by the SIP transports and the admin
API's gunicorn workers, which must not import :mod:`warden.transport`.

OpenSSL's reasons (``UNSUPPORTED_PROTOCOL``, ``WRONG_VERSION_NUMBER``...) are
mapped to a few plain phrases so logs and ``/metrics`` say *why* a phone
failed: too old a protocol, no shared cipher, not TLS at all, a timeout.

Strategy (offered version): a refused ``-tls1_1`` handshake ends in
``UNSUPPORTED_PROTOCOL`` with no version in the error, yet "which old
protocol do phones still try" is what an admin needs before tightening a
policy. So the first bytes of the connection are peeked (``MSG_PEEK``, the
TLS library still reads them) and the ClientHello's ``client_version`` names
the highest version the client speaks: TLS 1.3 clients put TLS 1.2 there and
list 1.3 in an extension, so anything below TLS 1.2 is a client that cannot
do better.
"""

from __future__ import annotations

import ssl

__all__ = [
    "CLOSED_BEFORE_HELLO",
    "DEPRECATED_VERSIONS",
    "HELLO_PEEK_BYTES",
    "classify_handshake_error",
    "hello_version",
]

#: Versions whose use (or attempt) is logged at WARNING and counted.
DEPRECATED_VERSIONS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"})

#: The failure reason of a connection closed before it sent a byte: a port
#: probe or a load balancer's health check rather than a client that failed.
CLOSED_BEFORE_HELLO = "closed before ClientHello"

#: Bytes of a connection :func:`hello_version` needs.
HELLO_PEEK_BYTES = 11

_VERSIONS = {0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}

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


def hello_version(data: bytes) -> str | None:
    """The highest version a ClientHello offers (``TLSv1.1``...), from its first bytes.

    None when ``data`` is not (the start of) a ClientHello or is too short.
    """
    if len(data) >= 3 and data[0] & 0x80 and data[2] == 1:
        return "SSLv2"  # an SSLv2-format CLIENT-HELLO (2-byte header, msg type 1)
    if len(data) < HELLO_PEEK_BYTES or data[0] != 0x16 or data[1] != 0x03 or data[5] != 0x01:
        return None
    return _VERSIONS.get((data[9] << 8) | data[10])

