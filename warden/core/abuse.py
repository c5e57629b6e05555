"""Abuse resistance: brute-force bans, per-source rate limits, connection caps.

Sans-I/O: :class:`AbuseGuard` is told what happened (a request arrived, an
authentication failed, a connection opened) with the time as a parameter and
answers what to do (admit or drop); it keeps no sockets, threads or clock.
What an admin should hear about comes out as events (:meth:`AbuseGuard.events`)
for the caller to log. The transports call it through
:class:`warden.transport.shield.Shield`, which adds the lock (several threads
share one guard) and the logging.

Strategy: a *source* is one IPv4 address, or one IPv6 /64 (``ipv6_prefix``):
anyone with IPv6 holds a whole /64 and could step to a fresh address for every
guess. Bans, buckets and connection counts are per source; ``trusted`` is
checked against the address itself.

* Bans: ``auth_failures`` wrong digest answers (wrong password or unknown
  user: :attr:`warden.sip.auth.DigestAuthenticator.on_wrong_guess`) from one source within
  ``auth_window`` seconds ban it for ``ban_time`` seconds. A banned source is
  answered nothing: its datagrams are dropped before they reach the engine and
  its connections are closed, so a scanner learns nothing and costs nothing.
* Rate: a token bucket per source (``requests_per_second``, ``request_burst``)
  counts every datagram or stream message; beyond it, messages are dropped
  (UDP peers retransmit, so a phone that only bursts recovers).
* Overload: when the engine's backlog passes ``shed_backlog``, only sources
  that authenticated recently (registered phones) or are trusted get in, so a
  flood sheds its own traffic first.
* Connections: at most ``max_connections_per_source`` open TCP/TLS
  connections per source and ``max_connections`` in all.
* Trusted networks (``trusted``) are never banned, rate limited or shed, and
  have no per-source connection cap: an office NAT or a local proxy.

Every table is swept as time passes, so memory stays bounded by the traffic
of the last few windows, not by how many sources ever spoke.
"""

from __future__ import annotations

import collections
import ipaddress
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AbuseGuard",
    "AbusePolicy",
    "Ban",
    "BanEnded",
    "Banned",
    "Overloaded",
    "RateLimited",
    "Refused",
    "normalize_address",
]

_NOTICE_INTERVAL = 10.0
"""Seconds between two log notices of the same kind about one source."""

_KNOWN_FOR = 3600.0
"""Seconds a source counts as a known phone after a successful authentication."""

_MAX_TRACKED = 100_000
"""Sources tracked per table before the oldest are forgotten (spoofed floods)."""


def normalize_address(text: str) -> str:
    """The canonical form of an IP address (``[::1]`` -> ``::1``) or network
    (``2001:DB8::1/64`` -> ``2001:db8::/64``); ValueError if it is neither."""
    text = text.strip()
    if "/" in text:
        return str(ipaddress.ip_network(text, strict=False))
    return str(ipaddress.ip_address(text.strip("[]")))


@dataclass(frozen=True, slots=True)
class AbusePolicy:
    """Limits; see the ``abuse`` section of the configuration for each one."""

    auth_failures: int = 10
    """Failed authentications within ``auth_window`` that ban a source (0: never ban)."""
    auth_window: float = 60.0
    ban_time: float = 600.0
    requests_per_second: float = 200.0
    """Sustained messages per second per source (0: no limit)."""
    request_burst: int = 1000
    """Messages a source may send at once before the rate applies."""
    max_connections_per_source: int = 100
    max_connections: int = 10000
    shed_backlog: int = 500
    """Engine backlog above which only known or trusted sources are admitted."""
    trusted: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Networks never banned, limited or shed."""
    ipv6_prefix: int = 64
    """IPv6 addresses in one network of this length are one source (128: each address)."""

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.trusted)


# --- events (for the caller to log) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Banned:
    """A source was banned (once per ban)."""

    address: str
    reason: str
    duration: float


@dataclass(frozen=True, slots=True)
class BanEnded:
    """A ban expired or an admin lifted it; ``dropped`` messages were not answered meanwhile."""

    address: str
    how: str
    dropped: int


@dataclass(frozen=True, slots=True)
class RateLimited:
    """A source went over its rate; ``dropped`` since the last notice."""

    address: str
    dropped: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A connection was refused: per-source or total cap, or a ban."""

    address: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class Overloaded:
    """The engine backlog passed the shedding mark; unknown sources' messages were dropped."""

    backlog: int
    dropped: int


Event = Banned | BanEnded | RateLimited | Refused | Overloaded


# --- state -------------------------------------------------------------------------------


@dataclass(slots=True)
class Ban:
    """One banned source (``started``/``until`` on the caller's clock)."""

    address: str
    reason: str
    started: float
    until: float
    dropped: int = 0

    def to_dict(self, now: float, wall: float) -> dict[str, Any]:
        """JSON for the control channel; ``wall`` is the wall-clock time at ``now``."""
        return {
            "address": self.address,
            "reason": self.reason,
            "banned_at": round(wall - (now - self.started), 3),
            "expires_at": round(wall + (self.until - now), 3),
            "expires_in": max(0, round(self.until - now)),
            "dropped": self.dropped,
        }


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class _Notice:
    last: float = -1e18
    count: int = 0


@dataclass
class AbuseGuard:
    """The decisions; every method takes ``now`` (seconds, monotonic) where time matters."""

    policy: AbusePolicy = field(default_factory=AbusePolicy)

    def __post_init__(self) -> None:
        self._bans: dict[str, Ban] = {}
        self._failures: dict[str, collections.deque[float]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._known: dict[str, float] = {}
        self._connections: dict[str, int] = {}
        self.open_connections = 0
        self._notices: dict[tuple[str, str], _Notice] = {}
        self._events: list[Event] = []
        self._class_cache: dict[str, tuple[bool, str]] = {}
        self._networks = self.policy.networks()
        self._next_sweep = 0.0

    def update(self, policy: AbusePolicy) -> None:
        """Apply a reloaded policy; bans, counts and buckets carry over."""
        self.policy = policy
        self._networks = policy.networks()
        self._class_cache.clear()
        for key in [k for k in self._bans if self._key_trusted(k)]:
            self.lift(key)

    # -- queries ------------------------------------------------------------------------

    def trusted(self, address: str) -> bool:
        return self._classify(address)[0]

    def source(self, address: str) -> str:
        """The source ``address`` belongs to: itself, or its IPv6 network (``2001:db8::/64``)."""
        return self._classify(address)[1]

    def _classify(self, address: str) -> tuple[bool, str]:
        cached = self._class_cache.get(address)
        if cached is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                cached = (False, address)
            else:
                key = address
                prefix = self.policy.ipv6_prefix
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    key = str(ip.ipv4_mapped)  # ::ffff:192.0.2.1 is that IPv4 host
                elif ip.version == 6 and prefix < 128 and not ip.is_loopback:
                    key = str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
                cached = (any(ip in net for net in self._networks), key)
            if len(self._class_cache) > _MAX_TRACKED:
                self._class_cache.clear()
            self._class_cache[address] = cached
        return cached

    def _key_trusted(self, key: str) -> bool:
        if "/" not in key:
            return self.trusted(key)
        net = ipaddress.ip_network(key)
        return any(net.version == t.version and net.subnet_of(t) for t in self._networks)  # type: ignore[arg-type]

    def banned(self, address: str, now: float) -> bool:
        address = self.source(address)
        ban = self._bans.get(address)
        if ban is None:
            return False
        if ban.until <= now:
            self._end(address, "expired")
            return False
        return True

    @property
    def any_bans(self) -> bool:
        """Cheap test for hot paths: is any ban (maybe expired) held at all."""
        return bool(self._bans)

    def bans(self, now: float) -> list[Ban]:
        self._sweep(now, force=True)
        return sorted(self._bans.values(), key=lambda b: b.started)

    def known(self, address: str, now: float) -> bool:
        """Whether ``address`` authenticated successfully within the last hour."""
        seen = self._known.get(self.source(address))
        return seen is not None and now - seen < _KNOWN_FOR

    # -- inputs ------------------------------------------------------------------------

    def admit(self, address: str, now: float, backlog: int = 0) -> str | None:
        """A message arrived from ``address``: None to process it, else why it is dropped.

        ``backlog`` is how much work already waits for the engine.
        """
        self._sweep(now)
        trusted, address = self._classify(address)
        if self._bans:
            ban = self._bans.get(address)
            if ban is not None:
                if ban.until > now:
                    ban.dropped += 1
                    return "banned"
                self._end(address, "expired")
        if trusted:
            return None
        policy = self.policy
        seen = self._known.get(address)
        if backlog > policy.shed_backlog and (seen is None or now - seen >= _KNOWN_FOR):
            notice = self._notice("overload", "*", now)
            if notice is not None:
                self._events.append(Overloaded(backlog, notice))
            return "overload"
        rate = policy.requests_per_second
        if rate <= 0:
            return None
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= _MAX_TRACKED:  # a spoofed flood: forget the oldest
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[address] = _Bucket(float(policy.request_burst), now)
        else:
            bucket.tokens = min(float(policy.request_burst), bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        notice = self._notice("rate", address, now)
        if notice is not None:
            self._events.append(RateLimited(address, notice))
        return "rate limited"

    def auth_failed(self, address: str, now: float) -> Ban | None:
        """A wrong or unknown user's digest answer from ``address``; the new Ban when it starts one."""
        policy = self.policy
        if policy.auth_failures <= 0 or self.trusted(address) or self.banned(address, now):
            return None
        address = self.source(address)
        times = self._failures.get(address)
        if times is None:
            if len(self._failures) >= _MAX_TRACKED:
                del self._failures[next(iter(self._failures))]
            times = self._failures[address] = collections.deque(maxlen=policy.auth_failures)
        times.append(now)
        while times and now - times[0] > policy.auth_window:
            times.popleft()
        if len(times) < policy.auth_failures:
            return None
        del self._failures[address]
        reason = f"{policy.auth_failures} failed authentications within {policy.auth_window:g} s"
        return self.ban(address, now, policy.ban_time, reason)

    def auth_succeeded(self, address: str, now: float) -> None:
        """A source proved it holds a password: it is a known phone (not shed under load)."""
        address = self.source(address)
        if address not in self._known and len(self._known) >= _MAX_TRACKED:
            self._known.pop(next(iter(self._known)))
        self._known[address] = now

    def ban(self, address: str, now: float, duration: float, reason: str) -> Ban | None:
        """Ban ``address``'s source (not when trusted); announced by a :class:`Banned` event."""
        if self.trusted(address):
            return None
        address = self.source(address)
        ban = self._bans[address] = Ban(address, reason, now, now + duration)
        self._events.append(Banned(address, reason, duration))
        return ban

    def lift(self, address: str) -> bool:
        """End a ban early (of a source, or of the source an address is in); False if none."""
        if address not in self._bans:
            address = self.source(address)
        if address not in self._bans:
            return False
        self._end(address, "lifted")
        return True

    def open_connection(self, address: str, now: float) -> str | None:
        """A TCP/TLS connection was accepted: None to keep it (counted), else why to close it."""
        reason: str | None = None
        trusted, address = self._classify(address)
        if self.banned(address, now):
            self._bans[address].dropped += 1
            reason = "banned"
        elif self.open_connections >= self.policy.max_connections:
            reason = f"total connection limit {self.policy.max_connections} reached"
        elif not trusted and self._connections.get(address, 0) >= self.policy.max_connections_per_source:
            reason = f"connection limit {self.policy.max_connections_per_source} per source reached"
        if reason is not None:
            if reason != "banned":
                notice = self._notice("conn", address, now)
                if notice is not None:
                    self._events.append(Refused(address, reason, notice))
            return reason
        self._connections[address] = self._connections.get(address, 0) + 1
        self.open_connections += 1
        return None

    def close_connection(self, address: str) -> None:
        """A connection that :meth:`open_connection` admitted has closed."""
        address = self.source(address)
        count = self._connections.get(address, 0) - 1
        if count > 0:
            self._connections[address] = count
        else:
            self._connections.pop(address, None)
        self.open_connections = max(0, self.open_connections - 1)

    def connections(self, address: str) -> int:
        return self._connections.get(self.source(address), 0)

    def events(self) -> list[Event]:
        """What happened since the last call (and forget it)."""
        out, self._events = self._events, []
        return out

    # -- internals ------------------------------------------------------------------------

    def _end(self, address: str, how: str) -> None:
        ban = self._bans.pop(address)
        self._events.append(BanEnded(address, how, ban.dropped))

    def _notice(self, kind: str, address: str, now: float) -> int | None:
        """Count one occurrence; the count to report when a notice is due, else None."""
        key = (kind, address)
        notice = self._notices.get(key)
        if notice is None:
            if len(self._notices) >= _MAX_TRACKED:
                self._notices.pop(next(iter(self._notices)))
            notice = self._notices[key] = _Notice()
        notice.count += 1
        if now - notice.last < _NOTICE_INTERVAL:
            return None
        count, notice.count, notice.last = notice.count, 0, now
        return count

    def _sweep(self, now: float, *, force: bool = False) -> None:
        """Forget what no longer matters (at most once a second unless forced)."""
        if now < self._next_sweep and not force:
            return
        self._next_sweep = now + 1.0
        for address in [a for a, b in self._bans.items() if b.until <= now]:
            self._end(address, "expired")
        window = self.policy.auth_window
        for address in [a for a, t in self._failures.items() if not t or now - t[-1] > window]:
            del self._failures[address]
        rate = self.policy.requests_per_second
        full_after = self.policy.request_burst / rate if rate > 0 else 0.0
        for address in [a for a, b in self._buckets.items() if now - b.stamp > full_after]:
            del self._buckets[address]  # refilled: a fresh bucket is the same
        for key in [k for k, n in self._notices.items() if now - n.last > 6 * _NOTICE_INTERVAL]:
            del self._notices[key]
        for address in [a for a, t in self._known.items() if now - t >= _KNOWN_FOR]:
            del self._known[address]
