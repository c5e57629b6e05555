"""One error hierarchy for Warden PBX.

Every error that can reach a user carries a message meant for them. SIP errors
know the response status they should become (as h11's ``error_status_hint``),
so the engine turns a local parse failure into the right remote answer.
"""

from __future__ import annotations

__all__ = [
    "WardenError",
    "ConfigError",
    "TLSPolicyError",
    "CertificateError",
    "SIPError",
    "SIPParseError",
    "StoreError",
    "ExtensionExists",
    "NoSuchExtension",
]


class WardenError(Exception):
    """Base class of every error Warden raises on purpose."""


class ConfigError(WardenError):
    """The configuration file is unreadable or a value in it is invalid.

    ``str(err)`` is one line per problem, each ``file:line: key.path message``.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class TLSPolicyError(WardenError):
    """The TLS policy cannot be built or enforced as configured."""


class CertificateError(TLSPolicyError):
    """A certificate or key file is missing, unreadable, mismatched or unsafe."""


class SIPError(WardenError):
    """A SIP-level failure that maps to a response status (default 400)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SIPParseError(SIPError):
    """Bytes on the wire are not a well-formed SIP message."""


class StoreError(WardenError):
    """The durable store refused an operation or cannot be used.

    ``status`` is the HTTP/SIP-ish status the failure should become (400 for
    a bad value unless a subclass or the raiser says otherwise).
    """

    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class ExtensionExists(StoreError):
    """An extension with that number already exists."""

    status = 409


class NoSuchExtension(StoreError):
    """No extension has that number."""

    status = 404
