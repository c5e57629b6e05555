"""Cutting SIP messages out of a TCP or TLS byte stream (RFC 3261 §18.3, RFC 5626 §3.5.1).

Strategy: the framer owns a buffer and nothing else. ``feed`` appends bytes;
``next_event`` returns one event, or ``None`` when it needs more data. A
message ends after the blank line plus Content-Length bytes, so on a stream
Content-Length is mandatory. What the framer cannot delimit (no
Content-Length, a bad one, a header section that outgrows the limits, bytes
that are not a start line) is a framing error: it raises
:class:`SIPParseError` and the stream is dead from then on, because the next
message boundary is unknown. A message that is delimited but invalid (say, no
Call-ID) does not desynchronise the stream; it comes out as
:class:`InvalidMessage` and framing goes on.

Keep-alives: a CRLFCRLF between messages is a ping, which the server answers
with one CRLF; a lone CRLF is a pong. A CRLF with more bytes after it in the
buffer is a stray line end before a message (RFC 3261 §7.5) and is skipped.
A CRLF that ends the buffer is reported as a pong at once (a client waits on
it), and if the next bytes begin with another CRLF the pair is reported as a
ping, so a ping split across two reads is still answered.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, NoReturn

from warden.errors import SIPParseError

from .headers import Headers
from .message import (
    _HEAD_END_RE,
    DEFAULT_LIMITS,
    ParserLimits,
    Request,
    Response,
    _content_length,
    _from_head,
    _parse_head,
    parse_message,
)

__all__ = [
    "FramerEvent",
    "InvalidMessage",
    "KeepAlivePing",
    "KeepAlivePong",
    "MessageReceived",
    "StreamFramer",
]

_START_LINE_RE = re.compile(
    rb"(?:[!-~]+ +[!-~]+ +[Ss][Ii][Pp]/[!-~]*|[Ss][Ii][Pp]/[!-~]+ +[0-9]{3}(?: [^\r\n]*)?)\r?"
)


class _MessageNext:
    """Marker from ``_keepalive``: the buffer now starts with a message."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A complete, valid message."""

    data: bytes
    """The exact bytes of the message, as cut from the stream."""

    message: Request | Response
    """The parsed message."""


@dataclass(frozen=True, slots=True)
class InvalidMessage:
    """A complete message that failed to parse; the stream is still in sync.

    The engine may answer a request with ``error.status`` when it can.
    """

    data: bytes
    """The exact bytes of the message."""

    error: SIPParseError
    """Why it was refused."""


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """An RFC 5626 CRLFCRLF ping: send :attr:`PONG` back on the same connection."""

    PONG: ClassVar[bytes] = b"\r\n"


@dataclass(frozen=True, slots=True)
class KeepAlivePong:
    """An RFC 5626 CRLF pong: the peer answered our ping."""


FramerEvent = MessageReceived | InvalidMessage | KeepAlivePing | KeepAlivePong


class StreamFramer:
    """Sans-I/O framer for one SIP stream connection.

    Buffering is bounded: at most ``limits.max_message_size`` bytes of one
    message are held beyond what the caller fed in a single call.
    """

    def __init__(self, limits: ParserLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._scan = 0
        self._total: int | None = None
        self._crlf_pending = False
        self._error: SIPParseError | None = None
        self._head: tuple[str, Headers, int] | None = None
        """The pending message's start line, headers and body offset, parsed by _find_message."""

    @property
    def broken(self) -> bool:
        """True after a framing error; the connection should be closed."""
        return self._error is not None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as events."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Add bytes read from the connection."""
        self._check_alive()
        self._buf += data

    def feed_eof(self) -> None:
        """The peer closed the connection; raise if it did so mid-message."""
        self._check_alive()
        if self._buf.strip(b"\r\n"):
            self._fail("connection closed in the middle of a message", 400)

    def __iter__(self) -> Iterator[FramerEvent]:
        """Every event the buffered bytes make, until more data is needed."""
        event = self.next_event()  # no walrus: Debian's Cython 0.29 compiles this module
        while event is not None:
            yield event
            event = self.next_event()

    def next_event(self) -> FramerEvent | None:
        """The next event, or ``None`` until more bytes are fed."""
        self._check_alive()
        if self._total is None:
            keepalive = self._keepalive()
            if not isinstance(keepalive, _MessageNext):
                return keepalive
            if not self._find_message():
                return None
        total = self._total
        if total is None or len(self._buf) < total:
            return None
        data = bytes(self._buf[:total])
        del self._buf[:total]
        self._total = None
        self._scan = 0
        head, self._head = self._head, None
        try:
            if head is not None:  # the head is parsed already: do not parse it again
                start_line, headers, body_at = head
                return MessageReceived(data, _from_head(start_line, headers, data[body_at:]))
            return MessageReceived(data, parse_message(data, self._limits))
        except SIPParseError as exc:
            return InvalidMessage(data, exc)

    def _keepalive(self) -> KeepAlivePing | KeepAlivePong | _MessageNext | None:
        """Consume line ends between messages.

        Returns a keep-alive event, ``None`` to wait for more bytes, or
        ``_MessageNext()`` when the buffer starts with something else.
        """
        buf = self._buf
        while True:
            if buf.startswith(b"\r\n"):
                if self._crlf_pending:
                    self._crlf_pending = False
                    del buf[:2]
                    return KeepAlivePing()
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    return KeepAlivePing()
                if len(buf) == 2:
                    del buf[:2]
                    self._crlf_pending = True
                    return KeepAlivePong()
                if buf == b"\r\n\r":
                    return None
                del buf[:2]
            elif buf.startswith(b"\n"):
                del buf[:1]
            elif not buf or buf == b"\r":
                return None
            else:
                self._crlf_pending = False
                return _MessageNext()

    def _find_message(self) -> bool:
        """Find the end of the header section and learn the total length; True once known."""
        buf, limits = self._buf, self._limits
        newline = buf.find(b"\n")
        if newline < 0:
            if len(buf) > limits.max_line_length:
                self._fail(f"start line is longer than {limits.max_line_length} bytes", 400)
        elif not _START_LINE_RE.fullmatch(buf, 0, newline):
            self._fail(f"stream does not carry a SIP start line: {bytes(buf[:40])!r}", 400)
        end = _HEAD_END_RE.search(buf, self._scan)
        if end is None:
            if len(buf) > limits.max_message_size:
                self._fail(f"no end of header section within {limits.max_message_size} bytes", 513)
            self._scan = max(0, len(buf) - 3)
            return False
        if end.end() > limits.max_message_size:
            self._fail(f"header section is over the {limits.max_message_size}-byte limit", 513)
        try:
            start_line, headers = _parse_head(bytes(buf[: end.start()]), limits)
            length = _content_length(headers, limits)
        except SIPParseError as exc:
            self._fail(str(exc), exc.status)
        if length is None:
            self._fail("Content-Length is mandatory on stream transports (RFC 3261 §18.3)", 400)
        total, limit = end.end() + length, limits.max_message_size
        if total > limit:
            self._fail(f"message of {total} bytes is over the {limit}-byte limit", 513)
        self._total = total
        self._head = (start_line, headers, end.end())
        return True

    def _fail(self, message: str, status: int) -> NoReturn:
        self._error = SIPParseError(message, status)
        self._buf.clear()
        raise self._error

    def _check_alive(self) -> None:
        if self._error is not None:
            raise SIPParseError(f"stream already failed: {self._error}", self._error.status)
