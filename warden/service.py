"""The PBX process: builds every component from one Config and runs them.

``Service`` owns start-up order, reload and shutdown; it holds no protocol
logic. Transports feed the one engine thread; every TLS listener gets its
contexts from one ``TLSManager`` so SIPS and the API follow the same policy.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import replace
from types import FrameType
from typing import Any

from . import __version__
from . import config as config_module
from .config import Config
from .api.supervisor import APISupervisor
from .control import ControlServer
from .control.location import control_path
from .core.registrar import RegistrarPolicy
from .engine import Engine, tune_gc
from .media.anchor import MediaPlane
from .media.conference import ConferenceBridge
from .errors import WardenError
from .sdnotify import notify
from .sip.message import ParserLimits
from .store import Store
from .tls import TLSManager
from .transport import Listener, StreamServer
from .transport.sip_stream import SIPStreamHandler
from .transport.udp import UDPServer

__all__ = ["Service"]

log = logging.getLogger("warden.service")


class Service:
    """Everything one ``warden-pbx run`` serves."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.tls: TLSManager | None = None
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.udp: UDPServer | None = None
        self.tcp: StreamServer | None = None
        self.sips: StreamServer | None = None
        self.control: ControlServer | None = None
        self.media: MediaPlane | None = None
        self.api: APISupervisor | None = None
        self.conference: ConferenceBridge | None = None
        self.started_at = time.time()
        self._stopping = threading.Event()

    def start(self) -> None:
        """Bind every listener or raise (OSError / WardenError) with a clear message."""
        cfg = self.config
        sip = cfg.sip
        if cfg.security.enable_tls and sip.tls_port:
            self.tls = TLSManager.from_config(cfg.security)
            log.info("%s", self.tls.describe())
            self.tls.log_expiry()
        self.store = Store(cfg.store.path)
        limits = ParserLimits(max_message_size=sip.max_message_size)
        self.media = MediaPlane(cfg.media.rtp_port_min, cfg.media.rtp_port_max)
        self.media.start()
        self.conference = ConferenceBridge(self.media.pool, cfg.media.conference_rooms)
        self.conference.start()
        self.engine = engine = Engine(
            self.store, realm=sip.realm, limits=limits, advertised_address=sip.advertised_address,
            digest_algorithms=sip.digest_algorithms,
            registrar_policy=RegistrarPolicy(require_tls=cfg.security.require_tls),
            media=self.media, conference=self.conference, media_timeout=cfg.media.media_timeout,
        )
        engine.start()
        listeners = lambda port: [Listener(host, port) for host in sip.listen]  # noqa: E731
        if sip.udp_port:
            self.udp = UDPServer(listeners(sip.udp_port), engine.datagram)
            self.udp.start()
            engine.udp = self.udp
            engine.listen_ports["udp"] = self.udp.addresses[0][1]
        handler = SIPStreamHandler(engine, engine.flows, limits)
        if sip.tcp_port:
            self.tcp = StreamServer(listeners(sip.tcp_port), handler, name="tcp",
                                    handshake_timeout=sip.tls_handshake_timeout)
            self.tcp.start()
            engine.listen_ports["tcp"] = self.tcp.addresses[0][1]
        if self.tls is not None:
            self.sips = StreamServer(listeners(sip.tls_port), handler, context_factory=self._tls_context,
                                     handshake_timeout=sip.tls_handshake_timeout, name="sips")
            self.sips.start()
            engine.listen_ports["tls"] = self.sips.addresses[0][1]
        self.control = ControlServer(control_path(cfg))
        self._register_control_ops(self.control)
        self.control.start()
        if cfg.api.enabled:
            # the API is a child process: its crash never touches calls, and it
            # reaches the PBX only through the control socket, so either side restarts alone
            self.api = APISupervisor(cfg.source, cfg)
            self.api.start()
        tune_gc()

    def _tls_context(self) -> Any:
        """The current server context: a reload may have replaced the manager."""
        assert self.tls is not None
        return self.tls.server_context()

    # -- control channel ----------------------------------------------------------------

    def _register_control_ops(self, server: ControlServer) -> None:
        engine = self.engine
        assert engine is not None
        server.register("status", lambda args: self.status())
        server.register("registrations.list", lambda args: engine.submit(lambda: self.registrations(args.get("aor"))))
        server.register("calls.list", lambda args: engine.submit(engine.b2bua.snapshot))
        server.register("tls.stats", lambda args: self.tls_stats())
        server.register("sip.stats", lambda args: engine.submit(engine.counters.snapshot))
        server.register("reload", lambda args: self.reload())

    def status(self) -> dict[str, Any]:
        listeners = []
        for name, srv in (("udp", self.udp), ("tcp", self.tcp), ("tls", self.sips)):
            if srv is not None:
                listeners += [{"transport": name, "address": host, "port": port} for host, port in srv.addresses]
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started_at, 1),
            "listeners": listeners,
            "tls": self.tls.report() if self.tls is not None else None,
            "media": {
                "implementation": self.media.implementation if self.media is not None else None,
                "rtp_ports_in_use": self.media.pool.in_use * 2 if self.media is not None else 0,
                "conference_rooms": self.conference.snapshot() if self.conference is not None else {},
            },
        }

    def registrations(self, aor: str | None = None) -> list[dict[str, Any]]:
        assert self.store is not None and self.engine is not None
        now = time.time()
        out = []
        for b in self.store.bindings(aor, now=now):
            d = b.to_dict()
            d["expires_in"] = max(0, int(b.expires_at - now))
            d["flow_alive"] = b.transport == "udp" or self.engine.flows.get(b.flow_token) is not None
            out.append(d)
        return out

    def tls_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, srv in (("sips", self.sips), ("tcp", self.tcp)):
            if srv is not None:
                out[name] = {**srv.stats.snapshot(), "open_connections": srv.open_connections}
        return out

    def reload(self) -> dict[str, Any]:
        """Re-read the config file and the certificates (SIGHUP, ``systemctl reload``).

        Everything is checked before anything changes: a bad config or a bad
        certificate is logged and refused, and the running settings stay. What
        can change live does (TLS policy and certificates for new connections,
        digest algorithms, require_tls, media timeout, conference rooms, log
        level); listener addresses and ports, the store and the RTP range need a
        restart, which the log says.
        """
        notify("RELOADING=1")
        try:
            return self._reload()
        finally:
            notify("READY=1")

    def _reload(self) -> dict[str, Any]:
        old = self.config
        try:
            new = config_module.load(old.source)
            tls = TLSManager.from_config(new.security) if new.security.enable_tls and new.sip.tls_port else None
        except WardenError as exc:
            log.error("reload refused, keeping the running configuration: %s", str(exc).replace("\n", "; "))
            return {"reloaded": False, "error": str(exc)}
        if tls is not None and self.tls is not None:
            self.tls = tls  # listeners ask for the context per connection: new ones get it
            log.info("%s", tls.describe())
            tls.log_expiry()
        restart = [key for key, a, b in (
            ("sip listeners", (old.sip.listen, old.sip.udp_port, old.sip.tcp_port, old.sip.tls_port),
             (new.sip.listen, new.sip.udp_port, new.sip.tcp_port, new.sip.tls_port)),
            ("sip.realm", old.sip.realm, new.sip.realm),
            ("api", (old.api.enabled, old.api.bind, old.api.port), (new.api.enabled, new.api.bind, new.api.port)),
            ("store.path", old.store.path, new.store.path),
            ("media RTP range", (old.media.rtp_port_min, old.media.rtp_port_max),
             (new.media.rtp_port_min, new.media.rtp_port_max)),
        ) if a != b]
        if restart:
            log.warning("reload: %s changed; that takes a restart", ", ".join(restart))
        engine = self.engine
        if engine is not None:
            def apply() -> None:
                engine.auth.algorithms = new.sip.digest_algorithms
                engine.registrar.policy = replace(engine.registrar.policy, require_tls=new.security.require_tls)
                engine.b2bua.media_timeout = new.media.media_timeout
            engine.submit(apply)
        if self.conference is not None:
            self.conference.room_numbers = set(new.media.conference_rooms)
        logging.getLogger().setLevel(new.logging.level.upper())
        # what only a restart applies stays as it runs, so the next reload compares against it
        self.config = replace(
            new,
            sip=replace(new.sip, listen=old.sip.listen, udp_port=old.sip.udp_port, tcp_port=old.sip.tcp_port,
                        tls_port=old.sip.tls_port, realm=old.sip.realm),
            api=old.api, store=old.store,
            media=replace(new.media, rtp_port_min=old.media.rtp_port_min, rtp_port_max=old.media.rtp_port_max),
        )
        if self.api is not None:
            self.api.reload()  # the files checked out: gunicorn's new workers use them too
        info = self.tls.certificate if self.tls is not None else None
        log.info("configuration reloaded from %s", new.source)
        return {"reloaded": True, "restart_needed": restart,
                "certificate": info.subject if info else None,
                "expires": info.not_after.isoformat() if info else None}

    def stop(self) -> None:
        """Close listeners and connections, then the engine and the store."""
        for name in ("api", "control", "sips", "tcp", "udp"):
            server = getattr(self, name)
            if server is not None:
                try:
                    server.stop()
                except Exception:
                    log.exception("stopping %s failed", name)
                setattr(self, name, None)
        if self.engine is not None:
            self.engine.stop()
            self.engine = None
        for name in ("conference", "media"):
            part = getattr(self, name)
            if part is not None:
                part.stop()
                setattr(self, name, None)
        if self.store is not None:
            self.store.close()
            self.store = None
        log.info("stopped")

    def _wait_for_api(self, timeout: float = 20.0) -> None:
        """Readiness means every listener is up: wait (bounded) until the API accepts."""
        if self.api is None:
            return
        host, port = self.config.api.bind, self.config.api.port
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        log.warning("admin API not accepting on %s:%d after %.0f s; ready without it", host, port, timeout)

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
        try:
            self.start()
            self._wait_for_api()
            log.info("Warden PBX ready")
            notify("READY=1", f"STATUS=serving {len(self.status()['listeners'])} SIP listeners")
            while not self._stopping.wait(1.0):
                pass
        finally:
            notify("STOPPING=1")
            self.stop()
