"""SDP session descriptions (RFC 4566) for offer/answer (RFC 3264), sans-I/O.

Strategy: a description is kept as its ordered lines, split into the session
section and one section per ``m=`` line. Accessors parse on demand; mutators
rewrite only the lines they touch. So ``bytes(parse_sdp(data)) == data`` for
well-formed CRLF input, and media anchoring that rewrites addresses and ports
leaves everything it does not understand (ICE, vendor attributes) intact.
Bytes that are not UTF-8 survive too (decoded with ``surrogateescape``).

Parsing validates only what anchoring relies on — ``v=``, ``o=``, ``s=``,
``c=`` and ``m=`` — so a stray vendor line never costs a call; attribute
values are checked when read, raising :class:`SIPParseError` (400) then.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from warden.errors import SIPParseError

__all__ = [
    "DIRECTIONS", "Line", "Origin", "Connection", "RtpMap", "Rtcp", "Crypto",
    "MediaDescription", "SessionDescription", "parse_sdp", "AnchorView", "anchor_view",
]

#: Media direction attributes (RFC 3264 §5.1); ``sendrecv`` when none is given.
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

_ENCODING = ("utf-8", "surrogateescape")
_INLINE_KEY = re.compile(r"inline:[^|\s;]+", re.IGNORECASE)
# RTP/AVP static payload types (RFC 3551) phones send without a=rtpmap.
_STATIC = {0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000),
           9: ("G722", 8000), 13: ("CN", 8000), 18: ("G729", 8000)}


def _bad(message: str) -> SIPParseError:
    return SIPParseError(f"malformed SDP: {message}", 400)


def _show(text: str, limit: int = 40) -> str:
    """Quote a fragment for an error, short enough to not leak a whole line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _num(text: str) -> int | None:
    """ASCII digits only: ``int()`` would also take ``+1``, `` 1`` and ``1_0``."""
    return int(text) if text.isascii() and text.isdigit() else None


def _port(text: str, what: str) -> int:
    port = _num(text)
    if port is None:
        raise _bad(f"non-numeric port {_show(text)} in {what}")
    if port > 65535:
        raise _bad(f"port {port} out of range in {what}")
    return port


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _word(value: str) -> str:
    """Guard a value we put into a field: no spaces, line breaks or NUL."""
    if not value or " " in value or "\t" in value or "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"bad SDP field value {value!r}")
    return value


@dataclass(frozen=True, slots=True, repr=False)
class Line:
    """One ``<kind>=<value>`` line, kept verbatim; its repr hides keys."""

    kind: str
    """The single lower-case type letter."""
    value: str
    """Everything after ``=``, without the line ending."""

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"

    def __repr__(self) -> str:
        value = self.value
        if self.kind == "k" or (self.kind == "a" and _attr_name(self) == "key-mgmt"):
            value = value.partition(":")[0] + ":<redacted>"
        elif self.kind == "a" and _attr_name(self) == "crypto":
            value = _INLINE_KEY.sub("inline:<redacted>", value)
        return f"Line({self.kind!r}, {value!r})"


@dataclass(frozen=True, slots=True)
class Origin:
    """The ``o=`` line: who made the description and its version."""

    username: str
    session_id: str
    version: int
    """Must grow with every changed offer from the same party (RFC 3264 §8)."""
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    @classmethod
    def parse(cls, value: str) -> Origin:
        f = value.split()
        if len(f) != 6:
            raise _bad(f"bad o= line {_show(value)}: expected 6 fields")
        version = _num(f[2])
        if version is None:
            raise _bad(f"non-numeric session version {_show(f[2])} in o= line")
        return cls(f[0], f[1], version, f[3], f[4], f[5])

    def __str__(self) -> str:
        return (f"{self.username} {self.session_id} {self.version} "
                f"{self.nettype} {self.addrtype} {self.address}")


@dataclass(frozen=True, slots=True)
class Connection:
    """A ``c=`` line; ``address`` keeps any multicast ``/ttl/count`` suffix."""

    address: str
    addrtype: str = "IP4"
    """``IP4`` or ``IP6``."""
    nettype: str = "IN"

    @classmethod
    def parse(cls, value: str) -> Connection:
        f = value.split()
        if len(f) != 3:
            raise _bad(f"bad c= line {_show(value)}: expected '<nettype> <addrtype> <address>'")
        return cls(f[2], f[1], f[0])

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]``."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        pt_text, _, rest = value.partition(" ")
        parts = rest.strip().split("/")
        pt = _num(pt_text)
        rate = _num(parts[1]) if len(parts) > 1 else None
        channels = _num(parts[2]) if len(parts) == 3 else None
        if (pt is None or pt > 127 or rate is None or not parts[0] or len(parts) > 3
                or (len(parts) == 3 and channels is None)):
            raise _bad(f"bad a=rtpmap value {_show(value)}")
        return cls(pt, parts[0], rate, channels)

    def __str__(self) -> str:
        tail = "" if self.channels is None else f"/{self.channels}"
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


@dataclass(frozen=True, slots=True)
class Rtcp:
    """``a=rtcp:<port> [<nettype> <addrtype> <address>]`` (RFC 3605)."""

    port: int
    address: str | None = None
    addrtype: str | None = None
    nettype: str | None = None

    @classmethod
    def parse(cls, value: str) -> Rtcp:
        f = value.split()
        if len(f) not in (1, 4):
            raise _bad(f"bad a=rtcp value {_show(value)}")
        port = _port(f[0], "a=rtcp")
        return cls(port) if len(f) == 1 else cls(port, f[3], f[2], f[1])

    def __str__(self) -> str:
        if self.address is None:
            return str(self.port)
        addrtype = self.addrtype or _addrtype(self.address)
        return f"{self.port} {self.nettype or 'IN'} {addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Crypto:
    """``a=crypto`` (SDES, RFC 4568); the key stays out of reprs and logs."""

    tag: int
    suite: str
    key_params: str = field(repr=False)
    """``inline:<base64 key||salt>[|lifetime][|MKI:len]``, ``;``-separated."""
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Crypto:
        f = value.split()
        tag = _num(f[0]) if f else None
        if len(f) < 3 or tag is None:
            # Not echoing the value: it holds the master key.
            raise _bad("bad a=crypto value: expected '<tag> <suite> <key-params>'")
        return cls(tag, f[1], f[2], tuple(f[3:]))

    def __str__(self) -> str:
        return " ".join((str(self.tag), self.suite, self.key_params, *self.session_params))


@dataclass(slots=True)
class _Section:
    """Lines of one section; the attribute and ``c=`` logic both levels share."""

    lines: list[Line]
    _C_AFTER: ClassVar[str] = ""  # kinds that precede c= in this section (RFC 4566 §5)

    def _attrs(self, name: str) -> Iterator[tuple[int, str | None]]:
        want = name.lower()
        for i, line in enumerate(self.lines):
            if line.kind == "a":
                key, sep, value = line.value.partition(":")
                if key.lower() == want:
                    yield i, (value if sep else None)

    def attributes(self, name: str) -> list[str | None]:
        """Values of every ``a=name`` line at this level (None for a flag)."""
        return [v for _, v in self._attrs(name)]

    def attribute(self, name: str) -> str | None:
        """The first ``a=name`` value; use :meth:`has_attribute` for flags."""
        return next((v for _, v in self._attrs(name)), None)

    def has_attribute(self, name: str) -> bool:
        return next(self._attrs(name), None) is not None

    def add_attribute(self, name: str, value: str | None = None) -> None:
        """Append ``a=name[:value]`` at the end of this section."""
        self.lines.append(_attr_line(name, value))

    def remove_attributes(self, name: str, *more: str) -> int:
        """Drop every ``a=name`` line here (of any of the names); returns how many went."""
        names = {n.lower() for n in (name, *more)}
        kept = [ln for ln in self.lines if ln.kind != "a" or _attr_name(ln) not in names]
        gone = len(self.lines) - len(kept)
        if gone:
            self.lines[:] = kept
        return gone

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """One ``a=name[:value]``: the first in place, the others dropped."""
        self._replace(lambda ln: ln.kind == "a" and _attr_name(ln) == name.lower(),
                      _attr_line(name, value), at_end=True)

    def _replace(self, match: Callable[[Line], bool], new: Line, at_end: bool) -> None:
        """Put ``new`` where the first match is and drop the other matches; with
        no match, append it or insert it after the kinds that precede ``c=``."""
        hits = [i for i, ln in enumerate(self.lines) if match(ln)]
        if hits:
            self.lines[hits[0]] = new
            for i in reversed(hits[1:]):
                del self.lines[i]
        elif at_end:
            self.lines.append(new)
        else:
            i = 0
            while i < len(self.lines) and self.lines[i].kind in self._C_AFTER:
                i += 1
            self.lines.insert(i, new)

    @property
    def connection(self) -> Connection | None:
        """This level's own ``c=`` (the first one, if several)."""
        line = next((ln for ln in self.lines if ln.kind == "c"), None)
        return None if line is None else Connection.parse(line.value)

    def set_connection(self, address: str, addrtype: str | None = None) -> None:
        """Set this level's ``c=`` (added in RFC order if absent)."""
        conn = Connection(_word(address), _word(addrtype or _addrtype(address)))
        self._replace(lambda ln: ln.kind == "c", Line("c", str(conn)), at_end=False)

    def remove_connection(self) -> None:
        self.lines[:] = [ln for ln in self.lines if ln.kind != "c"]

    @property
    def direction(self) -> str | None:
        """The direction attribute given at this level, if any."""
        return next((ln.value for ln in self.lines if ln.kind == "a" and ln.value in DIRECTIONS),
                    None)

    def set_direction(self, direction: str) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown media direction {direction!r}")
        self._replace(lambda ln: ln.kind == "a" and ln.value in DIRECTIONS,
                      Line("a", direction), at_end=True)


def _attr_name(line: Line) -> str:
    return line.value.partition(":")[0].lower()


def _attr_line(name: str, value: str | None) -> Line:
    if not name or any(c in name for c in ": \r\n\x00"):
        raise ValueError(f"bad attribute name {name!r}")
    if value is not None and any(c in value for c in "\r\n\x00"):
        raise ValueError("line break or NUL in an attribute value")
    return Line("a", name if value is None else f"{name}:{value}")


@dataclass(slots=True)
class MediaDescription(_Section):
    """One ``m=`` section; ``lines[0]`` is the ``m=`` line itself."""

    _C_AFTER: ClassVar[str] = "mi"

    def _m(self) -> list[str]:
        return self.lines[0].value.split()

    @property
    def media(self) -> str:
        """``audio``, ``video``, ``application``, ..."""
        return self._m()[0]

    @property
    def port(self) -> int:
        """The RTP port; 0 means the stream is rejected or disabled."""
        return int(self._m()[1].partition("/")[0])

    @property
    def port_count(self) -> int | None:
        count = self._m()[1].partition("/")[2]
        return int(count) if count else None

    @property
    def proto(self) -> str:
        """``RTP/AVP``, ``RTP/SAVP``, ``UDP/TLS/RTP/SAVPF``, ..."""
        return self._m()[2]

    @property
    def formats(self) -> tuple[str, ...]:
        """Formats as sent: payload-type numbers for RTP."""
        return tuple(self._m()[3:])

    def set_port(self, port: int, count: int | None = None) -> None:
        if not 0 <= port <= 65535 or (count is not None and count < 1):
            raise ValueError(f"bad port {port}/{count}")
        f = self._m()
        f[1] = str(port) if count is None else f"{port}/{count}"
        self.lines[0] = Line("m", " ".join(f))

    def set_formats(self, formats: Sequence[str]) -> None:
        """Rewrite the ``m=`` format list (attributes are left to the caller)."""
        if not formats:
            raise ValueError("an m= line needs one or more formats")
        self.lines[0] = Line("m", " ".join((*self._m()[:3], *map(_word, formats))))

    @property
    def rtpmap(self) -> dict[int, RtpMap]:
        """Explicit ``a=rtpmap`` entries by payload type."""
        maps = (RtpMap.parse(v) for v in self.attributes("rtpmap") if v is not None)
        return {m.payload_type: m for m in maps}

    def codec(self, payload_type: int) -> RtpMap | None:
        """The ``a=rtpmap`` for a payload type, else its RFC 3551 static meaning."""
        found = self.rtpmap.get(payload_type)
        if found is None and payload_type in _STATIC:
            found = RtpMap(payload_type, *_STATIC[payload_type])
        return found

    @property
    def fmtp(self) -> dict[str, str]:
        """``a=fmtp`` parameters by format."""
        out: dict[str, str] = {}
        for v in self.attributes("fmtp"):
            fmt, _, params = (v or "").partition(" ")
            out[fmt] = params
        return out

    @property
    def rtcp(self) -> Rtcp | None:
        value = self.attribute("rtcp")
        return None if value is None else Rtcp.parse(value)

    def set_rtcp(self, port: int, address: str | None = None,
                 addrtype: str | None = None) -> None:
        """Set ``a=rtcp`` (replacing any); with ``address`` the long form."""
        if not 0 <= port <= 65535:
            raise ValueError(f"bad RTCP port {port}")
        if address is not None:
            _word(address)
        self.set_attribute("rtcp", str(Rtcp(port, address, addrtype)))

    @property
    def rtcp_mux(self) -> bool:
        """RTP and RTCP share one port (RFC 5761)."""
        return self.has_attribute("rtcp-mux")

    @property
    def crypto(self) -> list[Crypto]:
        return [Crypto.parse(v or "") for v in self.attributes("crypto")]


@dataclass(slots=True)
class SessionDescription(_Section):
    """A whole SDP body: the session-level lines plus the media sections.

    ``bytes(sdp)`` renders it, every line ending in CRLF.
    """

    media: list[MediaDescription] = field(default_factory=list)
    _C_AFTER: ClassVar[str] = "vosiuep"

    def __bytes__(self) -> bytes:
        out = [str(ln) for ln in self.lines]
        out += [str(ln) for m in self.media for ln in m.lines]
        return ("\r\n".join(out) + "\r\n").encode(*_ENCODING)

    def _value(self, kind: str) -> str:
        line = next((ln for ln in self.lines if ln.kind == kind), None)
        if line is None:
            raise _bad(f"no {kind}= line")
        return line.value

    @property
    def origin(self) -> Origin:
        return Origin.parse(self._value("o"))

    def set_origin(self, origin: Origin) -> None:
        for part in (origin.username, origin.session_id, origin.nettype, origin.addrtype,
                     origin.address):
            _word(part)
        self._replace(lambda ln: ln.kind == "o", Line("o", str(origin)), at_end=False)

    def bump_version(self) -> int:
        """Increase the ``o=`` session version (RFC 3264 §8); returns it."""
        o = self.origin
        version = o.version + 1
        # set_origin(replace(o, version=version)) without the copy and the
        # checks: the other fields were split on blanks, so they are words
        text = f"{o.username} {o.session_id} {version} {o.nettype} {o.addrtype} {o.address}"
        self._replace(lambda ln: ln.kind == "o", Line("o", text), at_end=False)
        return version

    @property
    def session_name(self) -> str:
        return self._value("s")

    def connection_of(self, media: MediaDescription) -> Connection | None:
        """Where a stream's media goes: its own ``c=``, else the session's."""
        return media.connection or self.connection

    def direction_of(self, media: MediaDescription) -> str:
        """The stream's direction: its own, else the session's, else sendrecv."""
        return media.direction or self.direction or "sendrecv"

    def is_held(self, media: MediaDescription) -> bool:
        """On hold: sendonly/inactive, or the RFC 2543 ``c=... 0.0.0.0``."""
        conn = self.connection_of(media)
        return (self.direction_of(media) in ("sendonly", "inactive")
                or (conn is not None and conn.host == "0.0.0.0"))


def _check_media(value: str) -> None:
    f = value.split()
    if len(f) < 4:
        raise _bad(f"bad m= line {_show(value)}: expected '<media> <port> <proto> <fmt> ...'")
    port, slash, count = f[1].partition("/")
    _port(port, "m= line")
    if slash and not _num(count):
        raise _bad(f"bad port count {_show(count)} in m= line")


def _check_connection(value: str) -> None:
    """What :meth:`Connection.parse` checks, without building the object."""
    if len(value.split()) != 3:
        Connection.parse(value)  # raises


def _check_origin(value: str) -> None:
    """What :meth:`Origin.parse` checks, without building the object."""
    f = value.split()
    if len(f) != 6 or _num(f[2]) is None:
        Origin.parse(value)  # raises


# What parse_sdp validates up front, by line kind: what anchoring relies on.
_CHECKS: dict[str, Callable[[str], object]] = {
    "m": _check_media, "c": _check_connection, "o": _check_origin,
}


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse an SDP body; LF-only endings are accepted (and become CRLF).

    Raises SIPParseError(400) naming the line and what is wrong with it.
    """
    raw = bytes(data).decode(*_ENCODING).split("\n")
    while raw and raw[-1] in ("", "\r"):  # the final line end, and padding
        raw.pop()
    if not raw:
        raise _bad("empty body")
    session: list[Line] = []
    media: list[MediaDescription] = []
    counts = {"o": 0, "s": 0}
    session_c = False  # does the session level have a c= line?
    media_c: list[bool] = []
    for no, text in enumerate(raw, 1):
        if text.endswith("\r"):
            text = text[:-1]
        if "\r" in text or "\x00" in text:
            raise _bad(f"line {no}: stray CR or NUL")
        if len(text) < 2 or text[1] != "=" or not "a" <= text[0] <= "z":
            raise _bad(f"line {no}: expected '<letter>=<value>', got {_show(text)}")
        kind, value = text[0], text[2:]
        if no == 1:
            if kind != "v" or value != "0":
                raise _bad(f"line {no}: missing v=0 line (got {_show(text)})")
        elif kind == "v":
            raise _bad(f"line {no}: v= is only allowed as the first line")
        if kind in counts:
            if media:
                raise _bad(f"line {no}: {kind}= inside a media section")
            counts[kind] += 1
        check = _CHECKS.get(kind)
        if check is not None:
            try:
                check(value)
            except SIPParseError as exc:
                raise _bad(f"line {no}: {str(exc).removeprefix('malformed SDP: ')}") from None
        line = Line(kind, value)
        if kind == "m":
            media.append(MediaDescription([line]))
            media_c.append(False)
        elif media:
            media[-1].lines.append(line)
            if kind == "c":
                media_c[-1] = True
        else:
            session.append(line)
            if kind == "c":
                session_c = True
    sdp = SessionDescription(session, media)
    for kind in "os":
        if counts[kind] != 1:
            raise _bad(f"expected exactly one {kind}= line")
    for i, m in enumerate(media, 1):  # a c= line checked above is a connection
        if not media_c[i - 1] and not session_c and m.port != 0:
            raise _bad(f"media section {i} ({m.media}) has no c= line and the session none")
    return sdp


@dataclass(slots=True)
class AnchorView:
    """An SDP body read just far enough to anchor its media, for :func:`anchor_view`.

    ``streams`` has one tuple per ``m=`` line: ``(port, peer, direction,
    rtcp_mux, rtcp_port, rtcp_address)``; ``peer`` is the stream's
    connection host (its own ``c=``, else the session's; None if neither),
    ``direction`` as :meth:`SessionDescription.direction_of` gives it,
    ``rtcp_port``/``rtcp_address`` from ``a=rtcp`` (None when absent).
    """

    session: list[str]
    """Session-level lines, without line ends."""
    sections: list[list[str]]
    """Each media section's lines, its ``m=`` line first."""
    streams: list[tuple[int, str | None, str, bool, int | None, str | None]]
    own_hosts: list[str | None]
    """Host of each section's own first ``c=`` (session level first), or None."""

    def anchored(self, host: str, ports: Sequence[int], drop: frozenset[str]) -> bytes:
        """The body with every stream that has a port moved to ``host``:``ports[i]``.

        Exactly what the object model gives for ``set_port``, ``set_rtcp``
        (when ``a=rtcp`` is there), ``set_connection(host)`` at every level
        whose own ``c=`` is not an old-style hold, ``remove_attributes(*drop)``
        and ``bump_version``; port-0 streams stay as they are.
        """
        conn = "c=IN " + _addrtype(_word(host)) + " " + host
        out: list[str] = []
        _rewrite_lines(self.session, out, conn if _holds_not(self.own_hosts[0]) else None, None, drop, True)
        for i, lines in enumerate(self.sections):
            stream = self.streams[i]
            if stream[0] == 0:
                out.extend(lines)
                continue
            port = ports[i]
            f = lines[0][2:].split()
            f[1] = str(port)
            out.append("m=" + " ".join(f))
            rtcp = None
            if stream[4] is not None:
                rtcp = "a=rtcp:" + str(port if stream[3] else port + 1)
            _rewrite_lines(lines, out, conn if _holds_not(self.own_hosts[i + 1]) else None, rtcp, drop, False)
        out.append("")
        return "\r\n".join(out).encode(*_ENCODING)


def _holds_not(host: str | None) -> bool:
    return host is not None and host != "0.0.0.0" and host != "::"


def _rewrite_lines(lines: list[str], out: list[str], conn: str | None, rtcp: str | None,
                   drop: frozenset[str], session: bool) -> None:
    """Append ``lines`` (a media section's after its ``m=``) rewritten to ``out``."""
    seen_c = False
    seen_rtcp = False
    for i in range(0 if session else 1, len(lines)):
        line = lines[i]
        kind = line[0]
        if kind == "a":
            key = line[2:].partition(":")[0].lower()
            if key in drop:
                continue
            if rtcp is not None and key == "rtcp":
                if not seen_rtcp:
                    out.append(rtcp)
                    seen_rtcp = True
                continue
        elif kind == "c" and conn is not None:
            if not seen_c:
                out.append(conn)
                seen_c = True
            continue
        elif kind == "o" and session:
            f = line[2:].split()
            f[2] = str(int(f[2]) + 1)
            line = "o=" + " ".join(f)
        out.append(line)


def anchor_view(data: bytes) -> AnchorView | None:
    """Read ``data`` for media anchoring in one pass, or None to use :func:`parse_sdp`.

    None for anything :func:`parse_sdp` would reject and for an ``a=rtcp``
    that the object model would parse only when asked (a bad value, or the
    flag form), so errors and their timing stay the full path's.
    """
    raw = bytes(data).decode(*_ENCODING).split("\n")
    while raw and (raw[-1] == "" or raw[-1] == "\r"):
        raw.pop()
    if not raw or raw[0].rstrip("\r") != "v=0":
        return None
    session: list[str] = []
    sections: list[list[str]] = []
    own_hosts: list[str | None] = [None]
    directions: list[str | None] = [None]
    rtcps: list[str | None] = []
    muxes: list[bool] = []
    rtcp_seen: list[bool] = []
    n_o = 0
    n_s = 0
    lines = session
    for text in raw:
        if text.endswith("\r"):
            text = text[:-1]
        if "\r" in text or "\x00" in text or len(text) < 2 or text[1] != "=" or not "a" <= text[0] <= "z":
            return None
        kind = text[0]
        if kind == "a":
            value = text[2:]
            key = value.partition(":")[0].lower()
            if sections:
                if key == "rtcp" and not rtcp_seen[-1]:
                    rtcp_seen[-1] = True
                    if ":" not in value:
                        return None  # the flag form: the object model reads it as no a=rtcp
                    rtcps[-1] = value.partition(":")[2]
                elif key == "rtcp-mux":
                    muxes[-1] = True
            if directions[-1] is None and value in DIRECTIONS:
                directions[-1] = value
        elif kind == "m":
            f = text[2:].split()
            if len(f) < 4:
                return None
            port, slash, count = f[1].partition("/")
            if _num(port) is None or int(port) > 65535 or (slash and not _num(count)):
                return None
            lines = [text]
            sections.append(lines)
            own_hosts.append(None)
            directions.append(None)
            rtcps.append(None)
            muxes.append(False)
            rtcp_seen.append(False)
            continue
        elif kind == "c":
            f = text[2:].split()
            if len(f) != 3:
                return None
            if own_hosts[-1] is None:
                own_hosts[-1] = f[2].split("/", 1)[0]
        elif kind == "v":
            if session:
                return None  # v= only as the first line
        elif kind == "o" or kind == "s":
            if sections:
                return None
            if kind == "o":
                n_o += 1
                f = text[2:].split()
                if len(f) != 6 or _num(f[2]) is None:
                    return None
            elif kind == "s":
                n_s += 1
        lines.append(text)
    if n_o != 1 or n_s != 1:
        return None
    streams: list[tuple[int, str | None, str, bool, int | None, str | None]] = []
    for i, lines in enumerate(sections):
        port = int(lines[0][2:].split()[1].partition("/")[0])
        peer = own_hosts[i + 1]
        if peer is None:
            peer = own_hosts[0]
        if peer is None and port != 0:
            return None
        rtcp_port: int | None = None
        rtcp_address: str | None = None
        value = rtcps[i]
        if value is not None:
            f = value.split()
            if len(f) not in (1, 4) or _num(f[0]) is None or int(f[0]) > 65535:
                return None
            rtcp_port = int(f[0])
            rtcp_address = f[3] if len(f) == 4 else None
        streams.append((port, peer, directions[i + 1] or directions[0] or "sendrecv",
                        muxes[i], rtcp_port, rtcp_address))
    return AnchorView(session, sections, streams, own_hosts)
