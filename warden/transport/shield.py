"""The thread-safe face of :class:`warden.core.abuse.AbuseGuard`.

The engine thread (for each UDP datagram it reads and for authentication
results), stream acceptors and I/O threads and the control channel all
consult one guard; this wrapper adds the lock, the clock and the
logging of the guard's events, so the hooks in the transports and the engine
stay one line each.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..core.abuse import AbuseGuard, AbusePolicy, Ban, Banned, BanEnded, Overloaded, RateLimited, Refused

__all__ = ["Shield"]

log = logging.getLogger("warden.abuse")


class Shield:
    """Lock + clock + logging around one :class:`AbuseGuard`."""

    def __init__(self, policy: AbusePolicy) -> None:
        self.guard = AbuseGuard(policy)
        self._lock = threading.Lock()

    def update(self, policy: AbusePolicy) -> None:
        with self._lock:
            self.guard.update(policy)
            self._log()

    def admit(self, host: str, backlog: int = 0) -> str | None:
        """None to process a message from ``host``, else why it is dropped."""
        with self._lock:
            verdict = self.guard.admit(host, time.monotonic(), backlog)
            if verdict is not None:
                self._log()
        return verdict

    def banned(self, host: str) -> bool:
        if not self.guard.any_bans:  # no lock: a stale answer only delays the check by one message
            return False
        with self._lock:
            result = self.guard.banned(host, time.monotonic())
            self._log()
        return result

    def auth_failed(self, host: str) -> None:
        with self._lock:
            self.guard.auth_failed(host, time.monotonic())
            self._log()

    def auth_succeeded(self, host: str) -> None:
        with self._lock:
            self.guard.auth_succeeded(host, time.monotonic())

    def open_connection(self, host: str) -> str | None:
        with self._lock:
            verdict = self.guard.open_connection(host, time.monotonic())
            self._log()
        return verdict

    def close_connection(self, host: str) -> None:
        with self._lock:
            self.guard.close_connection(host)

    def bans(self) -> list[dict[str, Any]]:
        """Current bans as JSON objects (for ``bans.list``)."""
        with self._lock:
            now, wall = time.monotonic(), time.time()
            items = [b.to_dict(now, wall) for b in self.guard.bans(now)]
            self._log()
        return items

    def lift(self, host: str) -> bool:
        with self._lock:
            lifted = self.guard.lift(host)
            self._log()
        return lifted

    def ban(self, host: str, duration: float, reason: str) -> Ban | None:
        with self._lock:
            ban = self.guard.ban(host, time.monotonic(), duration, reason)
            self._log()
        return ban

    def _log(self) -> None:
        for event in self.guard.events():
            if isinstance(event, Banned):
                log.warning("banned %s for %g s: %s", event.address, event.duration, event.reason)
            elif isinstance(event, BanEnded):
                log.info("ban of %s %s (%d messages or connections dropped meanwhile)",
                            event.address, event.how, event.dropped)
            elif isinstance(event, RateLimited):
                log.warning("%s is over %g requests/s: dropped %d message(s)", event.address,
                            self.guard.policy.requests_per_second, event.dropped)
            elif isinstance(event, Refused):
                log.warning("refused %d connection(s) from %s: %s", event.count, event.address, event.reason)
            elif isinstance(event, Overloaded):
                log.warning("engine backlog %d: dropped %d message(s) from unknown sources", event.backlog,
                            event.dropped)
