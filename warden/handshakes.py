"""Names of the TLS versions a ClientHello offers, shared by the SIP transports and the API workers.

A leaf (standard library only): the admin API's gunicorn workers must not
import :mod:`warden.transport`. A refused ``-tls1_1`` handshake ends in
``UNSUPPORTED_PROTOCOL`` with no version in the error, yet "which old
protocol do phones still try" is what an admin needs before tightening a
policy, so the version the client offered (OpenSSL's ``SSL_client_version``,
:func:`warden._libssl.client_version`) is counted by name. TLS 1.3 clients
put TLS 1.2 there and list 1.3 in an extension: anything below TLS 1.2 is a
client that cannot do better.
"""

from __future__ import annotations

__all__ = ["DEPRECATED_VERSIONS", "hello_version", "version_name"]

#: Versions whose attempts are logged at WARNING and counted by version.
DEPRECATED_VERSIONS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"})

_VERSIONS = {0x0002: "SSLv2", 0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2",
             0x0304: "TLSv1.3"}


def version_name(code: int | None) -> str | None:
    """``TLSv1.1`` for ``0x0302`` and so on; None for an unknown code."""
    return _VERSIONS.get(code) if code is not None else None


def hello_version(data: bytes) -> str | None:
    """The highest version a ClientHello's first bytes offer (None if they are not one, or too few)."""
    if len(data) >= 3 and data[0] & 0x80 and data[2] == 1:
        return "SSLv2"  # an SSLv2-format CLIENT-HELLO (2-byte header, msg type 1)
    if len(data) < 11 or data[0] != 0x16 or data[1] != 0x03 or data[5] != 0x01:
        return None
    return version_name((data[9] << 8) | data[10])
