"""SIP over a byte stream (TCP/TLS): framing, keep-alives and the flow table.

Runs on the stream server's I/O threads: cuts messages out of each
connection with ``StreamFramer``, answers RFC 5626 CRLFCRLF pings with a CRLF
pong right here (no engine round trip), and hands whole messages to the
engine. Every live connection is a *flow* with a token; the registrar stores
the token with a binding so requests to that phone reuse its connection.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from ..errors import SIPParseError
from ..sip.framing import InvalidMessage, KeepAlivePing, MessageReceived, StreamFramer
from ..sip.message import ParserLimits, Request, Response
from .stream import Connection

__all__ = ["FlowTable", "SIPStreamHandler", "StreamSink"]

log = logging.getLogger("warden.transport.sip")


class StreamSink(Protocol):
    """The engine side of the stream transports."""

    def stream_message(self, conn: Connection, message: Request | Response, received_at: float) -> None: ...

    def stream_invalid(self, conn: Connection, data: bytes, error: SIPParseError) -> None: ...

    def stream_closed(self, conn: Connection, reason: str) -> None: ...


class FlowTable:
    """Live connections by flow token (``tls:17``); safe to read from any thread."""

    def __init__(self) -> None:
        self._flows: dict[str, Connection] = {}

    @staticmethod
    def token(conn: Connection) -> str:
        return f"{conn.transport}:{conn.id}"

    def add(self, conn: Connection) -> None:
        self._flows[self.token(conn)] = conn

    def remove(self, conn: Connection) -> None:
        self._flows.pop(self.token(conn), None)

    def get(self, token: str | None) -> Connection | None:
        if not token:
            return None
        conn = self._flows.get(token)
        return conn if conn is not None and not conn.closed else None

    def __len__(self) -> int:
        return len(self._flows)


class SIPStreamHandler:
    """``StreamHandler`` speaking SIP; one per stream server."""

    def __init__(self, sink: StreamSink, flows: FlowTable, limits: ParserLimits) -> None:
        self.sink = sink
        self.flows = flows
        self.limits = limits
        self._framers: dict[int, StreamFramer] = {}
        self._spoke: set[int] = set()
        """Connections that delivered a message: only their close concerns the engine."""

    def on_open(self, conn: Connection) -> None:
        self._framers[conn.id] = StreamFramer(self.limits)
        self.flows.add(conn)

    def on_data(self, conn: Connection, data: bytes) -> None:
        framer = self._framers.get(conn.id)
        if framer is None or framer.broken:
            return  # the close is queued; bytes still in this read loop are dropped unlogged
        try:
            framer.feed(data)
            for event in framer:
                if isinstance(event, MessageReceived):
                    self._spoke.add(conn.id)
                    self.sink.stream_message(conn, event.message, time.time())
                elif isinstance(event, KeepAlivePing):
                    conn.send(KeepAlivePing.PONG)
                elif isinstance(event, InvalidMessage):
                    self._spoke.add(conn.id)
                    self.sink.stream_invalid(conn, event.data, event.error)
        except SIPParseError as exc:
            log.info("%s flow %d from %s:%d: framing error, closing: %s", conn.transport, conn.id, *conn.peer, exc)
            conn.close(f"framing error: {exc}")

    def on_close(self, conn: Connection, reason: str) -> None:
        """Tell the engine, unless the connection never carried a message: nothing
        can refer to its flow then, and a handshake flood would otherwise cost the
        engine thread a wake-up and a scan of every call per connection."""
        self._framers.pop(conn.id, None)
        self.flows.remove(conn)
        if conn.id in self._spoke:
            self._spoke.discard(conn.id)
            self.sink.stream_closed(conn, reason)
