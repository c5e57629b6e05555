"""Digest authentication: RFC vectors, challenge/verify flows, nonces, parsing."""

from __future__ import annotations

import gc
import re

import pytest

from warden.errors import SIPError, SIPParseError
from warden.sip.auth import (
    AuthReason,
    Challenge,
    Credentials,
    DigestAuthenticator,
    HA1Pair,
    NonceManager,
    NonceStatus,
    answer_challenge,
    client_response,
    format_challenge,
    format_credentials,
    ha1,
    parse_challenge,
    parse_credentials,
)

SECRET = b"0123456789abcdef-test-secret"
REALM = "pbx.example.org"
URI = "sip:pbx.example.org;transport=tls"
T0 = 1_700_000_000.0

# RFC 7616 §3.9.1
RFC7616 = dict(
    username="Mufasa", password="Circle of Life", realm="http-auth@example.org",
    uri="/dir/index.html", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", nc="00000001",
    qop="auth", method="GET",
)


# -- vectors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_example(algorithm: str, expected: str) -> None:
    assert client_response(algorithm=algorithm, **RFC7616) == expected  # type: ignore[arg-type]


def test_rfc7616_example_from_stored_ha1() -> None:
    kw = dict(RFC7616)
    pair = HA1Pair.from_password(str(kw.pop("username")), str(kw["realm"]), str(kw.pop("password")))
    got = client_response(username="Mufasa", ha1_hex=pair.for_algorithm("SHA-256"),
                          algorithm="SHA-256", **kw)  # type: ignore[arg-type]
    assert got == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_rfc2617_example() -> None:
    got = client_response(
        username="Mufasa", password="Circle Of Life", realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", method="GET",
        qop="auth", nc="00000001", cnonce="0a4f113b",
    )
    assert got == "6629fae49393a05397450978507c4ef1"


def test_ha1_and_sess_variants() -> None:
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == \
        "939e7578ed9e3c518a452acee763bce9"
    assert ha1("u", "r", "p", "MD5-sess") == ha1("u", "r", "p", "MD5")
    assert len(ha1("u", "r", "p", "SHA-256")) == 64
    with pytest.raises(ValueError):
        ha1("u", "r", "p", "SHA-512-256")


def test_secrets_stay_out_of_reprs() -> None:
    pair = HA1Pair.from_password("alice", REALM, "hunter2")
    creds = Credentials("alice", REALM, "n", URI, response="deadbeef" * 4)
    nonces = NonceManager(SECRET)
    auth = DigestAuthenticator(REALM, nonces, lambda u: pair)
    for text in (repr(pair), repr(creds), repr(nonces), repr(auth)):
        assert pair.ha1_md5 not in text and pair.ha1_sha256 not in text
        assert "deadbeef" not in text and "hunter2" not in text
        assert SECRET.decode() not in text


def test_tracked_nonces_are_invisible_to_the_garbage_collector() -> None:
    """Up to max_tracked used nonces live for the nonce lifetime (65,536 at 1,000 calls/s):
    plain numbers, or every collection would walk them; a reused nc is still a replay."""
    nonces = NonceManager(SECRET)
    issued = [nonces.issue(T0, "192.0.2.1") for _ in range(100)]
    for n in issued:
        assert nonces.use(n, 1, T0 + 1, "192.0.2.1") is NonceStatus.VALID
    assert nonces.use(issued[0], 2, T0 + 1, "192.0.2.1") is NonceStatus.VALID
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in nonces._seen.values())
    assert nonces.use(issued[0], 2, T0 + 1, "192.0.2.1") is NonceStatus.REPLAY
    assert nonces.use(issued[1], 1, T0 + 1, "192.0.2.1") is NonceStatus.REPLAY
    assert nonces.use(issued[1], 7, T0 + 1, "192.0.2.1") is NonceStatus.VALID


# -- flows ----------------------------------------------------------------

USERS = {"alice": HA1Pair.from_password("alice", REALM, "s3cret!"),
         "bob": HA1Pair.from_password("bob", REALM, "b0b")}


def make_auth(**kw: object) -> DigestAuthenticator:
    return DigestAuthenticator(REALM, NonceManager(SECRET, lifetime=300), USERS.get, **kw)  # type: ignore[arg-type]


def respond(header: str, username: str, password: str, method: str = "REGISTER",
            nc: int = 1, uri: str = URI) -> str:
    creds = answer_challenge(parse_challenge(header), username=username, password=password,
                             method=method, uri=uri, nc=nc)
    return format_credentials(creds)


def test_challenge_headers() -> None:
    auth = make_auth(opaque="abc")
    headers = auth.challenge(T0)
    assert len(headers) == 2
    assert re.fullmatch(r'Digest realm="pbx\.example\.org", nonce="[A-Za-z0-9_-]{48}", '
                        r'opaque="abc", algorithm=SHA-256, qop="auth"', headers[0])
    assert headers[1].endswith('algorithm=MD5, qop="auth"')
    assert auth.challenge(T0, stale=True)[0].endswith(", stale=true")
    assert (auth.status, auth.challenge_header, auth.credentials_header) == \
        (401, "WWW-Authenticate", "Authorization")
    proxy = make_auth(proxy=True)
    assert (proxy.status, proxy.challenge_header) == (407, "Proxy-Authenticate")


def test_algorithm_order_is_the_configured_one() -> None:
    """Clients answer the first challenge they support, so the order is the admin's choice."""
    auth = make_auth(algorithms=("MD5", "SHA-256"))
    assert auth.algorithms == ("MD5", "SHA-256")
    assert [parse_challenge(h).algorithm for h in auth.challenge(T0)] == ["MD5", "SHA-256"]
    assert make_auth(algorithms=("SHA-256", "MD5", "SHA-256")).algorithms == ("SHA-256", "MD5")
    assert make_auth(algorithms=("SHA-256",)).algorithms == ("SHA-256",)
    with pytest.raises(ValueError, match="unsupported digest algorithm"):
        make_auth(algorithms=("SHA-512",))


@pytest.mark.parametrize("index", [0, 1], ids=["SHA-256", "MD5"])
def test_full_flow(index: int) -> None:
    auth = make_auth()
    header = auth.challenge(T0, peer="192.0.2.10")[index]
    result = auth.verify("REGISTER", respond(header, "alice", "s3cret!"), T0 + 1,
                         peer="192.0.2.10", request_uri=URI)
    assert result.ok and result.username == "alice" and result.reason is AuthReason.OK


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_sess_variants_verify(algorithm: str) -> None:
    auth = make_auth()
    nonce = parse_challenge(auth.challenge(T0)[0]).nonce
    creds = answer_challenge(Challenge(REALM, nonce, algorithm), username="bob",
                             password="b0b", method="INVITE", uri=URI)
    assert auth.verify("INVITE", format_credentials(creds), T0).ok


def test_sess_rejected_when_base_not_offered() -> None:
    auth = make_auth(algorithms=("SHA-256",))
    nonce = parse_challenge(auth.challenge(T0)[0]).nonce
    creds = answer_challenge(Challenge(REALM, nonce, "MD5-sess"), username="bob",
                             password="b0b", method="INVITE", uri=URI)
    r = auth.verify("INVITE", format_credentials(creds), T0)
    assert r.reason is AuthReason.UNSUPPORTED_ALGORITHM


def test_wrong_password_and_unknown_user_look_the_same() -> None:
    auth = make_auth()
    h = auth.challenge(T0)[0]
    wrong = auth.verify("REGISTER", respond(h, "alice", "guess"), T0)
    h = auth.challenge(T0)[0]
    unknown = auth.verify("REGISTER", respond(h, "mallory", "guess"), T0)
    assert wrong.reason is AuthReason.BAD_RESPONSE
    assert unknown.reason is AuthReason.UNKNOWN_USER
    outward = lambda r: (r.ok, r.stale, r.username)  # noqa: E731
    assert outward(wrong) == outward(unknown) == (False, False, None)
    # Same challenge shape: only the random nonce differs.
    strip = lambda hs: [re.sub(r'nonce="[^"]*"', "", x) for x in hs]  # noqa: E731
    assert strip(auth.challenge(T0, stale=wrong.stale)) == strip(auth.challenge(T0, stale=unknown.stale))
    # Even with an expired nonce, neither earns stale=true.
    h = auth.challenge(T0)[0]
    late = T0 + 1000
    assert not auth.verify("REGISTER", respond(h, "alice", "guess"), late).stale
    assert not auth.verify("REGISTER", respond(h, "nobody", "guess"), late).stale


def test_only_checked_guesses_are_reported_for_bans() -> None:
    auth = make_auth()
    guesses: list[str] = []
    auth.on_wrong_guess = guesses.append
    peer = "192.0.2.5"
    h = auth.challenge(T0, peer=peer)[0]
    auth.verify("REGISTER", respond(h, "alice", "guess"), T0, peer=peer)
    auth.verify("REGISTER", respond(auth.challenge(T0, peer=peer)[0], "mallory", "guess"), T0, peer=peer)
    assert guesses == [peer, peer]
    # a foreign nonce (e.g. from before a restart), a stale one, missing or garbled credentials,
    # another realm, and a success are no guesses: a phone behind an office NAT does all of them
    foreign = NonceManager(b"another-secret-of-16b").issue(T0)
    h = auth.challenge(T0, peer=peer)[0]
    auth.verify("REGISTER", respond(h.replace(parse_challenge(h).nonce, foreign), "alice", "s3cret!"), T0, peer=peer)
    auth.verify("REGISTER", respond(auth.challenge(T0, peer=peer)[0], "alice", "s3cret!"), T0 + 301, peer=peer)
    auth.verify("REGISTER", None, T0, peer=peer)
    auth.verify("REGISTER", "Digest garbage", T0, peer=peer)
    auth.verify("REGISTER", respond(auth.challenge(T0, peer=peer)[0].replace(REALM, "other"), "alice", "x"),
                T0, peer=peer)
    assert auth.verify("REGISTER", respond(auth.challenge(T0, peer=peer)[0], "alice", "s3cret!"), T0, peer=peer).ok
    assert guesses == [peer, peer]


def test_method_and_uri_are_covered() -> None:
    auth = make_auth()
    h = auth.challenge(T0)[0]
    assert auth.verify("INVITE", respond(h, "alice", "s3cret!", "REGISTER"), T0).reason \
        is AuthReason.BAD_RESPONSE
    other = respond(h, "alice", "s3cret!", uri="sip:elsewhere.example")
    assert auth.verify("REGISTER", other, T0, request_uri=URI).reason is AuthReason.URI_MISMATCH
    assert auth.verify("REGISTER", other, T0).ok  # uri= checked only on request


def test_stale_nonce() -> None:
    auth = make_auth()
    h = auth.challenge(T0)[1]
    r = auth.verify("REGISTER", respond(h, "alice", "s3cret!"), T0 + 301)
    assert r.reason is AuthReason.STALE_NONCE and r.stale
    assert auth.nonces.check(parse_challenge(h).nonce, T0 + 300) is NonceStatus.VALID
    assert auth.nonces.check(parse_challenge(h).nonce, T0 + 300.5) is NonceStatus.STALE
    assert auth.nonces.check(parse_challenge(h).nonce, T0 - 60) is NonceStatus.STALE


def test_forged_and_garbled_nonces_are_invalid() -> None:
    nonces = NonceManager(SECRET)
    good = nonces.issue(T0)
    flipped = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    for bad in (flipped, good[:-1], good + "A", "x" * 48, "", "!" * 48,
                NonceManager(b"another-secret-of-16b").issue(T0)):
        assert nonces.check(bad, T0) is NonceStatus.INVALID
    auth = make_auth()
    h = auth.challenge(T0)[0]
    h = h.replace(parse_challenge(h).nonce, flipped)
    r = auth.verify("REGISTER", respond(h, "alice", "s3cret!"), T0)
    assert r.reason is AuthReason.INVALID_NONCE and not r.stale


def test_nonce_bound_to_peer() -> None:
    auth = make_auth()
    h = auth.challenge(T0, peer="198.51.100.7")[0]
    creds = respond(h, "alice", "s3cret!")
    assert auth.verify("REGISTER", creds, T0, peer="203.0.113.9").reason is AuthReason.INVALID_NONCE
    assert auth.verify("REGISTER", creds, T0).reason is AuthReason.INVALID_NONCE
    assert auth.verify("REGISTER", creds, T0, peer="198.51.100.7").ok


def test_replayed_nc_rejected_increasing_accepted() -> None:
    auth = make_auth()
    h = auth.challenge(T0)[0]
    first = respond(h, "alice", "s3cret!", nc=1)
    assert auth.verify("REGISTER", first, T0).ok
    r = auth.verify("REGISTER", first, T0 + 1)
    assert r.reason is AuthReason.REPLAY and r.stale
    assert auth.verify("REGISTER", respond(h, "alice", "s3cret!", nc=2), T0 + 2).ok
    assert auth.verify("REGISTER", respond(h, "alice", "s3cret!", nc=5), T0 + 3).ok
    assert auth.verify("REGISTER", respond(h, "alice", "s3cret!", nc=4), T0 + 4).reason \
        is AuthReason.REPLAY


def test_bad_response_does_not_burn_nonce_counts() -> None:
    auth = make_auth()
    h = auth.challenge(T0)[0]
    assert not auth.verify("REGISTER", respond(h, "alice", "nope", nc=9), T0).ok
    assert auth.verify("REGISTER", respond(h, "alice", "s3cret!", nc=1), T0).ok


def rfc2069(header: str, username: str, password: str, method: str = "REGISTER") -> str:
    ch = parse_challenge(header)
    resp = client_response(username=username, password=password, realm=ch.realm,
                           nonce=ch.nonce, uri=URI, method=method, qop=None,
                           algorithm=ch.algorithm)
    return (f'Digest username="{username}", realm="{ch.realm}", nonce="{ch.nonce}", '
            f'uri="{URI}", response="{resp}"')  # no algorithm=: MD5 by default


def test_no_qop_phone_one_request_per_nonce() -> None:
    auth = make_auth()
    h = auth.challenge(T0)[1]  # MD5
    creds = rfc2069(h, "bob", "b0b")
    assert auth.verify("REGISTER", creds, T0).ok
    r = auth.verify("REGISTER", creds, T0 + 1)
    assert r.reason is AuthReason.REPLAY and r.stale
    strict = make_auth(allow_no_qop=False)
    h = strict.challenge(T0)[1]
    assert strict.verify("REGISTER", rfc2069(h, "bob", "b0b"), T0).reason is AuthReason.UNSUPPORTED_QOP


def test_no_qop_then_qop_on_same_nonce_is_replay() -> None:
    nonces = NonceManager(SECRET)
    n = nonces.issue(T0)
    assert nonces.use(n, None, T0) is NonceStatus.VALID
    assert nonces.use(n, 7, T0) is NonceStatus.REPLAY
    m = nonces.issue(T0)
    assert nonces.use(m, 1, T0) is NonceStatus.VALID
    assert nonces.use(m, None, T0) is NonceStatus.REPLAY


def test_table_bounded_under_flood() -> None:
    nonces = NonceManager(SECRET, lifetime=300, max_tracked=1000)
    early = nonces.issue(T0)
    assert nonces.use(early, 1, T0) is NonceStatus.VALID
    for i in range(100_000):
        n = nonces.issue(T0 + i * 1e-4)
        assert nonces.use(n, 1, T0 + i * 1e-4) is NonceStatus.VALID
        assert len(nonces) <= 1000
    # The evicted nonce can no longer be replayed, nor restarted: it is stale.
    assert nonces.use(early, 1, T0 + 10) is NonceStatus.STALE
    assert nonces.use(early, 2, T0 + 10) is NonceStatus.STALE
    # Expired entries leave on their own.
    late = nonces.issue(T0 + 10_000)
    assert nonces.use(late, 1, T0 + 10_000) is NonceStatus.VALID
    assert len(nonces) == 1


def test_unauthenticated_flood_costs_no_memory() -> None:
    auth = make_auth()
    for i in range(2000):
        h = auth.challenge(T0)[0]
        auth.verify("REGISTER", respond(h, f"user{i}", "x"), T0)
    assert len(auth.nonces) == 0


def test_nonce_manager_validation() -> None:
    with pytest.raises(ValueError):
        NonceManager(b"short")
    with pytest.raises(ValueError):
        NonceManager(SECRET, lifetime=0)


def test_missing_malformed_and_realm() -> None:
    auth = make_auth()
    assert auth.verify("REGISTER", None, T0).reason is AuthReason.MISSING
    assert auth.verify("REGISTER", [], T0).reason is AuthReason.MISSING
    r = auth.verify("REGISTER", 'Digest username="alice', T0)
    assert r.reason is AuthReason.MALFORMED and "quoted string" in r.detail
    assert auth.verify("REGISTER", "Basic YWxpY2U6cw==", T0).reason is AuthReason.MALFORMED
    h = auth.challenge(T0)[0].replace(REALM, "other.example")
    assert auth.verify("REGISTER", respond(h, "alice", "s3cret!"), T0).reason \
        is AuthReason.REALM_MISMATCH


def test_several_headers_pick_our_realm() -> None:
    auth = make_auth()
    h = auth.challenge(T0)[0]
    ours = respond(h, "alice", "s3cret!")
    theirs = respond(h.replace(REALM, "upstream.example"), "alice", "x")
    assert auth.verify("INVITE", ["garbage", theirs, ours], T0).reason is AuthReason.BAD_RESPONSE
    assert auth.verify("REGISTER", ["garbage", theirs, ours], T0).ok


def test_unsupported_qop_and_algorithm() -> None:
    auth = make_auth()
    nonce = parse_challenge(auth.challenge(T0)[0]).nonce
    base = f'Digest username="alice", realm="{REALM}", nonce="{nonce}", uri="{URI}", response="00"'
    assert auth.verify("REGISTER", base + ', qop=auth-int, nc=00000001, cnonce="c"', T0).reason \
        is AuthReason.UNSUPPORTED_QOP
    assert auth.verify("REGISTER", base + ", algorithm=SHA-512-256", T0).reason \
        is AuthReason.UNSUPPORTED_ALGORITHM
    assert auth.verify("REGISTER", base + ", algorithm=MD5-sess", T0).reason is AuthReason.MALFORMED


def test_uppercase_hex_response_accepted() -> None:
    auth = make_auth()
    creds = answer_challenge(parse_challenge(auth.challenge(T0)[0]), username="alice",
                             password="s3cret!", method="REGISTER", uri=URI)
    upper = format_credentials(Credentials(
        creds.username, creds.realm, creds.nonce, creds.uri, creds.response.upper(),
        creds.algorithm, creds.cnonce, creds.opaque, creds.qop, creds.nc))
    assert auth.verify("REGISTER", upper, T0).ok


def test_non_ascii_response_is_just_wrong() -> None:
    auth = make_auth()
    nonce = parse_challenge(auth.challenge(T0)[0]).nonce
    h = (f'Digest username="alice", realm="{REALM}", nonce="{nonce}", uri="{URI}", '
         f'response="\u00e9\u00e9\ud800", algorithm=SHA-256')
    assert auth.verify("REGISTER", h, T0).reason is AuthReason.BAD_RESPONSE


# -- parsing --------------------------------------------------------------


def test_parse_sipp_style() -> None:
    nonces = NonceManager(SECRET)
    nonce = nonces.issue(T0)
    resp = client_response(username="u", password="pw", realm="r", nonce=nonce,
                           uri="sip:192.0.2.1:5061", method="REGISTER",
                           cnonce="6b8b4567", nc="00000001")
    header = (f'Digest username="u",realm="r",cnonce="6b8b4567",nc=00000001,qop=auth,'
              f'uri="sip:192.0.2.1:5061",nonce="{nonce}",response="{resp}",algorithm=MD5')
    c = parse_credentials(header)
    assert (c.username, c.realm, c.cnonce, c.nc, c.qop, c.uri, c.algorithm) == \
        ("u", "r", "6b8b4567", "00000001", "auth", "sip:192.0.2.1:5061", "MD5")
    assert c.nonce_count == 1 and c.response == resp
    auth = DigestAuthenticator("r", nonces, {"u": HA1Pair.from_password("u", "r", "pw")}.get)
    assert auth.verify("REGISTER", header, T0).ok


def test_parse_escapes_spaces_case_commas() -> None:
    c = parse_credentials(
        '  digest   USERNAME = "a\\"b\\\\c" ,REALM="x, y",  Nonce="n",uri="sip:a@b;x=\\"y\\"" ,'
        ' response="ABC", Algorithm=sha-256, QOP="auth", NC=0000000a, cnonce="c,c",  ,opaque="o" ')
    assert c.username == 'a"b\\c'
    assert c.realm == "x, y"
    assert c.uri == 'sip:a@b;x="y"'
    assert c.algorithm == "SHA-256" and c.qop == "auth" and c.nonce_count == 10
    assert c.cnonce == "c,c" and c.opaque == "o" and c.response == "ABC"


def test_format_parse_round_trip() -> None:
    c = Credentials('we"ird\\name', REALM, "n0nce", URI, "abcd", "SHA-256-sess",
                    "cn", "op", "auth", "0000002f")
    assert parse_credentials(format_credentials(c)) == c
    ch = Challenge('r"q', "nonce", "SHA-256", "opq", "auth,auth-int", True)
    text = format_challenge(ch)
    assert text == ('Digest realm="r\\"q", nonce="nonce", opaque="opq", algorithm=SHA-256, '
                    'qop="auth,auth-int", stale=true')
    assert parse_challenge(text) == ch


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "Digest",
        "Digest ",
        'Digest username="u"',  # missing the rest
        'Digest username="u", realm="r", nonce="n", uri="x"',  # no response
        'Digest username="u", realm="r", nonce="n", uri="x", response="r", qop=auth',  # no nc/cnonce
        'Digest username="u", realm="r", nonce="n", uri="x", response="r", qop=auth, '
        'nc=zz, cnonce="c"',
        'Digest username="u", realm="r", nonce="n", uri="x", response="r", qop=auth, '
        'nc=000000001, cnonce="c"',
        'Digest username="u" realm="r"',  # missing comma
        'Digest username=, realm="r"',
        'Digest ="u"',
        'Digest username "u"',
        'Digest username="u", username="v", realm="r", nonce="n", uri="x", response="r"',
        'Digest username="u\\',
        'Digest username="u\r\n", realm="r"',
        'Digest username=u"v", realm="r"',
        'Basic dXNlcjpwYXNz',
        'Digest\x00 username="u"',
        "\x00\xff garbage \x7f",
        'Digest username="' + "a" * 9000 + '"',
    ],
)
def test_parse_garbage(value: str) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_credentials(value)
    assert info.value.status == 400
    assert "\r" not in str(info.value) and "a" * 100 not in str(info.value)


def test_parse_error_never_echoes_the_response() -> None:
    with pytest.raises(SIPParseError) as info:
        parse_credentials('Digest username="u", response="feedfacecafe" realm="r"')
    assert "feedface" not in str(info.value)


def test_parse_challenge_errors() -> None:
    with pytest.raises(SIPParseError):
        parse_challenge('Digest nonce="n"')
    with pytest.raises(SIPParseError):
        parse_challenge('Basic realm="r"')
    assert parse_challenge('Digest realm="r", nonce="n"') == Challenge("r", "n", "MD5", None, None)


def test_answer_challenge_refusals() -> None:
    with pytest.raises(SIPError) as info:
        answer_challenge(Challenge("r", "n", "SHA-512"), username="u", password="p",
                         method="INVITE", uri=URI)
    assert info.value.status == 401
    with pytest.raises(SIPError):
        answer_challenge(Challenge("r", "n", "MD5", qop="auth-int"), username="u",
                         password="p", method="INVITE", uri=URI)
    with pytest.raises(ValueError):
        client_response(username="u", realm="r", nonce="n", uri=URI, method="X", cnonce="c")


def test_format_quotes_values_that_are_not_tokens() -> None:
    c = Credentials("u", "r", "n", URI, "ab", "MD5", "c", None, "auth, auth-int", "1")
    text = format_credentials(c)
    assert 'qop="auth, auth-int"' in text and "nc=1" in text
    assert parse_credentials(text) == c


def test_results_never_carry_secrets() -> None:
    auth = make_auth()
    pair = USERS["alice"]
    h = auth.challenge(T0)[0]
    for creds in (respond(h, "alice", "wrong"), respond(h, "alice", "s3cret!"),
                  respond(h, "alice", "s3cret!")):  # bad, ok, replay
        result = auth.verify("REGISTER", creds, T0)
        text = repr(result) + result.detail
        assert pair.ha1_md5 not in text and pair.ha1_sha256 not in text
        assert parse_credentials(creds).response not in text
        assert "s3cret" not in text
