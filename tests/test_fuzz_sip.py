"""Bounded fuzzing of the sans-I/O SIP layer (issue #7 item 6).

Hypothesis drives structure-aware inputs: well-formed messages built from
parts (to check round trips and chunking), the same messages mutated (bytes
flipped, cut, duplicated, headers flooded) and raw garbage. The properties:

* no exception escapes except ``SIPParseError`` (``SIPError`` for auth), the
  errors the engine turns into responses;
* no hang: every example runs under a hypothesis ``deadline``;
* bounded memory: the stream framer never holds more than one chunk plus
  ``max_message_size`` bytes, and a long garbage stream has a bounded
  ``tracemalloc`` peak;
* valid messages round-trip (parse -> bytes -> parse gives the same message),
  and framing does not depend on how a stream is cut into reads.

The budget is fixed (``max_examples`` per target, no shrinking database in
CI) so the whole file runs in well under a minute on a loaded machine.
"""

from __future__ import annotations

import os
import string
import tracemalloc
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warden.errors import SIPError, SIPParseError
from warden.sip.auth import format_credentials, parse_challenge, parse_credentials, Credentials
from warden.sip.framing import InvalidMessage, KeepAlivePing, KeepAlivePong, MessageReceived, StreamFramer
from warden.sip.headers import parse_via
from warden.sip.message import ParserLimits, Request, Response, parse_message
from warden.sip.sdp import parse_sdp
from warden.sip.uri import parse_name_addr, parse_uri

# WARDEN_FUZZ_SCALE=20 runs twenty times the CI budget (a longer local hunt).
_SCALE = float(os.environ.get("WARDEN_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=int(300 * _SCALE),
    deadline=timedelta(seconds=2),  # a parse of <= 64 KiB taking longer is a hang
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None,
)
SMALL = settings(FUZZ, max_examples=int(120 * _SCALE))

# -- strategies ---------------------------------------------------------------

token = st.text(string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=12)
user = st.lists(
    st.one_of(st.sampled_from(string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/"), st.from_regex(r"%[0-9A-Fa-f]{2}", fullmatch=True)),
    min_size=1, max_size=12,
).map("".join)
host = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
    st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", *[st.integers(0, 255)] * 4),
    st.just("[::1]"),
    st.just("[2001:db8::7]"),
)
port = st.one_of(st.none(), st.integers(1, 65535))
ptoken = st.text(string.ascii_letters + string.digits + "-.!*_+`'~", min_size=1, max_size=12)
param = st.tuples(ptoken, st.one_of(st.none(), ptoken))


@st.composite
def sip_uri(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "sips", "SIP"]))
    u = draw(st.one_of(st.none(), user))
    p = draw(port)
    params = draw(st.lists(param, max_size=3, unique_by=lambda kv: kv[0].lower()))
    text = f"{scheme}:{u + '@' if u else ''}{draw(host)}{':' + str(p) if p else ''}"
    return text + "".join(f";{k}" + (f"={v}" if v else "") for k, v in params)


@st.composite
def name_addr(draw: st.DrawFn, tag: bool = True) -> str:
    display = draw(st.one_of(st.just(""), st.from_regex(r'"[a-zA-Z0-9 ]{0,10}" ', fullmatch=True), token.map(lambda t: t + " ")))
    text = f"{display}<{draw(sip_uri())}>"
    if tag and draw(st.booleans()):
        text += f";tag={draw(token)}"
    return text


@st.composite
def via(draw: st.DrawFn) -> str:
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "udp"]))
    p = draw(port)
    extra = "".join(f";{k}" + (f"={v}" if v else "") for k, v in draw(st.lists(param, max_size=2, unique_by=lambda kv: kv[0].lower())) if k.lower() not in ("branch", "rport", "received", "maddr", "ttl"))
    return f"SIP/2.0/{transport} {draw(host)}{':' + str(p) if p else ''};branch=z9hG4bK{draw(token)}{extra}{';rport' if draw(st.booleans()) else ''}"


@st.composite
def sdp_body(draw: st.DrawFn) -> bytes:
    addr = draw(st.builds(lambda a, b: f"10.0.{a}.{b}", st.integers(0, 255), st.integers(0, 255)))
    media = []
    for _ in range(draw(st.integers(1, 3))):
        pts = draw(st.lists(st.sampled_from([0, 8, 9, 18, 96, 101]), min_size=1, max_size=4, unique=True))
        lines = [f"m=audio {draw(st.integers(0, 65535))} RTP/AVP {' '.join(map(str, pts))}"]
        lines += [f"a=rtpmap:{pt} PCMU/8000" for pt in pts if pt in (0, 96)]
        lines += draw(st.lists(st.sampled_from(["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive", "a=rtcp-mux", "a=ptime:20"]), max_size=2))
        media.append("\r\n".join(lines))
    text = f"v=0\r\no=- {draw(st.integers(0, 2**32))} 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n" + "\r\n".join(media) + "\r\n"
    return text.encode()


@st.composite
def sip_message(draw: st.DrawFn) -> bytes:
    """A well-formed request or response with a correct Content-Length."""
    method = draw(st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE", "ACK", "CANCEL", "MESSAGE", "X-CUSTOM"]))
    is_request = draw(st.booleans())
    if is_request:
        start = f"{method} {draw(sip_uri())} SIP/2.0"
    else:
        start = f"SIP/2.0 {draw(st.integers(100, 699))} {draw(st.from_regex(r'[A-Za-z ]{0,20}', fullmatch=True))}".rstrip(" ") if draw(st.booleans()) else f"SIP/2.0 {draw(st.integers(100, 699))} OK"
    headers = [f"Via: {v}" for v in draw(st.lists(via(), min_size=1, max_size=3))]
    headers += [
        f"From: {draw(name_addr())}",
        f"To: {draw(name_addr())}",
        f"Call-ID: {draw(token)}@{draw(host)}",
        f"CSeq: {draw(st.integers(0, 2**31))} {method}",
    ]
    if draw(st.booleans()):
        headers.append(f"Max-Forwards: {draw(st.integers(0, 255))}")
    if draw(st.booleans()):
        headers.append(f"Contact: {draw(name_addr(tag=False))}")
    if draw(st.booleans()):
        headers.append(f"Expires: {draw(st.integers(0, 100000))}")
    headers += [f"X-{draw(token)}: {v}" for v in draw(st.lists(st.from_regex(r"[ -~]{0,30}", fullmatch=True), max_size=3))]
    headers = draw(st.permutations(headers))
    body = draw(st.one_of(st.just(b""), sdp_body(), st.binary(max_size=200)))
    if body.startswith(b"v=0"):
        headers.append("Content-Type: application/sdp")
    headers.append(f"Content-Length: {len(body)}")
    return ("\r\n".join([start, *headers]) + "\r\n\r\n").encode() + body


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes] | None = None) -> bytes:
    """A valid message with a few structure-blind mutations applied."""
    data = bytearray(draw(base if base is not None else sip_message()))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup", "cut", "special", "flood", "length"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "dup":
            end = min(len(data), pos + draw(st.integers(1, 200)))
            data[pos:pos] = data[pos:end] * draw(st.integers(1, 20))
        elif op == "cut":
            del data[pos:]
        elif op == "special":
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\x00", b":", b";", b",", b"<", b">", b'"', b"\\", b" ", b"\t", b"\r\n ", b"%", b"[", b"]", b"=", b"\xff\xfe", b"SIP/2.0", b"Content-Length: 5\r\n"]))
        elif op == "flood":
            line = draw(st.sampled_from([b"Via: SIP/2.0/UDP h;branch=z9hG4bKx\r\n", b"X: y\r\n", b" folded\r\n", b"Contact: <sip:a@b>\r\n", b"Content-Length: 0\r\n"]))
            data[pos:pos] = line * draw(st.integers(1, 300))
        elif op == "length":
            value = draw(st.sampled_from([b"-1", b"99999999999999999999", b"65537", b"0x10", b"1e3", b" 5 ", b"", b"00000000000000000000000007", b"4294967296"]))
            data[pos:pos] = b"\r\nContent-Length: " + value
    return bytes(data)


# -- helpers --------------------------------------------------------------------


def _touch(msg: Request | Response) -> None:
    """Every lazy accessor the engine may call; each may only raise SIPParseError."""
    for accessor in ("call_id", "cseq", "from_", "to", "vias", "via", "max_forwards", "contact_wildcard", "contacts", "expires", "content_type"):
        try:
            getattr(msg, accessor)
        except SIPParseError:
            pass
    for v in msg.vias:
        v.branch, v.sent_by, v.received, v.rport, v.maddr, v.response_target()
    for name in ("Authorization", "Proxy-Authorization"):
        for value in msg.headers.get_all(name):
            try:
                parse_credentials(value)
            except SIPParseError:
                pass
    if msg.body and msg.content_type == "application/sdp":
        try:
            sdp = parse_sdp(msg.body)
            bytes(sdp)
        except SIPParseError:
            pass


def _parse_or_error(data: bytes, limits: ParserLimits | None = None) -> Request | Response | None:
    try:
        msg = parse_message(data, limits) if limits else parse_message(data)
    except SIPParseError as exc:
        assert 400 <= exc.status <= 599, exc.status
        return None
    _touch(msg)
    return msg


# -- the SIP parser -------------------------------------------------------------


@FUZZ
@given(sip_message())
def test_valid_messages_round_trip(data: bytes) -> None:
    msg = parse_message(data)
    wire = bytes(msg)
    again = parse_message(wire)
    assert type(again) is type(msg)
    assert list(again.headers) == list(msg.headers)
    assert again.body == msg.body
    if isinstance(msg, Request):
        assert (again.method, str(again.uri)) == (msg.method, str(msg.uri))  # type: ignore[union-attr]
    else:
        assert (again.status, again.reason) == (msg.status, msg.reason)  # type: ignore[union-attr]
    assert bytes(again) == wire  # serialising is a fixed point
    _touch(again)


@FUZZ
@given(mutated())
def test_mutated_messages_raise_only_parse_errors(data: bytes) -> None:
    _parse_or_error(data)


@FUZZ
@given(st.binary(max_size=2000))
def test_garbage_raises_only_parse_errors(data: bytes) -> None:
    _parse_or_error(data)


@SMALL
@given(mutated(), st.integers(64, 4096), st.integers(1, 20), st.integers(16, 512))
def test_small_limits_are_enforced_without_other_errors(data: bytes, size: int, headers: int, line: int) -> None:
    limits = ParserLimits(max_message_size=size, max_headers=headers, max_line_length=line)
    msg = _parse_or_error(data, limits)
    if msg is not None:
        assert len(data) <= size


@SMALL
@given(st.text(max_size=300), st.sampled_from(["uri", "name_addr", "via", "credentials", "challenge"]))
def test_header_values_raise_only_parse_errors(text: str, kind: str) -> None:
    parser = {"uri": parse_uri, "name_addr": parse_name_addr, "via": parse_via,
              "credentials": parse_credentials, "challenge": parse_challenge}[kind]
    try:
        value = parser(text)
    except SIPError:
        return
    str(value)


@FUZZ
@given(st.one_of(sip_uri(), name_addr(), via()), st.data())
def test_header_values_round_trip_and_survive_mutation(text: str, data: st.DataObject) -> None:
    parser = parse_via if text.startswith("SIP/2.0/") else (parse_uri if text[:3].lower() == "sip" and "<" not in text else parse_name_addr)
    value = parser(text)
    assert str(parser(str(value))) == str(value)
    mutant = data.draw(mutated(st.just(text.encode())))
    try:
        parser(mutant.decode("utf-8", "surrogateescape"))
    except SIPParseError:
        pass


quoted_value = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=40)


@FUZZ
@given(
    st.builds(
        Credentials,
        username=quoted_value, realm=quoted_value, nonce=quoted_value, uri=quoted_value,
        response=st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
        algorithm=st.sampled_from(["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"]),
        cnonce=st.one_of(st.none(), quoted_value), opaque=st.one_of(st.none(), quoted_value),
    ).map(lambda c: c if c.cnonce is None else Credentials(**{**{f: getattr(c, f) for f in Credentials.__dataclass_fields__}, "qop": "auth", "nc": "00000001"})),
    st.data(),
)
def test_authorization_round_trips_and_survives_mutation(creds: Credentials, data: st.DataObject) -> None:
    text = format_credentials(creds)
    assert parse_credentials(text) == creds
    mutant = data.draw(mutated(st.just(text.encode())))
    try:
        parse_credentials(mutant.decode("utf-8", "surrogateescape"))
    except SIPParseError:
        pass


@FUZZ
@given(st.one_of(sdp_body(), mutated(sdp_body()), st.binary(max_size=500)))
def test_sdp_raises_only_parse_errors_and_round_trips(data: bytes) -> None:
    try:
        sdp = parse_sdp(data)
    except SIPParseError:
        return
    wire = bytes(sdp)
    assert bytes(parse_sdp(wire)) == wire
    for media in sdp.media:  # accessors parse lazily: each may refuse its own line
        for get in (lambda: media.port, lambda: media.formats, lambda: media.rtpmap, lambda: media.fmtp,
                    lambda: media.rtcp, lambda: media.crypto, lambda: sdp.connection_of(media),
                    lambda: sdp.direction_of(media)):
            try:
                get()
            except SIPParseError:
                pass


@pytest.mark.parametrize(
    "data",
    [
        b"INVITE sip:" + b"a;" * 30000 + b" SIP/2.0\r\n\r\n",
        b"SIP/2.0 200 " + b"\t " * 30000 + b"\r\n\r\n",
        b"OPTIONS sip:a SIP/2.0\r\nVia: " + b"SIP/2.0/UDP h;" * 4000 + b"\r\n\r\n",
        b"OPTIONS sip:a SIP/2.0\r\nFrom: " + b'"' + b"\\" * 60000 + b"\r\n\r\n",
        b"OPTIONS sip:a SIP/2.0\r\nTo: " + b"<" * 60000 + b"\r\n\r\n",
        b"OPTIONS sip:a SIP/2.0\r\n" + b"X:\r\n" * 16000 + b"\r\n",
        b"OPTIONS sip:a SIP/2.0\r\nX: a\r\n" + b" b\r\n" * 16000 + b"\r\n",
        b"\r\n" * 32000 + b"x",
        b"OPTIONS sip:[" + b":" * 60000 + b"] SIP/2.0\r\n\r\n",
    ],
    ids=["uri-params", "reason-blanks", "via-params", "backslashes", "angles", "empty-headers", "folds", "crlfs", "ipv6"],
)
def test_pathological_inputs_fail_fast(data: bytes) -> None:
    import time

    start = time.process_time()
    _parse_or_error(data)
    assert time.process_time() - start < 1.0


# -- stream framing ---------------------------------------------------------------


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:]) if b > a]


def _drain(framer: StreamFramer, events: list[object], max_chunk: int) -> None:
    for event in framer:
        events.append(event)
    assert framer.buffered <= framer._limits.max_message_size + max_chunk + 4


keepalive = st.sampled_from([b"\r\n\r\n", b"\r\n"])


@FUZZ
@given(st.lists(st.one_of(sip_message(), keepalive), min_size=1, max_size=6), st.lists(st.integers(0, 10**6), max_size=30))
def test_framing_is_independent_of_chunking(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    whole = StreamFramer()
    whole.feed(stream)
    expected = [e for e in whole if isinstance(e, MessageReceived)]
    assert [e.data for e in expected] == [p for p in parts if not p.startswith(b"\r\n")]
    framer, events = StreamFramer(), []
    chunks = _chunks(stream, cuts)
    for chunk in chunks:
        framer.feed(chunk)
        _drain(framer, events, max(map(len, chunks)))
    got = [e for e in events if isinstance(e, MessageReceived)]
    assert [e.data for e in got] == [e.data for e in expected]
    for event, part in zip(got, [p for p in parts if not p.startswith(b"\r\n")]):
        assert bytes(event.message) == bytes(parse_message(part))
    assert all(isinstance(e, (MessageReceived, KeepAlivePing, KeepAlivePong)) for e in events)
    framer.feed_eof()


@FUZZ
@given(
    st.lists(st.one_of(sip_message(), mutated(), keepalive, st.binary(max_size=64)), min_size=1, max_size=6),
    st.lists(st.integers(0, 10**6), max_size=30),
)
def test_framing_garbage_streams_raise_only_parse_errors(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    framer, events = StreamFramer(ParserLimits(max_message_size=4096)), []
    chunks = _chunks(stream, cuts) or [b""]
    try:
        for chunk in chunks:
            framer.feed(chunk)
            _drain(framer, events, max(map(len, chunks)))
        framer.feed_eof()
    except SIPParseError as exc:
        assert 400 <= exc.status <= 599
        assert framer.broken or not framer.buffered
        with pytest.raises(SIPParseError):
            framer.feed(b"OPTIONS")  # a dead stream stays dead
    for event in events:
        if isinstance(event, InvalidMessage):
            assert 400 <= event.error.status <= 599
        elif isinstance(event, MessageReceived):
            _touch(event.message)


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(lambda: b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n", id="huge-content-length"),
        pytest.param(lambda: b"OPTIONS sip:a SIP/2.0\r\n" + b"X-Flood: 1\r\n" * 100000, id="header-flood"),
        pytest.param(lambda: b"OPTIONS sip:a SIP/2.0\r\nX: " + b"a" * 2_000_000, id="endless-header"),
        pytest.param(lambda: b"A" * 2_000_000, id="endless-start-line"),
        pytest.param(lambda: b"\r\n" * 1_000_000, id="crlf-flood"),
        pytest.param(lambda: b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 60000\r\n\r\n" + b"x" * 59999, id="body-short-by-one"),
    ],
)
def test_framer_memory_is_bounded(attack: object) -> None:
    """Feeding an attack in 1 KiB reads: the buffer stays bounded, and so does the
    peak of Python allocations (the attack itself is 2 MB; the framer may hold
    one message of 64 KiB plus a read)."""
    data = attack()  # type: ignore[operator]
    framer = StreamFramer()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        try:
            for i in range(0, len(data), 1024):
                framer.feed(data[i : i + 1024])
                for _ in framer:
                    pass
                assert framer.buffered <= framer._limits.max_message_size + 1024
        except SIPParseError as exc:
            assert exc.status in (400, 413, 513)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"framer peak {peak} bytes"


# -- digest verification ------------------------------------------------------------


@FUZZ
@given(st.sampled_from(["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"]), st.booleans(), st.data())
def test_digest_verify_survives_mutated_credentials(algorithm: str, mutate_it: bool, data: st.DataObject) -> None:
    """The server-side check of an Authorization header: a correct answer passes;
    any mutation of it is refused with an AuthResult, never an exception."""
    from warden.sip.auth import DigestAuthenticator, HA1Pair, NonceManager, answer_challenge, parse_challenge

    stored = HA1Pair.from_password("2000", "warden", "secret-2000")
    auth = DigestAuthenticator("warden", NonceManager(b"k" * 32), lambda user: stored if user == "2000" else None,
                               algorithms=(algorithm,))
    [challenge] = auth.challenge(100.0, "127.0.0.1")
    creds = answer_challenge(parse_challenge(challenge), username="2000", method="REGISTER", uri="sip:warden",
                             password="secret-2000")
    text = format_credentials(creds)
    if mutate_it:
        text = data.draw(mutated(st.just(text.encode()))).decode("utf-8", "surrogateescape")
    result = auth.verify("REGISTER", text, 101.0, "127.0.0.1", request_uri="sip:warden")
    if not mutate_it:
        assert result.ok, result


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess"])
def test_digest_over_non_utf8_bytes(algorithm: str) -> None:
    """Found by the fuzzer: a cnonce (or uri) byte that is not UTF-8 reaches the
    verifier surrogate-escaped, and hashing it raised UnicodeEncodeError (the
    engine logged a traceback and the phone got no answer). The digest is over
    the bytes as sent, so a correct one verifies and a wrong one is refused."""
    import hashlib

    from warden.sip.auth import AuthReason, DigestAuthenticator, HA1Pair, NonceManager, parse_challenge

    stored = HA1Pair.from_password("2000", "warden", "secret-2000")
    auth = DigestAuthenticator("warden", NonceManager(b"k" * 32), lambda user: stored if user == "2000" else None,
                               algorithms=(algorithm,))
    nonce = parse_challenge(auth.challenge(100.0, "127.0.0.1")[0]).nonce
    cnonce = b"\x80\xffab".decode("utf-8", "surrogateescape")  # as parse_message decodes header bytes
    h = hashlib.md5 if algorithm.startswith("MD5") else hashlib.sha256

    def hx(raw: bytes) -> str:
        return h(raw).hexdigest()

    key = stored.for_algorithm(algorithm)
    if algorithm.endswith("-sess"):
        key = hx(key.encode() + b":" + nonce.encode() + b":\x80\xffab")
    ha2 = hx(b"REGISTER:sip:warden")
    good = hx(f"{key}:{nonce}:00000001:".encode() + b"\x80\xffab" + f":auth:{ha2}".encode())
    header = (f'Digest username="2000", realm="warden", nonce="{nonce}", uri="sip:warden", response="{{}}", '
              f'algorithm={algorithm}, cnonce="{cnonce}", qop=auth, nc=00000001')
    assert auth.verify("REGISTER", header.format("0" * len(good)), 101.0, "127.0.0.1").reason is AuthReason.BAD_RESPONSE
    assert auth.verify("REGISTER", header.format(good), 101.0, "127.0.0.1").ok
