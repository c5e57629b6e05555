"""SIP messages: real-world captures, RFC 4475-style torture, limits, errors, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.errors import SIPError, SIPParseError
from warden.sip import (
    Headers,
    Params,
    ParserLimits,
    Request,
    Response,
    SipURI,
    Via,
    make_response,
    parse_message,
    parse_via,
)


def crlf(text: str) -> bytes:
    """A capture written with LF line ends, sent with CRLF."""
    return text.replace("\n", "\r\n").encode()


def with_body(head: str, body: str) -> bytes:
    """Header lines (without Content-Length) plus a body, with the right Content-Length."""
    data = crlf(body)
    return crlf(head + f"Content-Length: {len(data)}\n\n") + data


LINPHONE_REGISTER = crlf("""REGISTER sips:sip.example.org SIP/2.0
Via: SIP/2.0/TLS 192.168.1.23:47391;alias;branch=z9hG4bK.Wtc6nfIHc;rport
From: <sips:1001@sip.example.org>;tag=bJQ~qkd2e
To: sips:1001@sip.example.org
CSeq: 20 REGISTER
Call-ID: 9Fz5k9eWTn
Max-Forwards: 70
Supported: replaces, outbound, gruu, path
Accept: application/sdp
Accept: text/plain
Accept: application/vnd.gsma.rcs-ft-http+xml
Contact: <sips:1001@192.168.1.23:47391;transport=tls;ob>;+sip.instance="<urn:uuid:e5e0a53e-4f8a-00f2-8a42-1a4a2b64fc4b>";+org.linphone.specs="conference/1.0,ephemeral/1.1";reg-id=1
Expires: 3600
User-Agent: Linphone Desktop/5.2.0 (Debian GNU/Linux 12 (bookworm), Qt 5.15.8) LinphoneCore/5.3.0
Content-Length: 0

""")

YEALINK_INVITE = with_body(
    """INVITE sip:2002@pbx.example.com;transport=udp SIP/2.0
Via: SIP/2.0/UDP 10.0.0.51:5062;branch=z9hG4bK1585296185;rport
From: "Reception" <sip:2001@pbx.example.com>;tag=1127362530
To: <sip:2002@pbx.example.com>
Call-ID: 0_3403416702@10.0.0.51
CSeq: 1 INVITE
Contact: <sip:2001@10.0.0.51:5062>
Content-Type: application/sdp
Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, PUBLISH, UPDATE, MESSAGE
Max-Forwards: 70
User-Agent: Yealink SIP-T46S 66.86.0.15
Supported: replaces
Allow-Events: talk,hold,conference,refer,check-sync
""",
    """v=0
o=- 20017 20017 IN IP4 10.0.0.51
s=SDP data
c=IN IP4 10.0.0.51
t=0 0
m=audio 11796 RTP/AVP 0 8 18 9 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:9 G722/8000
a=fmtp:101 0-15
a=rtpmap:101 telephone-event/8000
a=ptime:20
a=sendrecv
""",
)

ASTERISK_200 = with_body(
    """SIP/2.0 200 OK
Via: SIP/2.0/UDP 203.0.113.7:5060;rport=5060;received=203.0.113.7;branch=z9hG4bKPj5c0e6a3f
Via: SIP/2.0/UDP 10.0.0.51:5062;rport=5062;received=198.51.100.20;branch=z9hG4bK1585296185
Record-Route: <sip:203.0.113.7;lr>
Call-ID: 0_3403416702@10.0.0.51
From: "Reception" <sip:2001@pbx.example.com>;tag=1127362530
To: <sip:2002@pbx.example.com>;tag=a3f2e5b0-9c1d-4e57-8b2f-6b8d0c4c7e11
CSeq: 1 INVITE
Server: Asterisk PBX 20.5.0
Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, MESSAGE, REFER
Contact: <sip:203.0.113.7:5060>
Supported: 100rel, timer, replaces, norefersub
Session-Expires: 1800;refresher=uas
Require: timer
Content-Type: application/sdp
""",
    """v=0
o=- 1702394871 1702394873 IN IP4 203.0.113.7
s=Asterisk
c=IN IP4 203.0.113.7
t=0 0
m=audio 14406 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
""",
)

# Compact forms and folded lines, as a lean UA on a constrained link would send.
COMPACT_BYE = crlf("""BYE sip:2001@10.0.0.51:5062 SIP/2.0
v: SIP/2.0/UDP 203.0.113.7:5060;rport;branch=z9hG4bKPj9d1c
f: <sip:2002@pbx.example.com>;tag=a3f2e5b0
t: "Reception"
  <sip:2001@pbx.example.com>;tag=1127362530
i: 0_3403416702@10.0.0.51
CSeq: 2 BYE
Max-Forwards: 70
Reason: Q.850;cause=16;text="Normal call clearing"
l: 0

""")

# RFC 4475 §3.1.1.1 "wsinv": legal but unusual whitespace, folding and case.
WSINV_BODY = """v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
"""
WSINV = crlf(f"""INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : {len(crlf(WSINV_BODY))}
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

{WSINV_BODY}""")

# RFC 4475 §3.1.1.3 "intmeth" and §3.1.1.4 "esc02"-style escapes.
INTMETH = crlf(
    """!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="работающий";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~: ﻿大停電
Content-Length: 0

"""
)

ESCAPED_URIS = crlf("""INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=1234
Max-Forwards: 87
i: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host1.example.com;rport;branch=z9hG4bK209356
CSeq: 3923239 INVITE
l: 0

""")

IPV6_REGISTER = crlf("""REGISTER sip:[2001:db8::10] SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3-111
Call-ID: SSG9559905523997077@hlau_4100
Max-Forwards: 70
Contact: "Caller" <sip:caller@[2001:db8::9:1]>
CSeq: 98176 REGISTER
Content-Length: 0

""")

PASSWORD = b":&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
CAPTURES = {
    "linphone_register": LINPHONE_REGISTER,
    "yealink_invite": YEALINK_INVITE,
    "asterisk_200": ASTERISK_200,
    "compact_bye": COMPACT_BYE,
    "wsinv": WSINV,
    "intmeth": INTMETH.replace(b"\\\x07 NUL:\\\x00 DEL:\\\x7f", b"x").replace(PASSWORD, b""),
    "escaped_uris": ESCAPED_URIS,
    "ipv6_register": IPV6_REGISTER,
}
VERBATIM = ["linphone_register", "yealink_invite", "asterisk_200", "escaped_uris", "ipv6_register"]


def semantic(msg: Request | Response) -> tuple[object, ...]:
    """What must survive a round-trip; Content-Length is recomputed on output."""
    head = (msg.method, msg.uri) if isinstance(msg, Request) else (msg.status, msg.reason)
    fields = [(n.lower(), v) for n, v in msg.headers if n.lower() not in ("content-length", "l")]
    return (type(msg), head, Headers(fields), msg.body)


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_round_trip(name: str) -> None:
    msg = parse_message(CAPTURES[name])
    again = parse_message(bytes(msg))
    assert semantic(again) == semantic(msg)
    assert bytes(again) == bytes(msg)


@pytest.mark.parametrize("name", VERBATIM)
def test_clean_captures_are_byte_identical(name: str) -> None:
    assert bytes(parse_message(CAPTURES[name])) == CAPTURES[name]


def test_linphone_register() -> None:
    msg = parse_message(LINPHONE_REGISTER)
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.uri == SipURI("sips", None, "sip.example.org")
    assert msg.cseq == (20, "REGISTER") and msg.call_id == "9Fz5k9eWTn"
    assert msg.max_forwards == 70 and msg.expires == 3600
    assert msg.to.tag is None and msg.from_.tag == "bJQ~qkd2e"
    (contact,) = msg.contacts
    assert contact.instance == "<urn:uuid:e5e0a53e-4f8a-00f2-8a42-1a4a2b64fc4b>"
    assert contact.reg_id == 1 and "ob" in contact.uri.params
    assert contact.params["+org.linphone.specs"] == '"conference/1.0,ephemeral/1.1"'
    via = msg.via
    assert (via.transport, via.host, via.port) == ("TLS", "192.168.1.23", 47391)
    assert via.alias and via.has_rport and via.rport is None
    assert msg.headers.get_all("Supported") == ["replaces", "outbound", "gruu", "path"]
    assert msg.headers.get_all("Accept") == [
        "application/sdp",
        "text/plain",
        "application/vnd.gsma.rcs-ft-http+xml",
    ]


def test_yealink_invite_and_asterisk_answer() -> None:
    invite = parse_message(YEALINK_INVITE)
    assert isinstance(invite, Request)
    assert invite.body.startswith(b"v=0\r\n") and invite.content_type == "application/sdp"
    assert invite.from_.display_name == "Reception"
    assert len(invite.headers.get_all("Allow")) == 14
    assert invite.headers.get_all("Allow-Events")[-1] == "check-sync"
    ok = parse_message(ASTERISK_200)
    assert isinstance(ok, Response) and (ok.status, ok.reason) == (200, "OK")
    assert [v.received for v in ok.vias] == ["203.0.113.7", "198.51.100.20"]
    assert ok.vias[1].rport == 5062 and ok.to.tag == "a3f2e5b0-9c1d-4e57-8b2f-6b8d0c4c7e11"
    assert ok.cseq == invite.cseq and ok.call_id == invite.call_id


def test_compact_forms_and_folding() -> None:
    msg = parse_message(COMPACT_BYE)
    assert msg.call_id == "0_3403416702@10.0.0.51"
    assert msg.headers["Call-ID"] == msg.headers["i"] == msg.headers["CALL-id"]
    assert msg.to.display_name == "Reception" and msg.to.tag == "1127362530"
    assert msg.via.branch == "z9hG4bKPj9d1c" and msg.body == b""
    assert msg.headers.get("To") == '"Reception" <sip:2001@pbx.example.com>;tag=1127362530'


def test_wsinv_torture() -> None:
    msg = parse_message(WSINV)
    assert isinstance(msg, Request)
    assert msg.to.tag == "1918181833n" and msg.to.uri.user == "vivekg"
    assert msg.from_.display_name == 'J Rosenberg \\"' and msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68 and msg.cseq == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers["Subject"] == ""
    assert msg.headers["newfangledheader"] == "newfangled value continued newfangled value"
    (contact,) = msg.contacts
    assert contact.display_name == 'Quoted string ""' and contact.q == 0.33
    assert contact.params["newparam"] == "newvalue" and contact.params["secondparam"] is None
    assert msg.body == crlf(WSINV_BODY)


def test_intmeth_and_non_utf8_bytes_round_trip() -> None:
    msg = parse_message(CAPTURES["intmeth"])
    assert isinstance(msg, Request) and msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.params["fromParam''~+*_!.-%"] == '"работающий"'
    latin1 = CAPTURES["linphone_register"].replace(
        b"User-Agent: Linphone", b"User-Agent: Caf\xe9 \xff"
    )
    again = parse_message(latin1)
    assert bytes(again) == latin1


def test_control_characters_and_uri_passwords_are_refused() -> None:
    """RFC 4475 intmeth is legal, but Warden refuses escaped NUL/BEL and URI passwords."""
    with pytest.raises(SIPParseError) as info:
        parse_message(INTMETH.replace(PASSWORD, b""))
    assert info.value.status == 400 and "control character" in str(info.value)
    with pytest.raises(SIPParseError) as info:
        parse_message(
            CAPTURES["intmeth"].replace(b"*@example.com SIP", b"*" + PASSWORD + b"@example.com SIP")
        )
    assert info.value.status == 400 and "password" in str(info.value)


def test_escaped_uris() -> None:
    msg = parse_message(ESCAPED_URIS)
    assert (
        msg.uri.user == "sips%3Auser%40example.com"
        and msg.uri.user_unescaped == "sips:user@example.com"
    )
    assert msg.to.uri.user_unescaped == "user"
    assert msg.from_.uri.user_unescaped == "I have spaces"


def test_ipv6() -> None:
    msg = parse_message(IPV6_REGISTER)
    assert msg.uri.host == "2001:db8::10" and str(msg.uri) == "sip:[2001:db8::10]"
    assert msg.via.host == "2001:db8::9:1" and msg.via.received == "2001:db8::9:255"
    assert msg.contacts[0].uri.host == "2001:db8::9:1"


def test_lf_only_and_leading_crlf() -> None:
    lf = LINPHONE_REGISTER.replace(b"\r\n", b"\n")
    assert semantic(parse_message(lf)) == semantic(parse_message(LINPHONE_REGISTER))
    assert semantic(parse_message(b"\r\n\r\n" + LINPHONE_REGISTER)) == semantic(
        parse_message(LINPHONE_REGISTER)
    )


def test_body_framing_on_datagrams() -> None:
    longer = parse_message(YEALINK_INVITE + b"trailing junk")
    assert longer.body == parse_message(YEALINK_INVITE).body  # RFC 3261 §18.3: truncate
    no_length = YEALINK_INVITE.replace(b"Content-Length: ", b"X-Was-Length: ")
    assert parse_message(no_length).body == parse_message(YEALINK_INVITE).body


def test_response_status_line_variants() -> None:
    base = ASTERISK_200.split(b"\r\n", 1)[1]
    assert parse_message(b"SIP/2.0 200\r\n" + base).reason == ""
    reason = "Prêt à décrocher".encode()
    assert parse_message(b"SIP/2.0 183 " + reason + b"\r\n" + base).reason == "Prêt à décrocher"
    assert parse_message(b"sip/2.0 180 Ringing\r\n" + base).status == 180


# Errors ----------------------------------------------------------------------


def drop(data: bytes, header: bytes) -> bytes:
    return b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(header))


def swap(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


ERRORS = {
    "truncated_header": (LINPHONE_REGISTER[:200], 400, "truncated"),
    "truncated_body": (YEALINK_INVITE[:-10], 400, "truncated body"),
    "empty": (b"", 400, "empty"),
    "only_crlf": (b"\r\n\r\n", 400, "empty"),
    "binary_garbage": (bytes(range(256)) * 4, 400, ""),
    "nul_in_header": (
        swap(LINPHONE_REGISTER, b"Expires: 3600", b"Expires: 36\x0000"),
        400,
        "control",
    ),
    "negative_length": (swap(COMPACT_BYE, b"l: 0", b"l: -1"), 400, "negative"),
    "non_numeric_length": (swap(COMPACT_BYE, b"l: 0", b"l: zero"), 400, "non-numeric"),
    "unicode_digit_length": (swap(COMPACT_BYE, b"l: 0", "l: ٣".encode()), 400, "non-numeric"),
    "oversized_length": (swap(COMPACT_BYE, b"l: 0", b"l: 99999999999999999999999"), 413, "limit"),
    "too_long_length": (swap(COMPACT_BYE, b"l: 0", b"l: 70000"), 413, "limit"),
    "conflicting_length": (
        swap(COMPACT_BYE, b"l: 0", b"l: 0\r\nContent-Length: 4"),
        400,
        "conflicting",
    ),
    "missing_call_id": (drop(LINPHONE_REGISTER, b"Call-ID"), 400, "missing Call-ID"),
    "missing_compact_call_id": (drop(COMPACT_BYE, b"i:"), 400, "missing Call-ID"),
    "missing_cseq": (drop(LINPHONE_REGISTER, b"CSeq"), 400, "missing CSeq"),
    "missing_via": (drop(LINPHONE_REGISTER, b"Via"), 400, "missing Via"),
    "missing_from": (drop(LINPHONE_REGISTER, b"From"), 400, "missing From"),
    "missing_to": (drop(LINPHONE_REGISTER, b"To"), 400, "missing To"),
    "response_missing_via": (drop(ASTERISK_200, b"Via"), 400, "missing Via"),
    "two_call_ids": (swap(COMPACT_BYE, b"CSeq", b"Call-ID: other\r\nCSeq"), 400, "2 Call-ID"),
    "cseq_method_mismatch": (
        swap(COMPACT_BYE, b"CSeq: 2 BYE", b"CSeq: 2 INVITE"),
        400,
        "does not match",
    ),
    "cseq_over_32_bits": (
        swap(COMPACT_BYE, b"CSeq: 2 BYE", b"CSeq: 4294967296 BYE"),
        400,
        "CSeq number",
    ),
    "cseq_not_a_number": (swap(COMPACT_BYE, b"CSeq: 2 BYE", b"CSeq: two BYE"), 400, "CSeq"),
    "bad_max_forwards": (
        swap(COMPACT_BYE, b"Max-Forwards: 70", b"Max-Forwards: 256"),
        400,
        "Max-Forwards",
    ),
    "bad_request_uri": (
        swap(COMPACT_BYE, b"BYE sip:2001@", b"BYE sip:2001:pw@"),
        400,
        "Request-URI",
    ),
    "bad_ipv6_uri": (
        swap(IPV6_REGISTER, b"sip:[2001:db8::10]", b"sip:[2001:db8::10"),
        400,
        "Request-URI",
    ),
    "unsupported_scheme": (swap(COMPACT_BYE, b"BYE sip:", b"BYE http:"), 416, "scheme"),
    "bad_version": (swap(COMPACT_BYE, b"SIP/2.0\r\n", b"SIP/3.0\r\n"), 505, "version"),
    "bad_response_status": (swap(ASTERISK_200, b"SIP/2.0 200", b"SIP/2.0 700"), 400, "status"),
    "bad_from": (swap(COMPACT_BYE, b"f: <sip:2002@", b"f: <sip:2002@@"), 400, "From"),
    "bad_via": (swap(COMPACT_BYE, b"v: SIP/2.0/UDP", b"v: SIP/2.0"), 400, "Via"),
    "header_without_colon": (
        swap(COMPACT_BYE, b"Max-Forwards: 70", b"Max-Forwards 70"),
        400,
        "malformed header",
    ),
    "leading_continuation": (swap(COMPACT_BYE, b"\r\nv:", b"\r\n v:"), 400, "continuation"),
    "bad_method": (swap(COMPACT_BYE, b"BYE sip", b"B(E sip"), 400, "method"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_error(name: str) -> None:
    data, status, words = ERRORS[name]
    with pytest.raises(SIPParseError) as info:
        parse_message(data)
    assert info.value.status == status
    assert words in str(info.value)


def test_one_megabyte_header() -> None:
    huge = swap(COMPACT_BYE, b"l: 0", b"X-Junk: " + b"a" * (1 << 20) + b"\r\nl: 0")
    with pytest.raises(SIPParseError) as info:
        parse_message(huge)
    assert info.value.status == 513
    roomy = ParserLimits(max_message_size=2 << 20)
    with pytest.raises(SIPParseError) as info:
        parse_message(huge, roomy)
    assert info.value.status == 400 and "longer than" in str(info.value)
    assert parse_message(huge, ParserLimits(max_message_size=2 << 20, max_line_length=2 << 20))


def test_folding_cannot_dodge_the_line_limit() -> None:
    folded = swap(COMPACT_BYE, b"l: 0", b"X-Long: a" + b"\r\n b" * 5000 + b"\r\nl: 0")
    with pytest.raises(SIPParseError) as info:
        parse_message(folded)
    assert info.value.status == 400


def test_header_count_limit() -> None:
    many = swap(COMPACT_BYE, b"l: 0", b"".join(b"X-H%d: x\r\n" % i for i in range(101)) + b"l: 0")
    with pytest.raises(SIPParseError) as info:
        parse_message(many)
    assert info.value.status == 400 and "header fields" in str(info.value)
    assert parse_message(many, ParserLimits(max_headers=200))


def test_long_request_line() -> None:
    long_uri = swap(COMPACT_BYE, b"BYE sip:2001@", b"BYE sip:" + b"9" * 9000 + b"@")
    with pytest.raises(SIPParseError) as info:
        parse_message(long_uri)
    assert info.value.status == 414


# Accessors, headers, Via, responses ------------------------------------------------


def test_contact_wildcard() -> None:
    star = swap(LINPHONE_REGISTER, b"Contact: <sips", b"Contact: *\r\nX-Old: <sips")
    msg = parse_message(star)
    assert msg.contact_wildcard and msg.contacts == []
    both = swap(LINPHONE_REGISTER, b"Contact: <sips", b"Contact: *, <sips")
    with pytest.raises(SIPParseError):
        _ = parse_message(both).contacts


def test_list_splitting() -> None:
    h = Headers(
        [
            ("Contact", '"Doe, John" <sip:jd@example.com;x=a,b>;expires=60, <sip:j2@example.com>'),
            ("m", "sip:j3@example.com"),
            ("WWW-Authenticate", 'Digest realm="example.com", nonce="abc", qop="auth,auth-int"'),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("Allow", "INVITE, ,ACK,\tBYE"),
            ("Warning", '399 pbx "Hello, world"'),
        ]
    )
    assert h.get_all("contact") == [
        '"Doe, John" <sip:jd@example.com;x=a,b>;expires=60',
        "<sip:j2@example.com>",
        "sip:j3@example.com",
    ]
    assert len(h.get_all("WWW-Authenticate")) == 1 and len(h.get_all("Date")) == 1
    assert h.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert h.get_all("Warning") == ['399 pbx "Hello, world"']
    assert len(h.get_fields("Contact")) == 2


def test_headers_api() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a"), ("To", "<sip:a@b>"), ("v", "SIP/2.0/UDP b")])
    h.add("Via", "SIP/2.0/TLS top", first=True)
    assert h.get_all("VIA") == ["SIP/2.0/TLS top", "SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    h["Max-Forwards"] = "70"
    h.set("max-forwards", "69")
    assert h.get_fields("Max-Forwards") == ["69"] and len(h) == 5
    assert h.remove("v") == 3 and "Via" not in h
    with pytest.raises(KeyError):
        del h["Via"]
    with pytest.raises(KeyError):
        h["Via"]
    for name, value in [("Bad Name", "x"), ("X", "a\r\nInjected: yes"), ("X", "nul\x00")]:
        with pytest.raises(ValueError):
            h.add(name, value)
    copy = h.copy()
    copy.add("X-New", "1")
    assert copy != h and list(h) == [("To", "<sip:a@b>"), ("max-forwards", "69")]
    assert Headers([("i", "x")]) == Headers([("Call-ID", "x")])


def test_via_parse_and_rfc3581() -> None:
    via = parse_via("SIP/2.0/udp 10.0.0.51:5062;branch=z9hG4bK1;rport")
    stamped = via.with_received("198.51.100.20", 40123)
    assert (
        str(stamped)
        == "SIP/2.0/UDP 10.0.0.51:5062;branch=z9hG4bK1;rport=40123;received=198.51.100.20"
    )
    assert stamped.response_target() == ("198.51.100.20", 40123)
    plain = parse_via("SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK2")
    assert plain.with_received("192.0.2.4", 5060) == plain
    assert plain.with_received("192.0.2.9", 5060).received == "192.0.2.9"
    assert plain.response_target() == ("192.0.2.4", 5060)
    v6 = parse_via("SIP/2.0/TLS [2001:DB8::1];branch=z9hG4bK3")
    assert v6.with_received("2001:db8::1", 5061) == v6 and v6.response_target() == (
        "2001:DB8::1",
        5061,
    )
    assert str(v6) == "SIP/2.0/TLS [2001:DB8::1];branch=z9hG4bK3"
    assert Via("TCP", "pbx.example.com", 5060, Params([("branch", "z9hG4bK4")])).sent_by == (
        "pbx.example.com",
        5060,
    )


@pytest.mark.parametrize(
    "text",
    [
        "SIP/3.0/UDP host;branch=z9hG4bK1",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP host:99999;branch=z9hG4bK1",
        "SIP/2.0/UDP host;rport=abc",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;branch=a;branch=b",
        "HTTP/2.0/UDP host",
    ],
)
def test_bad_via(text: str) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_via(text)
    assert info.value.status == 400


def test_make_response() -> None:
    invite = parse_message(YEALINK_INVITE)
    assert isinstance(invite, Request)
    invite.headers.add("Via", "SIP/2.0/TLS proxy.example.com;branch=z9hG4bKtop", first=True)
    invite.headers.add("Timestamp", "54")
    ringing = make_response(
        invite, 180, to_tag="as12", headers=[("Contact", "<sip:2002@10.0.0.52>")]
    )
    assert ringing.reason == "Ringing"
    assert ringing.headers.get_fields("Via") == invite.headers.get_fields("Via")
    assert ringing.to.tag == "as12" and ringing.from_ == invite.from_
    assert ringing.call_id == invite.call_id and ringing.cseq == (1, "INVITE")
    assert "Timestamp" not in ringing.headers and "Allow" not in ringing.headers
    again = parse_message(bytes(ringing))
    assert semantic(again) == semantic(ringing)

    trying = make_response(invite, 100)
    assert (
        trying.reason == "Trying" and trying.to.tag is None and trying.headers["Timestamp"] == "54"
    )

    bye = parse_message(COMPACT_BYE)
    assert isinstance(bye, Request)
    ok = make_response(
        bye, 200, to_tag="ignored", body=b"hello", headers=[("Content-Type", "text/plain")]
    )
    assert ok.to.tag == "1127362530"  # an in-dialog To keeps its tag
    assert ok.headers["t"] == bye.headers["To"]  # copied verbatim, compact name kept
    assert b"Content-Length: 5\r\n\r\nhello" in bytes(ok)
    assert make_response(bye, 499).reason == "Bad Request"
    assert make_response(bye, 503, "Overloaded").reason == "Overloaded"
    with pytest.raises(ValueError):
        make_response(bye, 99)


def test_serialisation_fixes_content_length() -> None:
    msg = parse_message(YEALINK_INVITE)
    msg.body = b"changed"
    assert parse_message(bytes(msg)).body == b"changed"
    msg.headers.remove("Content-Length")
    assert bytes(msg).endswith(b"Content-Length: 7\r\n\r\nchanged")
    with pytest.raises(ValueError):
        bytes(Response(200, "OK\r\nInjected: yes", msg.headers))


# Property tests -----------------------------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# Printable ASCII plus UTF-8 from every width, a no-break space and a BOM.
_TEXT_ALPHABET = (
    "".join(map(chr, range(0x20, 0x7F)))
    + "\t\u00e9\u00df\u0414\u4e2d\u20ac\U0001f600\u00a0\u3000\ufeff"
)
_token = st.text(_ALNUM + "-.!%*_+`'~", min_size=1, max_size=12)
_word = st.text(_ALNUM + "-.!%*_+`'~()<>:\\\"/[]?{}", min_size=1, max_size=12)
_host = (
    st.lists(st.text(_ALNUM, min_size=1, max_size=8), min_size=1, max_size=3)
    .map(".".join)
    .filter(lambda h: not h.replace(".", "").isdigit())
)
_value = st.text(_TEXT_ALPHABET, max_size=30).map(lambda v: v.strip(" \t"))


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    method = draw(st.sampled_from(["INVITE", "REGISTER", "BYE", "OPTIONS"]) | _token)
    uri = SipURI(
        draw(st.sampled_from(["sip", "sips"])),
        draw(st.none() | _token.filter(lambda t: "%" not in t)),
        draw(_host),
    )
    headers = Headers()
    for i in range(draw(st.integers(1, 3))):
        branch = "z9hG4bK" + draw(_token)
        headers.add(
            "Via" if i % 2 else "v",
            f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {draw(_host)};branch={branch}",
        )
    display = draw(st.text(_ALNUM + " ,;<>", max_size=10))
    headers.add(
        draw(st.sampled_from(["From", "f"])),
        f'"{display}" <sip:a@{draw(_host)}>;tag={draw(_token)}',
    )
    headers.add(draw(st.sampled_from(["To", "t"])), f"<{uri}>")
    headers.add(draw(st.sampled_from(["Call-ID", "i"])), draw(_word) + "@" + draw(_word))
    headers.add("CSeq", f"{draw(st.integers(0, 2**32 - 1))} {method}")
    headers.add("Max-Forwards", str(draw(st.integers(0, 255))))
    for name, value in draw(st.lists(st.tuples(_token, _value), max_size=5)):
        headers.add("X-" + name, value)
    body = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        return Request(method, uri, headers, body)
    status = draw(st.integers(100, 699))
    return Response(status, draw(_value), headers, body)


@settings(max_examples=300, deadline=None)
@given(messages())
def test_property_round_trip(msg: Request | Response) -> None:
    assert semantic(parse_message(bytes(msg))) == semantic(msg)


def _check_parse_only_raises_sip_errors(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SIPError:
        return
    assert semantic(parse_message(bytes(msg))) == semantic(msg)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_property_arbitrary_bytes(data: bytes) -> None:
    _check_parse_only_raises_sip_errors(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(list(CAPTURES.values())),
    st.lists(
        st.tuples(st.integers(0, 2000), st.binary(max_size=3), st.integers(0, 3)),
        min_size=1,
        max_size=4,
    ),
)
def test_property_mutated_captures(data: bytes, edits: list[tuple[int, bytes, int]]) -> None:
    for at, insert, cut in edits:
        at %= len(data) + 1
        data = data[:at] + insert + data[at + cut :]
    _check_parse_only_raises_sip_errors(data)


def test_replace_top_via_keeps_parsed_vias_consistent() -> None:
    raw = (b"OPTIONS sip:a@example.com SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport, SIP/2.0/TCP proxy.example.com;branch=z9hG4bK2\r\n"
           b"From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
           b"Content-Length: 0\r\n\r\n")
    msg = parse_message(raw)
    new = msg.via.with_received("192.0.2.7", 4321)
    msg.replace_top_via(new)
    assert msg.via == new and len(msg.vias) == 2
    reparsed = parse_message(bytes(msg))
    assert reparsed.vias == msg.vias
    assert reparsed.via.received == "192.0.2.7" and reparsed.via.rport == 4321


# Fast paths against the full paths they shortcut --------------------------------
# (warden.sip.message keeps the line-by-line header parser and the blank-line
# regex: the fast paths must give the same fields, the same errors and statuses.)

from warden.sip import message as _message  # noqa: E402


def _outcome(fn: object, *args: object) -> object:
    try:
        start_line, headers = fn(*args)  # type: ignore[operator]
    except SIPParseError as exc:
        return ("error", str(exc), exc.status)
    return start_line, list(headers._fields), headers.get_fields("Via"), headers.get("l")


_HEAD_ALPHABET = st.sampled_from(
    ["\r\n", "\r", "\n", " ", "\t", ":", "a", "Via", "v", "To", "X-Y", ";", ",", "\x00", "\x7f", "\x1f",
     "é", "\udcff", "SIP/2.0 200 OK", "INVITE sip:a@b SIP/2.0", "Content-Length", " 12"]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_HEAD_ALPHABET, max_size=30).map("".join), st.integers(1, 12), st.integers(8, 400))
def test_property_fast_header_parse_is_the_line_by_line_parse(text: str, headers: int, line: int) -> None:
    limits = ParserLimits(max_headers=headers, max_line_length=line)
    head = text.encode("utf-8", "surrogateescape")
    fast = _outcome(_message._parse_head, head, limits)
    full = _outcome(_message._parse_head_lines, text, limits)
    assert fast == full


@pytest.mark.parametrize("name", CAPTURES)
def test_fast_header_parse_of_captures(name: str) -> None:
    data = CAPTURES[name]
    end = _message._HEAD_END_RE.search(data, _message._skip_crlf(data))
    assert end is not None
    head = data[_message._skip_crlf(data) : end.start()]
    text = head.decode("utf-8", "surrogateescape")
    assert _outcome(_message._parse_head, head, ParserLimits()) == _outcome(
        _message._parse_head_lines, text, ParserLimits()
    )


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"a", b"\n\n", b"\r\n\r\n"]), max_size=12).map(b"".join),
       st.integers(0, 40))
def test_property_blank_line_search_is_the_regex(data: bytes, start: int) -> None:
    start = min(start, len(data))
    m = _message._HEAD_END_RE.search(data, start)
    assert _message._head_end(data, start) == (None if m is None else (m.start(), m.end()))


@pytest.mark.parametrize(
    "to",
    [
        "<sip:11000@127.0.0.1:5060>",
        "sip:11000@127.0.0.1:5060",  # an addr-spec: the tagged form gets <...>
        '"Bob"   <sip:bob@example.com>',
        "Bob <sip:bob@example.com;transport=tcp>;x=1",
        "<sip:bob@example.com>;tag",  # a valueless tag gets its value in place
        "<sip:bob@example.com>;X=1;Y",
        "sip:+1;isub=2@gw.example.com;user=phone",
    ],
)
def test_make_response_tags_to_as_with_tag_would(to: str) -> None:
    raw = (f"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
           f"From: <sip:b@example.com>;tag=1\r\nTo: {to}\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n").encode()
    request = parse_message(raw)
    expected = str(request.to.with_tag("as12"))
    assert make_response(request, 200, to_tag="as12").headers["To"] == expected
    assert make_response(request, 200, to_tag="as12").headers["To"] == expected  # memoised


def test_replace_top_via_in_place_keeps_order_spelling_and_lookups() -> None:
    raw = (b"OPTIONS sip:a@example.com SIP/2.0\r\nFrom: <sip:b@example.com>;tag=1\r\n"
           b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\nTo: <sip:a@example.com>\r\nCall-ID: x\r\n"
           b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    msg = parse_message(raw)
    new = msg.via.with_received("192.0.2.7", 4321)
    msg.replace_top_via(new)
    text = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=4321;received=192.0.2.7"
    assert [name for name, _ in msg.headers] == ["From", "Via", "To", "Call-ID", "CSeq", "Content-Length"]
    assert msg.headers.get_fields("v") == [text] and msg.headers.get_all("Via") == [text]
    assert msg.via is new and msg.vias == [new]
    assert bytes(msg) == raw.replace(b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport", b"Via: " + text.encode())
    assert parse_message(bytes(msg)).via == new


def test_headers_name_check_is_not_skipped_by_memos() -> None:
    headers = Headers([("X-Ok", "1")])
    assert headers.get("Bad Name") is None  # a lookup memoises the key of any name...
    for name in ("Bad Name", "X-Ok:", ""):
        with pytest.raises(ValueError):
            headers.add(name, "1")  # ...which must not make it a valid name
    headers.add("X-Ok", "2")
    for value in ("a\rb", "a\nb", "a\x00b"):
        with pytest.raises(ValueError):
            headers.add("X-Ok", value)
    assert headers.get_fields("x-ok") == ["1", "2"]


@pytest.mark.parametrize(
    ("header", "status", "message"),
    [
        ("Content-Length: 0012", None, None),
        ("Content-Length: 65537", 413, "Content-Length 65537 is over the 65536-byte limit"),
        ("Content-Length: 1234567890123", 413, "Content-Length 1234567890123 is over"),
        ("Content-Length: \u0663", 400, "non-numeric Content-Length"),
        ("Content-Length: -1", 400, "negative Content-Length"),
        ("CSeq: 1  INVITE", None, None),
        ("CSeq: 01 INVITE", None, None),
        ("CSeq: \u0663 INVITE", 400, "malformed CSeq"),
        ("CSeq: 4294967296 INVITE", 400, "CSeq number must be an integer from 0 to 4294967295"),
        ("CSeq: 1 BYE", 400, "CSeq method 'BYE' does not match request method 'INVITE'"),
        ("Max-Forwards: 256", 400, "Max-Forwards must be an integer from 0 to 255"),
        ("Max-Forwards: \u00b2", 400, "Max-Forwards must be an integer"),
    ],
)
def test_number_fast_paths_keep_the_errors(header: str, status: int | None, message: str | None) -> None:
    name = header.partition(":")[0]
    lines = [ln for ln in (
        "INVITE sip:a@example.com SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1",
        "From: <sip:b@example.com>;tag=1", "To: <sip:a@example.com>", "Call-ID: x", "CSeq: 1 INVITE",
        "Content-Length: 0") if not ln.startswith(name + ":")]
    raw = ("\r\n".join([*lines, header]) + "\r\n\r\n").encode() + b"x" * 12
    if status is None:
        msg = parse_message(raw)
        assert msg.cseq[0] == 1 and len(msg.body) in (0, 12)
        return
    with pytest.raises(SIPParseError) as err:
        parse_message(raw)
    assert err.value.status == status and message in str(err.value)
