"""Sockets and threads live here and nowhere else: UDP, TCP and TLS servers."""

from .stream import Connection, Listener, StreamHandler, StreamServer
from .telemetry import HandshakeStats, classify_handshake_error

__all__ = ["Connection", "HandshakeStats", "Listener", "StreamHandler", "StreamServer", "classify_handshake_error"]
