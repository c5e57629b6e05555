"""The API listener's TLS handshake counters, reported to the PBX.

gunicorn's workers are processes of their own, so each counts its handshakes
here and a reporter thread sends the (cumulative) counts to the PBX over the
control channel every few seconds (``tls.api_report``); the PBX sums them per
worker into the ``api`` listener of ``tls.stats``, beside the SIPS listeners.
Reasons travel as OpenSSL's codes (``UNSUPPORTED_PROTOCOL``...) and are put
into words on the PBX side, with the SIPS listeners' wording.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from pathlib import Path

from warden.control import ControlClient, ControlError

__all__ = ["HANDSHAKES", "ApiHandshakes", "report_now", "start_reporter"]

log = logging.getLogger("warden.api")

REPORT_INTERVAL = 2.0


class ApiHandshakes:
    """Thread-safe counts of this worker's handshakes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ok: collections.Counter[tuple[str, str]] = collections.Counter()
        self.failed_: collections.Counter[str] = collections.Counter()
        self.deprecated_: collections.Counter[str] = collections.Counter()
        self.changes = 0

    def succeeded(self, version: str, cipher: str) -> None:
        with self._lock:
            self.ok[(version, cipher)] += 1
            self.changes += 1

    def failed(self, code: str) -> None:
        """``code``: OpenSSL's reason, or ``timeout`` / ``eof`` / ``TLS12_REFUSED``."""
        with self._lock:
            self.failed_[code] += 1
            self.changes += 1

    def deprecated(self, version: str) -> None:
        """An SSLv3/TLS 1.0/TLS 1.1 attempt, by the version the ClientHello offered."""
        with self._lock:
            self.deprecated_[version] += 1
            self.changes += 1

    def report(self) -> tuple[int, dict[str, object]]:
        with self._lock:
            return self.changes, {
                "pid": os.getpid(),
                "ok": [[v, c, n] for (v, c), n in self.ok.items()],
                "failed": [[r, n] for r, n in self.failed_.items()],
                "deprecated": [[v, n] for v, n in self.deprecated_.items()],
            }


HANDSHAKES = ApiHandshakes()


def report_now(path: str | Path, counts: ApiHandshakes = HANDSHAKES) -> None:
    """Send the counts at once (``worker_exit``: a leaving worker's last seconds are not lost)."""
    if counts.report()[0] == 0:
        return
    try:
        ControlClient(path, timeout=1.0, max_idle=0).call("tls.api_report", **counts.report()[1])
    except ControlError as exc:
        log.debug("cannot report API handshakes to the PBX: %s", exc)


def start_reporter(path: str | Path, counts: ApiHandshakes = HANDSHAKES) -> threading.Thread:
    """Send ``counts`` to the PBX whenever they changed, every REPORT_INTERVAL seconds."""
    client = ControlClient(path, timeout=2.0, max_idle=1)

    def loop() -> None:
        sent = 0
        stop = threading.Event()
        while not stop.wait(REPORT_INTERVAL):
            changes, report = counts.report()
            if changes == sent:
                continue
            try:
                client.call("tls.api_report", **report)
                sent = changes
            except ControlError as exc:
                log.debug("cannot report API handshakes to the PBX: %s", exc)

    thread = threading.Thread(target=loop, name="api-tls-report", daemon=True)
    thread.start()
    return thread
