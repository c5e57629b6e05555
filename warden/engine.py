"""The protocol thread: reads the UDP sockets, drains posted work and drives SIP.

This thread reads the UDP sockets itself and stream I/O threads (TCP, TLS)
post their messages to it (:class:`warden.transport.engine_io.EngineIO`); it
alone parses datagrams, runs the transaction layer, the registrar and the
B2BUA, sends what they produce and fires timers. Protocol state is touched by
one thread only, so none of it needs a lock.

Strategy for bad input: a datagram that does not parse is answered with a
best-effort 400 when it carries enough headers to address one, otherwise it
is dropped; either way it is logged and the loop moves on. An exception from
any handler is logged with the message's Call-ID and never stops the loop.
"""

from __future__ import annotations

import collections
import gc
import heapq
import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .core.b2bua import ALLOW, B2BUA
from .core.registrar import Origin, Registrar, RegistrarPolicy
from .errors import SIPError, SIPParseError, WardenError
from .sip import salvage
from .sip.auth import DigestAuthenticator, HA1Pair, NonceManager
from .sip.message import ParserLimits, Request, Response, make_response, parse_message
from .sip.transaction import (
    AckReceived,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    Source,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
    generate_tag,
    new_branch,
    random_bytes,
)
from .sip.uri import SipURI, parse_uri
from .store import Binding, Store
from .transport.engine_io import EngineIO
from .transport.sip_stream import FlowTable
from .transport.stream import Connection

__all__ = ["Engine", "Counters", "tune_gc"]

log = logging.getLogger("warden.engine")

_STOP = object()
_BATCH = 64
"""Most datagrams, and most posted items, handled per loop turn (one store commit, one flush)."""
_READ_BURST = 2048
"""Most datagrams read per UDP socket per turn. Far more than a turn handles: reading
and admitting costs ~1.5 us a datagram, handling one ~100 times that, so under a flood
the engine keeps the socket drained, the shield sees the backlog grow and sheds unknown
sources, instead of the kernel's buffer overflowing and dropping datagrams blindly (a
registered phone's among them). The bound keeps a turn's reading to a few ms."""
_MAX_PENDING = 4096
"""Admitted datagrams held at most; beyond, the sockets are not read (the kernel buffers)."""


def _gather_seconds(default_us: float = 1000.0) -> float:
    """``WARDEN_GATHER_US`` in seconds; a value that is not a non-negative number is
    refused with a warning naming it, and the default is used."""
    text = os.environ.get("WARDEN_GATHER_US")
    if text is None:
        return default_us / 1e6
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        log.warning("WARDEN_GATHER_US=%r is not a number of microseconds >= 0: using %g", text, default_us)
        value = default_us
    return value / 1e6


_GATHER = _gather_seconds()
"""Seconds the loop lets input gather after a turn that handled datagrams, before it looks again
(environment ``WARDEN_GATHER_US``, microseconds; 0 turns it off, for benchmarks).

Under load every turn has a fixed cost (a wait system call and the wake-up behind it, a
store commit when anything was written, the timers, the flush): handling datagrams one
or two per turn as they trickle in pays it for each. Letting them gather for a
millisecond pays it once for several: at 700-800 calls/s the PBX's CPU per call fell by
~10 % (bench/RESULTS.md). The cost is latency: about a millisecond at light load, more
near saturation (a turn's own work adds to the gathering time), far below SIP's 500 ms
retransmission timer. After an idle spell the first datagram is handled at once, and a
turn that left work over does not wait."""


def tune_gc() -> None:
    """Set the garbage collector up for the PBX's steady state (call once, after start-up).

    Every start-up object (modules, config, TLS, store) goes to the permanent
    generation, so full collections no longer walk them; and full collections
    come twenty times less often than Python's default. A full collection
    walks every live call and every transaction kept 32 s for
    retransmissions: at 1,000 calls/s that is ~150 ms with the engine
    stopped, long enough for UDP peers to retransmit. Ended calls leave no
    cyclic garbage (``Call.release``), so waiting longer for a full collection
    costs little memory; measured with ``bench/sip/engine_cpu.py --rate 1000``
    it removed every full collection of a 48 s run.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1000)


class Counters:
    """SIP counters for the control channel (written by the engine thread only)."""

    def __init__(self) -> None:
        self.received: dict[str, int] = {}
        self.responses_sent: dict[int, int] = {}
        self.malformed = 0
        self.dropped = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests_received": dict(self.received),
            "responses_sent": {str(k): v for k, v in sorted(self.responses_sent.items())},
            "malformed": self.malformed,
            "dropped": self.dropped,
        }


class Engine:
    """One protocol thread for the whole PBX."""

    def __init__(self, store: Store, *, realm: str, limits: ParserLimits, registrar_policy: RegistrarPolicy,
                 advertised_address: str = "", digest_algorithms: tuple[str, ...] = ("MD5",),
                 media: Any = None, conference: Any = None, media_timeout: float = 30.0) -> None:
        self.store = store
        self.realm = realm
        self.limits = limits
        self.advertised_address = advertised_address
        self.io = EngineIO()
        """Posted work (stream messages, control calls) and the selector over the UDP sockets."""
        self._datagrams: collections.deque[tuple[bytes, tuple[str, int], tuple[str, int]]] = collections.deque()
        """Datagrams read and admitted, not handled yet."""
        self.flows = FlowTable()
        self.txl = TransactionLayer()
        nonces = NonceManager(secrets.token_bytes(32), random=random_bytes)
        self.auth = DigestAuthenticator(realm, nonces, self._lookup, digest_algorithms)
        self.auth.on_wrong_guess = self._wrong_guess
        self.registrar = Registrar(store, self.auth, registrar_policy)
        self.b2bua = B2BUA(self, store, self.auth, domain=realm, media=media, conference=conference,
                           media_timeout=media_timeout)
        self.counters = Counters()
        self.udp: Any = None
        """The UDPServer (set by the service before :meth:`start`): read and written by the engine thread."""
        self.listen_ports: dict[str, int] = {}
        """Our listening port per transport, for Via and Contact."""
        self.shield: Any = None
        """The abuse :class:`~warden.transport.shield.Shield` (set by the service), or None."""
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._local_cache: dict[str, str] = {}
        self._hops: dict[tuple[str, str], tuple[int, str, SipURI]] = {}
        """Per connectionless (transport, peer host): (our port, Via up to the branch, our Contact URI)."""
        self._next_sweep = 0.0
        self._handled = 0
        """Datagrams the last loop turn handled."""

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        if self.udp is not None and hasattr(self.udp, "sockets"):
            self.io.watch(self.udp)
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is posted, then stop; the UDP sockets stay open (the service closes them)."""
        self.io.post(_STOP)
        if self._thread is not None:
            self._thread.join(5)

    def submit(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``fn`` on the engine thread and return its result (for the control channel)."""
        future: Future[Any] = Future()
        self.io.post(("call", fn, future))
        return future.result(timeout)

    # -- inputs from stream threads (any thread) ---------------------------------------------------

    def stream_message(self, conn: Connection, message: Request | Response, received_at: float) -> None:
        if self.shield is not None:  # not shed under load: a flow is not spoofed, and TCP does not retransmit
            verdict = self.shield.admit(conn.peer[0])
            if verdict is not None:
                if verdict == "banned":
                    conn.close("source banned")
                return
        self.io.post(("msg", message, conn))

    def stream_invalid(self, conn: Connection, data: bytes, error: SIPParseError) -> None:
        self.io.post(("bad", data, conn, error))

    def stream_closed(self, conn: Connection, reason: str) -> None:
        self.io.post(("closed", conn, reason))

    # -- the loop -----------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._turn():
                pass
        finally:
            self.io.close()

    def _turn(self) -> bool:
        """One loop turn; False once stopped.

        Strategy: after a turn that handled datagrams and left none over, let more gather
        (_GATHER); wait (only when nothing is left over) for a readable socket, a posted
        item or the next timer; read each readable socket up to _READ_BURST datagrams,
        admitting each through the shield with the engine's backlog as its load signal;
        then handle up to _BATCH datagrams and up to _BATCH posted items, so neither a UDP
        flood nor a stream flood starves the other. A turn's work runs in one store
        transaction, committed before anything is sent, so a response never announces a
        write that could still be lost; then the output is flushed.
        """
        io, datagrams = self.io, self._datagrams
        busy = bool(datagrams) or io.queued > 0
        if not busy and self._handled and _GATHER > 0:
            time.sleep(_GATHER)
        try:
            readable = io.wait(0.0 if busy else self._next_timeout())
        except Exception:
            log.exception("engine failed waiting for input")
            time.sleep(0.01)
            readable = []
        udp = self.udp
        for sock in readable:
            room = min(_READ_BURST, _MAX_PENDING - len(datagrams))
            if room > 0:
                try:
                    udp.read(sock, room, len(datagrams) + io.queued, datagrams)
                except Exception:
                    log.exception("engine failed reading UDP")
        items = io.take(_BATCH) if io.queued else []
        stop = bool(items) and any(item is _STOP for item in items)  # even if the store fails below
        try:
            with self.store.batch():
                handle = self._datagram
                popleft = datagrams.popleft
                self._handled = count = min(_BATCH, len(datagrams))
                for _ in range(count):
                    data, peer, local = popleft()
                    try:
                        handle(data, peer, local)
                    except Exception:
                        log.exception("engine failed on a datagram from %s:%d", *peer)
                for item in items:
                    if item is _STOP:
                        continue
                    try:
                        self._dispatch(item)
                    except Exception:
                        log.exception("engine failed on %s", item[0])
                self._fire_timers()
        except Exception:
            log.exception("engine failed on timers or the store commit")
        try:
            self._flush()
        except Exception:
            log.exception("engine failed on output")
        return not stop

    def _next_timeout(self) -> float:
        now = time.monotonic()
        deadline = self._next_sweep
        t = self.txl.next_timer()
        if t is not None and t < deadline:
            deadline = t
        if self._timers and self._timers[0][0] < deadline:
            deadline = self._timers[0][0]
        return max(0.0, deadline - now)

    def _dispatch(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "msg":
            _, message, conn = item
            source = Source(conn.transport, conn.peer[0], conn.peer[1], FlowTable.token(conn))
            self._message(message, source, conn.local, conn)
        elif kind == "bad":
            _, data, conn, error = item
            self.counters.malformed += 1
            log.info("malformed SIP from %s %s:%d: %s", conn.transport, *conn.peer, error)
            reply = salvage.error_response(data, error.status, str(error))
            if reply is not None:
                conn.send(reply)
        elif kind == "closed":
            _, conn, reason = item
            token = FlowTable.token(conn)
            self.b2bua.flow_closed(token)
            log.debug("flow %s closed: %s", token, reason)
        elif kind == "call":
            _, fn, future = item
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

    def _datagram(self, data: bytes, peer: tuple[str, int], local: tuple[str, int]) -> None:
        if data.strip(b"\r\n") == b"":
            return  # RFC 5626 UDP keep-alive (CRLF) or noise
        source = Source("udp", peer[0], peer[1])
        try:
            message = parse_message(data, self.limits)
        except SIPParseError as exc:
            self.counters.malformed += 1
            log.info("malformed SIP from udp %s:%d: %s", peer[0], peer[1], exc)
            reply = salvage.error_response(data, exc.status, str(exc))
            if reply is not None and self.udp is not None:
                self.udp.send(reply, peer, local)
            return
        self._message(message, source, local, None)

    def _message(self, message: Request | Response, source: Source, local: tuple[str, int],
                 conn: Connection | None) -> None:
        if self.shield is not None and self.shield.banned(source.host):
            return  # queued before the ban began
        now = time.monotonic()
        if isinstance(message, Response):
            self.txl.receive_response(message, source, now)
            self._events()
            return
        self.counters.received[message.method] = self.counters.received.get(message.method, 0) + 1
        via = message.via
        if via.host != source.host or via.has_rport:
            message.replace_top_via(via.with_received(source.host, source.port))
        self.txl.receive_request(message, source, now)
        self._events(local=local, conn=conn)

    # -- transaction events -> the TU -------------------------------------------------------------

    def _events(self, *, local: tuple[str, int] | None = None, conn: Connection | None = None) -> None:
        for event in self.txl.events():
            try:
                if isinstance(event, RequestReceived):
                    self._request(event.transaction, event.request, event.source, local, conn)
                elif isinstance(event, ResponseReceived):
                    self.b2bua.on_response(event.transaction, event.response, event.retransmission)
                elif isinstance(event, AckReceived):
                    self.b2bua.on_ack(event.request, event.source)
                elif isinstance(event, (TransactionTimeout, TransportError)):
                    self.b2bua.on_timeout(event.transaction)  # type: ignore[arg-type]
                elif isinstance(event, TransactionTerminated):
                    self.b2bua.on_terminated(event.transaction)  # type: ignore[arg-type]
            except WardenError as exc:
                log.warning("%s while handling %s", exc, type(event).__name__)
            except Exception:
                log.exception("failed handling %s", type(event).__name__)

    def _request(self, txn: ServerTransaction, req: Request, source: Source, local: tuple[str, int] | None,
                 conn: Connection | None) -> None:
        method = req.method
        try:
            if req.max_forwards == 0 and method != "OPTIONS":
                self.send_response(txn, make_response(req, 483, "Too Many Hops", to_tag=generate_tag()))
            elif method == "REGISTER":
                origin = self._origin(source, local, conn)
                self.send_response(txn, self.registrar.handle(req, origin, time.time()))
            elif req.to.tag is not None:
                if method == "CANCEL" or not self.b2bua.on_in_dialog(txn, req, source):
                    self.send_response(txn, make_response(req, 481, "Call/Transaction Does Not Exist", to_tag=generate_tag()))
            elif method == "INVITE":
                self.b2bua.on_invite(txn, req, source)
            elif method == "CANCEL":
                self.b2bua.on_cancel(txn, req, self.txl.find_invite_for_cancel(req))
            elif method == "OPTIONS":
                resp = make_response(req, 200, "OK", to_tag=generate_tag())
                resp.headers.add("Allow", ALLOW)
                resp.headers.add("Accept", "application/sdp")
                resp.headers.add("Supported", "outbound, path")
                self.send_response(txn, resp)
            elif method in ("SUBSCRIBE", "PUBLISH"):
                self.send_response(txn, make_response(req, 489, "Bad Event", to_tag=generate_tag()))
            else:
                resp = make_response(req, 405, "Method Not Allowed", to_tag=generate_tag())
                resp.headers.add("Allow", ALLOW + ", REGISTER")
                self.send_response(txn, resp)
        except SIPError as exc:
            log.info("%s %s from %s:%d: %s", method, req.call_id, source.host, source.port, exc)
            self.send_response(txn, make_response(req, exc.status, str(exc)[:80], to_tag=generate_tag()))

    def _origin(self, source: Source, local: tuple[str, int] | None, conn: Connection | None) -> Origin:
        local = local or ("", 0)
        return Origin(
            transport=source.transport, host=source.host, port=source.port,
            local_host=local[0], local_port=local[1],
            flow=str(source.flow) if source.flow else None,
            tls_version=conn.tls_version if conn is not None else None,
            tls_cipher=conn.cipher if conn is not None else None,
            client_cert_names=conn.peer_cert_names if conn is not None else None,
        )

    def _lookup(self, username: str) -> HA1Pair | None:
        creds = self.store.credentials(username)
        if creds is None:
            return None
        ha1_md5, ha1_sha256, realm = creds
        if realm != self.realm:
            log.warning("extension %s has credentials for realm %r, not %r: reset its password", username, realm, self.realm)
            return None
        return HA1Pair(ha1_md5=ha1_md5, ha1_sha256=ha1_sha256)

    # -- timers --------------------------------------------------------------------------------

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))

    def _fire_timers(self) -> None:
        now = time.monotonic()
        self.txl.handle_timers(now)
        self._events()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            try:
                fn()
            except Exception:
                log.exception("timer failed")
        if now >= self._next_sweep:
            self._next_sweep = now + 10.0
            expired = self.store.expire_bindings(time.time())
            for b in expired:
                log.info("%s: binding %s expired", b.aor, b.contact)

    # -- output ----------------------------------------------------------------------------------

    def _flush(self) -> None:
        for tx in self.txl.outbox():
            if not self._transmit(tx.data, tx.destination) and tx.transaction is not None:
                self.txl.transport_error(tx.transaction, time.monotonic())
        self._events()

    def _transmit(self, data: bytes, dest: Source) -> bool:
        if dest.transport == "udp":
            return bool(self.udp is not None and self.udp.send(data, (dest.host, dest.port)))
        conn = self.flows.get(str(dest.flow) if dest.flow else None)
        if conn is None:
            self.counters.dropped += 1
            log.info("no %s connection to %s:%d any more: message dropped", dest.transport, dest.host, dest.port)
            return False
        return conn.send(data)

    # -- CallEnv for the B2BUA ----------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def _hop(self, destination: Source) -> tuple[int, str, SipURI]:
        """(our port, our Via up to ``branch=``, our Contact URI) towards ``destination``.

        Every request and dialog needs both, and building them (the route
        lookup, the strings, parsing the Contact back into a URI) cost more
        than a SIP message's worth of parsing per call. Kept per peer host for
        UDP (a few thousand at most: cleared when full); a connection's are
        built afresh, as the flow's local address decides them and flows come
        and go. The port is checked, as the listeners may be set after a
        first message.
        """
        transport = destination.transport
        key = (transport, destination.host)
        port = self.listen_ports.get(transport, 5060)
        hop = self._hops.get(key) if destination.flow is None else None
        if hop is not None and hop[0] == port:
            return hop
        host, port = self._local_address(destination)
        shown = f"[{host}]" if ":" in host else host
        suffix = "" if transport == "udp" else f";transport={transport}"
        hop = (port, f"SIP/2.0/{transport.upper()} {shown}:{port};branch=",
               parse_uri(f"sip:warden@{shown}:{port}{suffix}"))
        if destination.flow is None:
            if len(self._hops) >= 4096:
                self._hops.clear()
            self._hops[key] = hop
        return hop

    def _via(self, destination: Source, branch: str) -> str:
        return f"{self._hop(destination)[1]}{branch};rport"

    def send_request(self, request: Request, destination: Source) -> ClientTransaction | None:
        # a CANCEL from make_cancel() already carries its INVITE's Via (§9.1): keep it
        if request.method != "CANCEL" or not request.headers.get_all("Via"):
            branch = new_branch()
            request.headers.add("Via", self._via(destination, branch), first=True)
            return self.txl.send_request(request, destination, time.monotonic(), branch)
        return self.txl.send_request(request, destination, time.monotonic())

    def send_ack(self, request: Request, destination: Source) -> None:
        request.headers.add("Via", self._via(destination, new_branch()), first=True)
        self.txl.send_stateless(request, destination)

    def send_response(self, txn: ServerTransaction, response: Response) -> None:
        self.counters.responses_sent[response.status] = self.counters.responses_sent.get(response.status, 0) + 1
        if self.shield is not None and txn.request is not None:
            self._watch_auth(txn, txn.request, response)
        self.txl.send_response(txn, response, time.monotonic())

    def _watch_auth(self, txn: ServerTransaction, req: Request, response: Response) -> None:
        """Tell the shield of proven phones (not shed under load; their flows never idle out)."""
        if 200 <= response.status < 300 and req.method in ("REGISTER", "INVITE"):
            dest = txn.destination
            self.shield.auth_succeeded(dest.host)
            conn = self.flows.get(str(dest.flow) if dest.flow else None)
            if conn is not None:
                conn.keep = True

    def _wrong_guess(self, peer: str) -> None:
        if self.shield is not None:
            self.shield.auth_failed(peer)  # enough of these ban the peer (warden.core.abuse)

    def send_stateless(self, response: Response, destination: Source) -> None:
        self.txl.send_stateless(response, destination)

    def contact_uri(self, destination: Source) -> SipURI:
        return self._hop(destination)[2]

    def destination_for(self, binding: Binding) -> Source | None:
        if binding.transport == "udp":
            return Source("udp", binding.source_host, binding.source_port)
        conn = self.flows.get(binding.flow_token)
        if conn is None:
            return None
        return Source(binding.transport, binding.source_host, binding.source_port, binding.flow_token)

    def media_host(self, source: Source) -> str:
        return self._local_address(source)[0]

    def flow_info(self, source: Source) -> tuple[str | None, str | None]:
        conn = self.flows.get(str(source.flow) if source.flow else None)
        if conn is None:
            return None, None
        return conn.tls_version, conn.cipher

    def _local_address(self, destination: Source) -> tuple[str, int]:
        """Our address as ``destination`` sees it, and our listening port."""
        port = self.listen_ports.get(destination.transport, 5060)
        if self.advertised_address:
            return self.advertised_address, port
        conn = self.flows.get(str(destination.flow) if destination.flow else None)
        if conn is not None:
            return conn.local[0], port
        host = self._local_cache.get(destination.host)
        if host is None:
            family = socket.AF_INET6 if ":" in destination.host else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as probe:
                    probe.connect((destination.host, 9))  # no packet is sent: a route lookup
                    host = probe.getsockname()[0]
            except OSError:
                host = "127.0.0.1" if family == socket.AF_INET else "::1"
            self._local_cache[destination.host] = host
        return host, port

