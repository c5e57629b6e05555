"""SIPStreamHandler: what a stream connection's bytes turn into (sans sockets but the pair)."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

from warden.errors import SIPParseError
from warden.sip.message import DEFAULT_LIMITS, Request, Response
from warden.transport.sip_stream import FlowTable, SIPStreamHandler
from warden.transport.stream import Connection, Listener, StreamServer


class Sink:
    def __init__(self) -> None:
        self.messages: list[Request | Response] = []
        self.invalid: list[SIPParseError] = []
        self.closed: list[str] = []

    def stream_message(self, conn: Connection, message: Request | Response, received_at: float) -> None:
        self.messages.append(message)

    def stream_invalid(self, conn: Connection, data: bytes, error: SIPParseError) -> None:
        self.invalid.append(error)

    def stream_closed(self, conn: Connection, reason: str) -> None:
        self.closed.append(reason)


@pytest.fixture()
def conn() -> Any:
    """A connection owned by a real (not started) I/O worker: close() is queued, as on the I/O thread."""
    a, b = socket.socketpair()
    server = StreamServer([Listener("127.0.0.1", 0)], handler=None)  # type: ignore[arg-type]
    c = Connection(sock=a, peer=("127.0.0.1", 1), local=("127.0.0.1", 2), transport="tcp", worker=server._workers[0])
    yield c
    a.close()
    b.close()


def test_framing_error_is_logged_once_and_later_bytes_are_dropped(conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    handler = SIPStreamHandler(sink, FlowTable(), DEFAULT_LIMITS)
    handler.on_open(conn)
    with caplog.at_level(logging.INFO, logger="warden.transport.sip"):
        handler.on_data(conn, b"GARBAGE\r\n")
        for _ in range(50):  # what the read loop may still hand over before the queued close runs
            handler.on_data(conn, b"OPTIONS sip:a SIP/2.0\r\n" * 10)
    errors = [r for r in caplog.records if "framing error" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert not sink.messages and not sink.invalid
    assert conn.worker._pending[-1][0] == "close"


OPTIONS = (b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:x@h>;tag=1\r\n"
           b"To: <sip:a>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("data, reported", [
    (b"", False),                     # handshake then gone (a flood): the engine never hears of it
    (b"\r\n\r\n", False),             # keep-alives only: answered here, no flow the engine knows
    (OPTIONS, True),                  # a message: the engine may hold the flow token
    (OPTIONS.replace(b"Call-ID: c\r\n", b""), True),  # an invalid message was answered over it
])
def test_close_reaches_the_engine_only_for_flows_that_carried_a_message(conn: Any, data: bytes, reported: bool) -> None:
    sink = Sink()
    flows = FlowTable()
    handler = SIPStreamHandler(sink, flows, DEFAULT_LIMITS)
    handler.on_open(conn)
    if data:
        handler.on_data(conn, data)
    handler.on_close(conn, "closed by peer")
    assert sink.closed == (["closed by peer"] if reported else [])
    assert len(flows) == 0 and not handler._spoke
