"""Stub for the compiled G.711 codec (g711.pyx); pure twin: warden.media.pure.g711."""

from typing_extensions import Buffer

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

def ulaw_decode(data: Buffer) -> bytes:
    """Decode mu-law codes (1 byte each) to 16-bit signed little-endian PCM."""

def alaw_decode(data: Buffer) -> bytes:
    """Decode A-law codes (1 byte each) to 16-bit signed little-endian PCM."""

def ulaw_encode(pcm: Buffer) -> bytes:
    """Encode 16-bit signed little-endian PCM to mu-law; ValueError on odd length."""

def alaw_encode(pcm: Buffer) -> bytes:
    """Encode 16-bit signed little-endian PCM to A-law; ValueError on odd length."""
