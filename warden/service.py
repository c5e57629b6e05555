"""The PBX process: builds every component from one Config and runs them.

``Service`` owns start-up order, reload and shutdown; it holds no protocol
logic. Listeners get their TLS contexts from one ``TLSManager`` so SIPS and
every other TLS endpoint follow the same policy.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from .config import Config
from .errors import WardenError
from .tls import TLSManager
from .transport import Connection, Listener, StreamServer

__all__ = ["Service"]

log = logging.getLogger("warden.service")


class _SIPStreamSink:
    """Stream handler used until the SIP engine is attached: keeps flows open
    and logs them, so TLS behaviour can be checked on its own."""

    def on_open(self, conn: Connection) -> None:
        log.info("%s flow %d from %s:%d (%s %s)", conn.transport, conn.id, *conn.peer, conn.tls_version, conn.cipher)

    def on_data(self, conn: Connection, data: bytes) -> None:
        log.debug("flow %d: %d bytes", conn.id, len(data))

    def on_close(self, conn: Connection, reason: str) -> None:
        log.info("flow %d closed: %s", conn.id, reason)


class Service:
    """Everything one ``warden-pbx run`` serves."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.tls: TLSManager | None = None
        self.sips: StreamServer | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Bind every listener or raise (OSError / WardenError) with a clear message."""
        cfg = self.config
        if cfg.security.enable_tls and cfg.sip.tls_port:
            self.tls = TLSManager.from_config(cfg.security)
            log.info("%s", self.tls.describe())
            self.sips = StreamServer(
                [Listener(host, cfg.sip.tls_port) for host in cfg.sip.listen],
                _SIPStreamSink(),
                context_factory=self.tls.server_context,
                handshake_timeout=cfg.sip.tls_handshake_timeout,
                name="sips",
            )
            self.sips.start()

    def reload(self) -> None:
        """Re-read certificates; a bad new file is logged and the old kept."""
        if self.tls is None:
            return
        try:
            self.tls.reload()
        except WardenError as exc:
            log.error("reload rejected, keeping the current certificate: %s", exc)

    def stop(self) -> None:
        """Close listeners and connections."""
        if self.sips is not None:
            self.sips.stop()
            self.sips = None
        log.info("stopped")

    def run_forever(self) -> None:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads."""

        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            self._stopping.set()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            log.info("received SIGHUP, reloading")
            threading.Thread(target=self.reload, name="reload", daemon=True).start()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        self.start()
        log.info("Warden PBX ready")
        try:
            while not self._stopping.wait(1.0):
                pass
        finally:
            self.stop()
