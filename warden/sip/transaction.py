"""SIP transactions (RFC 3261 §17, with RFC 6026's "Accepted" states), sans-I/O.

Four machines: client INVITE (§17.1.1, timers A, B, D and RFC 6026's M),
client non-INVITE (§17.1.2, E, F, K), server INVITE (§17.2.1, G, H, I, RFC
6026's L and a 100 Trying) and server non-INVITE (§17.2.2, J). Each is a
table ``{(state, event): (new_state, actions)}`` driven by one function,
:meth:`TransactionLayer._step`.

Strategy:

* Time is a parameter. Every input takes ``now``; :meth:`TransactionLayer.next_timer`
  says when to call :meth:`TransactionLayer.handle_timers` next.
* Output is pulled, as in aioquic: inputs return nothing (except
  :meth:`~TransactionLayer.send_request`, which returns the new transaction),
  bytes to send pile up in :meth:`~TransactionLayer.outbox` as :class:`Transmit`
  items, and what the TU must know piles up in :meth:`~TransactionLayer.events`.
  One path for everything, whether a message or a timer caused it.
* Timers live in one heap of ``(when, seq, is_client, key, event, generation)``.
  Stopping a transaction's timers gives it a new generation (unique in the
  layer), so stale entries are skipped when they surface: no search, O(log n)
  per arm. An entry names its transaction by key, not by reference: it holds
  only strings and numbers, which the garbage collector stops tracking, and a
  stale one (Timer B after the answer, H after the ACK: up to 64*T1) no longer
  keeps an ended transaction alive.
* Memory: transactions have ``__slots__`` and, once they only absorb
  retransmissions, keep no parsed message: a server transaction keeps the
  bytes of its final non-2xx response (Timers G, J), a client INVITE the bytes
  of its non-2xx ACK (D), and "accepted" (L, M) or a completed client non-INVITE
  (K) nothing but the key and state. Over UDP they live 32 s at 1,000 calls/s:
  each parsed message kept would be thousands of objects for the garbage
  collector to walk. Over TCP/TLS the non-INVITE machines terminate at once
  (J, K = 0) and nothing is kept.
* Errors: an event the table lacks raises :class:`TransactionError` naming role,
  state and event when the TU caused it (a second final response, say). When
  the network caused it (a 180 after the 486, an ACK before any final
  response) the message is dropped and logged at debug level: a peer must not
  be able to raise exceptions inside the layer.

Choices the RFC leaves open:

* **Via and branch**: the caller adds the top Via (only the transport knows
  the sent-by address). If it has no ``branch``, :meth:`~TransactionLayer.send_request`
  adds a fresh :func:`new_branch`; a branch without the ``z9hG4bK`` cookie is refused.
* **100 Trying**: the server INVITE transaction sends it itself when the TU has
  sent nothing after ``Timers.trying_delay`` (200 ms, §17.2.1); ``0`` sends it
  immediately, ``None`` leaves it to the TU.
* **Timer A** doubles without a cap, as §17.1.1.2 says (T2 caps E and G only):
  retransmissions at 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s, then B at 32 s.
* **Stray responses** (no matching client transaction) are dropped and counted in
  :attr:`TransactionLayer.stray_responses`; RFC 6026's Timer M keeps the client
  INVITE transaction alive for every legitimate 2xx retransmission.
* **2xx retransmission** by a UAS is the TU's job (§13.3.1.4): in "accepted" the
  server INVITE transaction passes every 2xx the TU sends, and every ACK that
  matches it, through.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from warden.errors import SIPError

from .headers import Headers, Via, canonical_name
from .message import Request, Response, make_response

__all__ = [
    "AckReceived",
    "ClientTransaction",
    "Destination",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "Source",
    "Timers",
    "Transaction",
    "TransactionError",
    "TransactionEvent",
    "TransactionKey",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimeout",
    "Transmit",
    "TransportError",
    "generate_tag",
    "make_ack_for_non2xx",
    "make_cancel",
    "new_branch",
    "random_bytes",
]

_log = logging.getLogger(__name__)

MAGIC_COOKIE = "z9hG4bK"
_MAX_SHARED_SOURCES = 4096
"""UDP peers remembered by :meth:`TransactionLayer._shared` (then it starts again empty)."""


class TransactionError(SIPError):
    """An event a transaction machine does not allow, or a misused layer.

    ``role``, ``state`` and ``event`` say which transition was refused (``None``
    when the error is not about a transition). ``status`` is 500: it is a local bug.
    """

    def __init__(
        self, message: str, status: int = 500, *,
        role: str | None = None, state: str | None = None, event: str | None = None,
    ) -> None:
        super().__init__(message, status)
        self.role, self.state, self.event = role, state, event


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 timer values (Table 4), in seconds. Derived timers follow from these."""

    t1: float = 0.5
    """RTT estimate: first retransmission interval (A, E, G); B, F, H, J, L, M are 64*T1."""

    t2: float = 4.0
    """Largest retransmission interval of non-INVITE requests (E) and INVITE responses (G)."""

    t4: float = 5.0
    """Longest a message stays in the network: Timers I and K over UDP."""

    d: float = 32.0
    """Timer D over UDP: how long a client INVITE transaction absorbs final responses (>= 32 s)."""

    trying_delay: float | None = 0.2
    """Send 100 Trying for an INVITE the TU has not answered after this long; 0 at once, None never."""

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0 or self.d < 0:
            raise ValueError(f"invalid SIP timers {self!r}: need 0 < T1 <= T2, T4 > 0, D >= 0")
        if self.trying_delay is not None and self.trying_delay < 0:
            raise ValueError("trying_delay must be >= 0 or None")


@dataclass(frozen=True, slots=True)
class Source:
    """A transport address: where a message came from, or where one goes.

    ``flow`` is an opaque token of the transport layer (the TCP/TLS connection a
    request arrived on, so the response can go back on it); the layer only passes it on.
    """

    transport: str
    """``'udp'``, ``'tcp'``, ``'tls'``, ``'ws'`` or ``'wss'`` (lower case)."""

    host: str
    port: int
    flow: object = None

    @property
    def reliable(self) -> bool:
        """Everything but UDP: no retransmissions, Timers D, I, J, K are 0."""
        return self.transport != "udp"


Destination = Source


@dataclass(frozen=True, slots=True)
class Transmit:
    """Bytes the transport must send. ``transaction`` is for :meth:`TransactionLayer.transport_error`."""

    data: bytes
    destination: Source
    transaction: Transaction | None = None


# --- The machines -------------------------------------------------------------

if TYPE_CHECKING:  # type aliases only: Cython 0.29 (Debian's) cannot subscript dict/tuple at run time
    _Table = dict[tuple[str, str], tuple[str, tuple[str, ...]]]
    TransactionKey = tuple[str | int | None, ...]
    """§17.1.3 ``(branch, method)`` or §17.2.3 ``(branch, sent-by host, port, method)``."""


def _same(states: tuple[str, ...], event: str, actions: tuple[str, ...] = ()) -> _Table:
    """Entries for an event that keeps each of ``states`` as it is."""
    return {(s, event): (s, actions) for s in states}


def _to(states: tuple[str, ...], event: str, new: str, actions: tuple[str, ...]) -> _Table:
    return {(s, event): (new, actions) for s in states}


# Events: "send" (first transmission), "1xx"/"2xx"/"3xx-6xx" (responses received),
# "timer_X", "transport_error". Actions: see TransactionLayer._actions.
_CLIENT_INVITE: _Table = {
    ("init", "send"): ("calling", ("transmit", "arm_A", "arm_B")),
    ("calling", "timer_A"): ("calling", ("transmit", "backoff_A")),
    ("calling", "timer_B"): ("terminated", ("timeout_B",)),
    **_to(("calling", "proceeding"), "1xx", "proceeding", ("stop", "pass")),
    # accepted: the TU ACKs 2xx itself, the request is not sent again; keep only the key
    **_to(("calling", "proceeding"), "2xx", "accepted", ("stop", "pass", "forget", "arm_M")),
    # completed: only the ACK's bytes are resent
    **_to(("calling", "proceeding"), "3xx-6xx", "completed", ("stop", "pass", "ack", "release", "arm_D")),
    ("completed", "3xx-6xx"): ("completed", ("transmit",)),
    ("completed", "timer_D"): ("terminated", ()),
    ("accepted", "2xx"): ("accepted", ("pass_again",)),
    ("accepted", "timer_M"): ("terminated", ()),
    **_to(("calling", "proceeding", "completed"), "transport_error", "terminated", ("transport_error",)),
}

_CLIENT_NON_INVITE: _Table = {
    ("init", "send"): ("trying", ("transmit", "arm_E", "arm_F")),
    **_same(("trying", "proceeding"), "timer_E", ("transmit", "backoff_E")),
    **_to(("trying", "proceeding"), "timer_F", "terminated", ("timeout_F",)),
    **_to(("trying", "proceeding"), "1xx", "proceeding", ("pass",)),
    # completed only absorbs response retransmissions: nothing to keep but the key
    **_to(("trying", "proceeding"), "2xx", "completed", ("stop", "pass", "forget", "arm_K")),
    **_to(("trying", "proceeding"), "3xx-6xx", "completed", ("stop", "pass", "forget", "arm_K")),
    **{("completed", e): ("completed", ()) for e in ("1xx", "2xx", "3xx-6xx")},
    ("completed", "timer_K"): ("terminated", ()),
    **_to(("trying", "proceeding"), "transport_error", "terminated", ("transport_error",)),
}

# Events: "request" (first copy or a retransmission), "ACK", "send_1xx"/"send_2xx"/
# "send_3xx-6xx" (from the TU), "timer_X", "transport_error".
_SERVER_INVITE: _Table = {
    ("init", "request"): ("proceeding", ("deliver", "arm_100")),
    ("proceeding", "timer_100"): ("proceeding", ("send_trying",)),
    ("proceeding", "request"): ("proceeding", ("transmit",)),
    ("proceeding", "send_1xx"): ("proceeding", ("stop", "reply")),
    # accepted: the TU resends its 2xx itself (§13.3.1.4); a request retransmission is absorbed
    ("proceeding", "send_2xx"): ("accepted", ("stop", "reply", "forget", "arm_L")),
    ("proceeding", "send_3xx-6xx"): ("completed", ("stop", "reply", "release", "arm_G", "arm_H")),
    ("completed", "request"): ("completed", ("transmit",)),
    ("completed", "timer_G"): ("completed", ("transmit", "backoff_G")),
    ("completed", "timer_H"): ("terminated", ("timeout_H",)),
    ("completed", "ACK"): ("confirmed", ("stop", "arm_I")),
    **_same(("confirmed",), "ACK"),
    **_same(("confirmed",), "request"),
    ("confirmed", "timer_I"): ("terminated", ()),
    **_same(("accepted",), "request"),
    ("accepted", "ACK"): ("accepted", ("deliver_ack",)),
    ("accepted", "send_2xx"): ("accepted", ("reply",)),
    ("accepted", "timer_L"): ("terminated", ()),
    **_to(("proceeding", "completed"), "transport_error", "terminated", ("transport_error",)),
    ("accepted", "transport_error"): ("accepted", ("transport_error",)),
}

_SERVER_NON_INVITE: _Table = {
    ("init", "request"): ("trying", ("deliver",)),
    ("trying", "request"): ("trying", ()),
    **_to(("trying", "proceeding"), "send_1xx", "proceeding", ("reply",)),
    **_to(("trying", "proceeding"), "send_2xx", "completed", ("reply", "release", "arm_J")),
    **_to(("trying", "proceeding"), "send_3xx-6xx", "completed", ("reply", "release", "arm_J")),
    **_same(("proceeding", "completed"), "request", ("transmit",)),
    ("completed", "timer_J"): ("terminated", ()),
    **_to(("trying", "proceeding", "completed"), "transport_error", "terminated", ("transport_error",)),
}


@dataclass(frozen=True, slots=True)
class _Machine:
    role: str
    table: _Table


CLIENT_INVITE = _Machine("client INVITE", _CLIENT_INVITE)
CLIENT_NON_INVITE = _Machine("client non-INVITE", _CLIENT_NON_INVITE)
SERVER_INVITE = _Machine("server INVITE", _SERVER_INVITE)
SERVER_NON_INVITE = _Machine("server non-INVITE", _SERVER_NON_INVITE)


class Transaction:
    """State shared by client and server transactions. Created by the layer only.

    ``state`` is one of the RFC's names in lower case ("calling", "trying",
    "proceeding", "completed", "confirmed", "accepted", "terminated").
    ``destination`` is where this transaction sends: the next hop for a client,
    the reply address (§18.2.2) for a server. ``key`` is the matching key of §17.1.3
    or §17.2.3.
    """

    __slots__ = ("_machine", "key", "state", "request", "destination", "_gen", "_interval", "_data")

    def __init__(self, machine: _Machine, key: TransactionKey, request: Request, destination: Source) -> None:
        self._machine = machine
        self.key = key
        self.state = "init"
        self.request: Request | None = request
        self.destination = destination
        self._gen = 0
        self._interval = 0.0
        self._data: bytes | None = None  # what "transmit" (re)sends

    @property
    def role(self) -> str:
        """``'client INVITE'``, ``'client non-INVITE'``, ``'server INVITE'`` or ``'server non-INVITE'``."""
        return self._machine.role

    @property
    def branch(self) -> str:
        """The top Via branch ("" for an RFC 2543 server transaction)."""
        return str(self.key[0])

    @property
    def method(self) -> str:
        """The request method (INVITE for a server INVITE transaction, which also takes its ACK)."""
        return str(self.key[-1])

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.role} {self.branch or self.key!r} {self.state}>"


class ClientTransaction(Transaction):
    """A request we sent. ``request`` stays available until the final response
    (for a CANCEL), then is released: a TU that may retry (after a 401) keeps its own."""

    __slots__ = ()


class ServerTransaction(Transaction):
    """A request we received. ``request`` is released (``None``) once the final response is sent."""

    __slots__ = ()


# --- Events for the TU -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (not a retransmission) for the TU; answer with :meth:`TransactionLayer.send_response`."""

    transaction: ServerTransaction
    request: Request
    source: Source
    time: float


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK no transaction absorbs: the ACK for a 2xx, which belongs to the dialog (§17.2.3).

    ``transaction`` is the server INVITE transaction in "accepted" it matched
    (RFC 6026 §7.1), or ``None`` (the usual case: a 2xx ACK has a new branch).
    """

    request: Request
    source: Source
    time: float
    transaction: ServerTransaction | None = None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response matched to a client transaction.

    ``retransmission`` is True for a 2xx reaching a client INVITE transaction in
    "accepted" (RFC 6026): a retransmission, or another fork's 2xx. The dialog
    layer tells them apart by To tag and ACKs each.
    """

    transaction: ClientTransaction
    response: Response
    source: Source
    time: float
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B or F (no final response: the TU acts as if it got a 408) or H (no ACK came)."""

    transaction: Transaction
    timer: str
    time: float


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport could not send for this transaction (reported with :meth:`TransactionLayer.transport_error`)."""

    transaction: Transaction
    time: float


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction reached "terminated" and left the layer; drop references to it."""

    transaction: Transaction
    time: float


TransactionEvent = (
    RequestReceived | AckReceived | ResponseReceived | TransactionTimeout | TransportError | TransactionTerminated
)


# --- Matching helpers ----------------------------------------------------------


def _server_key(request: Request, via: Via) -> TransactionKey:
    """§17.2.3: branch, sent-by and method (ACK matches its INVITE); else RFC 2543 matching."""
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host.lower(), via.port, method)
    top = request.headers.get_all("Via")[0]
    return ("", request.call_id, request.from_.tag, request.cseq[0], str(request.uri), top, method)


def _reply_destination(via: Via, source: Source) -> Source:
    """§18.2.2 and RFC 3581: the connection for reliable transports, else the Via's address.

    Over UDP the transport stamps ``received`` whenever sent-by is not the source
    address, so the host is always the source's; the port is the source's with
    ``rport``, else sent-by's (or 5060).
    """
    if source.reliable:
        return source
    if via.maddr is not None:
        host, port = via.with_received(source.host, source.port).response_target()
    else:
        host, port = source.host, source.port if via.has_rport else (via.port or 5060)
    if host == source.host and port == source.port:
        return source
    return Source(source.transport, host, port, source.flow)


def _status_class(status: int) -> str:
    return "1xx" if status < 200 else "2xx" if status < 300 else "3xx-6xx"


# --- The layer -------------------------------------------------------------------


class TransactionLayer:
    """Every transaction of one SIP endpoint, keyed for §17 matching, with one timer heap."""

    def __init__(self, timers: Timers | None = None) -> None:
        self.timers = timers or Timers()
        self._server: dict[TransactionKey, ServerTransaction] = {}
        self._client: dict[TransactionKey, ClientTransaction] = {}
        self._heap: list[tuple[float, int, bool, TransactionKey, str, int]] = []
        self._seq = itertools.count()
        self._generations = itertools.count(1)
        self._udp_sources: dict[tuple[str, int], Source] = {}
        self._out: list[Transmit] = []
        self._events: list[TransactionEvent] = []
        self.stray_responses = 0
        """Responses that matched no client transaction (dropped)."""
        act: dict[str, Callable[[Transaction, float, Request | Response | None, Source | None], None]] = {
            "transmit": self._a_transmit, "stop": self._a_stop, "pass": self._a_pass,
            "pass_again": partial(self._a_pass, again=True), "ack": self._a_ack,
            "transport_error": self._a_transport_error,
            "deliver": self._a_deliver, "deliver_ack": self._a_deliver_ack, "reply": self._a_reply,
            "release": self._a_release, "forget": self._a_forget, "send_trying": self._a_send_trying,
        }
        for name in ("A", "B", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "100"):
            act[f"arm_{name}"] = partial(self._a_arm, name)
        for name in ("A", "E", "G"):
            act[f"backoff_{name}"] = partial(self._a_backoff, name)
        for name in ("B", "F", "H"):
            act[f"timeout_{name}"] = partial(self._a_timeout, name)
        self._actions = act

    # -- inputs --------------------------------------------------------------

    def receive_request(self, request: Request, source: Source, now: float) -> None:
        """A request from the network: new (→ :class:`RequestReceived`), a retransmission
        (absorbed; the last response is resent), an ACK for a non-2xx final (absorbed)
        or an ACK for a 2xx (→ :class:`AckReceived`)."""
        via = request.via
        key = _server_key(request, via)
        txn = self._server.get(key)
        if request.method == "ACK":
            if txn is None:
                self._events.append(AckReceived(request, source, now))
            else:
                self._step(txn, "ACK", now, request, source, strict=False)
            return
        if txn is not None:
            self._step(txn, "request", now, request, source, strict=False)
            return
        machine = SERVER_INVITE if request.method == "INVITE" else SERVER_NON_INVITE
        txn = ServerTransaction(machine, key, request, self._shared(_reply_destination(via, source)))
        txn._gen = next(self._generations)
        self._server[key] = txn
        self._step(txn, "request", now, request, source)

    def receive_response(self, response: Response, source: Source, now: float) -> None:
        """A response from the network, matched by top Via branch and CSeq method (§17.1.3).

        Gives :class:`ResponseReceived`, or nothing when absorbed or stray."""
        key = (response.via.branch, response.cseq[1])
        txn = self._client.get(key)
        if txn is None:
            self.stray_responses += 1
            _log.debug("stray %d response dropped (branch %s)", response.status, key[0])
            return
        self._step(txn, _status_class(response.status), now, response, source, strict=False)

    def send_request(self, request: Request, destination: Source, now: float,
                     branch: str | None = None) -> ClientTransaction:
        """Start a client transaction and send ``request`` to ``destination``.

        The caller adds the top Via; a missing ``branch`` is filled in with :func:`new_branch`.
        A caller that made the top Via itself may name its ``branch`` (it must be
        the top Via's), which spares parsing that Via again.
        ACKs are not sent in transactions: use :meth:`send_stateless`.
        """
        if request.method == "ACK":
            raise TransactionError("an ACK is not sent in a transaction: use send_stateless()")
        if branch is None:
            via = request.via
            branch = via.branch
            if branch is None:
                branch = new_branch()
                via = Via(via.transport, via.host, via.port, via.params.set("branch", branch))
                vias = request.headers.get_all("Via")
                request.headers.set("Via", ", ".join([str(via), *vias[1:]]))
        if not branch.startswith(MAGIC_COOKIE):
            raise TransactionError(f"branch {branch!r} lacks the {MAGIC_COOKIE} cookie")
        key = (branch, request.method)
        if key in self._client:
            raise TransactionError(f"a client transaction {key} already exists: use a new branch")
        machine = CLIENT_INVITE if request.method == "INVITE" else CLIENT_NON_INVITE
        txn = ClientTransaction(machine, key, request, self._shared(destination))
        txn._gen = next(self._generations)
        txn._data = bytes(request)
        self._client[key] = txn
        self._step(txn, "send", now)
        return txn

    def send_response(self, transaction: ServerTransaction, response: Response, now: float) -> None:
        """Send ``response`` in ``transaction``; raises :class:`TransactionError` if its state forbids it."""
        if not isinstance(transaction, ServerTransaction):
            raise TransactionError(f"{transaction!r} is not a server transaction")
        self._step(transaction, "send_" + _status_class(response.status), now, response)

    def send_stateless(self, message: Request | Response, destination: Source) -> None:
        """Queue a message outside any transaction: the ACK for a 2xx, a stateless reply."""
        self._out.append(Transmit(bytes(message), destination))

    def transport_error(self, transaction: Transaction, now: float) -> None:
        """The transport failed to send a :class:`Transmit` of ``transaction``."""
        self._step(transaction, "transport_error", now, strict=False)

    def handle_timers(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        heap, client, server = self._heap, self._client, self._server
        while heap and heap[0][0] <= now:
            _, _, is_client, key, event, gen = heapq.heappop(heap)
            txn = (client if is_client else server).get(key)
            if txn is not None and gen == txn._gen:
                self._step(txn, event, now)

    def _shared(self, destination: Source) -> Source:
        """One :class:`Source` per UDP peer for all its transactions.

        A transaction lives 32 s over UDP, and each datagram comes with its own
        Source: at 1,000 calls/s that was ~100,000 equal objects for the
        garbage collector to walk. (Reliable transports carry a flow token,
        and their non-INVITE transactions end at once: left as they are.)
        """
        if destination.flow is not None or destination.transport != "udp":
            return destination
        peer = (destination.host, destination.port)
        shared = self._udp_sources.get(peer)
        if shared is None:
            if len(self._udp_sources) >= _MAX_SHARED_SOURCES:
                self._udp_sources.clear()
            self._udp_sources[peer] = shared = destination
        return shared

    # -- outputs -------------------------------------------------------------

    def next_timer(self) -> float | None:
        """When :meth:`handle_timers` must next be called, or ``None``."""
        heap, client, server = self._heap, self._client, self._server
        while heap:
            _, _, is_client, key, _, gen = heap[0]
            txn = (client if is_client else server).get(key)
            if txn is not None and gen == txn._gen:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def outbox(self) -> list[Transmit]:
        """Take the bytes queued for sending, oldest first."""
        out, self._out = self._out, []
        return out

    def events(self) -> list[TransactionEvent]:
        """Take the events queued for the TU, oldest first."""
        events, self._events = self._events, []
        return events

    # -- lookups -------------------------------------------------------------

    def find_invite_for_cancel(self, cancel: Request) -> ServerTransaction | None:
        """The server INVITE transaction a CANCEL targets (§9.2), or ``None`` (answer 481)."""
        key = _server_key(cancel, cancel.via)
        return self._server.get(key[:-1] + ("INVITE",))

    def __len__(self) -> int:
        """Live transactions, client and server."""
        return len(self._server) + len(self._client)

    # -- the one transition function --------------------------------------------

    def _step(
        self, txn: Transaction, event: str, now: float,
        msg: Request | Response | None = None, source: Source | None = None, *, strict: bool = True,
    ) -> None:
        machine = txn._machine
        try:
            new_state, actions = machine.table[(txn.state, event)]
        except KeyError:
            text = (f"{machine.role} transaction {txn.branch or txn.key}: "
                    f"event {event!r} is not allowed in state {txn.state!r}")
            if strict:
                raise TransactionError(text, role=machine.role, state=txn.state, event=event) from None
            _log.debug("%s; message dropped", text)
            return
        txn.state = new_state
        for action in actions:
            self._actions[action](txn, now, msg, source)
        if txn.state == "terminated" and txn._gen != -1:  # once: a nested step may have done it
            txn._gen = -1  # its heap entries (armed with gen >= 1) never match again
            # the TU may keep the object a while (its maps, until it handles the
            # event): let it hold a husk, not the request and the bytes sent
            txn.request, txn._data = None, None
            table = self._client if isinstance(txn, ClientTransaction) else self._server
            if table.get(txn.key) is txn:
                del table[txn.key]
            self._events.append(TransactionTerminated(txn, now))

    # -- actions (txn, now, message, source) ---------------------------------------

    def _a_transmit(self, txn: Transaction, now: float, msg: object, src: object) -> None:
        if txn._data is not None:
            self._out.append(Transmit(txn._data, txn.destination, txn))

    def _a_stop(self, txn: Transaction, now: float, msg: object, src: object) -> None:
        txn._gen = next(self._generations)

    def _a_arm(self, name: str, txn: Transaction, now: float, msg: object, src: object) -> None:
        t, reliable = self.timers, txn.destination.reliable
        delay: float | None
        if name in ("A", "E", "G"):
            if reliable:
                return
            delay = txn._interval = t.t1
        elif reliable and name in ("D", "I", "J", "K"):
            delay = 0.0
        elif name == "D":
            delay = t.d
        elif name in ("I", "K"):
            delay = t.t4
        elif name == "100":
            delay = t.trying_delay
        else:  # B, F, H, J (UDP), L, M
            delay = 64 * t.t1
        if delay is None:
            return
        if delay <= 0:
            self._step(txn, "timer_" + name, now)
        else:
            self._push(now + delay, txn, "timer_" + name)

    def _a_backoff(self, name: str, txn: Transaction, now: float, msg: object, src: object) -> None:
        t2 = self.timers.t2
        if name == "A":
            txn._interval *= 2  # §17.1.1.2: INVITE retransmissions double without a cap
        elif name == "E" and txn.state == "proceeding":
            txn._interval = t2  # §17.1.2.2
        else:
            txn._interval = min(2 * txn._interval, t2)
        self._push(now + txn._interval, txn, "timer_" + name)

    def _push(self, when: float, txn: Transaction, event: str) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), isinstance(txn, ClientTransaction), txn.key, event, txn._gen))

    def _a_pass(self, txn: Transaction, now: float, msg: object, src: object, again: bool = False) -> None:
        assert isinstance(txn, ClientTransaction) and isinstance(msg, Response) and isinstance(src, Source)
        self._events.append(ResponseReceived(txn, msg, src, now, again))

    def _a_ack(self, txn: Transaction, now: float, msg: object, src: object) -> None:
        assert txn.request is not None and isinstance(msg, Response)
        txn._data = bytes(make_ack_for_non2xx(txn.request, msg))
        self._out.append(Transmit(txn._data, txn.destination, txn))

    def _a_timeout(self, timer: str, txn: Transaction, now: float, msg: object, src: object) -> None:
        self._events.append(TransactionTimeout(txn, timer, now))

    def _a_transport_error(self, txn: Transaction, now: float, msg: object, src: object) -> None:
        self._events.append(TransportError(txn, now))

    def _a_deliver(self, txn: Transaction, now: float, msg: object, src: object) -> None:
        assert isinstance(txn, ServerTransaction) and isinstance(msg, Request) and isinstance(src, Source)
        self._events.append(RequestReceived(txn, msg, src, now))

    def _a_deliver_ack(self, txn: Transaction, now: float, msg: object, src: object) -> None:
        assert isinstance(txn, ServerTransaction) and isinstance(msg, Request) and isinstance(src, Source)
        self._events.append(AckReceived(msg, src, now, txn))

    def _a_reply(self, txn: Transaction, now: float, msg: object, src: object) -> None:
        assert isinstance(msg, Response)
        txn._data = bytes(msg)
        self._out.append(Transmit(txn._data, txn.destination, txn))

    def _a_release(self, txn: Transaction, now: float, msg: object, src: object) -> None:
        txn.request = None

    def _a_forget(self, txn: Transaction, now: float, msg: object, src: object) -> None:
        txn.request, txn._data = None, None  # the state absorbs retransmissions and never sends

    def _a_send_trying(self, txn: Transaction, now: float, msg: object, src: object) -> None:
        assert txn.request is not None
        self._a_reply(txn, now, make_response(txn.request, 100), src)


# --- Helpers for the TU ------------------------------------------------------------


_RANDOM_BYTES = 4096
_random_pool = b""
_random_at = 0
_random_lock = threading.Lock()


def random_bytes(n: int) -> bytes:
    """``n`` bytes from ``os.urandom``, as ``secrets.token_bytes(n)`` gives them.

    Strategy: a call takes ten tags and branches and a nonce; one
    ``os.urandom`` system call per token cost more than the rest of making
    it (and dropped the GIL each time). So random bytes are fetched 4 KiB at a
    time and handed out in slices, each byte once, from the same kernel
    source as ``secrets``. The lock keeps two threads (API workers make tags
    too) from getting one slice, and a forked child starts afresh
    (:func:`_forget_random`).
    """
    global _random_pool, _random_at
    with _random_lock:
        at = _random_at
        end = at + n
        if end > len(_random_pool):
            _random_pool = os.urandom(max(_RANDOM_BYTES, n))
            at, end = 0, n
        _random_at = end
        return _random_pool[at:end]


def _forget_random() -> None:
    """A forked child must not hand out its parent's unused bytes again."""
    global _random_pool, _random_at
    _random_pool, _random_at = b"", 0


os.register_at_fork(after_in_child=_forget_random)


def new_branch() -> str:
    """A fresh RFC 3261 branch: the ``z9hG4bK`` cookie and 96 random bits."""
    return MAGIC_COOKIE + random_bytes(12).hex()


def generate_tag() -> str:
    """A From/To tag with 64 random bits (§19.3 asks for at least 32)."""
    return random_bytes(8).hex()


def _copy(src: Headers, dst: Headers, name: str) -> None:
    for value in src.get_fields(name):
        dst.add(canonical_name(name), value)


def _mirror_request(invite: Request, method: str, to: str) -> Request:
    """A request on the same hop as ``invite``: its top Via, Route, From, Call-ID, CSeq number."""
    if not invite.headers.get_all("Via"):
        raise TransactionError(f"cannot build {method}: the request has no Via")
    h = Headers()
    h.add("Via", invite.headers.get_all("Via")[0])
    h.add("Max-Forwards", "70")
    _copy(invite.headers, h, "Route")
    h.add("From", invite.headers["From"])
    h.add("To", to)
    h.add("Call-ID", invite.headers["Call-ID"])
    h.add("CSeq", f"{invite.cseq[0]} {method}")
    return Request(method, invite.uri, h)


def make_ack_for_non2xx(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 3xx-6xx (§17.1.1.3).

    Request-URI, Call-ID, From, Route and the CSeq number come from the INVITE,
    To (with the tag) from the response; one Via, the INVITE's top Via.
    """
    if invite.method != "INVITE" or response.status < 300:
        raise TransactionError(f"no non-2xx ACK for a {response.status} to {invite.method}")
    return _mirror_request(invite, "ACK", response.headers["To"])


def make_cancel(request: Request) -> Request:
    """A CANCEL for ``request`` (§9.1): same Request-URI, Call-ID, From, To, Route,
    CSeq number and top Via (so the same branch, sent as its own transaction)."""
    if request.method in ("ACK", "CANCEL"):
        raise TransactionError(f"a {request.method} cannot be cancelled")
    return _mirror_request(request, "CANCEL", request.headers["To"])
