"""The PBX process: builds every component from one Config and runs them.

``Service`` owns start-up order, reload and shutdown; it holds no protocol
logic. Transports feed the one engine thread; every SIPS listener (the main
``sip.tls_port`` one, named ``sips``, and each ``sip.tls_listeners`` item) gets
its contexts from its own ``TLSManager`` (its profile, certificates and client
verification), asked per connection so a reload reaches new connections only.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import threading
import time
import ssl
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from . import __version__
from . import config as config_module
from .config import AbuseConfig, Config
from .api.supervisor import APISupervisor
from .control import ControlError, ControlServer
from .control.location import control_path
from .core.abuse import AbusePolicy, normalize_address
from .core.registrar import RegistrarPolicy
from .engine import Engine, tune_gc
from .media.anchor import MediaPlane
from .media.conference import ConferenceBridge
from .errors import WardenError
from .sdnotify import notify
from .sip import _select as sip_select
from .sip.message import ParserLimits
from .store import Store
from .tls import TLSManager, expiry_level
from .transport import HandshakeStats, Listener, StreamServer
from .transport.telemetry import describe_failure
from .transport.shield import Shield
from .transport.sip_stream import SIPStreamHandler
from .transport.udp import UDPServer

__all__ = ["Service"]

log = logging.getLogger("warden.service")


@dataclass(eq=False)
class SIPSListener:
    """One SIPS port: its name (telemetry label), TLS manager and server."""

    name: str
    port: int
    tls: TLSManager
    server: StreamServer | None = None

    def context(self) -> ssl.SSLContext:
        """The current context: a reload may have replaced the manager."""
        return self.tls.server_context()


def _tls_managers(cfg: Config) -> dict[str, tuple[int, TLSManager]]:
    """Every SIPS listener's port and manager by name; raises WardenError on the first bad one."""
    out: dict[str, tuple[int, TLSManager]] = {}
    if not cfg.security.enable_tls:
        return out
    if cfg.sip.tls_port:
        out["sips"] = (cfg.sip.tls_port, TLSManager.from_config(cfg.security))
    for item in cfg.sip.tls_listeners:
        out[item.label] = (item.port, TLSManager.for_listener(cfg, item))
    return out


def abuse_policy(cfg: AbuseConfig) -> AbusePolicy:
    """The sans-I/O guard's policy from the ``abuse`` section."""
    return AbusePolicy(
        auth_failures=cfg.auth_failures, auth_window=cfg.auth_window, ban_time=cfg.ban_time,
        requests_per_second=cfg.requests_per_second, request_burst=cfg.request_burst,
        max_connections_per_source=cfg.max_connections_per_source, max_connections=cfg.max_connections,
        trusted=cfg.trusted,
    )


def _stop_logged(server: Any, name: str) -> None:
    """Stop ``server`` (if any); a failure is logged so shutdown goes on with the rest."""
    if server is None:
        return
    try:
        server.stop()
    except Exception:
        log.exception("stopping %s failed", name)


class Service:
    """Everything one ``warden-pbx run`` serves."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sips_listeners: dict[str, SIPSListener] = {}
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.udp: UDPServer | None = None
        self.tcp: StreamServer | None = None
        self.sips: StreamServer | None = None
        self.control: ControlServer | None = None
        self.media: MediaPlane | None = None
        self.api: APISupervisor | None = None
        self.conference: ConferenceBridge | None = None
        self.shield = Shield(abuse_policy(config.abuse))
        self.started_at = time.time()
        self._stopping = threading.Event()
        self._api_reports: dict[int, dict[str, Any]] = {}
        self._api_lock = threading.Lock()

    @property
    def tls(self) -> TLSManager | None:
        """The main SIPS listener's manager (None without one)."""
        main = self.sips_listeners.get("sips")
        return main.tls if main is not None else None

    def start(self) -> None:
        """Bind every listener or raise (OSError / WardenError) with a clear message."""
        cfg = self.config
        sip = cfg.sip
        _raise_open_files()
        for name, (port, manager) in _tls_managers(cfg).items():
            self.sips_listeners[name] = SIPSListener(name, port, manager)
            log.info("%s", manager.describe())
            manager.log_expiry()
        self.store = Store(cfg.store.path)
        limits = ParserLimits(max_message_size=sip.max_message_size, max_headers=cfg.abuse.max_headers)
        self.media = MediaPlane(cfg.media.rtp_port_min, cfg.media.rtp_port_max)
        self.media.start()
        log.info(
            "SIP wire modules: %s; media: %s (%s=1 selects pure Python)",
            sip_select.implementation(), self.media.implementation, sip_select.ENV_VAR,
        )
        self.conference = ConferenceBridge(self.media.pool, cfg.media.conference_rooms)
        self.conference.start()
        self.engine = engine = Engine(
            self.store, realm=sip.realm, limits=limits, advertised_address=sip.advertised_address,
            digest_algorithms=sip.digest_algorithms,
            registrar_policy=RegistrarPolicy(
                require_tls=cfg.security.require_tls,
                client_cert_binds_extension=cfg.security.tls_client_cert_binds_extension,
            ),
            media=self.media, conference=self.conference, media_timeout=cfg.media.media_timeout,
        )
        engine.shield = self.shield
        listeners = lambda port: [Listener(host, port) for host in sip.listen]  # noqa: E731
        if sip.udp_port:
            # bound before the engine starts: the engine thread reads these sockets itself
            self.udp = UDPServer(listeners(sip.udp_port), shield=self.shield)
            self.udp.start()
            engine.udp = self.udp
            engine.listen_ports["udp"] = self.udp.addresses[0][1]
        engine.start()
        handler = SIPStreamHandler(engine, engine.flows, limits)
        if sip.tcp_port:
            self.tcp = StreamServer(listeners(sip.tcp_port), handler, name="tcp",
                                    handshake_timeout=sip.tls_handshake_timeout,
                                    shield=self.shield, idle_timeout=cfg.abuse.idle_timeout)
            self.tcp.start()
            engine.listen_ports["tcp"] = self.tcp.addresses[0][1]
        for lst in self.sips_listeners.values():
            lst.server = StreamServer(listeners(lst.port), handler, context_factory=lst.context,
                                      handshake_timeout=sip.tls_handshake_timeout, name=lst.name,
                                      shield=self.shield, idle_timeout=cfg.abuse.idle_timeout)
            lst.server.start()
            if lst.name == "sips":
                self.sips = lst.server
                engine.listen_ports["tls"] = self.sips.addresses[0][1]
            else:
                engine.listen_ports.setdefault("tls", lst.server.addresses[0][1])
        self.control = ControlServer(control_path(cfg))
        self._register_control_ops(self.control)
        self.control.start()
        if cfg.api.enabled:
            # the API is a child process: its crash never touches calls, and it
            # reaches the PBX only through the control socket, so either side restarts alone
            self.api = APISupervisor(cfg.source, cfg)
            self.api.start()
        tune_gc()

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
        server.register("tls.api_report", self._api_handshakes_report)
        server.register("metrics", lambda args: self.metrics())
        server.register("bans.list", lambda args: self.shield.bans())
        server.register("bans.lift", self._lift_ban)

    def _lift_ban(self, args: dict[str, Any]) -> dict[str, Any]:
        raw = args.get("address")
        if not isinstance(raw, str):
            raise ControlError("'address' (a string) is required", 400)
        try:
            address = normalize_address(raw)
        except ValueError:
            raise ControlError(f"not an IP address: {raw[:64]!r}", 400) from None
        if not self.shield.lift(address):
            raise ControlError(f"{address} is not banned", 404)
        log.warning("ban of %s lifted by an admin", address)
        return {"address": address, "lifted": True}

    def status(self) -> dict[str, Any]:
        listeners = []
        servers = [("udp", "udp", self.udp), ("tcp", "tcp", self.tcp)]
        servers += [("tls", lst.name, lst.server) for lst in self.sips_listeners.values()]
        for transport, name, srv in servers:
            if srv is not None:
                listeners += [{"transport": transport, "name": name, "address": host, "port": port}
                              for host, port in srv.addresses]
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started_at, 1),
            "listeners": listeners,
            "tls": self.tls.report() if self.tls is not None else None,
            "tls_listeners": {name: lst.tls.report() for name, lst in self.sips_listeners.items()},
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
        servers = [(lst.name, lst.server) for lst in self.sips_listeners.values()] + [("tcp", self.tcp)]
        for name, srv in servers:
            if srv is not None:
                out[name] = {**srv.stats.snapshot(), "open_connections": srv.open_connections}
                if name in self.sips_listeners:
                    out[name]["profile"] = self.sips_listeners[name].tls.policy.name
        api = self._api_stats()
        if api is not None:
            out["api"] = {**api, "profile": "fips" if self.config.security.fips_mode else self.config.api.ssl.profile}
        return out

    def _api_handshakes_report(self, args: dict[str, Any]) -> dict[str, Any]:
        """An API worker's cumulative handshake counts (``warden.api._handshakes``)."""
        pid = args.get("pid")
        ok, failed, deprecated = args.get("ok"), args.get("failed"), args.get("deprecated", [])
        if not isinstance(pid, int) or not isinstance(ok, list) or not isinstance(failed, list) \
                or not isinstance(deprecated, list):
            raise ControlError("tls.api_report needs pid, ok and failed (and deprecated, a list)")
        with self._api_lock:
            self._api_reports[pid] = {"ok": ok, "failed": failed, "deprecated": deprecated}
            if len(self._api_reports) > 256:  # workers come and go with reloads: keep the counts, bound the table
                oldest = next(iter(self._api_reports))
                merged = self._api_reports.pop(oldest)
                self._api_reports.setdefault(0, {"ok": [], "failed": [], "deprecated": []})
                for key in ("ok", "failed", "deprecated"):
                    self._api_reports[0][key] += merged[key]
        return {"stored": True}

    def _api_stats(self) -> dict[str, Any] | None:
        with self._api_lock:
            reports = list(self._api_reports.values())
        if not reports:
            return None
        stats = HandshakeStats(listener="api")
        for report in reports:
            for item in report["ok"]:
                if isinstance(item, list) and len(item) == 3 and isinstance(item[2], int):
                    stats.ok[("tls", str(item[0]), str(item[1]))] += item[2]
            for item in report["failed"]:
                if isinstance(item, list) and len(item) == 2 and isinstance(item[1], int):
                    stats.failures[("tls", describe_failure(str(item[0])))] += item[1]
            for item in report.get("deprecated", []):
                if isinstance(item, list) and len(item) == 2 and isinstance(item[1], int):
                    stats.deprecated[("tls", str(item[0])[:16])] += item[1]
        return stats.snapshot()

    def listener_certificates(self) -> list[tuple[str, Any]]:
        """``(listener, CertificateInfo)`` of every certificate the SIPS listeners serve (RSA and ECDSA)."""
        out = []
        for lst in self.sips_listeners.values():
            for info in (lst.tls.certificate, lst.tls.ecdsa_certificate):
                if info is not None:
                    out.append((lst.name, info))
        return out

    def metrics(self) -> dict[str, Any]:
        """Control op ``metrics``: everything ``/metrics`` exposes about the PBX, in one call."""
        engine, store = self.engine, self.store
        assert engine is not None and store is not None
        now = time.time()

        def from_engine() -> dict[str, Any]:
            return {"sip": engine.counters.snapshot(), "calls": len(engine.b2bua.calls)}

        live = engine.submit(from_engine)
        certificates = []
        for listener, info in self.listener_certificates():
            level, _line = expiry_level(info)
            certificates.append({"listener": listener, "subject": info.subject, "key_type": info.key_type,
                                 "not_after": info.not_after.timestamp(),
                                 "expires_in_seconds": round(info.not_after.timestamp() - now, 1), "level": level})
        return {
            "uptime": round(now - self.started_at, 1),
            "tls": {name: stats for name, stats in self.tls_stats().items() if name != "tcp"},
            "certificates": certificates,
            "registrations": store.binding_counts_by_transport(now=now),
            **live,
        }

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
            managers = _tls_managers(new)
        except WardenError as exc:
            log.error("reload refused, keeping the running configuration: %s", str(exc).replace("\n", "; "))
            return {"reloaded": False, "error": str(exc)}
        # listeners ask for the context per connection: new ones get the new one, open ones keep theirs
        for name, lst in self.sips_listeners.items():
            if name in managers:
                lst.tls = managers[name][1]
                log.info("%s", lst.tls.describe())
                lst.tls.log_expiry()
        added = sorted(set(managers) - set(self.sips_listeners))
        removed = sorted(set(self.sips_listeners) - set(managers))
        moved = sorted(n for n, lst in self.sips_listeners.items() if n in managers and managers[n][0] != lst.port)
        restart = [key for key, a, b in (
            ("sip listeners", (old.sip.listen, old.sip.udp_port, old.sip.tcp_port, old.sip.tls_port),
             (new.sip.listen, new.sip.udp_port, new.sip.tcp_port, new.sip.tls_port)),
            (f"sip.tls_listeners (added {', '.join(added)})", (), tuple(added)),
            (f"sip.tls_listeners (removed {', '.join(removed)})", (), tuple(removed)),
            (f"sip.tls_listeners (port of {', '.join(moved)})", (), tuple(moved)),
            ("sip.realm", old.sip.realm, new.sip.realm),
            ("api", (old.api.enabled, old.api.bind, old.api.port), (new.api.enabled, new.api.bind, new.api.port)),
            ("store.path", old.store.path, new.store.path),
            ("abuse.max_headers", old.abuse.max_headers, new.abuse.max_headers),
            ("media RTP range", (old.media.rtp_port_min, old.media.rtp_port_max),
             (new.media.rtp_port_min, new.media.rtp_port_max)),
        ) if a != b]
        if restart:
            log.warning("reload: %s changed; that takes a restart", ", ".join(restart))
        engine = self.engine
        if engine is not None:
            def apply() -> None:
                engine.auth.algorithms = new.sip.digest_algorithms
                engine.registrar.policy = replace(
                    engine.registrar.policy, require_tls=new.security.require_tls,
                    client_cert_binds_extension=new.security.tls_client_cert_binds_extension,
                )
                engine.b2bua.media_timeout = new.media.media_timeout
            engine.submit(apply)
        if self.conference is not None:
            self.conference.room_numbers = set(new.media.conference_rooms)
        self.shield.update(abuse_policy(new.abuse))
        for server in (self.tcp, self.sips):
            if server is not None:
                server.idle_timeout = new.abuse.idle_timeout
        logging.getLogger().setLevel(new.logging.level.upper())
        # what only a restart applies stays as it runs, so the next reload compares against it
        self.config = replace(
            new,
            sip=replace(new.sip, listen=old.sip.listen, udp_port=old.sip.udp_port, tcp_port=old.sip.tcp_port,
                        tls_port=old.sip.tls_port, realm=old.sip.realm, tls_listeners=old.sip.tls_listeners),
            api=old.api, store=old.store, abuse=replace(new.abuse, max_headers=old.abuse.max_headers),
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
        for name in ("api", "control"):
            _stop_logged(getattr(self, name), name)
            setattr(self, name, None)
        for lst in self.sips_listeners.values():
            _stop_logged(lst.server, lst.name)
            lst.server = None
        self.sips = None
        _stop_logged(self.tcp, "tcp")
        self.tcp = None
        if self.engine is not None:  # before the UDP sockets close: the engine thread reads them
            self.engine.stop()
            self.engine = None
        _stop_logged(self.udp, "udp")
        self.udp = None
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


def _raise_open_files() -> None:
    """Lift the soft open-file limit to the hard one.

    Each TLS phone holds a descriptor and each call four (RTP and RTCP on
    both legs), so the usual soft limit of 1,024 caps the PBX near 250 calls
    up; the hard limit (systemd's LimitNOFILE) is the administrator's choice.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    log.info("open-file limit %d", soft)
