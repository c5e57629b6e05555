"""The sans-I/O abuse guard: bans, rate limits, shedding, connection caps (time is a parameter)."""

from __future__ import annotations

import pytest

from warden.core.abuse import (
    AbuseGuard,
    AbusePolicy,
    BanEnded,
    Banned,
    Overloaded,
    RateLimited,
    Refused,
    normalize_address,
)

ATTACKER = "203.0.113.7"
PHONE = "198.51.100.20"


def guard(**kw: object) -> AbuseGuard:
    kw.setdefault("trusted", ())
    return AbuseGuard(AbusePolicy(**kw))  # type: ignore[arg-type]


def test_failures_within_the_window_ban_once_and_expire() -> None:
    g = guard(auth_failures=3, auth_window=10, ban_time=60)
    assert g.auth_failed(ATTACKER, 0.0) is None
    assert g.auth_failed(ATTACKER, 1.0) is None
    ban = g.auth_failed(ATTACKER, 2.0)
    assert ban is not None and ban.until == 62.0
    assert [type(e) for e in g.events()] == [Banned]
    assert g.banned(ATTACKER, 30.0) and not g.banned(PHONE, 30.0)
    assert g.admit(ATTACKER, 30.0) == "banned"
    assert g.auth_failed(ATTACKER, 31.0) is None  # no second ban, no second event
    assert g.events() == []
    assert not g.banned(ATTACKER, 62.0)
    [ended] = g.events()
    assert isinstance(ended, BanEnded) and ended.how == "expired" and ended.dropped == 1
    assert g.admit(ATTACKER, 62.5) is None


def test_failures_spread_wider_than_the_window_do_not_ban() -> None:
    g = guard(auth_failures=3, auth_window=10)
    for t in (0.0, 6.0, 12.0, 18.0, 24.0):  # a phone with a stale password, retrying every 6 s
        assert g.auth_failed(PHONE, t) is None
    assert not g.banned(PHONE, 25.0)


def test_trusted_networks_are_never_banned_limited_or_capped() -> None:
    g = guard(auth_failures=1, trusted=("10.0.0.0/8",), requests_per_second=1, request_burst=1,
              max_connections_per_source=1)
    assert g.auth_failed("10.1.2.3", 0.0) is None
    assert not g.banned("10.1.2.3", 0.0)
    assert all(g.admit("10.1.2.3", 0.0) is None for _ in range(100))
    assert all(g.open_connection("10.1.2.3", 0.0) is None for _ in range(5))
    assert g.auth_failed("11.1.2.3", 0.0) is not None


def test_auth_failures_zero_turns_bans_off() -> None:
    g = guard(auth_failures=0)
    assert all(g.auth_failed(ATTACKER, float(t)) is None for t in range(100))


def test_lift_ends_a_ban_and_unknown_lift_is_false() -> None:
    g = guard(auth_failures=1)
    g.auth_failed(ATTACKER, 0.0)
    assert [b.address for b in g.bans(1.0)] == [ATTACKER]
    assert g.lift(ATTACKER) is True
    assert g.lift(ATTACKER) is False
    assert g.bans(1.0) == []
    assert isinstance(g.events()[-1], BanEnded)
    assert g.admit(ATTACKER, 1.0) is None


def test_ban_to_dict_reports_wall_clock_times() -> None:
    g = guard(auth_failures=1, ban_time=100)
    g.auth_failed(ATTACKER, 10.0)
    d = g.bans(40.0)[0].to_dict(40.0, 1_000_000.0)
    assert d == {"address": ATTACKER, "reason": "1 failed authentications within 60 s",
                 "banned_at": 999_970.0, "expires_at": 1_000_070.0, "expires_in": 70, "dropped": 0}


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    g = guard(requests_per_second=10, request_burst=5)
    assert [g.admit(ATTACKER, 0.0) for _ in range(6)] == [None] * 5 + ["rate limited"]
    [notice] = g.events()
    assert isinstance(notice, RateLimited) and notice.dropped == 1
    assert g.admit(ATTACKER, 0.05) == "rate limited"  # half a token
    assert g.admit(ATTACKER, 0.1) is None  # one token back after 0.1 s
    assert g.admit(PHONE, 0.1) is None  # another source has its own bucket
    # notices are rate limited too: the next one reports what was dropped meanwhile
    for _ in range(50):
        g.admit(ATTACKER, 0.1)
    assert g.events() == []
    g.admit(ATTACKER, 10.2)  # bucket full again: admitted
    for _ in range(10):
        g.admit(ATTACKER, 10.2)
    notices = [e for e in g.events() if isinstance(e, RateLimited)]
    assert len(notices) == 1 and notices[0].dropped > 50


def test_rate_zero_means_no_limit() -> None:
    g = guard(requests_per_second=0, request_burst=1)
    assert all(g.admit(ATTACKER, 0.0) is None for _ in range(1000))


def test_under_backlog_only_known_sources_get_in() -> None:
    g = guard(shed_backlog=100)
    g.auth_succeeded(PHONE, 0.0)
    assert g.admit(ATTACKER, 1.0, backlog=500) == "overload"
    assert g.admit(PHONE, 1.0, backlog=500) is None
    assert g.admit(ATTACKER, 1.0, backlog=50) is None
    assert any(isinstance(e, Overloaded) for e in g.events())
    assert g.admit(PHONE, 4000.0, backlog=500) == "overload"  # known for an hour only


def test_connection_caps_per_source_and_in_total() -> None:
    g = guard(max_connections_per_source=2, max_connections=3)
    assert g.open_connection(ATTACKER, 0.0) is None
    assert g.open_connection(ATTACKER, 0.0) is None
    assert g.open_connection(ATTACKER, 0.0) == "connection limit 2 per source reached"
    [refused] = g.events()
    assert isinstance(refused, Refused) and refused.address == ATTACKER
    assert g.open_connection(PHONE, 0.0) is None
    assert g.open_connection("192.0.2.9", 0.0) == "total connection limit 3 reached"
    g.close_connection(ATTACKER)
    assert g.connections(ATTACKER) == 1
    assert g.open_connection("192.0.2.9", 0.0) is None
    assert g.open_connections == 3


def test_banned_source_gets_no_connection() -> None:
    g = guard(auth_failures=1)
    g.auth_failed(ATTACKER, 0.0)
    assert g.open_connection(ATTACKER, 1.0) == "banned"
    assert g.connections(ATTACKER) == 0


def test_tables_are_swept() -> None:
    g = guard(requests_per_second=10, request_burst=10, auth_failures=5, auth_window=10)
    for i in range(1000):
        g.admit(f"10.0.{i // 250}.{i % 250}", 0.0)
        g.auth_failed(f"10.0.{i // 250}.{i % 250}", 0.0)
    assert len(g._buckets) == 1000 and len(g._failures) == 1000
    g.admit(PHONE, 100.0)
    assert len(g._buckets) == 1 and len(g._failures) == 0


def test_tables_are_bounded_under_a_spoofed_flood(monkeypatch: pytest.MonkeyPatch) -> None:
    import warden.core.abuse as abuse

    monkeypatch.setattr(abuse, "_MAX_TRACKED", 50)
    g = guard(requests_per_second=1, request_burst=1)
    for i in range(500):
        g.admit(f"10.0.{i // 250}.{i % 250}", 0.0)
        g.auth_failed(f"10.0.{i // 250}.{i % 250}", 0.0)
    assert len(g._buckets) == 50 and len(g._failures) == 50


def test_an_ipv6_attacker_is_one_source_per_64() -> None:
    g = guard(auth_failures=3, requests_per_second=1, request_burst=2, max_connections_per_source=2)
    for i in range(3):  # a fresh address for every guess does not help
        g.auth_failed(f"2001:db8:1:2::{i + 1:x}", 0.0)
    assert [b.address for b in g.bans(1.0)] == ["2001:db8:1:2::/64"]
    assert g.banned("2001:db8:1:2:ffff::9", 1.0) and not g.banned("2001:db8:1:3::1", 1.0)
    assert g.admit("2001:db8:1:2::77", 1.0) == "banned"
    assert g.lift("2001:db8:1:2::abc")  # any address in it lifts the /64
    assert g.bans(1.0) == []
    assert [g.admit(f"2001:db8:9::{i}", 1.0) for i in range(1, 4)] == [None, None, "rate limited"]
    assert g.open_connection("2001:db8:7::1", 1.0) is None and g.open_connection("2001:db8:7::2", 1.0) is None
    assert g.open_connection("2001:db8:7::3", 1.0) is not None
    assert g.connections("2001:db8:7::99") == 2
    g.close_connection("2001:db8:7::1")
    assert g.connections("2001:db8:7::2") == 1
    assert g.source("::1") == "::1" and g.source("192.0.2.1") == "192.0.2.1"
    assert g.source("::ffff:192.0.2.1") == "192.0.2.1" and g.source("fe80::1%eth0") == "fe80::/64"


def test_ipv6_prefix_128_is_per_address() -> None:
    g = guard(auth_failures=2, ipv6_prefix=128)
    g.auth_failed("2001:db8::1", 0.0)
    g.auth_failed("2001:db8::2", 0.0)
    assert g.bans(1.0) == []
    g.auth_failed("2001:db8::2", 0.0)
    assert [b.address for b in g.bans(1.0)] == ["2001:db8::2"]


def test_reload_lifts_a_banned_64_inside_a_newly_trusted_network() -> None:
    g = guard(auth_failures=1)
    g.auth_failed("2001:db8:1:2::1", 0.0)
    g.update(AbusePolicy(auth_failures=1, trusted=("2001:db8::/32",)))
    assert g.bans(1.0) == []


def test_reload_keeps_bans_but_lifts_newly_trusted() -> None:
    g = guard(auth_failures=1)
    g.auth_failed(ATTACKER, 0.0)
    g.auth_failed(PHONE, 0.0)
    g.update(AbusePolicy(auth_failures=1, trusted=(f"{PHONE}/32",)))
    assert [b.address for b in g.bans(1.0)] == [ATTACKER]


@pytest.mark.parametrize(("text", "canonical"), [
    ("127.0.0.1", "127.0.0.1"), ("[::1]", "::1"), ("2001:DB8:0:0::1", "2001:db8::1"), (" 10.0.0.1 ", "10.0.0.1"),
    ("2001:DB8::1/64", "2001:db8::/64"), ("10.1.2.3/8", "10.0.0.0/8"),
])
def test_normalize_address(text: str, canonical: str) -> None:
    assert normalize_address(text) == canonical


@pytest.mark.parametrize("text", ["", "example.org", "1.2.3.4:5060", "::g", "10.0.0.0/33", "[::1]/64"])
def test_normalize_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        normalize_address(text)
