"""SIP URIs and name-addr values: round-trips, RFC 4475-style oddities, errors, properties."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.errors import SIPParseError
from warden.sip import NameAddr, Params, SipURI, parse_name_addr, parse_uri, unquote

ROUND_TRIP_URIS = [
    "sip:alice@atlanta.com",
    "sips:alice@atlanta.com:5061;transport=tls",
    "sip:alice@[2001:db8::10]:5070;transport=tcp",
    "sip:[2001:db8::10]",
    "sip:[::ffff:192.0.2.1]:5060",
    "sip:%61lice@atlanta.com;transport=TCP",
    "sip:+1-212-555-1212@gateway.com;user=phone",
    "sip:proxy.example.com;lr",
    "sip:192.0.2.4:5060;lr;ob",
    "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
    "sip:user;par=u%40example.net@example.com",
    "sip:sips%3Auser%40example.com@example.net",
    "sip:bob@biloxi.com;maddr=[2001:db8::1];ttl=1",
    "sip:*97#@pbx.example.com",
    "sip:vivekg@chair-dnrc.example.com;unknownparam",
    "sip:alice@atlanta.com;foo=",
    "sip:gw_1.example.com:0",
    "tel:+12015550123",
    "tel:7042;phone-context=example.com",
]


@pytest.mark.parametrize("text", ROUND_TRIP_URIS)
def test_uri_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert str(uri) == text
    assert parse_uri(str(uri)) == uri


def test_uri_fields() -> None:
    uri = parse_uri("sips:%61lice@[2001:DB8::10]:5061;Transport=TLS;LR;ob?Subject=hi")
    assert uri.scheme == "sips" and uri.is_secure
    assert uri.user == "%61lice" and uri.user_unescaped == "alice"
    assert uri.host == "2001:DB8::10" and uri.port == 5061
    assert uri.hostport == "[2001:DB8::10]:5061"
    assert uri.params["transport"] == "TLS" and uri.transport == "tls"
    assert uri.lr and "lr" in uri.params and uri.params["lr"] is None
    assert list(uri.params) == ["Transport", "LR", "ob"]
    assert uri.headers == (("Subject", "hi"),)


def test_scheme_is_case_insensitive() -> None:
    assert str(parse_uri("SIP:alice@atlanta.com")) == "sip:alice@atlanta.com"


def test_tel_uri() -> None:
    uri = parse_uri("tel:7042;phone-context=example.com")
    assert (uri.scheme, uri.user, uri.host) == ("tel", "7042", "")
    assert uri.params["phone-context"] == "example.com"


def test_with_params_and_params_api() -> None:
    uri = parse_uri("sip:alice@atlanta.com;transport=udp")
    new = uri.with_params(transport="tcp", lr=None)
    assert str(new) == "sip:alice@atlanta.com;transport=tcp;lr"
    assert str(uri) == "sip:alice@atlanta.com;transport=udp"
    params = Params([("A", "1"), ("b", None)])
    assert params == {"a": "1", "B": None}
    assert params != Params([("b", None), ("a", "1")])  # order is part of identity
    assert str(params.without("a")) == ";b"
    assert hash(params) == hash(Params([("a", "1"), ("B", None)]))
    with pytest.raises(ValueError):
        Params([("tag", "1"), ("TAG", "2")])


BAD_URIS = [
    ("alice@atlanta.com", 400),
    ("sip:", 400),
    ("sip:alice@", 400),
    ("sip:@atlanta.com", 400),
    ("sip:alice:secret@atlanta.com", 400),
    ("sip:atlanta.com:99999", 400),
    ("sip:atlanta.com:5o60", 400),
    ("sip:[2001:db8::1", 400),
    ("sip:[zz::1]", 400),
    ("sip:2001:db8::1", 400),
    ("sip:a b@atlanta.com", 400),
    ("sip:%zzalice@atlanta.com", 400),
    ("sip:atlanta.com;;lr", 400),
    ("sip:999.1.1.1", 400),
    ("sip:a@b;lr;LR", 400),
    ("sip:atlanta.com?subject", 400),
    ("sip:a@b@c", 400),
    ("sip:al\u00efce@atlanta.com", 400),
    ("sip:<alice@atlanta.com>", 400),
    ("tel:", 400),
    ("tel:call-me", 400),
    ("http://www.example.com/", 416),
    ("mailto:alice@atlanta.com", 416),
]


@pytest.mark.parametrize(("text", "status"), BAD_URIS)
def test_bad_uri(text: str, status: int) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_uri(text)
    assert info.value.status == status


def test_name_addr_forms() -> None:
    a = parse_name_addr('"Alice Liddell" <sip:alice@atlanta.com>;tag=1928301774')
    assert a.display_name == "Alice Liddell" and a.tag == "1928301774"
    b = parse_name_addr("Bob  Smith <sip:bob@biloxi.com>")
    assert b.display_name == "Bob Smith" and b.tag is None
    c = parse_name_addr("<sip:bob@biloxi.com;transport=tcp>;tag=a6c85cf")
    assert c.display_name is None and c.uri.transport == "tcp" and c.tag == "a6c85cf"
    empty = parse_name_addr('"" <sip:anonymous@anonymous.invalid>')
    assert empty.display_name == ""
    assert str(empty) == '"" <sip:anonymous@anonymous.invalid>'


def test_bare_addr_spec_params_belong_to_the_header() -> None:
    a = parse_name_addr("sip:bob@biloxi.com;tag=a6c85cf")
    assert a.uri == parse_uri("sip:bob@biloxi.com") and a.tag == "a6c85cf"
    b = parse_name_addr("sip:+1;isub=2@gw.example.com;tag=x")
    assert b.uri.user == "+1;isub=2" and b.tag == "x"
    c = parse_name_addr('sip:host.example.com;+sip.instance="<urn:a@b>"')
    assert c.uri.host == "host.example.com" and c.instance == "<urn:a@b>"


def test_quoted_display_names() -> None:
    a = parse_name_addr(r'"Doe, \"JD\" John \\" <sip:jd@example.com>')
    assert a.display_name == 'Doe, "JD" John \\'
    assert parse_name_addr(str(a)) == a
    b = parse_name_addr('"Jürgen Müller" <sip:jm@example.de>')
    assert b.display_name == "Jürgen Müller"


def test_contact_params() -> None:
    c = parse_name_addr(
        "<sip:alice@192.0.2.4:5060;transport=tcp;ob>;expires=3600;q=0.7;"
        '+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1'
    )
    assert "ob" in c.uri.params and c.expires == 3600 and c.q == 0.7
    assert c.instance == "<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"
    assert c.reg_id == 1
    assert parse_name_addr(str(c)) == c


def test_weird_whitespace() -> None:
    a = parse_name_addr('  "A"   <sip:a@b.example>  ;  tag = 1 ;\tlr  ')
    assert a.tag == "1" and "lr" in a.params
    wsinv = parse_name_addr("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
    assert wsinv.tag == "1918181833n" and wsinv.uri.user == "vivekg"


def test_with_tag() -> None:
    a = parse_name_addr("<sip:bob@biloxi.com>").with_tag("xyz")
    assert str(a) == "<sip:bob@biloxi.com>;tag=xyz"


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ('"unterminated <sip:a@b.example>', 400),
        ("<sip:a@b.example", 400),
        ("Alice", 400),
        ('"A" sip:a@b.example', 400),
        ("<sip:a@b.example>;tag=a b", 400),
        ("<sip:a@b.example>;=x", 400),
        ("<sip:a@b.example>junk", 400),
        ("<sip:a@b.example>;tag=1;TAG=2", 400),
        ("", 400),
        ("<mailto:a@b.example>", 416),
    ],
)
def test_bad_name_addr(text: str, status: int) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_name_addr(text)
    assert info.value.status == status


def test_bad_numeric_params() -> None:
    with pytest.raises(SIPParseError):
        _ = parse_name_addr("<sip:a@b.example>;expires=soon").expires
    with pytest.raises(SIPParseError):
        _ = parse_name_addr("<sip:a@b.example>;q=2").q
    assert unquote('"a\\"b"') == 'a"b'


# Property tests ---------------------------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# Printable ASCII plus UTF-8 from every width, a no-break space and a BOM.
_TEXT_ALPHABET = (
    "".join(map(chr, range(0x20, 0x7F)))
    + "\t\u00e9\u00df\u0414\u4e2d\u20ac\U0001f600\u00a0\u3000\ufeff"
)
_labels = st.text(_ALNUM, min_size=1, max_size=10)
_hostnames = (
    st.lists(_labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda h: not h.replace(".", "").isdigit())
)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a)))
_users = st.text(_ALNUM + "-_.!~*'()&=+$,;?/", min_size=1, max_size=16)
_param_text = st.text(_ALNUM + "-_.!~*'()[]/:&+$", min_size=1, max_size=12)
_param_names = st.text(_ALNUM + "-_.!~*'", min_size=1, max_size=10)


@st.composite
def _params(draw: st.DrawFn, names: st.SearchStrategy[str] = _param_names) -> Params:
    chosen = draw(st.lists(names, max_size=4, unique_by=str.lower))
    return Params((n, draw(st.none() | st.just("") | _param_text)) for n in chosen)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipURI:
    hvalues = st.lists(st.sampled_from(["a", "Z", "0", "%20", "-", "."]), max_size=4).map("".join)
    headers = draw(st.lists(st.tuples(_labels, hvalues), max_size=2))
    return SipURI(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=draw(st.none() | _users),
        host=draw(_hostnames | _ipv4 | _ipv6),
        port=draw(st.none() | st.integers(0, 65535)),
        params=draw(_params()),
        headers=tuple(headers),
    )


_token = st.text(_ALNUM + "-.!%*_+`'~", min_size=1, max_size=10)
_display = st.none() | st.text(_TEXT_ALPHABET, max_size=20)


@st.composite
def name_addrs(draw: st.DrawFn) -> NameAddr:
    chosen = draw(st.lists(_token, max_size=4, unique_by=str.lower))
    values = st.none() | _token | st.text(_ALNUM + " <>;,:@", max_size=10).map(lambda t: f'"{t}"')
    params = Params((n, draw(values)) for n in chosen)
    return NameAddr(draw(sip_uris()), draw(_display), params)


@settings(max_examples=300, deadline=None)
@given(sip_uris())
def test_property_uri_round_trip(uri: SipURI) -> None:
    assert parse_uri(str(uri)) == uri


@settings(max_examples=300, deadline=None)
@given(name_addrs())
def test_property_name_addr_round_trip(addr: NameAddr) -> None:
    assert parse_name_addr(str(addr)) == addr


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.text('sip:@;=<>"[]:.?&%aA1 \\', max_size=40))
def test_property_arbitrary_text_only_raises_sip_parse_error(text: str) -> None:
    for parse in (parse_uri, parse_name_addr):
        with contextlib.suppress(SIPParseError):
            parse(text)


def test_params_lookups_fold_case_either_way() -> None:
    params = parse_name_addr("<sip:a@example.com>;Tag=x;LR;rport=5").params
    assert params.get("tag") == "x" and params.get("TAG") == "x" and params.get("Tag") == "x"
    assert params.get("lr") is None and "lr" in params and params.get("nope", "d") == "d"
    assert params.get("RPORT") == "5" and params["rport"] == "5"
    with pytest.raises(SIPParseError):  # duplicates are refused on the fast path too
        parse_name_addr("<sip:a@example.com>;tag=1;TAG=2")
    assert parse_name_addr("<sip:a@example.com>").params == Params()
    assert parse_name_addr("<sip:a@example.com> ; tag = 1 ").params == Params({"tag": "1"})
