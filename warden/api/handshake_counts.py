"""The API listener's TLS handshake counts, pushed from each gunicorn worker to the PBX.

The API's handshakes happen in gunicorn worker processes, which come and go
(``max_requests``, a crash, ``kill -HUP``), so their counters cannot live
there. Each worker keeps only *increments not yet delivered*, and a
background thread sends them to the PBX (control op ``tls.record``) as soon
as there are any; the PBX adds them to the ``api`` listener's totals, which
``/metrics`` and ``GET /api/v1/tls/stats`` report. A worker that restarts
loses at most what it counted in the last instant (``worker_exit`` flushes
too); a PBX that is down keeps them waiting here (bounded) until it is back.

:func:`record_success` and friends are called from the TLS socket
(:class:`warden.api._sockets.GuardedSSLSocket`); they only touch a counter
under a lock, never the network.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from pathlib import Path
from typing import Any

from warden.control import ControlClient, ControlError, ControlUnavailable

__all__ = ["HandshakeReporter", "flush", "install", "record_deprecated", "record_failure", "record_success"]

log = logging.getLogger("warden.api.handshakes")

#: Distinct label sets held per counter while the PBX is unreachable; more go under ``other``.
MAX_PENDING_KEYS = 200
#: Seconds between delivery attempts while the PBX does not answer.
RETRY_INTERVAL = 2.0


class HandshakeReporter:
    """Increments of one listener's counters, delivered by a daemon thread."""

    def __init__(self, control_path: str | Path, listener: str = "api", *, timeout: float = 2.0) -> None:
        self.listener = listener
        self.client = ControlClient(control_path, timeout=timeout, max_idle=1)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._ok: collections.Counter[tuple[str, str]] = collections.Counter()
        self._failed: collections.Counter[str] = collections.Counter()
        self._deprecated: collections.Counter[str] = collections.Counter()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="handshake-reporter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    @staticmethod
    def _add(counter: collections.Counter[Any], key: Any, other: Any, n: int = 1) -> None:
        if key not in counter and len(counter) >= MAX_PENDING_KEYS:
            key = other
        counter[key] += n

    def success(self, version: str, cipher: str) -> None:
        with self._lock:
            self._add(self._ok, (version, cipher), ("other", "other"))
        self._wake.set()

    def failure(self, reason: str) -> None:
        with self._lock:
            self._add(self._failed, reason, "other")
        self._wake.set()

    def deprecated(self, version: str) -> None:
        with self._lock:
            self._add(self._deprecated, version, "other")
        self._wake.set()

    def _take(self) -> dict[str, Any] | None:
        with self._lock:
            if not (self._ok or self._failed or self._deprecated):
                return None
            t = self.listener
            delta = {
                "listener": t,
                "handshakes": [{"transport": "tls", "version": v, "cipher": c, "count": n}
                               for (v, c), n in self._ok.items()],
                "failures": [{"transport": "tls", "reason": r, "count": n} for r, n in self._failed.items()],
                "deprecated": [{"transport": "tls", "version": v, "count": n} for v, n in self._deprecated.items()],
            }
            self._ok, self._failed, self._deprecated = (collections.Counter(), collections.Counter(),
                                                         collections.Counter())
            return delta

    def _give_back(self, delta: dict[str, Any]) -> None:
        with self._lock:
            for h in delta["handshakes"]:
                self._add(self._ok, (h["version"], h["cipher"]), ("other", "other"), h["count"])
            for f in delta["failures"]:
                self._add(self._failed, f["reason"], "other", f["count"])
            for d in delta["deprecated"]:
                self._add(self._deprecated, d["version"], "other", d["count"])

    def flush(self) -> bool:
        """Deliver what is pending now; False (and kept for later) when the PBX did not take it."""
        delta = self._take()
        if delta is None:
            return True
        try:
            self.client.call("tls.record", **delta)
        except ControlError as exc:
            # ControlUnavailable before sending: not counted by the PBX. A lost answer after
            # sending could count twice; a timeout is rare enough that resending is the better error.
            log.debug("handshake counts not delivered (kept for later): %s", exc)
            if isinstance(exc, ControlUnavailable):
                self._give_back(delta)
            return False
        return True

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stopped.is_set():
                break
            if not self.flush() and not self._stopped.wait(RETRY_INTERVAL):
                self._wake.set()  # the PBX is restarting or busy: try again after the pause


_reporter: HandshakeReporter | None = None
_pid = 0


def install(control_path: str | Path, listener: str = "api") -> HandshakeReporter:
    """Start this process's reporter (call after the fork, e.g. in ``post_worker_init``)."""
    global _reporter, _pid
    _reporter = HandshakeReporter(control_path, listener)
    _pid = os.getpid()
    _reporter.start()
    return _reporter


def _current() -> HandshakeReporter | None:
    return _reporter if _reporter is not None and _pid == os.getpid() else None


def record_success(version: str, cipher: str) -> None:
    if (r := _current()) is not None:
        r.success(version, cipher)


def record_failure(reason: str) -> None:
    if (r := _current()) is not None:
        r.failure(reason)


def record_deprecated(version: str) -> None:
    if (r := _current()) is not None:
        r.deprecated(version)


def flush() -> bool:
    """Deliver now (``worker_exit``); True when nothing is left."""
    r = _current()
    if r is None:
        return True
    r.stop()
    return r.flush()
