"""Calls between extensions through a back-to-back user agent.

Each call has an A leg (the caller's dialog with us) and one B leg per callee
contact while it rings (parallel forking); the first 2xx wins and the other
forks are cancelled. Every leg keeps the transport and flow its phone uses:
a TLS phone gets its INVITE over the connection it registered on.

Sans-I/O: the B2BUA sees transaction events and acts through :class:`CallEnv`
(send a request or response, arm a timer, find a phone's bindings), which the
engine implements. The protocol thread is the only caller, so no locks.

Strategy: a call is a small state machine (``ringing`` -> ``answered`` ->
``ended``); what each client transaction was for is remembered in
``_pending`` so a response knows what to do without searching.

A caller that goes away while its call rings (CANCEL, BYE on the early
dialog, its connection closing, our responses failing to reach it) must stop
every fork from ringing: each of those paths ends in :meth:`B2BUA._abandon`.
A fork is only cancelled once it has sent a provisional response (RFC 3261
§9.1); until then the CANCEL waits on the leg (``cancel_pending``).
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import SIPParseError, WardenError
from ..sip.auth import DigestAuthenticator
from ..sip.dialog import Dialog, DialogError
from ..sip.headers import Headers
from ..sip.message import Request, Response, make_response
from ..sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    Source,
    generate_tag,
    make_cancel,
)
from ..sip.uri import NameAddr, SipURI, parse_uri
from ..store import Binding, Store
from .text import storable

if TYPE_CHECKING:
    from ..media.anchor import CallMedia, MediaPlane
    from ..media.conference import ConferenceBridge, Participant

__all__ = ["B2BUA", "Call", "CallEnv", "Leg"]

log = logging.getLogger("warden.b2bua")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
_RING_SWEEP = 1.0
"""Seconds between checks for calls ringing past ring_timeout."""
_RELAYED_IN_DIALOG = ("INFO", "UPDATE", "INVITE")
_HANGUP = {
    404: ("not_found", "unknown extension"),
    480: ("offline", "not registered"),
    486: ("busy", "busy"),
    487: ("cancelled", "caller cancelled"),
    408: ("no_answer", "no answer"),
    603: ("rejected", "declined"),
}


def _best_failure(failures: list[tuple[int, str]]) -> tuple[int, str | None]:
    """The answer for the caller when every fork failed (after RFC 3261 §16.7).

    A 6xx wins (603 Decline as it is; other global failures become 486, as a
    single phone's busy); then any fork's 486, since a busy phone says the
    most; otherwise the lowest class, first come.
    """
    statuses = [status for status, _ in failures]
    global_ = [s for s in statuses if s >= 600]
    if global_:
        return (603, None) if 603 in global_ else (486, None)
    if 486 in statuses:
        return 486, None
    status, reason = min(failures, key=lambda f: f[0] // 100)
    return status, reason or None


class CallEnv(Protocol):
    """What the B2BUA needs from the engine."""

    def now(self) -> float:
        """Monotonic seconds (transaction timers)."""

    def wall(self) -> float:
        """Epoch seconds (CDRs)."""

    def send_request(self, request: Request, destination: Source) -> ClientTransaction | None:
        """Add our Via and start a client transaction; None if unreachable.

        A CANCEL (from :func:`make_cancel`) already carries its INVITE's top Via
        and must go out with that one Via only (RFC 3261 §9.1): the callee
        matches it to the INVITE by that branch (§9.2).
        """

    def send_ack(self, request: Request, destination: Source) -> None:
        """Add our Via and send an ACK (or another stateless request)."""

    def send_response(self, txn: ServerTransaction, response: Response) -> None: ...

    def send_stateless(self, response: Response, destination: Source) -> None: ...

    def call_later(self, delay: float, fn: Callable[[], None]) -> None: ...

    def contact_uri(self, destination: Source) -> SipURI:
        """Our Contact for messages to ``destination`` (our listening address)."""

    def destination_for(self, binding: Binding) -> Source | None:
        """Where to send a request for this binding: its flow, or its source address; None if dead."""

    def media_host(self, source: Source) -> str:
        """Our address as the phone at ``source`` reaches us: what SDP names."""

    def flow_info(self, source: Source) -> tuple[str | None, str | None]:
        """(TLS version, cipher) of the connection ``source`` came over."""


@dataclass(eq=False, slots=True)
class Leg:
    """One side of a call: a dialog between a phone and us."""

    call: "Call"
    side: str
    """``a`` (the caller) or ``b`` (a callee fork)."""
    destination: Source
    invite: Request
    dialog: Dialog | None = None
    invite_txn: ServerTransaction | ClientTransaction | None = None
    contact: str = ""
    status: int = 0
    """Last final status seen on this leg's INVITE."""
    cancelled: bool = False
    """We gave up on this (B) leg: a CANCEL is sent or waits in ``cancel_pending``."""
    provisional: bool = False
    """A 1xx came on this (B) leg's INVITE, so a CANCEL may be sent (§9.1)."""
    cancel_pending: bool = False
    """A CANCEL waits for the first 1xx."""
    acked: bool = False
    last_2xx: Response | None = None
    """The 2xx we sent this (A) leg, resent until its ACK comes over UDP."""


@dataclass(eq=False, slots=True)
class Call:
    """One call attempt."""

    id: int
    caller: str
    callee: str
    a: Leg = field(init=False, repr=False)
    """The caller's leg; gone (deleted by :meth:`release`) once the call has ended."""
    forks: list[Leg] = field(default_factory=list)
    b: Leg | None = None
    state: str = "ringing"
    failures: list[tuple[int, str]] = field(default_factory=list)
    """Final failure (status, reason) of each fork, to pick the caller's answer from."""
    cdr_id: int | None = None
    started: float = 0.0
    answered_at: float | None = None
    media: "CallMedia | None" = None
    """The relay ports this call's RTP is anchored on."""
    room: "Participant | None" = None
    """Set when the callee is a conference room."""
    room_joined: float = 0.0

    def other(self, leg: Leg) -> Leg | None:
        return self.b if leg is self.a else self.a

    def release(self) -> None:
        """Forget the legs once the call has ended.

        A call and its legs point at each other, so without this an ended call
        (its requests, dialogs, SDP...: about a hundred objects) is garbage
        only the cyclic garbage collector can free, after surviving into the
        oldest generation under load. Legs keep pointing here: a late response
        on one (a fork's 487, a late 2xx) finds the call "ended" with no forks.
        """
        self.forks = []
        self.b = None
        try:
            del self.a
        except AttributeError:  # released already
            pass


def _fire_later(b2bua: "B2BUA", call_id: int, func: Callable[..., None], args: tuple[Any, ...]) -> None:
    """A :meth:`B2BUA._later` timer: ``func(b2bua, call, *args)`` if the call still lives."""
    call = b2bua.calls.get(call_id)
    if call is not None:
        func(b2bua, call, *args)


class B2BUA:
    """Sets up, relays and tears down calls between registered extensions."""

    def __init__(self, env: CallEnv, store: Store, auth: DigestAuthenticator, *, domain: str = "warden",
                 ring_timeout: float = 120.0, media: "MediaPlane | None" = None,
                 conference: "ConferenceBridge | None" = None, media_timeout: float = 30.0) -> None:
        self.env = env
        self.media = media
        """Anchors every call's RTP when set (else SDP passes through untouched)."""
        self.conference = conference
        self.media_timeout = media_timeout
        self.store = store
        self.auth = auth
        self.domain = domain
        self.ring_timeout = ring_timeout
        self.calls: dict[int, Call] = {}
        self._ids = itertools.count(1)
        self._by_server_txn: dict[ServerTransaction, Leg] = {}
        self._pending: dict[ClientTransaction, tuple[Leg, str, ServerTransaction | None, Request | None]] = {}
        self._dialogs: dict[tuple[str, str], Leg] = {}
        self._froms: dict[tuple[str, str | None], str] = {}
        """Formatted B-leg From (no tag) per (caller, display name): see :meth:`_from_text`."""
        self._answered: dict[str, int] = {}
        """Extensions in answered calls, with how many (kept by _answer and _finish)."""
        self._ringing: collections.deque[tuple[float, int]] = collections.deque()
        """(ring deadline, call id) of calls placed, oldest first: one sweep a second
        instead of a timer per call, which kept a closure alive for ring_timeout."""

    # -- public queries -----------------------------------------------------------

    def snapshot(self) -> list[dict[str, object]]:
        """Live calls for the control channel."""
        now = self.env.wall()
        out = []
        for call in self.calls.values():
            legs = [call.a, *([call.b] if call.b else call.forks)]
            out.append({
                "id": call.id, "caller": call.caller, "callee": call.callee, "state": call.state,
                "started_at": call.started, "answered_at": call.answered_at,
                "duration": round(now - call.answered_at, 1) if call.answered_at else 0.0,
                "legs": [{"side": leg.side, "transport": leg.destination.transport,
                          "peer": f"{leg.destination.host}:{leg.destination.port}",
                          "call_id": leg.invite.call_id} for leg in legs],
                "media": call.media.stats() if call.media is not None else [],
                "room": call.callee if call.room is not None else None,
            })
        return out

    # -- new INVITE ------------------------------------------------------------------

    def on_invite(self, txn: ServerTransaction, req: Request, source: Source) -> None:
        """An INVITE outside any dialog: authenticate, route, fork."""
        now, wall = self.env.now(), self.env.wall()
        result = self.auth.verify("INVITE", req.headers.get_all(self.auth.credentials_header), now,
                                  peer=source.host)
        if not result.ok:
            resp = make_response(req, self.auth.status, to_tag=generate_tag())
            for value in self.auth.challenge(now, peer=source.host, stale=result.stale):
                resp.headers.add(self.auth.challenge_header, value)
            self.env.send_response(txn, resp)
            return
        caller = result.username or ""
        if req.from_.uri.user_unescaped != caller:
            log.info("INVITE from %s: authenticated as %s but From is %s", source.host, caller, req.from_.uri)
            self._refuse(txn, req, 403, "From does not match credentials")
            return
        if "100rel" in [v.strip().lower() for v in req.headers.get_all("Require")]:
            self._refuse(txn, req, 420, "Bad Extension", [("Unsupported", "100rel")])
            return
        try:
            # before the call exists: an INVITE that cannot make a dialog (no
            # Contact) must leave neither a ringing call nor an open CDR behind
            dialog = Dialog.from_uas(req, local_tag=generate_tag(), tls=source.transport == "tls",
                                     local_target=self.env.contact_uri(source))
        except DialogError as exc:
            log.info("INVITE %s from %s:%d refused: %s", req.call_id, source.host, source.port, exc)
            self._refuse(txn, req, exc.status, str(exc)[:80])
            return
        callee = storable(req.uri.user_unescaped or "")  # %-escapes may decode to bytes that are not UTF-8
        call = Call(id=next(self._ids), caller=caller, callee=callee, started=wall)
        a = Leg(call, "a", source, req, invite_txn=txn, dialog=dialog)
        call.a = a
        tls_version, tls_cipher = self.env.flow_info(source)
        try:
            call.cdr_id = self.store.start_cdr(
                storable(req.call_id), caller, callee, wall, caller_transport=source.transport,
                caller_tls_version=tls_version, caller_tls_cipher=tls_cipher,
                caller_source=f"{source.host}:{source.port}",
            )
        except WardenError as exc:
            # every call attempt has a CDR: without one, the call is not placed
            log.error("call from %s: CDR start failed, refusing the call: %s", caller, exc)
            self._refuse(txn, req, 500, "Server Internal Error", to_tag=dialog.local_tag)
            return
        self.calls[call.id] = call
        self._by_server_txn[txn] = a
        self._dialogs[(req.call_id, dialog.local_tag)] = a
        if self.conference is not None and self.conference.is_room(callee):
            self._join_room(call, source)
            return
        if self.store.get_extension(callee) is None:
            self._fail_call(call, 404, "Not Found")
            return
        bindings = self.store.bindings(callee, now=wall)
        targets = [(b, d) for b in bindings if (d := self.env.destination_for(b)) is not None]
        if not targets:
            self._fail_call(call, 480, "Temporarily Unavailable")
            return
        if self._busy(callee):
            self._fail_call(call, 486, "Busy Here")
            return
        offer = req.body
        if self.media is not None and offer:
            try:
                call.media = self.media.open_call(self.env.media_host(source))
                offer = call.media.relay_sdp(offer, "a")
            except SIPParseError as exc:
                self._fail_call(call, 488, "Not Acceptable Here", disposition=("failed", f"bad SDP: {exc}"))
                return
            except RuntimeError as exc:  # RTP ports exhausted
                log.error("call %d: %s", call.id, exc)
                self._fail_call(call, 503, "Service Unavailable", disposition=("failed", "no media ports"))
                return
        log.info("call %d: %s -> %s (%d contact(s))", call.id, caller, callee, len(targets))
        for binding, destination in targets:
            self._fork(call, binding, destination, offer)
        if not call.forks:
            self._fail_call(call, 480, "Temporarily Unavailable")
            return
        self._ringing.append((self.env.now() + self.ring_timeout, call.id))
        if len(self._ringing) == 1:
            self.env.call_later(_RING_SWEEP, self._ring_sweep)

    def _refuse(self, txn: ServerTransaction, req: Request, status: int, reason: str,
                headers: list[tuple[str, str]] | None = None, *, to_tag: str | None = None) -> None:
        """A final answer to an INVITE that makes no call, with a To tag (§8.2.6.2)."""
        resp = make_response(req, status, reason, to_tag=to_tag or generate_tag(), headers=headers or [])
        self.env.send_response(txn, resp)

    def _later(self, delay: float, call: Call, method: Callable[..., None], *args: Any) -> None:
        """``method(self, call, *args)`` after ``delay`` if the call is still live.

        The timer holds the call's id, not the call: an ended call (and its
        requests, dialogs and media) is freed at once rather than when its
        ring timeout falls due minutes later, which kept thousands of dead
        calls alive under load, costing memory and garbage-collector time.
        It is one ``partial`` of plain values, not a closure (a function, a
        tuple and four cells, all for the garbage collector to track).
        """
        self.env.call_later(delay, partial(_fire_later, self, call.id, method, args))

    def _busy(self, callee: str) -> bool:
        return callee in self._answered

    def _answer(self, call: Call) -> None:
        """The call is answered: its caller and callee count as busy until it ends."""
        call.state = "answered"
        call.answered_at = self.env.wall()
        for ext in {call.caller, call.callee}:
            self._answered[ext] = self._answered.get(ext, 0) + 1

    def _fork(self, call: Call, binding: Binding, destination: Source, body: bytes) -> None:
        a_req = call.a.invite
        uri = parse_uri(binding.contact)
        headers = [
            ("Max-Forwards", str(max(0, (a_req.max_forwards or 70) - 1))),
            ("From", f"{self._from_text(call.caller, a_req.from_.display_name)};tag={generate_tag()}"),
            ("To", f"<sip:{call.callee}@{self.domain}>"),
            ("Call-ID", f"{generate_tag()}{generate_tag()}@warden"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<{self.env.contact_uri(destination)}>"),
            ("Allow", ALLOW),
            ("User-Agent", "Warden PBX"),
        ]
        for path in [p.strip() for p in binding.path.split(",") if p.strip()]:
            headers.append(("Route", path))
        req = Request("INVITE", uri, Headers(headers), body)
        if body:
            req.headers.add("Content-Type", a_req.content_type or "application/sdp")
        leg = Leg(call, "b", destination, req, contact=binding.contact)
        txn = self.env.send_request(req, destination)
        if txn is None:
            return
        leg.invite_txn = txn
        call.forks.append(leg)
        self._pending[txn] = (leg, "invite", None, None)

    def _from_text(self, caller: str, display: str | None) -> str:
        """The B legs' From without its tag: ``"display" <sip:caller@domain>``,
        formatted once per caller and display name rather than once per fork."""
        key = (caller, display)
        text = self._froms.get(key)
        if text is None:
            if len(self._froms) >= 4096:
                self._froms.clear()
            text = self._froms[key] = str(NameAddr(parse_uri(f"sip:{caller}@{self.domain}"), display))
        return text

    # -- responses on B legs -------------------------------------------------------------

    def on_response(self, txn: ClientTransaction, resp: Response, retransmission: bool) -> None:
        entry = self._pending.get(txn)
        if entry is None:
            return
        leg, purpose, server_txn, original = entry
        if purpose == "invite":
            self._invite_response(leg, resp, retransmission)
        elif purpose == "relay" and server_txn is not None and original is not None:
            self._relay_response(leg, resp, server_txn, original)
        if resp.status >= 200 and not (purpose == "invite" and 200 <= resp.status < 300):
            self._pending.pop(txn, None)

    def _invite_response(self, leg: Leg, resp: Response, retransmission: bool) -> None:
        call = leg.call
        status = resp.status
        if status < 200:
            leg.provisional = True
            if leg.cancel_pending:
                leg.cancel_pending = False
                self._send_cancel(leg)
        else:
            leg.cancel_pending = False  # the INVITE is over: nothing left to cancel
        if status == 100:
            return
        if 100 < status < 200:
            if call.state != "ringing" or leg.cancelled:
                return
            tag = resp.to.tag
            if tag and leg.dialog is None:
                try:
                    leg.dialog = Dialog.from_uac(leg.invite, resp, tls=leg.destination.transport == "tls",
                                                 local_target=self.env.contact_uri(leg.destination))
                except DialogError:
                    leg.dialog = None
            self._to_a(call, status, resp.reason, self._sdp(call, resp.body, "b"), resp.content_type)
            return
        if 200 <= status < 300:
            self._invite_2xx(leg, resp, retransmission)
            return
        leg.status = status
        if leg not in call.forks:
            return  # a fork already given up (flow lost), or a retransmission
        call.forks.remove(leg)
        if call.state != "ringing":
            return  # a cancelled fork's 487, or one that lost to the answer
        call.failures.append((status, resp.reason))
        if status >= 600:
            for other in list(call.forks):  # §16.7: a 6xx ends the search everywhere
                self._cancel(other)
            call.forks.clear()
        if not call.forks:
            best, reason = _best_failure(call.failures)
            self._fail_call(call, best, reason)

    def _invite_2xx(self, leg: Leg, resp: Response, retransmission: bool) -> None:
        call = leg.call
        try:
            if leg.dialog is None or leg.dialog.remote_tag != resp.to.tag:
                if leg.dialog is not None and leg.dialog.state == "confirmed":
                    raise DialogError("2xx from a second fork")
                leg.dialog = Dialog.from_uac(leg.invite, resp, tls=leg.destination.transport == "tls",
                                             local_target=self.env.contact_uri(leg.destination))
            elif leg.dialog.state == "early":
                leg.dialog.receive_response(resp)
        except DialogError as exc:
            log.info("call %d: unusable 2xx (%s)", call.id, exc)
            return
        self._ack(leg)
        if retransmission or leg.acked and call.b is leg:
            return
        leg.acked = True
        if call.state != "ringing" or leg.cancelled:
            self._bye(leg, "late answer")  # another fork won, or the caller gave up
            return
        call.b = leg
        self._answer(call)
        self._dialogs[(leg.invite.call_id, leg.invite.from_.tag or "")] = leg
        for other in list(call.forks):
            if other is not leg:
                self._cancel(other)
        call.forks = [leg]
        tls_version, tls_cipher = self.env.flow_info(leg.destination)
        if call.cdr_id is not None:
            try:
                self.store.answer_cdr(call.cdr_id, call.answered_at, callee_contact=leg.contact,
                                      callee_transport=leg.destination.transport,
                                      callee_tls_version=tls_version, callee_tls_cipher=tls_cipher)
            except WardenError as exc:  # the callee is connected: the caller must hear it
                log.error("call %d: CDR answer failed: %s", call.id, exc)
        log.info("call %d answered by %s", call.id, leg.contact)
        self._to_a(call, 200, "OK", self._sdp(call, resp.body, "b"), resp.content_type)
        self._retransmit_2xx(call, 0.5)
        self._watch_media(call)

    def _ack(self, leg: Leg) -> None:
        assert leg.dialog is not None
        ack = leg.dialog.create_request("ACK")
        self.env.send_ack(ack, leg.destination)

    def _to_a(self, call: Call, status: int, reason: str | None, body: bytes, content_type: str | None) -> None:
        a = call.a
        assert a.dialog is not None and isinstance(a.invite_txn, ServerTransaction)
        headers = [("Allow", ALLOW)]
        if body:
            headers.append(("Content-Type", content_type or "application/sdp"))
        resp = a.dialog.make_response(a.invite, status, reason, headers=headers, body=body)
        if status >= 200:
            a.dialog.response_sent(resp)
            a.status = status
            a.last_2xx = resp if status < 300 else None
        if not a.invite_txn.terminated:  # else its flow failed (_server_failed): no one to tell
            self.env.send_response(a.invite_txn, resp)

    def _retransmit_2xx(self, call: Call, interval: float, elapsed: float = 0.0) -> None:
        """§13.3.1.4: resend the 2xx to an unreliable caller until its ACK comes."""
        a = call.a
        if a.destination.transport != "udp":
            return
        if a.acked or call.state != "answered":
            return
        if elapsed >= 32.0:
            log.info("call %d: no ACK for the 2xx, hanging up", call.id)
            self._end_call(call, "failed", "no ACK from caller", bye_a=True, bye_b=True)
            return
        if elapsed > 0 and a.last_2xx is not None:
            self.env.send_stateless(a.last_2xx, a.destination)
        self._later(interval, call, B2BUA._retransmit_2xx, min(interval * 2, 4.0), elapsed + interval)

    def _cancel(self, leg: Leg) -> None:
        """Give up on a B leg: CANCEL it now, or once its first 1xx comes (§9.1)."""
        if leg.cancelled:
            return
        leg.cancelled = True
        if leg.status >= 200:
            return  # its INVITE is already over
        if not leg.provisional:
            leg.cancel_pending = True
            return
        self._send_cancel(leg)

    def _send_cancel(self, leg: Leg) -> None:
        cancel = make_cancel(leg.invite)
        txn = self.env.send_request(cancel, leg.destination)
        if txn is not None:
            self._pending[txn] = (leg, "cancel", None, None)

    # -- requests in dialogs ------------------------------------------------------------------

    def on_ack(self, req: Request, source: Source) -> None:
        leg = self._dialogs.get((req.call_id, req.to.tag or ""))
        if leg is not None and leg.side == "a":
            leg.acked = True

    def on_cancel(self, txn: ServerTransaction, req: Request, invite_txn: ServerTransaction | None) -> None:
        leg = self._by_server_txn.get(invite_txn) if invite_txn is not None else None
        if leg is None:
            self.env.send_response(txn, make_response(req, 481, "Call/Transaction Does Not Exist",
                                                      to_tag=generate_tag()))
            return
        # §9.2: the 200 for the CANCEL carries the To tag the INVITE's responses have
        to_tag = leg.dialog.local_tag if leg.dialog is not None else None
        self.env.send_response(txn, make_response(req, 200, "OK", to_tag=to_tag))
        self._abandon(leg.call, "caller cancelled")

    def on_in_dialog(self, txn: ServerTransaction, req: Request, source: Source) -> bool:
        """A request with a To tag. False if it belongs to no call we know."""
        leg = self._dialogs.get((req.call_id, req.to.tag or ""))
        if leg is None or leg.dialog is None:
            return False
        try:
            leg.dialog.receive_request(req)
        except DialogError as exc:
            self.env.send_response(txn, make_response(req, exc.status, str(exc)[:60]))
            return True
        call = leg.call
        if req.method == "BYE":
            self.env.send_response(txn, leg.dialog.make_response(req, 200, "OK"))
            if call.state == "ringing" and leg.side == "a":
                self._abandon(call, "caller hung up")  # §15: a BYE on the early dialog
                return True
            who = "caller" if leg.side == "a" else "callee"
            self._end_call(call, "answered" if call.answered_at else "cancelled", f"{who} hung up",
                           bye_a=leg.side == "b", bye_b=leg.side == "a")
            return True
        if req.method == "OPTIONS":
            resp = leg.dialog.make_response(req, 200, "OK", headers=[("Allow", ALLOW)])
            self.env.send_response(txn, resp)
            return True
        other = call.other(leg)
        if req.method in _RELAYED_IN_DIALOG and other is not None and other.dialog is not None and call.state == "answered":
            headers = []
            if req.body:
                headers.append(("Content-Type", req.content_type or "application/sdp"))
            out = other.dialog.create_request(req.method, headers=headers, body=self._sdp(call, req.body, leg.side))
            ctxn = self.env.send_request(out, other.destination)
            if ctxn is None:
                self.env.send_response(txn, leg.dialog.make_response(req, 503, "Peer Unreachable"))
            else:
                self._pending[ctxn] = (other, "relay", txn, req)
                self._by_server_txn[txn] = leg
            return True
        self.env.send_response(txn, leg.dialog.make_response(req, 488 if req.method == "INVITE" else 405))
        return True

    def _relay_response(self, leg: Leg, resp: Response, server_txn: ServerTransaction, original: Request) -> None:
        """A response on one leg to a request relayed from the other leg."""
        call = leg.call
        origin = self._by_server_txn.get(server_txn)
        if resp.status < 200 or origin is None or origin.dialog is None:
            return
        if leg.dialog is not None:
            try:
                leg.dialog.receive_response(resp)
            except DialogError:
                pass
        if resp.cseq[1] == "INVITE" and 200 <= resp.status < 300 and leg.dialog is not None:
            self._ack(leg)
        headers = [("Content-Type", resp.content_type or "application/sdp")] if resp.body else []
        body = self._sdp(call, resp.body, leg.side)
        out = origin.dialog.make_response(original, resp.status, resp.reason, headers=headers, body=body)
        self.env.send_response(server_txn, out)
        self._by_server_txn.pop(server_txn, None)
        log.debug("call %d: relayed %d %s", call.id, resp.status, resp.cseq[1])

    # -- timeouts and transport failures ---------------------------------------------------

    def on_timeout(self, txn: ClientTransaction | ServerTransaction) -> None:
        """No final response came (B, F), or a message could not be sent at all."""
        if isinstance(txn, ServerTransaction):
            self._server_failed(txn)
            return
        entry = self._pending.pop(txn, None)
        if entry is None:
            return
        leg, purpose, server_txn, original = entry
        if purpose == "invite":
            self._invite_response(leg, make_response(leg.invite, 408, "Request Timeout"), False)
        elif purpose == "relay" and server_txn is not None and original is not None:
            self._relay_response(leg, make_response(original, 408, "Request Timeout"), server_txn, original)

    def _server_failed(self, txn: ServerTransaction) -> None:
        """Our response on the caller's INVITE could not be sent (its flow is gone):
        the caller cannot hear the call any more, so end it on the callee's side.
        (A Timer H timeout comes after the call ended and finds nothing.)"""
        leg = self._by_server_txn.get(txn)
        if leg is None or leg.side != "a" or leg.invite_txn is not txn:
            return
        call = leg.call
        if call.state == "ringing":
            self._abandon(call, "caller unreachable")
        elif call.state == "answered":
            self._end_call(call, "answered", "caller unreachable", bye_a=False, bye_b=True)

    def on_terminated(self, txn: ClientTransaction | ServerTransaction) -> None:
        if isinstance(txn, ClientTransaction):
            self._pending.pop(txn, None)
        else:
            leg = self._by_server_txn.get(txn)
            if leg is not None and leg.invite_txn is not txn:
                self._by_server_txn.pop(txn, None)

    def _ring_sweep(self) -> None:
        """Stop the calls still ringing at their deadline; again in a second while any wait."""
        now, ringing = self.env.now(), self._ringing
        while ringing and ringing[0][0] <= now:
            _, call_id = ringing.popleft()
            call = self.calls.get(call_id)
            if call is not None:
                self._ring_timeout(call)
        if ringing:
            self.env.call_later(_RING_SWEEP, self._ring_sweep)

    def _ring_timeout(self, call: Call) -> None:
        if call.state == "ringing":
            for fork in list(call.forks):
                self._cancel(fork)
            self._fail_call(call, 480, "No Answer", disposition=("no_answer", "ring timeout"))

    def flow_closed(self, token: str) -> None:
        """A phone's connection died: end its answered calls, stop the ringing of
        calls it placed, and drop forks ringing it (it can answer nothing now)."""
        for call in list(self.calls.values()):
            if call.state == "ringing":
                if call.a.destination.flow == token:
                    self._abandon(call, "caller connection lost")
                    continue
                for fork in [f for f in call.forks if f.destination.flow == token]:
                    if isinstance(fork.invite_txn, ClientTransaction):
                        self._pending.pop(fork.invite_txn, None)  # its Timer B finds nothing later
                    self._invite_response(fork, make_response(fork.invite, 480), False)
                continue
            for leg in (call.a, call.b):
                if leg is not None and leg.destination.flow == token and call.state == "answered":
                    self._end_call(call, "answered", "connection lost", bye_a=leg.side == "b", bye_b=leg.side == "a")

    # -- media ------------------------------------------------------------------------------

    def _sdp(self, call: Call, body: bytes, from_side: str) -> bytes:
        """The SDP body for the other side: anchored at our relay when media is on."""
        if not body or call.media is None:
            return body
        try:
            return call.media.relay_sdp(body, from_side)
        except SIPParseError as exc:
            log.info("call %d: unusable SDP from the %s side, passed on as is: %s", call.id, from_side, exc)
            return body

    def _watch_media(self, call: Call) -> None:
        """Hang up an answered call when no RTP has flowed for ``media_timeout`` seconds."""
        if call.state != "answered" or (call.media is None and call.room is None):
            return
        if call.room is not None:
            seen = call.room.last_seen
            last: float | None = seen if seen is not None else call.room_joined
        else:
            assert call.media is not None
            last = call.media.last_activity()
        if last is None:  # on hold both ways: nothing is expected to flow
            self._later(5.0, call, B2BUA._watch_media)
            return
        idle = self.env.now() - last
        if idle >= self.media_timeout:
            log.info("call %d: no RTP for %.0f s, hanging up", call.id, idle)
            self._end_call(call, "answered", "media timeout", bye_a=True, bye_b=True)
            return
        self._later(min(5.0, max(0.5, self.media_timeout - idle)), call, B2BUA._watch_media)

    def _join_room(self, call: Call, source: Source) -> None:
        """The callee is a conference room: we answer as the room."""
        from ..media.conference import answer, negotiate

        assert self.conference is not None
        req = call.a.invite
        try:
            codec, dtmf_pt, peer = negotiate(req.body)
        except (ValueError, SIPParseError) as exc:
            log.info("call %d to room %s refused: %s", call.id, call.callee, exc)
            self._fail_call(call, 488, "Not Acceptable Here", disposition=("failed", str(exc)))
            return
        host = self.env.media_host(source)
        try:
            call.room = self.conference.join(call.callee, codec, host, peer, dtmf_pt)
        except RuntimeError as exc:
            log.error("call %d: %s", call.id, exc)
            self._fail_call(call, 503, "Service Unavailable", disposition=("failed", "no media ports"))
            return
        call.room_joined = self.env.now()
        self._answer(call)
        if call.cdr_id is not None:
            try:
                self.store.answer_cdr(call.cdr_id, call.answered_at, callee_contact=f"conference room {call.callee}")
            except WardenError as exc:
                log.error("call %d: CDR answer failed: %s", call.id, exc)
        log.info("call %d: %s joined conference room %s (%s)", call.id, call.caller, call.callee, codec)
        self._to_a(call, 200, "OK", answer(host, call.room.pair.port, codec, dtmf_pt), "application/sdp")
        self._retransmit_2xx(call, 0.5)
        self._watch_media(call)

    # -- ending -------------------------------------------------------------------------------

    def _abandon(self, call: Call, cause: str) -> None:
        """The caller gave up (or is gone) while its call rang: cancel every fork,
        answer its INVITE 487 and record the call as cancelled."""
        if call.state != "ringing":
            return
        for fork in list(call.forks):
            self._cancel(fork)
        self._fail_call(call, 487, "Request Terminated", disposition=("cancelled", cause))

    def _fail_call(self, call: Call, status: int, reason: str | None, *,
                   disposition: tuple[str, str] | None = None) -> None:
        if call.state == "ended":
            return
        self._to_a(call, status, reason, b"", None)
        disp, cause = disposition or _HANGUP.get(status, ("failed", f"{status} {reason or ''}".strip()))
        self._finish(call, disp, cause)

    def _end_call(self, call: Call, disposition: str, cause: str, *, bye_a: bool, bye_b: bool) -> None:
        if call.state == "ended":
            return
        if bye_a:
            self._bye(call.a, cause)
        if bye_b and call.b is not None:
            self._bye(call.b, cause)
        self._finish(call, disposition, cause)

    def _bye(self, leg: Leg, cause: str) -> None:
        if leg.dialog is None or leg.dialog.state != "confirmed":
            return
        try:
            bye = leg.dialog.create_request("BYE", headers=[("Reason", f'SIP;cause=200;text="{cause}"')])
        except DialogError:
            return
        txn = self.env.send_request(bye, leg.destination)
        if txn is not None:
            self._pending[txn] = (leg, "bye", None, None)

    def _finish(self, call: Call, disposition: str, cause: str) -> None:
        if call.state == "answered":
            for ext in {call.caller, call.callee}:
                left = self._answered.get(ext, 0) - 1
                if left > 0:
                    self._answered[ext] = left
                else:
                    self._answered.pop(ext, None)
        call.state = "ended"
        if call.cdr_id is not None:
            try:
                self.store.end_cdr(call.cdr_id, self.env.wall(), disposition, cause)
            except WardenError as exc:
                log.error("call %d: CDR end failed: %s", call.id, exc)
        log.info("call %d ended: %s (%s)", call.id, disposition, cause)
        self.calls.pop(call.id, None)
        # An answered fork's INVITE transaction lives on 32 s (Timer M) to pass up
        # 2xx retransmissions, and its entry here kept the whole call alive (memory,
        # and garbage-collector time under load). The 2xx was ACKed when it came
        # and the dialog is being torn down: forget it now.
        for fork in (*call.forks, call.b):
            if fork is not None and fork.acked and isinstance(fork.invite_txn, ClientTransaction):
                self._pending.pop(fork.invite_txn, None)
        if call.media is not None:
            call.media.close()
        if call.room is not None and self.conference is not None:
            self.conference.leave(call.room)
        for leg in (call.a, *call.forks, call.b):
            if leg is None:
                continue
            if leg.dialog is not None:
                self._dialogs.pop((leg.dialog.call_id, leg.dialog.local_tag), None)
            if isinstance(leg.invite_txn, ServerTransaction):
                self._by_server_txn.pop(leg.invite_txn, None)
        call.release()

