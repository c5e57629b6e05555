"""Warden PBX: a TLS-first VoIP PBX."""

__version__ = "0.1.0"

__all__ = ["__version__"]
