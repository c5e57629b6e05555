"""Stream framing for SIP over TCP/TLS: splits, keep-alives, limits, fatal errors."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.errors import SIPParseError
from warden.sip import (
    InvalidMessage,
    KeepAlivePing,
    KeepAlivePong,
    MessageReceived,
    ParserLimits,
    Request,
    Response,
    StreamFramer,
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


REGISTER = crlf("""REGISTER sips:sip.example.org SIP/2.0
Via: SIP/2.0/TLS 192.168.1.23:47391;alias;branch=z9hG4bK.Wtc6nfIHc;rport
From: <sips:1001@sip.example.org>;tag=bJQ~qkd2e
To: sips:1001@sip.example.org
CSeq: 20 REGISTER
Call-ID: 9Fz5k9eWTn
Max-Forwards: 70
Contact: <sips:1001@192.168.1.23:47391;transport=tls;ob>;+sip.instance="<urn:uuid:e5e0a53e-4f8a-00f2-8a42-1a4a2b64fc4b>";reg-id=1
Expires: 3600
Content-Length: 0

""")

SDP = crlf(
    "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n"
)
INVITE = crlf(f"""INVITE sips:2002@pbx.example.com SIP/2.0
v: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK776asdhds
Max-Forwards: 70
f: "Alice" <sips:2001@pbx.example.com>;tag=1928301774
t: <sips:2002@pbx.example.com>
i: a84b4c76e66710@pc33.example.com
CSeq: 314159 INVITE
m: <sips:2001@192.0.2.1:5061;transport=tls>
c: application/sdp
l: {len(SDP)}

""") + SDP

OK = crlf("""SIP/2.0 200 OK
Via: SIP/2.0/TLS 192.168.1.23:47391;alias;branch=z9hG4bK.Wtc6nfIHc;rport=47391;received=198.51.100.4
From: <sips:1001@sip.example.org>;tag=bJQ~qkd2e
To: <sips:1001@sip.example.org>;tag=8a8sdg87s
Call-ID: 9Fz5k9eWTn
CSeq: 20 REGISTER
Contact: <sips:1001@192.168.1.23:47391;transport=tls;ob>;expires=3600
Content-Length: 0

""")

PING = b"\r\n\r\n"
STREAM = PING + REGISTER + INVITE + b"\r\n" + OK + PING + INVITE
EXPECTED = [REGISTER, INVITE, OK, INVITE]


def drain(framer: StreamFramer) -> list[object]:
    return list(framer)


def messages(events: list[object]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, MessageReceived)]


def pings(events: list[object]) -> int:
    return sum(isinstance(e, KeepAlivePing) for e in events)


def test_whole_stream() -> None:
    framer = StreamFramer()
    framer.feed(STREAM)
    events = drain(framer)
    assert isinstance(events[0], KeepAlivePing) and KeepAlivePing.PONG == b"\r\n"
    assert messages(events) == EXPECTED
    assert pings(events) == 2 and not any(isinstance(e, KeepAlivePong) for e in events)
    kinds = [type(e.message) for e in events if isinstance(e, MessageReceived)]
    assert kinds == [Request, Request, Response, Request]
    invite = events[2].message
    assert (
        isinstance(invite, Request)
        and invite.body == SDP
        and invite.call_id == "a84b4c76e66710@pc33.example.com"
    )
    assert framer.buffered == 0 and framer.next_event() is None


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        framer = StreamFramer()
        framer.feed(STREAM[:cut])
        events = drain(framer)
        framer.feed(STREAM[cut:])
        events += drain(framer)
        assert messages(events) == EXPECTED, f"split at byte {cut}"
        assert pings(events) == 2, f"split at byte {cut}"


def test_byte_by_byte() -> None:
    framer = StreamFramer()
    events: list[object] = []
    for i in range(len(STREAM)):
        framer.feed(STREAM[i : i + 1])
        events += drain(framer)
    assert messages(events) == EXPECTED and pings(events) == 2
    framer.feed_eof()


def test_keepalive_pong_and_split_ping() -> None:
    framer = StreamFramer()
    framer.feed(b"\r\n")
    assert isinstance(framer.next_event(), KeepAlivePong)
    framer.feed(b"\r\n")
    assert isinstance(framer.next_event(), KeepAlivePing)  # the two halves of one ping
    framer.feed(b"\r\n" + REGISTER)
    events = drain(framer)
    assert messages(events) == [REGISTER] and len(events) == 1  # a stray CRLF is skipped


def test_leading_line_ends_are_skipped() -> None:
    framer = StreamFramer()
    framer.feed(b"\n\n" + REGISTER.replace(b"\r\n", b"\n"))
    (event,) = drain(framer)
    assert isinstance(event, MessageReceived) and event.message.cseq == (20, "REGISTER")


def test_body_waits_for_content_length() -> None:
    framer = StreamFramer()
    framer.feed(INVITE[:-5])
    assert framer.next_event() is None
    with pytest.raises(SIPParseError) as info:
        framer.feed_eof()
    assert info.value.status == 400 and framer.broken


def test_invalid_message_keeps_the_stream() -> None:
    bad = REGISTER.replace(b"Call-ID: 9Fz5k9eWTn\r\n", b"")
    framer = StreamFramer()
    framer.feed(bad + OK)
    first, second = drain(framer)
    assert isinstance(first, InvalidMessage) and first.data == bad
    assert first.error.status == 400 and "Call-ID" in str(first.error)
    assert isinstance(second, MessageReceived) and second.data == OK
    assert not framer.broken


def fatal(data: bytes, limits: ParserLimits | None = None) -> SIPParseError:
    framer = StreamFramer(limits or ParserLimits())
    framer.feed(data)
    with pytest.raises(SIPParseError) as info:
        drain(framer)
    assert framer.broken
    with pytest.raises(SIPParseError):
        framer.feed(REGISTER)
    with pytest.raises(SIPParseError):
        framer.next_event()
    return info.value


def test_missing_content_length_is_fatal() -> None:
    err = fatal(REGISTER.replace(b"Content-Length: 0\r\n", b""))
    assert err.status == 400 and "mandatory" in str(err)


@pytest.mark.parametrize(
    ("value", "status"),
    [(b"-1", 400), (b"ten", 400), (b"99999999999999999999", 413), (b"70000", 413)],
)
def test_bad_content_length_is_fatal(value: bytes, status: int) -> None:
    assert (
        fatal(REGISTER.replace(b"Content-Length: 0", b"Content-Length: " + value)).status == status
    )


def test_unterminated_header_section_is_bounded() -> None:
    framer = StreamFramer()
    framer.feed(REGISTER[:-4])
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    with pytest.raises(SIPParseError) as info:
        for _ in range(100):
            framer.feed(line)
            assert framer.next_event() is None
            assert framer.buffered <= 65536 + len(line)
    assert info.value.status == 513 and framer.broken and framer.buffered == 0


def test_garbage_is_fatal_at_the_first_line() -> None:
    assert (
        fatal(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n").status == 400
    )  # a TLS hello on a TCP port
    assert fatal(b"GET / HTTP/1.1\r\nHost: pbx\r\n\r\n").status == 400
    assert fatal(b"X" * 9000).status == 400  # no line end within max_line_length


def test_desynchronised_stream_is_fatal() -> None:
    wrong = REGISTER.replace(b"Content-Length: 0", b"Content-Length: 10")
    framer = StreamFramer()
    framer.feed(wrong + OK)
    with pytest.raises(SIPParseError):
        drain(framer)  # the first message ate 10 bytes of the next start line


def test_limits_are_configurable() -> None:
    err = fatal(INVITE, ParserLimits(max_message_size=300))
    assert err.status == 513


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=6))
def test_property_arbitrary_chunks(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    try:
        for chunk in chunks:
            framer.feed(chunk)
            drain(framer)
        framer.feed_eof()
    except SIPParseError:
        assert framer.broken


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([REGISTER, INVITE, OK, PING, b"\r\n"]), max_size=6),
    st.lists(st.integers(0, 4000), max_size=8),
)
def test_property_random_splits(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    framer = StreamFramer()
    events: list[object] = []
    for a, b in itertools.pairwise(points):
        framer.feed(stream[a:b])
        events += drain(framer)
    assert messages(events) == [p for p in parts if p not in (PING, b"\r\n")]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([REGISTER, INVITE, OK]),
    st.lists(
        st.tuples(st.integers(0, 2000), st.binary(max_size=3), st.integers(0, 3)),
        min_size=1,
        max_size=4,
    ),
)
def test_property_mutated_stream(data: bytes, edits: list[tuple[int, bytes, int]]) -> None:
    for at, insert, cut in edits:
        at %= len(data) + 1
        data = data[:at] + insert + data[at + cut :]
    framer = StreamFramer()
    try:
        framer.feed(data + OK)
        drain(framer)
    except SIPParseError:
        assert framer.broken
