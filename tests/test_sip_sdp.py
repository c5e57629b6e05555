"""SDP: real offers round-trip byte for byte; anchoring rewrites; bad input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warden.errors import SIPParseError
from warden.sip.sdp import (
    Connection,
    Crypto,
    Line,
    Origin,
    Rtcp,
    RtpMap,
    SessionDescription,
    parse_sdp,
)


def crlf(text: str) -> bytes:
    return "".join(line + "\r\n" for line in text.strip("\n").split("\n")).encode()


BARESIP = crlf("""\
v=0
o=- 2890844526 2890844527 IN IP4 192.168.1.34
s=-
c=IN IP4 192.168.1.34
t=0 0
m=audio 10468 RTP/SAVP 96 0 8 101
b=AS:600
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=ssrc:2618837563 cname:7b52ed17-4bdb-4c5b-b9e6-1b5c3f1f6d3e
a=rtcp-mux
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32 UNENCRYPTED_SRTCP
a=ptime:20
""")

LINPHONE_V6 = crlf("""\
v=0
o=alice 2730 1357 IN IP6 2001:db8:85a3::8a2e:370:7334
s=Talk
c=IN IP6 2001:db8:85a3::8a2e:370:7334
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
m=audio 7078 RTP/AVP 96 97 98 0 8 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp:7079 IN IP6 2001:db8:85a3::8a2e:370:7334
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/AVP 96
a=rtpmap:96 VP8/90000
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:96 nack pli
a=recvonly
""")

YEALINK = crlf("""\
v=0
o=- 20077 20077 IN IP4 10.0.0.50
s=SDP data
c=IN IP4 10.0.0.50
t=0 0
m=audio 11796 RTP/AVP 0 8 9 18 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:9 G722/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=ptime:20
a=sendrecv
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
""")

ASTERISK = crlf("""\
v=0
o=- 1694525405 1694525407 IN IP4 203.0.113.5
s=Asterisk
c=IN IP4 203.0.113.5
t=0 0
m=audio 14810 RTP/AVP 0 8 3 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:3 GSM/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
""")

ASTERISK_WEBRTC = crlf("""\
v=0
o=- 1128 3 IN IP4 198.51.100.20
s=Asterisk
t=0 0
a=msid-semantic:WMS *
a=group:BUNDLE 0
m=audio 18420 UDP/TLS/RTP/SAVPF 111 0 8 126
c=IN IP4 198.51.100.20
a=connection:new
a=setup:actpass
a=fingerprint:SHA-256 7D:1A:4E:2B:9C:88:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99
a=ice-ufrag:0f3a1b2c
a=ice-pwd:5d6e7f8091a2b3c4d5e6f708192a3b4c
a=candidate:Hc6336414 1 UDP 2130706431 198.51.100.20 18420 typ host
a=rtpmap:111 opus/48000/2
a=fmtp:111 useinbandfec=1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:126 telephone-event/8000
a=fmtp:126 0-16
a=ptime:20
a=maxptime:20
a=sendrecv
a=rtcp-mux
a=mid:0
""")

OFFERS = {"baresip": BARESIP, "linphone-ipv6": LINPHONE_V6, "yealink": YEALINK,
          "asterisk": ASTERISK, "asterisk-webrtc": ASTERISK_WEBRTC}


@pytest.mark.parametrize("data", OFFERS.values(), ids=OFFERS.keys())
def test_round_trip_is_byte_identical(data: bytes) -> None:
    sdp = parse_sdp(data)
    assert bytes(sdp) == data
    assert parse_sdp(bytes(sdp)) == sdp


@pytest.mark.parametrize("data", OFFERS.values(), ids=OFFERS.keys())
def test_lf_only_is_normalised_to_crlf(data: bytes) -> None:
    assert bytes(parse_sdp(data.replace(b"\r\n", b"\n"))) == data
    # Mixed endings too.
    mixed = data.replace(b"\r\n", b"\n", 3)
    assert bytes(parse_sdp(mixed)) == data


def test_non_utf8_bytes_survive() -> None:
    data = ASTERISK.replace(b"s=Asterisk", b"s=Caf\xe9 \xff")
    sdp = parse_sdp(data)
    assert bytes(sdp) == data


def test_baresip_accessors() -> None:
    sdp = parse_sdp(BARESIP)
    assert sdp.origin == Origin("-", "2890844526", 2890844527, "IN", "IP4", "192.168.1.34")
    assert sdp.session_name == "-"
    assert sdp.connection == Connection("192.168.1.34", "IP4", "IN")
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.port_count, audio.proto) == \
        ("audio", 10468, None, "RTP/SAVP")
    assert audio.formats == ("96", "0", "8", "101")
    assert audio.rtpmap[96] == RtpMap(96, "opus", 48000, 2)
    assert audio.codec(101) == RtpMap(101, "telephone-event", 8000)
    assert audio.fmtp == {"96": "stereo=1;sprop-stereo=1", "101": "0-15"}
    assert audio.rtcp_mux and audio.rtcp is None
    assert sdp.direction_of(audio) == "sendrecv" and not sdp.is_held(audio)
    c1, c2 = audio.crypto
    assert (c1.tag, c1.suite, c1.session_params) == (1, "AES_CM_128_HMAC_SHA1_80", ())
    assert c2.session_params == ("UNENCRYPTED_SRTCP",)
    assert str(c2) == audio.attributes("crypto")[1]
    assert audio.attribute("ptime") == "20"
    assert audio.has_attribute("RTCP-MUX")  # names compare case-insensitively


def test_keys_never_in_reprs() -> None:
    sdp = parse_sdp(BARESIP + b"k=base64:c2VjcmV0LWtleQ==\r\n")
    text = repr(sdp) + repr(sdp.media[0].crypto)
    assert "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz" not in text
    assert "NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj" not in text
    assert "c2VjcmV0LWtleQ" not in text
    assert "AES_CM_128_HMAC_SHA1_80" in text  # the rest stays readable
    with pytest.raises(SIPParseError) as info:
        parse_sdp(BARESIP.replace(b"a=crypto:1 AES", b"a=crypto:x AES")).media[0].crypto
    assert "WVNfX19" not in str(info.value)


def test_linphone_ipv6() -> None:
    sdp = parse_sdp(LINPHONE_V6)
    assert sdp.connection == Connection("2001:db8:85a3::8a2e:370:7334", "IP6")
    audio, video = sdp.media
    assert audio.rtcp == Rtcp(7079, "2001:db8:85a3::8a2e:370:7334", "IP6", "IN")
    assert [audio.codec(pt).encoding for pt in (99, 100, 101)] == ["telephone-event"] * 3  # type: ignore[union-attr]
    assert audio.codec(101).clock_rate == 48000  # type: ignore[union-attr]
    assert audio.attributes("rtcp-fb") == ["* trr-int 1000", "* ccm tmmbr"]
    assert sdp.attribute("rtcp-xr", ) is not None and sdp.media[0].attribute("rtcp-xr") is None
    assert sdp.direction_of(audio) == "sendrecv" and sdp.direction_of(video) == "recvonly"
    assert video.rtpmap == {96: RtpMap(96, "VP8", 90000)}


def test_yealink_static_payloads() -> None:
    audio = parse_sdp(YEALINK).media[0]
    assert audio.codec(18) == RtpMap(18, "G729", 8000)
    assert audio.codec(9) == RtpMap(9, "G722", 8000)
    assert parse_sdp(ASTERISK.replace(b"a=rtpmap:0 PCMU/8000\r\n", b"")).media[0].codec(0) \
        == RtpMap(0, "PCMU", 8000)
    assert audio.codec(96) is None


def test_asterisk_webrtc_media_level_connection() -> None:
    sdp = parse_sdp(ASTERISK_WEBRTC)
    audio = sdp.media[0]
    assert sdp.connection is None
    assert sdp.connection_of(audio) == Connection("198.51.100.20")
    assert audio.proto == "UDP/TLS/RTP/SAVPF" and audio.rtcp_mux


def test_anchor_rewrite_touches_only_what_it_must() -> None:
    sdp = parse_sdp(LINPHONE_V6)
    sdp.set_connection("192.0.2.1")
    sdp.set_origin(Origin("warden", "42", 1, address="192.0.2.1"))
    audio, video = sdp.media
    audio.set_port(40000)
    audio.set_rtcp(40001)
    video.set_port(0)
    assert sdp.bump_version() == 2
    out = bytes(sdp)
    again = parse_sdp(out)
    assert again.connection == Connection("192.0.2.1", "IP4")
    assert again.origin == Origin("warden", "42", 2, "IN", "IP4", "192.0.2.1")
    assert again.media[0].port == 40000 and again.media[0].rtcp == Rtcp(40001)
    assert again.media[1].port == 0
    changed = {ln for ln in out.split(b"\r\n")} - {ln for ln in LINPHONE_V6.split(b"\r\n")}
    assert changed == {b"o=warden 42 2 IN IP4 192.0.2.1", b"c=IN IP4 192.0.2.1",
                       b"m=audio 40000 RTP/AVP 96 97 98 0 8 101 99 100", b"a=rtcp:40001",
                       b"m=video 0 RTP/AVP 96"}
    assert len(out.split(b"\r\n")) == len(LINPHONE_V6.split(b"\r\n"))


def test_media_connection_inserted_in_rfc_order() -> None:
    sdp = parse_sdp(ASTERISK.replace(b"m=audio 14810 RTP/AVP 0 8 3 101\r\n",
                                     b"m=audio 14810 RTP/AVP 0 8 3 101\r\ni=voice\r\n"))
    audio = sdp.media[0]
    audio.set_connection("2001:db8::7")
    assert audio.lines[:3] == [Line("m", "audio 14810 RTP/AVP 0 8 3 101"), Line("i", "voice"),
                               Line("c", "IN IP6 2001:db8::7")]
    assert sdp.connection_of(audio) == Connection("2001:db8::7", "IP6")
    audio.set_connection("198.51.100.1")  # replaced in place, not duplicated
    assert [ln for ln in audio.lines if ln.kind == "c"] == [Line("c", "IN IP4 198.51.100.1")]
    audio.remove_connection()
    assert sdp.connection_of(audio) == Connection("203.0.113.5")


def test_session_connection_inserted_before_timing() -> None:
    sdp = parse_sdp(ASTERISK_WEBRTC)
    sdp.set_connection("192.0.2.9")
    assert [ln.kind for ln in sdp.lines[:5]] == ["v", "o", "s", "c", "t"]


def test_rtcp_forms_and_replacement() -> None:
    audio = parse_sdp(LINPHONE_V6).media[0]
    audio.set_rtcp(50001, "192.0.2.1")
    assert audio.attributes("rtcp") == ["50001 IN IP4 192.0.2.1"]
    audio.set_rtcp(50003, "2001:db8::1")
    assert audio.rtcp == Rtcp(50003, "2001:db8::1", "IP6", "IN")
    audio.remove_attributes("rtcp")
    assert audio.rtcp is None
    with pytest.raises(ValueError):
        audio.set_rtcp(70000)
    with pytest.raises(ValueError):
        audio.set_rtcp(5, "1.2.3.4\r\na=evil")


def test_hold_sendonly_and_rfc2543() -> None:
    sdp = parse_sdp(ASTERISK)
    audio = sdp.media[0]
    audio.set_direction("sendonly")
    assert sdp.is_held(audio) and sdp.direction_of(audio) == "sendonly"
    assert bytes(sdp) == ASTERISK.replace(b"a=sendrecv", b"a=sendonly")  # in place
    old = parse_sdp(YEALINK.replace(b"c=IN IP4 10.0.0.50", b"c=IN IP4 0.0.0.0"))
    assert old.is_held(old.media[0]) and old.direction_of(old.media[0]) == "sendrecv"
    inactive = parse_sdp(LINPHONE_V6.replace(b"t=0 0\r\n", b"t=0 0\r\na=inactive\r\n"))
    assert inactive.direction_of(inactive.media[0]) == "inactive"  # from session level
    assert inactive.direction_of(inactive.media[1]) == "recvonly"  # own overrides
    with pytest.raises(ValueError):
        audio.set_direction("sideways")


def test_attribute_mutators() -> None:
    audio = parse_sdp(BARESIP).media[0]
    assert audio.remove_attributes("crypto") == 2 and audio.crypto == []
    audio.add_attribute("crypto", str(Crypto(1, "AES_CM_128_HMAC_SHA1_80", "inline:QUJD")))
    assert audio.crypto == [Crypto(1, "AES_CM_128_HMAC_SHA1_80", "inline:QUJD")]
    audio.set_attribute("ptime", "30")
    assert audio.attributes("ptime") == ["30"]
    audio.set_attribute("rtcp-mux")
    assert audio.attributes("rtcp-mux") == [None]
    with pytest.raises(ValueError):
        audio.add_attribute("x", "a\r\nm=audio 1 RTP/AVP 0")
    with pytest.raises(ValueError):
        audio.add_attribute("a:b")


def test_set_port_and_formats() -> None:
    audio = parse_sdp(YEALINK).media[0]
    audio.set_port(30000, 2)
    assert (audio.port, audio.port_count) == (30000, 2)
    audio.set_formats(["8", "101"])
    assert audio.lines[0] == Line("m", "audio 30000/2 RTP/AVP 8 101")
    for bad in (-1, 65536):
        with pytest.raises(ValueError):
            audio.set_port(bad)
    with pytest.raises(ValueError):
        audio.set_formats([])


def test_port_zero_stream_needs_no_connection() -> None:
    sdp = parse_sdp(crlf("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=video 0 RTP/AVP 96"))
    assert sdp.media[0].port == 0


MINIMAL = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty body"),
        (b"\r\n\r\n", "empty body"),
        (b"o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n", "line 1: missing v=0"),
        (b"v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", "line 1: missing v=0"),
        (crlf(MINIMAL + "m=audio 4000 RTP/AVP"), "line 6: bad m= line 'audio 4000 RTP/AVP'"),
        (crlf(MINIMAL + "m=audio"), "bad m= line"),
        (crlf(MINIMAL + "m=audio abc RTP/AVP 0"), "line 6: non-numeric port 'abc'"),
        (crlf(MINIMAL + "m=audio -1 RTP/AVP 0"), "non-numeric port '-1'"),
        (crlf(MINIMAL + "m=audio 70000 RTP/AVP 0"), "port 70000 out of range"),
        (crlf(MINIMAL + "m=audio 4000/0 RTP/AVP 0"), "bad port count '0'"),
        (crlf(MINIMAL + "m=audio 4000/x RTP/AVP 0"), "bad port count 'x'"),
        (crlf(MINIMAL.replace("c=IN IP4 192.0.2.1", "c=IN IP4")), "line 4: bad c= line"),
        (crlf(MINIMAL.replace("o=- 1 1 IN IP4", "o=- 1 one IN IP4")),
         "line 2: non-numeric session version 'one'"),
        (crlf(MINIMAL.replace("o=- 1 1 IN IP4 192.0.2.1", "o=- 1 1 IN IP4")), "bad o= line"),
        (crlf(MINIMAL.replace("o=- 1 1 IN IP4 192.0.2.1\n", "")), "exactly one o= line"),
        (crlf(MINIMAL.replace("s=-\n", "")), "exactly one s= line"),
        (crlf(MINIMAL + "s=again"), "exactly one s= line"),
        (crlf(MINIMAL + "v=0"), "line 6: v= is only allowed"),
        (crlf(MINIMAL + "m=audio 4 RTP/AVP 0\ns=x"), "line 7: s= inside a media section"),
        (crlf(MINIMAL + "this is not sdp"), "line 6: expected '<letter>=<value>'"),
        (crlf(MINIMAL + "A=upper"), "line 6: expected '<letter>=<value>'"),
        (crlf(MINIMAL + "a"), "line 6: expected"),
        (crlf(MINIMAL) + b"\r\na=after-blank\r\n", "line 6: expected"),
        (crlf(MINIMAL) + b"a=x\ry\r\n", "line 6: stray CR"),
        (crlf(MINIMAL) + b"a=x\x00\r\n", "stray CR or NUL"),
        (crlf(MINIMAL.replace("c=IN IP4 192.0.2.1\n", "") + "m=audio 4000 RTP/AVP 0"),
         "media section 1 (audio) has no c= line"),
    ],
)
def test_bad_input(data: bytes, message: str) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_sdp(data)
    assert info.value.status == 400
    assert message in str(info.value)


@pytest.mark.parametrize(
    "line",
    ["rtpmap:x PCMU/8000", "rtpmap:0 PCMU", "rtpmap:0 PCMU/abc", "rtpmap:200 X/8000",
     "rtpmap:0 /8000", "rtpmap:0 opus/48000/2/1", "rtpmap:1_0 X/8000", "rtpmap:0 opus/48000/x"],
)
def test_bad_rtpmap_raises_when_read(line: str) -> None:
    sdp = parse_sdp(crlf(MINIMAL + "m=audio 4000 RTP/AVP 0\na=" + line))
    with pytest.raises(SIPParseError, match="bad a=rtpmap"):
        sdp.media[0].rtpmap  # noqa: B018


@pytest.mark.parametrize("value", ["", "abc", "5000 IN IP4", "99999"])
def test_bad_rtcp_raises_when_read(value: str) -> None:
    sdp = parse_sdp(crlf(MINIMAL + "m=audio 4000 RTP/AVP 0\na=rtcp:" + value))
    with pytest.raises(SIPParseError):
        sdp.media[0].rtcp  # noqa: B018


# -- properties -----------------------------------------------------------

_text = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
                max_size=20)
_word = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-:/", min_size=1, max_size=12)
_attr = st.builds(lambda n, v: f"a={n}" + ("" if v is None else f":{v}"),
                  _word.filter(lambda w: ":" not in w), st.none() | _text)
_media = st.builds(
    lambda kind, port, fmts, attrs: "\n".join(
        [f"m={kind} {port} RTP/AVP {' '.join(map(str, fmts))}", *attrs]),
    st.sampled_from(["audio", "video", "text"]), st.integers(0, 65535),
    st.lists(st.integers(0, 127), min_size=1, max_size=5), st.lists(_attr, max_size=4),
)
_sdp = st.builds(
    lambda ver, name, addr, sess_attrs, media: "\n".join(
        ["v=0", f"o=- 1 {ver} IN IP4 {addr}", f"s={name}", f"c=IN IP4 {addr}", "t=0 0",
         *sess_attrs, *media]) + "\n",
    st.integers(0, 2**63), _text, st.ip_addresses(v=4).map(str), st.lists(_attr, max_size=3),
    st.lists(_media, max_size=3),
)
_fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fast
@given(_sdp)
def test_property_round_trip(text: str) -> None:
    wire = text.replace("\n", "\r\n").encode()
    sdp = parse_sdp(text.encode())
    assert bytes(sdp) == wire
    assert parse_sdp(wire) == sdp


@_fast
@given(_sdp, st.integers(0, 65535), st.ip_addresses().map(str))
def test_property_rewrite_then_reparse(text: str, port: int, addr: str) -> None:
    sdp = parse_sdp(text.encode())
    for m in sdp.media:
        m.set_port(port)
        m.set_connection(addr)
        m.set_rtcp(port, addr)
    version = sdp.bump_version()
    again = parse_sdp(bytes(sdp))
    assert again.origin.version == version
    for m in again.media:
        assert (m.port, m.connection.address, m.rtcp.port) == (port, addr, port)  # type: ignore[union-attr]
        assert m.connection.addrtype == ("IP6" if ":" in addr else "IP4")  # type: ignore[union-attr]


@_fast
@given(st.binary(max_size=300) | _sdp.map(lambda s: s.encode()).flatmap(
    lambda b: st.integers(0, len(b)).map(lambda i: b[:i] + b"\xff=" + b[i:])))
def test_property_garbage_only_raises_parse_errors(data: bytes) -> None:
    try:
        sdp = parse_sdp(data)
    except SIPParseError as exc:
        assert exc.status == 400
    else:
        assert parse_sdp(bytes(sdp)) == sdp


def test_session_description_is_constructible() -> None:
    sdp = SessionDescription([Line("v", "0"), Line("o", "- 1 1 IN IP4 192.0.2.1"),
                              Line("s", "-"), Line("t", "0 0")])
    sdp.set_connection("192.0.2.1")
    assert bytes(sdp) == crlf("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0")


def test_missing_origin_on_a_hand_built_description() -> None:
    sdp = SessionDescription([Line("v", "0")])
    with pytest.raises(SIPParseError, match="no o= line"):
        sdp.bump_version()
    with pytest.raises(SIPParseError, match="no s= line"):
        sdp.session_name  # noqa: B018
