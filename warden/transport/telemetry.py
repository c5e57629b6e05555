"""Counters of TLS handshakes, and failure reasons an admin understands.

The reasons come from :func:`warden.handshakes.classify_handshake_error`.
One :class:`HandshakeStats` per listener; the admin API's gunicorn workers
count their own handshakes and push the increments to the PBX, which
:meth:`HandshakeStats.merge` adds to the API listener's totals (so a worker
restart loses nothing already pushed).
"""

from __future__ import annotations

import collections
import threading

from ..handshakes import classify_handshake_error

__all__ = ["MAX_KEYS", "HandshakeStats", "classify_handshake_error"]

#: Distinct label sets kept per counter; more are counted under ``other``
#: (the labels come from peers and from pushed increments: never unbounded).
MAX_KEYS = 500


def _bump(counter: "collections.Counter[tuple[str, ...]]", key: tuple[str, ...], n: int,
          fallback: tuple[str, ...]) -> None:
    if key not in counter and len(counter) >= MAX_KEYS:
        key = fallback
    counter[key] += n


class HandshakeStats:
    """Thread-safe handshake counters by (transport, version, cipher) and reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ok: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.failures: collections.Counter[tuple[str, str]] = collections.Counter()
        self.deprecated: collections.Counter[tuple[str, str]] = collections.Counter()
        """Handshakes attempted with SSLv3/TLS 1.0/TLS 1.1 (by the version offered), refused or not."""

    def succeeded(self, transport: str, version: str, cipher: str) -> None:
        with self._lock:
            self.ok[(transport, version, cipher)] += 1

    def failed(self, transport: str, reason: str) -> None:
        with self._lock:
            self.failures[(transport, reason)] += 1

    def deprecated_attempt(self, transport: str, version: str) -> None:
        with self._lock:
            self.deprecated[(transport, version)] += 1

    def merge(self, delta: dict[str, list[dict[str, object]]]) -> None:
        """Add increments in :meth:`snapshot`'s shape (already validated: str labels, int counts >= 0)."""
        with self._lock:
            for h in delta.get("handshakes", ()):
                key = (str(h["transport"]), str(h["version"]), str(h["cipher"]))
                _bump(self.ok, key, int(h["count"]), (key[0], "other", "other"))  # type: ignore[call-overload]
            for f in delta.get("failures", ()):
                key2 = (str(f["transport"]), str(f["reason"]))
                _bump(self.failures, key2, int(f["count"]), (key2[0], "other"))  # type: ignore[call-overload]
            for d in delta.get("deprecated", ()):
                key3 = (str(d["transport"]), str(d["version"]))
                _bump(self.deprecated, key3, int(d["count"]), (key3[0], "other"))  # type: ignore[call-overload]

    def snapshot(self) -> dict[str, list[dict[str, object]]]:
        """Plain data for the control channel and the API."""
        with self._lock:
            return {
                "handshakes": [
                    {"transport": t, "version": v, "cipher": c, "count": n} for (t, v, c), n in sorted(self.ok.items())
                ],
                "failures": [{"transport": t, "reason": r, "count": n} for (t, r), n in sorted(self.failures.items())],
                "deprecated": [
                    {"transport": t, "version": v, "count": n} for (t, v), n in sorted(self.deprecated.items())
                ],
            }
