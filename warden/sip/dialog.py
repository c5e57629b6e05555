"""SIP dialogs (RFC 3261 §12), sans-I/O: state, CSeq, route set, in-dialog requests.

A :class:`Dialog` is what two user agents share between the first response
with a To tag and the BYE: the id (Call-ID, local tag, remote tag), both CSeq
counters, the remote target (Contact) and the route set (Record-Route).

Strategy: the dialog builds and checks messages but sends nothing; the TU
hands what it builds to the transaction layer (or, for the ACK of a 2xx, to
:meth:`~warden.sip.transaction.TransactionLayer.send_stateless`). State is a
table ``{(state, event): new_state}`` and :meth:`Dialog._step`; an event the
table lacks raises :class:`DialogError` naming role, state and event, with
481 as status when a peer caused it (a request in a terminated dialog).

Events: ``1xx``, ``2xx`` and ``failure`` (3xx-6xx) are responses to INVITE;
``gone`` is a 481 or 408 to any in-dialog request (§12.2.1.2); ``bye`` a BYE
sent or received; ``ack`` an ACK sent; ``request`` and ``response`` everything
else. The Via is left to the caller (only the transport knows the sent-by).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

from warden.errors import SIPError

from .headers import Headers
from .message import Request, Response, make_response
from .transaction import generate_tag
from .uri import NameAddr, SipURI, parse_name_addr

__all__ = [
    "Dialog",
    "DialogError",
    "DialogId",
    "TARGET_REFRESH_METHODS",
    "dialog_id_of_request",
    "dialog_id_of_response",
]

# typing.Tuple, not tuple[...]: Debian's Cython 0.29 compiles this module and cannot
# subscript builtin types at run time.
DialogId = Tuple[str, str, Optional[str]]
"""``(Call-ID, local tag, remote tag)``; the remote tag is ``None`` for an RFC 2543 peer."""

TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})
"""Methods whose Contact replaces the remote target (RFC 3261 §12.2, RFC 3311, RFC 6665)."""

_SEQ_MAX = 2**32 - 1


class DialogError(SIPError):
    """A message that does not fit the dialog; ``status`` is the response to send (481, 500...)."""

    def __init__(
        self, message: str, status: int = 500, *,
        role: str | None = None, state: str | None = None, event: str | None = None,
    ) -> None:
        super().__init__(message, status)
        self.role, self.state, self.event = role, state, event


_LIVE = ("early", "confirmed")
_TABLE: dict[tuple[str, str], str] = {
    ("early", "1xx"): "early",
    ("early", "2xx"): "confirmed",
    ("early", "failure"): "terminated",
    ("confirmed", "1xx"): "confirmed",  # a re-INVITE's provisional
    ("confirmed", "2xx"): "confirmed",  # a re-INVITE accepted, or a 2xx retransmission
    ("confirmed", "failure"): "confirmed",  # a re-INVITE refused: the dialog stays (§14.1)
    ("confirmed", "ack"): "confirmed",
    ("terminated", "ack"): "terminated",  # a 2xx retransmission crossing our BYE is still ACKed
    **{(s, "gone"): "terminated" for s in _LIVE},
    **{(s, "bye"): "terminated" for s in _LIVE},
    **{(s, "request"): s for s in _LIVE},
    **{(s, "response"): s for s in _LIVE},
    # late responses (to the BYE, or crossing it) are harmless
    **{("terminated", e): "terminated" for e in ("1xx", "2xx", "failure", "gone", "response")},
}


def _untagged(addr: NameAddr) -> NameAddr:
    if "tag" not in addr.params:
        return addr  # frozen: nothing to copy
    return NameAddr(addr.uri, addr.display_name, addr.params.without("tag"))


def _record_route(msg: Request | Response) -> tuple[NameAddr, ...]:
    return tuple(parse_name_addr(v) for v in msg.headers.get_all("Record-Route"))


def _contact(msg: Request | Response) -> SipURI | None:
    contacts = msg.contacts
    return contacts[0].uri if contacts else None


def dialog_id_of_request(request: Request) -> DialogId:
    """The id of the dialog an incoming request belongs to, seen from us (the UAS of it)."""
    return request.call_id, request.to.tag or "", request.from_.tag


def dialog_id_of_response(response: Response) -> DialogId:
    """The id of the dialog a response to our request belongs to (we are the UAC)."""
    return response.call_id, response.from_.tag or "", response.to.tag


@dataclass(slots=True, eq=False)
class Dialog:
    """One dialog, seen from our side. Build it with :meth:`from_uac` or :meth:`from_uas`."""

    role: str
    """``'uac'`` (we sent the dialog-creating request) or ``'uas'``."""
    state: str
    """``'early'``, ``'confirmed'`` or ``'terminated'``."""
    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: NameAddr
    """Our From (as UAC) or To (as UAS), without tag."""
    remote_uri: NameAddr
    remote_target: SipURI
    """Where in-dialog requests go: the peer's Contact (§12.1)."""
    route_set: tuple[NameAddr, ...] = ()
    """Proxies on the path, in the order requests visit them."""
    local_seq: int | None = None
    """CSeq of our last request; ``None`` until we send one."""
    remote_seq: int | None = None
    """CSeq of the peer's last request; ``None`` until it sends one."""
    invite_seq: int | None = None
    """CSeq number of our last INVITE, which its ACK repeats (§13.2.2.4)."""
    secure: bool = False
    """Sent over TLS to a SIPS Request-URI (§12.1.1): every hop must be TLS."""
    local_target: SipURI | None = None
    """Our Contact, put in target-refresh requests and dialog responses."""
    _texts: tuple[object, ...] = field(default=(), repr=False)
    """(local_uri, local_tag, remote_uri, remote_tag, From, To) of our last request (see :meth:`_from_to`)."""

    @property
    def id(self) -> DialogId:
        return self.call_id, self.local_tag, self.remote_tag

    # -- creation ----------------------------------------------------------------

    @classmethod
    def from_uac(
        cls, request: Request, response: Response, *, tls: bool = False, local_target: SipURI | None = None,
    ) -> Dialog:
        """The dialog a 101-299 response with a To tag creates for our ``request`` (§12.1.2).

        1xx gives an early dialog, 2xx a confirmed one. The route set is the
        response's Record-Route reversed; the remote target its Contact (a 1xx
        without Contact falls back to the Request-URI until the 2xx brings one).
        """
        remote_tag = response.to.tag
        if not 101 <= response.status <= 299 or not remote_tag:
            raise DialogError(f"a {response.status} without To tag does not create a dialog")
        if response.call_id != request.call_id or response.from_.tag != request.from_.tag:
            raise DialogError("the response does not answer this request", 481)
        target = _contact(response)
        if target is None:
            if response.status >= 200:
                raise DialogError("2xx without Contact: no remote target for the dialog", 400)
            target = request.uri
        seq, method = request.cseq
        return cls(
            role="uac", state="early" if response.status < 200 else "confirmed",
            call_id=request.call_id, local_tag=request.from_.tag or "", remote_tag=remote_tag,
            local_uri=_untagged(request.from_), remote_uri=_untagged(response.to),
            remote_target=target, route_set=tuple(reversed(_record_route(response))),
            local_seq=seq, invite_seq=seq if method == "INVITE" else None,
            secure=tls and request.uri.is_secure, local_target=local_target,
        )

    @classmethod
    def from_uas(
        cls, request: Request, *, local_tag: str | None = None, tls: bool = False,
        local_target: SipURI | None = None,
    ) -> Dialog:
        """The (early) dialog we create by answering ``request`` with a 1xx/2xx (§12.1.1).

        Answer with :meth:`make_response` and report it with :meth:`response_sent`,
        which confirms the dialog on a 2xx.
        """
        if request.to.tag is not None:
            raise DialogError("the request already has a To tag: it is in a dialog", 481)
        target = _contact(request)
        if target is None:
            raise DialogError(f"{request.method} without Contact cannot create a dialog", 400)
        return cls(
            role="uas", state="early", call_id=request.call_id,
            local_tag=local_tag or generate_tag(), remote_tag=request.from_.tag,
            local_uri=_untagged(request.to), remote_uri=_untagged(request.from_),
            remote_target=target, route_set=_record_route(request), remote_seq=request.cseq[0],
            secure=tls and request.uri.is_secure, local_target=local_target,
        )

    # -- the table -------------------------------------------------------------------

    def _illegal(self, event: str, status: int = 500) -> DialogError:
        return DialogError(
            f"{self.role} dialog {self.call_id}: event {event!r} is not allowed in state {self.state!r}",
            status, role=self.role, state=self.state, event=event,
        )

    def _next_state(self, event: str, status: int = 500) -> str:
        new_state = _TABLE.get((self.state, event))
        if new_state is None:
            raise self._illegal(event, status)
        return new_state

    def _step(self, event: str, status: int = 500) -> None:
        self.state = self._next_state(event, status)

    @staticmethod
    def _response_event(response: Response) -> str:
        method, status = response.cseq[1], response.status
        if status in (408, 481):
            return "gone"
        if method == "INVITE":
            return "1xx" if status < 200 else "2xx" if status < 300 else "failure"
        return "response"

    # -- UAC side: requests out, responses in ------------------------------------------

    def create_request(
        self, method: str, *, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
        content_type: str | None = None, cseq: int | None = None,
    ) -> Request:
        """An in-dialog request (§12.2.1.1), without Via.

        CSeq is the local one plus one (a random start if none yet); an ACK repeats
        the last INVITE's number. Request-URI and Route follow the route set:
        loose routing (``lr``) keeps the remote target as Request-URI, strict
        routing puts the first route there and the remote target last in Route.
        Target-refresh requests carry :attr:`local_target` as Contact.
        """
        method = method.upper()
        if method == "CANCEL":
            raise DialogError("CANCEL is not an in-dialog request: use make_cancel()")
        event = {"ACK": "ack", "BYE": "bye"}.get(method, "request")
        if event == "bye" and self.role == "uas" and self.state == "early":
            raise self._illegal(event)  # §15: a callee must not send BYE in an early dialog
        new_state = self._next_state(event)
        if method == "ACK":
            number = cseq if cseq is not None else self.invite_seq
            if number is None:
                raise DialogError("no INVITE was sent in this dialog: nothing to ACK")
        else:
            number = cseq if cseq is not None else (
                self.local_seq + 1 if self.local_seq is not None else secrets.randbelow(2**30) + 1
            )
            if not 0 <= number <= _SEQ_MAX:
                raise DialogError(f"CSeq {number} is out of range")
            self.local_seq = number
            if method == "INVITE":
                self.invite_seq = number
        uri, routes = self.remote_target, [str(r) for r in self.route_set]
        if self.route_set and not self.route_set[0].uri.lr:  # strict router (§12.2.1.1)
            first = self.route_set[0].uri
            uri = replace(first, params=first.params.without("method"), headers=())
            routes = routes[1:] + [f"<{self.remote_target}>"]
        from_text, to_text = self._from_to()
        h = Headers([("Max-Forwards", "70")])
        h.add("From", from_text)
        h.add("To", to_text)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{number} {method}")
        for route in routes:
            h.add("Route", route)
        if self.local_target is not None and method in TARGET_REFRESH_METHODS:
            h.add("Contact", f"<{self.local_target}>")
        for name, value in headers:
            h.add(name, value)
        if content_type is not None:
            h.set("Content-Type", content_type)
        self.state = new_state
        return Request(method, uri, h, body)

    def _from_to(self) -> tuple[str, str]:
        """The From and To of our requests, formatted once per dialog (an ACK and
        a BYE at least), again only if a field they come from was replaced."""
        texts = self._texts
        if (texts and texts[0] is self.local_uri and texts[1] is self.local_tag
                and texts[2] is self.remote_uri and texts[3] is self.remote_tag):
            return texts[4], texts[5]  # type: ignore[return-value]
        from_text = str(self.local_uri.with_tag(self.local_tag))
        remote = self.remote_uri if self.remote_tag is None else self.remote_uri.with_tag(self.remote_tag)
        to_text = str(remote)
        self._texts = (self.local_uri, self.local_tag, self.remote_uri, self.remote_tag, from_text, to_text)
        return from_text, to_text

    def receive_response(self, response: Response) -> None:
        """A response to one of our in-dialog requests, or to the dialog-creating INVITE.

        A 2xx to INVITE confirms an early dialog and recomputes its route set
        (§13.2.2.4); a 2xx to a target refresh takes its Contact as the new
        remote target; 481 or 408 end the dialog (§12.2.1.2).
        """
        if dialog_id_of_response(response) != self.id:
            raise DialogError(f"response for dialog {dialog_id_of_response(response)} reached {self.id}", 481)
        event = self._response_event(response)
        new_state = self._next_state(event)
        target = _contact(response)
        if target is not None and response.cseq[1] in TARGET_REFRESH_METHODS and 101 <= response.status <= 299:
            self.remote_target = target
        if self.state == "early" and event == "2xx" and self.role == "uac":
            self.route_set = tuple(reversed(_record_route(response)))
        self.state = new_state

    # -- UAS side: requests in, responses out ----------------------------------------------

    def receive_request(self, request: Request) -> None:
        """Check and record an incoming in-dialog request (§12.2.2).

        Raises :class:`DialogError` with 481 if it belongs to another dialog or
        this one is over, 500 if its CSeq is lower than the last one (out of
        order). ACK and CANCEL reuse their INVITE's CSeq and are not checked.
        INVITE and UPDATE with a Contact refresh the remote target; BYE ends the dialog.
        """
        if dialog_id_of_request(request) != self.id:
            raise DialogError(f"request for dialog {dialog_id_of_request(request)} reached {self.id}", 481)
        method = request.method
        new_state = self._next_state("bye" if method == "BYE" else "request", 481)
        if method not in ("ACK", "CANCEL"):
            seq = request.cseq[0]
            if self.remote_seq is not None and seq < self.remote_seq:
                raise DialogError(f"CSeq {seq} {method} is lower than {self.remote_seq}: out of order", 500)
            self.remote_seq = seq
            target = _contact(request) if method in TARGET_REFRESH_METHODS else None
            if target is not None:
                self.remote_target = target
        self.state = new_state

    def make_response(
        self, request: Request, status: int, reason: str | None = None, *,
        headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
    ) -> Response:
        """A response to ``request`` in this dialog: our To tag and, for 101-299,
        the request's Record-Route (§12.1.1) and our Contact (to target refreshes)."""
        extra: list[tuple[str, str]] = []
        if 101 <= status <= 299:
            extra += [("Record-Route", v) for v in request.headers.get_fields("Record-Route")]
            if self.local_target is not None and request.method in TARGET_REFRESH_METHODS:
                extra.append(("Contact", f"<{self.local_target}>"))
        return make_response(request, status, reason, to_tag=self.local_tag, headers=[*extra, *headers], body=body)

    def response_sent(self, response: Response) -> None:
        """Record a response we sent: a 2xx to the INVITE confirms an early dialog,
        a 3xx-6xx to the initial INVITE ends it."""
        method, status = response.cseq[1], response.status
        event = "response"
        if method == "INVITE" and status >= 200:
            event = "2xx" if status < 300 else "failure" if self.state == "early" else "response"
        self._step(event)
