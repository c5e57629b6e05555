"""SIP requests and responses: parse one message, serialise it, build responses.

RFC 3261 §7 (message format), §8.1.1 (mandatory headers), §8.2.6 (responses),
§18.3 (framing), §20 (header fields).

Strategy: :func:`parse_message` takes one complete message, as a datagram
carries it or as :class:`~warden.sip.framing.StreamFramer` cuts it from a
stream. It checks what every layer above relies on (start line,
Request-URI, To, From, Call-ID, CSeq, Via, Max-Forwards, Content-Length) and
leaves the rest as raw header fields, parsed on access. Header bytes are
decoded as UTF-8 with ``surrogateescape``, so bytes that are not UTF-8 come
back out unchanged.

Status of each failure (``SIPParseError.status``):

* 513 Message Too Large: the whole message is over ``max_message_size``;
* 413 Request Entity Too Large: Content-Length is over ``max_message_size``;
* 414 Request-URI Too Long: a request line over ``max_line_length``;
* 416 Unsupported URI Scheme: a Request-URI that is not sip, sips or tel;
* 505 Version Not Supported: a SIP version other than 2.0;
* 400 Bad Request: everything else, including too many or too long headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

from warden.errors import SIPParseError

from .headers import _KEYS, Headers, Via, header_key, parse_via
from .uri import NameAddr, SipURI, _parse_uint, parse_name_addr, parse_uri

__all__ = [
    "DEFAULT_LIMITS",
    "REASON_PHRASES",
    "ParserLimits",
    "Request",
    "Response",
    "make_response",
    "parse_message",
]

REASON_PHRASES: Mapping[int, str] = MappingProxyType(
    {
        100: "Trying",
        180: "Ringing",
        181: "Call Is Being Forwarded",
        182: "Queued",
        183: "Session Progress",
        199: "Early Dialog Terminated",
        200: "OK",
        202: "Accepted",
        204: "No Notification",
        300: "Multiple Choices",
        301: "Moved Permanently",
        302: "Moved Temporarily",
        305: "Use Proxy",
        380: "Alternative Service",
        400: "Bad Request",
        401: "Unauthorized",
        402: "Payment Required",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        406: "Not Acceptable",
        407: "Proxy Authentication Required",
        408: "Request Timeout",
        410: "Gone",
        412: "Conditional Request Failed",
        413: "Request Entity Too Large",
        414: "Request-URI Too Long",
        415: "Unsupported Media Type",
        416: "Unsupported URI Scheme",
        417: "Unknown Resource-Priority",
        420: "Bad Extension",
        421: "Extension Required",
        422: "Session Interval Too Small",
        423: "Interval Too Brief",
        428: "Use Identity Header",
        429: "Provide Referrer Identity",
        430: "Flow Failed",
        433: "Anonymity Disallowed",
        436: "Bad Identity-Info",
        437: "Unsupported Certificate",
        438: "Invalid Identity Header",
        439: "First Hop Lacks Outbound Support",
        440: "Max-Breadth Exceeded",
        469: "Bad Info Package",
        470: "Consent Needed",
        480: "Temporarily Unavailable",
        481: "Call/Transaction Does Not Exist",
        482: "Loop Detected",
        483: "Too Many Hops",
        484: "Address Incomplete",
        485: "Ambiguous",
        486: "Busy Here",
        487: "Request Terminated",
        488: "Not Acceptable Here",
        489: "Bad Event",
        491: "Request Pending",
        493: "Undecipherable",
        494: "Security Agreement Required",
        500: "Server Internal Error",
        501: "Not Implemented",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Server Time-out",
        505: "Version Not Supported",
        513: "Message Too Large",
        555: "Push Notification Service Not Supported",
        580: "Precondition Failure",
        600: "Busy Everywhere",
        603: "Decline",
        604: "Does Not Exist Anywhere",
        606: "Not Acceptable",
        607: "Unwanted",
        608: "Rejected",
    }
)
"""Standard reason phrases, used when a response is built without one."""


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Bounds that keep a hostile peer from making the parser buffer or loop without end."""

    max_message_size: int = 65536
    """Largest message in bytes, header section plus body.

    A larger message is 513; a Content-Length above it alone is 413.
    """

    max_headers: int = 100
    """Most header fields in one message; folded lines count once (400 above it)."""

    max_line_length: int = 8192
    """Longest start line or unfolded header field, in characters.

    A longer request line is 414; anything else is 400.
    """


DEFAULT_LIMITS = ParserLimits()

_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT_RE = re.compile(r"\r?\n")
_CTL_CHAR_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Control characters in a header section, but CR and LF (a CR not before LF is
found by counting, cheaper than a look-ahead in the regex)."""
_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_REQUEST_LINE_RE = re.compile(r"([!-~]+) +([!-~]+) +([!-~]+)")
_RESPONSE_LINE_RE = re.compile(r"([Ss][Ii][Pp]/[!-~]+) +([0-9]{3})(?: (.*))?", re.S)
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.I)
_CSEQ_RE = re.compile(r"[ \t]*([0-9]+)[ \t]+([A-Za-z0-9.!%*_+`'~-]+)[ \t]*")
_METHODS = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
     "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE")
)
"""Methods that are tokens, without asking the regex."""
_SINGLETON_KEYS = (("To", "to"), ("From", "from"), ("Call-ID", "call-id"), ("CSeq", "cseq"),
                   ("Max-Forwards", "max-forwards"))
_CTL_BYTES = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
"""Control characters but HT, CR and LF included (what the fast path of
:func:`_parse_head` counts: CR and LF only in its CRLF line ends)."""
_FIELD_NAMES: dict[str, tuple[str, str]] = {}
"""Text before a header line's colon, known to be a valid name -> ``(key, name)``."""


def _header_error(name: str, exc: SIPParseError) -> SIPParseError:
    return SIPParseError(f"{name}: {exc}", exc.status)


def _parse_call_id(value: str) -> str:
    value = value.strip(" \t")
    if not value or " " in value or "\t" in value:
        raise SIPParseError(f"invalid Call-ID {value[:80]!r}", 400)
    return value


def _parse_cseq(value: str) -> tuple[int, str]:
    number, _, method = value.partition(" ")
    if method in _METHODS and len(number) <= 10 and number.isdigit() and number.isascii():
        return _parse_uint(number, "CSeq number", 2**32 - 1), method  # the common form
    m = _CSEQ_RE.fullmatch(value)
    if m is None:
        raise SIPParseError(f"malformed CSeq {value[:80]!r}", 400)
    return _parse_uint(m.group(1), "CSeq number", 2**32 - 1), m.group(2)


def _parse_address(name: str, value: str) -> NameAddr:
    try:
        return parse_name_addr(value)
    except SIPParseError as exc:
        raise _header_error(name, exc) from None


class _MessageMixin:
    """Accessors shared by requests and responses.

    Parsed values are memoised in ``headers`` (see :meth:`Headers.memo`), which
    forgets them whenever a header changes, so they are never stale.
    """

    __slots__ = ()
    headers: Headers
    body: bytes

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SIPParseError(f"missing {name} header", 400)
        return value

    @property
    def call_id(self) -> str:
        value = self.headers._memo.get("call-id")  # parsed by _validate: no call to memo()
        return value if value is not None else self.headers.memo("call-id", self._call_id)  # type: ignore[return-value]

    def _call_id(self) -> str:
        return _parse_call_id(self._required("Call-ID"))

    @property
    def cseq(self) -> tuple[int, str]:
        """``(sequence number, method)``; the number is a 32-bit unsigned integer."""
        value = self.headers._memo.get("cseq")  # parsed by _validate: no call to memo()
        return value if value is not None else self.headers.memo("cseq", self._cseq)  # type: ignore[return-value]

    def _cseq(self) -> tuple[int, str]:
        return _parse_cseq(self._required("CSeq"))

    @property
    def from_(self) -> NameAddr:
        value = self.headers._memo.get("from")  # parsed by _validate: no call to memo()
        return value if value is not None else self.headers.memo("from", self._from)  # type: ignore[return-value]

    def _from(self) -> NameAddr:
        return _parse_address("From", self._required("From"))

    @property
    def to(self) -> NameAddr:
        value = self.headers._memo.get("to")  # parsed by _validate: no call to memo()
        return value if value is not None else self.headers.memo("to", self._to)  # type: ignore[return-value]

    def _to(self) -> NameAddr:
        return _parse_address("To", self._required("To"))

    @property
    def vias(self) -> list[Via]:
        """Every Via, top (most recent hop) first."""
        return list(self.headers.memo("via", self._vias))

    def _vias(self) -> tuple[Via, ...]:
        try:
            return tuple(parse_via(v) for v in self.headers.get_all("Via"))
        except SIPParseError as exc:
            raise _header_error("Via", exc) from None

    def replace_top_via(self, via: Via) -> None:
        """Put ``via`` in place of the top Via (e.g. with received/rport added),
        keeping the parsed Vias so the change costs no re-parse."""
        headers = self.headers
        rest = headers.memo("via", self._vias)[1:]
        index = headers._index or headers._build_index()
        values = index.get("via")
        if values is not None and len(values) == 1 and "," not in values[0]:
            # one Via field holding one Via (the rule): swap it in place and
            # keep the index, as set() would do with a rebuild
            text = str(via)
            Headers._check("Via", text)
            fields = headers._fields
            at = next(i for i, f in enumerate(fields) if f[0] == "via")
            fields[at] = ("via", "Via", text)
            index["via"] = [text]
            headers._lists.pop("via", None)
        else:
            headers.set("Via", ", ".join([str(via), *headers.get_all("Via")[1:]]))
        headers._memo["via"] = (via, *rest)

    @property
    def via(self) -> Via:
        """The top Via, which identifies the transaction (RFC 3261 §17.2.3)."""
        try:
            vias = self.headers._memo.get("via")
            if vias is None:
                vias = self.headers.memo("via", self._vias)
            return vias[0]  # type: ignore[no-any-return, index]
        except IndexError:
            raise SIPParseError("missing Via header", 400) from None
        except SIPParseError as exc:
            raise _header_error("Via", exc) from None

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return None if value is None else _parse_uint(value, "Max-Forwards", 255)

    @property
    def contact_wildcard(self) -> bool:
        """True for ``Contact: *`` (a REGISTER removing every binding, RFC 3261 §10.2.2)."""
        return "*" in self.headers.get_all("Contact")

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact; empty for ``Contact: *`` (check :attr:`contact_wildcard`)."""
        values = self.headers.get_all("Contact")
        if "*" in values:
            if len(values) > 1:
                raise SIPParseError("Contact: * must be the only Contact", 400)
            return []
        try:
            return [parse_name_addr(v) for v in values]
        except SIPParseError as exc:
            raise _header_error("Contact", exc) from None

    @property
    def expires(self) -> int | None:
        """The Expires header in seconds, if present."""
        value = self.headers.get("Expires")
        return None if value is None else _parse_uint(value, "Expires", 2**32 - 1)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    def _serialise(self, start_line: str) -> bytes:
        if "\r" in start_line or "\n" in start_line:
            raise ValueError(f"line break in start line {start_line[:80]!r}")
        lines = [start_line]
        length_written = False
        for key, name, value in self.headers._fields:
            if key == "content-length":
                if length_written:
                    continue
                value, length_written = str(len(self.body)), True
            lines.append(f"{name}: {value}")
        if not length_written:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body


@dataclass(slots=True)
class Request(_MessageMixin):
    """A SIP request. Mutable, as a proxy or B2BUA edits headers before forwarding.

    ``bytes(request)`` is the wire form with a correct Content-Length.
    """

    method: str
    uri: SipURI
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def __bytes__(self) -> bytes:
        return self._serialise(f"{self.method} {self.uri} SIP/2.0")


@dataclass(slots=True)
class Response(_MessageMixin):
    """A SIP response. ``bytes(response)`` is the wire form with a correct Content-Length."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def __bytes__(self) -> bytes:
        return self._serialise(f"SIP/2.0 {self.status} {self.reason}")


def _head_end(data: bytes, start: int) -> tuple[int, int] | None:
    """Where the header section ends and the body begins: the first blank line
    (``\r?\n\r?\n``, as ``_HEAD_END_RE`` finds it), or ``None``.

    Two ``bytes.find`` instead of the regex, which tries a match at every
    byte: the first ``\n`` followed by ``\r?\n`` is the blank line, which
    starts one earlier when that ``\n`` ends a CRLF.
    """
    lf = data.find(b"\n\r\n", start)
    bare = data.find(b"\n\n", start, len(data) if lf < 0 else lf + 1)
    if bare >= 0:
        lf, after = bare, bare + 2
    elif lf >= 0:
        after = lf + 3
    else:
        return None
    return (lf - 1 if lf > start and data[lf - 1] == 0x0D else lf), after


def _skip_crlf(data: bytes) -> int:
    """Where the start line begins: RFC 3261 §7.5 says to ignore CRLFs before it."""
    pos = 0
    while data.startswith(b"\n", pos) or data.startswith(b"\r\n", pos):
        pos += 1 if data[pos] == 0x0A else 2
    return pos


def _parse_head(head: bytes, limits: ParserLimits) -> tuple[str, Headers]:
    """Split a header section (start line included, blank line excluded) into fields.

    Folded continuation lines are joined with one space (RFC 3261 §7.3.1).
    """
    text = head.decode("utf-8", "surrogateescape")
    # Fast path: CRLF line ends only, no other control character, no folding,
    # every line a well-formed field, the whole head within one line's limit.
    # One ``translate`` finds stray CR, LF and control characters (UTF-8 and
    # surrogate-escaped bytes are never below 0x80), and the fields and their
    # index are built in one loop; header names already seen valid skip the
    # token check. Anything else takes :func:`_parse_head_lines`, which
    # finds the exact error.
    lines = text.split("\r\n")
    if (
        len(text) <= limits.max_line_length
        and len(lines) <= limits.max_headers + 1
        and len(head) - len(head.translate(None, _CTL_BYTES)) == 2 * len(lines) - 2
    ):
        fields: list[tuple[str, str, str]] = []
        index: dict[str, list[str]] = {}
        names = _FIELD_NAMES
        for i in range(1, len(lines)):
            line = lines[i]
            raw, colon, value = line.partition(":")
            if not colon:
                break
            known = names.get(raw)
            if known is None:
                known = _field_name(raw)
                if known is None:
                    break
            key = known[0]
            value = value.strip(" \t")
            fields.append((key, known[1], value))
            values = index.get(key)
            if values is None:
                index[key] = [value]
            else:
                values.append(value)
        else:
            headers = Headers._trusted(fields)
            headers._index = index
            return lines[0], headers
    return _parse_head_lines(text, limits)


def _parse_head_lines(text: str, limits: ParserLimits) -> tuple[str, Headers]:
    """:func:`_parse_head` line by line: any line ends, folding, and the exact error."""
    if _CTL_CHAR_RE.search(text) or text.count("\r") != text.count("\r\n"):  # not one test per line
        raise SIPParseError("control character in header section", 400)
    lines = _LINE_SPLIT_RE.split(text)
    start_line = lines[0]
    if len(start_line) > limits.max_line_length:
        is_request = not start_line[:4].upper().startswith("SIP/")
        raise SIPParseError(
            f"start line is longer than {limits.max_line_length} characters",
            414 if is_request else 400,
        )
    raw: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not raw:
                raise SIPParseError("continuation line before the first header", 400)
            raw[-1] = raw[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            raw.append(line)
            if len(raw) > limits.max_headers:
                raise SIPParseError(f"more than {limits.max_headers} header fields", 400)
        if len(raw[-1]) > limits.max_line_length:
            raise SIPParseError(
                f"header field longer than {limits.max_line_length} characters: {raw[-1][:40]!r}",
                400,
            )
    fields: list[tuple[str, str, str]] = []
    for line in raw:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN_RE.fullmatch(name):
            raise SIPParseError(f"malformed header line {line[:80]!r}", 400)
        fields.append((header_key(name), name, value.strip(" \t")))
    return start_line, Headers._trusted(fields)


def _field_name(raw: str) -> tuple[str, str] | None:
    """``(key, name)`` of the text before a header line's colon, if it is a
    token and optional blanks; remembered (boundedly) for the next message."""
    name = raw.rstrip(" \t")
    if not _TOKEN_RE.fullmatch(name):
        return None
    known = (header_key(name), name)
    if len(_FIELD_NAMES) < 4096:  # names come from peers: keep the memo bounded
        _FIELD_NAMES[raw] = known
    return known


def _content_length(headers: Headers, limits: ParserLimits) -> int | None:
    """The validated Content-Length, or ``None`` if there is none."""
    values = (headers._index or headers._build_index()).get("content-length")
    if values is None:
        return None
    if len(values) == 1:  # fast path: one plain number (leading zeros and all else below)
        value = values[0]
        if len(value) <= 12 and value.isdigit() and value.isascii():
            length = int(value)
            if length <= limits.max_message_size:
                return length
    lengths: set[int] = set()
    for value in values:
        value = value.strip(" \t")
        if value.startswith("-") and value[1:].isdigit():
            raise SIPParseError(f"negative Content-Length {value[:20]!r}", 400)
        if not re.fullmatch(r"[0-9]+", value):
            raise SIPParseError(f"non-numeric Content-Length {value[:20]!r}", 400)
        digits = value.lstrip("0") or "0"
        if len(digits) > 12 or int(digits) > limits.max_message_size:
            raise SIPParseError(
                f"Content-Length {digits[:20]} is over the {limits.max_message_size}-byte limit",
                413,
            )
        lengths.add(int(digits))
    if len(lengths) > 1:
        raise SIPParseError(f"conflicting Content-Length values {sorted(lengths)}", 400)
    return lengths.pop() if lengths else None


def _check_version(version: str) -> None:
    if version == "SIP/2.0":
        return
    if not _VERSION_RE.fullmatch(version):
        raise SIPParseError(f"malformed SIP version {version[:20]!r}", 400)
    if version.upper() != "SIP/2.0":
        raise SIPParseError(f"unsupported SIP version {version[:20]!r}", 505)


def _start(start_line: str, headers: Headers, body: bytes) -> Request | Response:
    if start_line[:4].upper() == "SIP/":
        m = _RESPONSE_LINE_RE.fullmatch(start_line)
        if m is None:
            raise SIPParseError(f"malformed status line {start_line[:80]!r}", 400)
        _check_version(m.group(1))
        status = int(m.group(2))
        if not 100 <= status <= 699:
            raise SIPParseError(f"status code {status} is outside 100-699", 400)
        return Response(status, m.group(3) or "", headers, body)
    m = _REQUEST_LINE_RE.fullmatch(start_line)
    if m is None:
        raise SIPParseError(f"malformed request line {start_line[:80]!r}", 400)
    method, uri_text, version = m.groups()
    if method not in _METHODS and not _TOKEN_RE.fullmatch(method):
        raise SIPParseError(f"invalid method {method[:40]!r}", 400)
    _check_version(version)
    try:
        uri = parse_uri(uri_text)
    except SIPParseError as exc:
        raise _header_error("Request-URI", exc) from None
    return Request(method, uri, headers, body)


def _validate(msg: Request | Response) -> None:
    """RFC 3261 §8.1.1: the headers every request (and so every response) carries.

    Parses Via, From, To, Call-ID, Max-Forwards and CSeq once, as their
    accessors would, and leaves the results in the memo for them.
    """
    headers = msg.headers
    index = headers._index or headers._build_index()
    for name, key in _SINGLETON_KEYS:
        values = index.get(key)
        count = 0 if values is None else len(values)
        if count != 1:
            if count > 1:
                raise SIPParseError(f"{count} {name} headers, expected one", 400)
            if key != "max-forwards":
                raise SIPParseError(f"missing {name} header", 400)
    vias = index.get("via")
    if vias is None:
        raise SIPParseError("missing Via header", 400)
    memo = headers._memo
    if len(vias) == 1 and "," not in vias[0]:  # one Via in one field: no list to split
        if not vias[0]:
            raise SIPParseError("missing Via header", 400)
        try:
            memo["via"] = (parse_via(vias[0]),)
        except SIPParseError as exc:
            raise _header_error("Via", exc) from None
    else:
        if not headers.get_all("Via"):
            raise SIPParseError("missing Via header", 400)
        memo["via"] = msg._vias()
    memo["from"] = _parse_address("From", index["from"][0])
    memo["to"] = _parse_address("To", index["to"][0])
    memo["call-id"] = _parse_call_id(index["call-id"][0])
    max_forwards = index.get("max-forwards")
    if max_forwards is not None:
        _parse_uint(max_forwards[0], "Max-Forwards", 255)
    cseq = memo["cseq"] = _parse_cseq(index["cseq"][0])
    if isinstance(msg, Request) and cseq[1] != msg.method:
        raise SIPParseError(
            f"CSeq method {cseq[1]!r} does not match request method {msg.method!r}", 400
        )


def parse_message(data: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one complete SIP message, as carried by one datagram.

    Without Content-Length the body runs to the end of ``data`` (RFC 3261
    §18.3, UDP); with it, a shorter body is an error and extra bytes are
    dropped. Raises :class:`SIPParseError` carrying the response status.
    """
    if len(data) > limits.max_message_size:
        raise SIPParseError(
            f"message is {len(data)} bytes, over the {limits.max_message_size}-byte limit", 513
        )
    start = _skip_crlf(data) if data[:1] in (b"\r", b"\n") else 0
    end = _head_end(data, start)
    if end is None:
        if start == len(data):
            raise SIPParseError("empty message", 400)
        raise SIPParseError("truncated message: no blank line ends the header section", 400)
    start_line, headers = _parse_head(data[start : end[0]], limits)
    body = data[end[1] :]
    length = _content_length(headers, limits)
    if length is not None:
        if len(body) < length:
            raise SIPParseError(
                f"truncated body: {len(body)} bytes, Content-Length says {length}", 400
            )
        body = body[:length]
    return _from_head(start_line, headers, body)


def _from_head(start_line: str, headers: Headers, body: bytes) -> Request | Response:
    """The message from a head split by :func:`_parse_head` and its body, already
    cut to Content-Length (the stream framer parses the head once, for both)."""
    msg = _start(start_line, headers, body)
    _validate(msg)
    return msg


_COPIED = ("via", "from", "call-id", "cseq")


@lru_cache(maxsize=1024)
def _name_addr_text(text: str) -> str:
    """``str(parse_name_addr(text))``: the To a response to ``text``'s request
    carries before its tag (a callee's To recurs in every call to it)."""
    return str(parse_name_addr(text))


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Build a response to ``request`` as RFC 3261 §8.2.6 says.

    Via (all, in order), From, Call-ID and CSeq are copied verbatim, as is To,
    which gets ``to_tag`` unless it already has a tag. A 100 Trying also
    copies Timestamp (§8.2.6.1). ``headers`` are appended; Content-Length is
    computed on serialisation. Copying Record-Route into dialog-creating
    responses is the dialog layer's job (§12.1.1).
    """
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} is outside 100-699")
    out = Headers()
    fields, memo = out._fields, out._memo  # values come from a parsed request: already checked
    tagged = None
    if to_tag is not None:
        to = request.to
        if to.tag is None:
            if "tag" in to.params:  # a valueless ;tag gets its value in place
                tagged = str(to.with_tag(to_tag))
            else:  # with_tag appends ;tag=: the text is the same, without building it
                tagged = _name_addr_text(request._required("To")) + ";tag=" + to_tag
    for entry in request.headers._fields:
        key = entry[0]
        if key in _COPIED or (key == "timestamp" and status == 100):
            fields.append(entry)
        elif key == "to":
            if tagged is not None:
                entry = (key, entry[1], tagged)
            fields.append(entry)
    for key in _COPIED:  # the parsed views stay valid for identical values
        if key in request.headers._memo:
            memo[key] = request.headers._memo[key]
    for name, value in headers:
        out.add(name, value)
    if reason is None:
        reason = REASON_PHRASES.get(status) or REASON_PHRASES[status // 100 * 100]
    return Response(status, reason, out, body)
