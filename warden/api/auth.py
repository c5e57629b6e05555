"""Bearer-token authentication, roles, and throttling of failed attempts.

Every view is either :func:`public` or needs a role (:func:`requires`);
a view marked neither needs ``admin``, so forgetting a marker fails closed.
``viewer`` may call read operations, ``admin`` everything. A view marked
:func:`trusted_addresses_skip_token` (``/metrics``) also serves, without a
token, clients whose address is in ``api.metrics_without_token`` (loopback by
default, so a local Prometheus or node agent needs no secret).

Strategy for throttling: :class:`FailureThrottle` counts, per client
address, the requests that *presented* a wrong or malformed token within a
sliding window (default 10 per 60 s). Past the limit, every request from that
address that needs authentication gets 429 with ``Retry-After`` until the
oldest failure leaves the window, even with a valid token: otherwise the
attacker would learn which guess was right. A request without any
``Authorization`` header guesses nothing and is not counted (it gets 401).
The count lives in each gunicorn worker's memory: with N workers an address
gets at most N times the limit before every worker throttles it. Behind a
local reverse proxy every client is the proxy's address, so one client's
failures throttle all; the limit can be changed with
``WARDEN_API_AUTH_FAILURES`` (see :mod:`warden.api.wsgi`).

Tokens never reach a log line: failures log the client address and why.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request

from warden.store import APIToken

from .problems import APIProblem

__all__ = [
    "DEFAULT_FAILURE_LIMIT",
    "DEFAULT_FAILURE_WINDOW",
    "FailureThrottle",
    "authenticate",
    "public",
    "requires",
    "trusted_address",
    "trusted_addresses_skip_token",
]

log = logging.getLogger("warden.api.auth")

#: Failed attempts per address per window before 429.
DEFAULT_FAILURE_LIMIT = 10
#: The window, in seconds.
DEFAULT_FAILURE_WINDOW = 60.0

_CHALLENGE = 'Bearer realm="warden"'
_ROLE_RANK = {"viewer": 0, "admin": 1}

F = TypeVar("F", bound=Callable[..., Any])


def public(view: F) -> F:
    """Mark a view as needing no token."""
    view._warden_public = True  # type: ignore[attr-defined]
    return view


def requires(role: str) -> Callable[[F], F]:
    """Mark a view as needing a token of ``role`` (``viewer`` or ``admin``) or better."""
    if role not in _ROLE_RANK:
        raise ValueError(f"unknown role {role!r}")

    def mark(view: F) -> F:
        view._warden_role = role  # type: ignore[attr-defined]
        return view

    return mark


def trusted_addresses_skip_token(view: F) -> F:
    """Let clients in ``api.metrics_without_token`` call ``view`` without a token."""
    view._warden_trusted_skip = True  # type: ignore[attr-defined]
    return view


def trusted_address(address: str | None, networks: tuple[str, ...]) -> bool:
    """Whether ``address`` (IPv4-mapped IPv6 counts as IPv4) is in one of ``networks``."""
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # a UNIX socket or a proxy's odd value: not trusted
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(n) for n in networks)


class FailureThrottle:
    """Sliding-window count of failures per key; sans-I/O (time is a parameter).

    Thread-safe. At most ``max_keys`` addresses are tracked; past that the
    least recently failing ones are forgotten first.
    """

    def __init__(self, limit: int = DEFAULT_FAILURE_LIMIT, window: float = DEFAULT_FAILURE_WINDOW,
                 *, max_keys: int = 10_000) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def _prune(self, key: str, now: float) -> collections.deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until ``key`` may try again, or None if it is not throttled."""
        with self._lock:
            times = self._prune(key, now)
            if times is None or len(times) < self.limit:
                return None
            return max(times[-self.limit] + self.window - now, 0.001)

    def failure(self, key: str, now: float) -> int:
        """Record one failure; return how many are in the window now."""
        with self._lock:
            times = self._prune(key, now)
            if times is None:
                times = self._failures[key] = collections.deque(maxlen=self.limit)
                while len(self._failures) > self.max_keys:
                    self._failures.popitem(last=False)
            else:
                self._failures.move_to_end(key)
            times.append(now)
            return len(times)


def _unauthorized(detail: str, *, invalid: bool) -> APIProblem:
    challenge = _CHALLENGE + (', error="invalid_token"' if invalid else "")
    return APIProblem(401, detail, headers={"WWW-Authenticate": challenge})


def authenticate() -> None:
    """``before_request`` hook: check the token and role the matched view needs.

    Runs before the body is read, so an unauthenticated client never gets a
    413 or 415 for its body. Unmatched routes (404/405) need no token.
    """
    if request.url_rule is None or request.endpoint is None:
        return
    view = current_app.view_functions.get(request.endpoint)
    if view is None or getattr(view, "_warden_public", False):
        return
    needed: str = getattr(view, "_warden_role", "admin")
    if getattr(view, "_warden_trusted_skip", False) and "Authorization" not in request.headers and trusted_address(
        request.remote_addr, current_app.extensions["warden.config"].api.metrics_without_token
    ):
        return
    throttle: FailureThrottle = current_app.extensions["warden.throttle"]
    address = request.remote_addr or "unknown"
    now = time.monotonic()
    wait = throttle.retry_after(address, now)
    if wait is not None:
        seconds = str(math.ceil(wait))
        raise APIProblem(
            429, f"too many failed authentication attempts from {address}; retry after {seconds} s",
            headers={"Retry-After": seconds},
        )
    header = request.headers.get("Authorization")
    if header is None:
        raise _unauthorized("this operation needs an 'Authorization: Bearer <token>' header", invalid=False)
    scheme, _, secret = header.strip().partition(" ")
    token: APIToken | None = None
    if scheme.lower() == "bearer" and secret.strip():
        token = current_app.extensions["warden.store"]().verify_token(secret.strip())
    if token is None:
        count = throttle.failure(address, now)
        log.warning("authentication failed from %s for %s %s (%d in %g s)",
                    address, request.method, request.path, count, throttle.window)
        raise _unauthorized("the bearer token is invalid, revoked or malformed", invalid=True)
    g.token = token
    if _ROLE_RANK[token.role] < _ROLE_RANK[needed]:
        log.info("token %r (%s) refused %s %s: needs %s", token.name, token.role, request.method, request.path, needed)
        raise APIProblem(403, f"this operation needs the {needed} role; the token has the {token.role} role")
