"""SIP transactions (RFC 3261 §17, RFC 6026): the four machines driven by hand-made messages and times."""

from __future__ import annotations

import gc
import os
import re
import time
import tracemalloc

import pytest

from warden.errors import SIPError
from warden.sip import Headers, Request, Response, SipURI, make_response, parse_message
from warden.sip.transaction import (
    AckReceived,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    Source,
    Timers,
    TransactionError,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    Transmit,
    TransportError,
    generate_tag,
    make_ack_for_non2xx,
    make_cancel,
    new_branch,
    random_bytes,
)

UDP = Source("udp", "192.0.2.10", 5060)
TCP = Source("tcp", "192.0.2.10", 40312, flow="conn-7")
TLS = Source("tls", "192.0.2.10", 40313, flow="conn-8")
PEER = Source("udp", "198.51.100.7", 5060)


def request(
    method: str = "INVITE", branch: str | None = "z9hG4bKaaa1", *, cseq: int = 1, transport: str = "UDP",
    sent_by: str = "192.0.2.10:5060", via_params: str = "", to_tag: str | None = None,
    extra: str = "",
) -> Request:
    branch_param = "" if branch is None else f";branch={branch}"
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by}{branch_param}{via_params}\r\n"
        "Max-Forwards: 70\r\n"
        "From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1@192.0.2.10\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@192.0.2.10:5060>\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def reply(req: Request, status: int, tag: str | None = "b1") -> Response:
    """The response as the peer sends it: parsed back from bytes, like the network would give it."""
    msg = parse_message(bytes(make_response(req, status, to_tag=tag if status > 100 else None)))
    assert isinstance(msg, Response)
    return msg


def wire(transmits: list[Transmit]) -> list[str]:
    """The start lines of what went out."""
    return [t.data.split(b"\r\n", 1)[0].decode() for t in transmits]


def run(layer: TransactionLayer, until: float) -> list[tuple[float, str]]:
    """Fire every timer up to ``until``; return (time, start line) of each transmission."""
    sent: list[tuple[float, str]] = []
    while (when := layer.next_timer()) is not None and when <= until:
        layer.handle_timers(when)
        sent += [(round(when, 6), line) for line in wire(layer.outbox())]
    return sent


def times(sent: list[tuple[float, str]]) -> list[float]:
    return [t for t, _ in sent]


def kinds(events: list[object]) -> list[str]:
    return [type(e).__name__ for e in events]


# --- client INVITE (§17.1.1, RFC 6026) ---------------------------------------------


def test_client_invite_timer_a_doubles_without_cap_then_timer_b_times_out() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request(), PEER, 0.0)
    assert isinstance(txn, ClientTransaction) and txn.state == "calling" and txn.role == "client INVITE"
    out = layer.outbox()
    assert wire(out) == ["INVITE sip:bob@example.com SIP/2.0"] and out[0].destination == PEER
    assert out[0].transaction is txn
    sent = run(layer, 31.9)
    # §17.1.1.2: intervals T1, 2T1, 4T1, ... (T2 caps only E and G)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert layer.events() == []
    assert layer.next_timer() == 32.0  # Timer B = 64*T1
    layer.handle_timers(32.0)
    events = layer.events()
    assert kinds(events) == ["TransactionTimeout", "TransactionTerminated"]
    assert events[0] == TransactionTimeout(txn, "B", 32.0)
    assert txn.state == "terminated" and len(layer) == 0 and layer.next_timer() is None


def test_client_invite_over_reliable_transport_never_retransmits() -> None:
    layer = TransactionLayer()
    layer.send_request(request(transport="TLS"), TLS, 0.0)
    assert len(layer.outbox()) == 1
    assert run(layer, 100.0) == []
    assert kinds(layer.events()) == ["TransactionTimeout", "TransactionTerminated"]


def test_custom_timers_scale_every_timer() -> None:
    layer = TransactionLayer(Timers(t1=0.1, t2=0.4))
    layer.send_request(request(), PEER, 10.0)
    layer.outbox()
    assert times(run(layer, 16.35)) == [10.1, 10.3, 10.7, 11.5, 13.1, 16.3]
    assert layer.events() == [] and layer.next_timer() == pytest.approx(16.4)  # B = 64 * 0.1
    with pytest.raises(ValueError, match="T1"):
        Timers(t1=0)
    with pytest.raises(ValueError, match="T1 <= T2"):
        Timers(t1=5.0, t2=4.0)


def test_client_invite_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, PEER, 0.0)
    layer.outbox()
    layer.receive_response(reply(inv, 180), PEER, 0.2)
    [event] = layer.events()
    assert isinstance(event, ResponseReceived) and event.response.status == 180 and not event.retransmission
    assert txn.state == "proceeding"
    assert layer.next_timer() is None  # A and B were stopped; their heap entries are skipped
    layer.receive_response(reply(inv, 183), PEER, 0.3)
    assert [e.response.status for e in layer.events()] == [183]


def test_client_invite_non2xx_final_is_acked_and_absorbed_until_timer_d() -> None:
    layer = TransactionLayer()
    inv = request(extra="Route: <sip:proxy.example.com;lr>\r\n")
    txn = layer.send_request(inv, PEER, 0.0)
    layer.outbox()
    busy = reply(inv, 486)
    layer.receive_response(busy, PEER, 0.7)
    assert [e.response.status for e in layer.events()] == [486]
    assert txn.state == "completed"
    [ack_out] = layer.outbox()
    assert ack_out.destination == PEER  # §17.1.1.3: where the INVITE went
    ack = parse_message(ack_out.data)
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.uri == inv.uri
    assert ack.cseq == (1, "ACK") and ack.to.tag == "b1" and ack.from_.tag == "a1"
    assert [v.branch for v in ack.vias] == ["z9hG4bKaaa1"]
    assert ack.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    # a retransmitted 486 is absorbed: the ACK goes again, the TU hears nothing
    layer.receive_response(busy, PEER, 1.0)
    assert layer.outbox()[0].data == ack_out.data and layer.events() == []
    assert layer.next_timer() == pytest.approx(32.7)  # Timer D, 32 s over UDP
    layer.handle_timers(32.7)
    assert kinds(layer.events()) == ["TransactionTerminated"] and len(layer) == 0


def test_client_invite_timer_d_is_zero_over_tcp() -> None:
    layer = TransactionLayer()
    inv = request(transport="TCP")
    txn = layer.send_request(inv, TCP, 0.0)
    layer.receive_response(reply(inv, 603), TCP, 1.0)
    assert kinds(layer.events()) == ["ResponseReceived", "TransactionTerminated"]
    assert wire(layer.outbox()) == ["INVITE sip:bob@example.com SIP/2.0", "ACK sip:bob@example.com SIP/2.0"]
    assert txn.terminated and len(layer) == 0 and layer.next_timer() is None


def test_client_invite_accepted_state_passes_2xx_retransmissions_until_timer_m() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, PEER, 0.0)
    ok = reply(inv, 200)
    layer.receive_response(reply(inv, 180), PEER, 0.1)
    layer.receive_response(ok, PEER, 2.0)
    assert txn.state == "accepted"
    layer.receive_response(ok, PEER, 2.5)  # RFC 6026: passed up so the dialog re-ACKs
    layer.receive_response(reply(inv, 200, tag="fork2"), PEER, 2.6)  # another fork
    layer.receive_response(reply(inv, 486), PEER, 2.7)  # non-2xx after 2xx: dropped
    events = layer.events()
    assert [(e.response.status, e.retransmission) for e in events] == [
        (180, False), (200, False), (200, True), (200, True),
    ]
    assert events[-1].response.to.tag == "fork2"
    assert layer.next_timer() == pytest.approx(34.0)  # Timer M = 64*T1 after the 2xx
    layer.handle_timers(34.0)
    assert kinds(layer.events()) == ["TransactionTerminated"]
    layer.receive_response(ok, PEER, 35.0)
    assert layer.events() == [] and layer.stray_responses == 1


def test_client_invite_sends_no_ack_for_2xx() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.send_request(inv, PEER, 0.0)
    layer.outbox()
    layer.receive_response(reply(inv, 200), PEER, 0.1)
    assert layer.outbox() == []  # the ACK for a 2xx is the TU's (dialog) job


def test_transport_error_terminates_and_tells_the_tu() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request(transport="TCP"), TCP, 0.0)
    [out] = layer.outbox()
    assert out.transaction is txn
    layer.transport_error(txn, 0.1)
    assert layer.events() == [TransportError(txn, 0.1), TransactionTerminated(txn, 0.1)]
    layer.transport_error(txn, 0.2)  # already gone: ignored
    assert layer.events() == [] and len(layer) == 0


# --- client non-INVITE (§17.1.2) ----------------------------------------------------


def test_client_non_invite_timer_e_doubles_to_t2_then_timer_f() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request("OPTIONS"), PEER, 0.0)
    assert txn.state == "trying" and txn.role == "client non-INVITE"
    layer.outbox()
    sent = run(layer, 31.99)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert {line for _, line in sent} == {"OPTIONS sip:bob@example.com SIP/2.0"}
    layer.handle_timers(32.0)
    assert layer.events() == [TransactionTimeout(txn, "F", 32.0), TransactionTerminated(txn, 32.0)]


def test_client_non_invite_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    req = request("BYE", to_tag="b1")
    txn = layer.send_request(req, PEER, 0.0)
    layer.outbox()
    layer.receive_response(reply(req, 100), PEER, 0.2)
    assert txn.state == "proceeding"
    # E armed at T1 keeps its deadline; in Proceeding it is then reset to T2 (§17.1.2.2)
    assert times(run(layer, 13.0)) == [0.5, 4.5, 8.5, 12.5]
    layer.receive_response(reply(req, 200), PEER, 13.0)
    assert txn.state == "completed"
    assert [e.response.status for e in layer.events() if isinstance(e, ResponseReceived)] == [100, 200]
    layer.receive_response(reply(req, 200), PEER, 14.0)  # absorbed in Completed
    assert layer.events() == [] and layer.outbox() == []
    assert layer.next_timer() == 18.0  # Timer K = T4 over UDP
    layer.handle_timers(18.0)
    assert kinds(layer.events()) == ["TransactionTerminated"] and len(layer) == 0


def test_client_non_invite_timer_k_is_zero_over_tls() -> None:
    layer = TransactionLayer()
    req = request("REGISTER", transport="TLS")
    layer.send_request(req, TLS, 0.0)
    layer.receive_response(reply(req, 200), TLS, 0.3)
    assert kinds(layer.events()) == ["ResponseReceived", "TransactionTerminated"]
    assert len(layer) == 0 and layer.next_timer() is None


def test_send_request_fills_in_a_branch_and_refuses_bad_ones() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", branch=None)
    txn = layer.send_request(req, PEER, 0.0)
    assert txn.branch.startswith("z9hG4bK") and req.via.branch == txn.branch
    assert parse_message(layer.outbox()[0].data).via.branch == txn.branch
    with pytest.raises(TransactionError, match="already exists"):
        layer.send_request(request("OPTIONS", branch=txn.branch), PEER, 0.0)
    with pytest.raises(TransactionError, match="cookie"):
        layer.send_request(request("OPTIONS", branch="1234"), PEER, 0.0)
    with pytest.raises(TransactionError, match="send_stateless"):
        layer.send_request(request("ACK", to_tag="b1"), PEER, 0.0)


def test_stray_responses_are_dropped() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.send_request(inv, PEER, 0.0)
    layer.receive_response(reply(request(branch="z9hG4bKother"), 200), PEER, 0.1)
    layer.receive_response(reply(make_cancel(inv), 200), PEER, 0.1)  # same branch, method CANCEL
    assert layer.events() == [] and layer.stray_responses == 2


# --- server INVITE (§17.2.1, RFC 6026) ------------------------------------------------


def new_server_txn(layer: TransactionLayer, req: Request, source: Source = UDP, now: float = 0.0) -> ServerTransaction:
    layer.receive_request(req, source, now)
    [event] = layer.events()
    assert isinstance(event, RequestReceived) and event.request is req and event.source == source
    return event.transaction


def test_server_invite_sends_100_trying_after_200_ms() -> None:
    layer = TransactionLayer()
    inv = request(extra="Timestamp: 54\r\n")
    txn = new_server_txn(layer, inv)
    assert txn.state == "proceeding" and txn.role == "server INVITE" and txn.request is inv
    assert layer.outbox() == [] and layer.next_timer() == 0.2
    layer.handle_timers(0.2)
    [trying] = layer.outbox()
    resp = parse_message(trying.data)
    assert isinstance(resp, Response) and resp.status == 100 and resp.to.tag is None
    assert resp.headers.get("Timestamp") == "54" and trying.destination == UDP
    # a retransmitted INVITE gets the last provisional again
    layer.receive_request(inv, UDP, 0.5)
    assert layer.outbox()[0].data == trying.data and layer.events() == []


def test_server_invite_100_trying_is_skipped_when_the_tu_answers_first() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = new_server_txn(layer, inv)
    layer.send_response(txn, make_response(inv, 180, to_tag="b1"), 0.05)
    assert wire(layer.outbox()) == ["SIP/2.0 180 Ringing"]
    assert run(layer, 10.0) == []
    immediate = TransactionLayer(Timers(trying_delay=0))
    new_server_txn(immediate, inv)
    assert wire(immediate.outbox()) == ["SIP/2.0 100 Trying"]
    never = TransactionLayer(Timers(trying_delay=None))
    new_server_txn(never, inv)
    assert never.outbox() == [] and never.next_timer() is None


def test_server_invite_non2xx_timer_g_to_t2_then_timer_h() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = new_server_txn(layer, inv)
    layer.send_response(txn, make_response(inv, 486, to_tag="b1"), 1.0)
    assert txn.state == "completed" and txn.request is None  # released: only the bytes stay
    assert wire(layer.outbox()) == ["SIP/2.0 486 Busy Here"]
    layer.receive_request(inv, UDP, 1.2)  # retransmitted INVITE: the 486 again
    assert wire(layer.outbox()) == ["SIP/2.0 486 Busy Here"] and layer.events() == []
    sent = run(layer, 32.9)
    assert times(sent) == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    layer.handle_timers(33.0)  # Timer H = 64*T1: the ACK never came
    assert layer.events() == [TransactionTimeout(txn, "H", 33.0), TransactionTerminated(txn, 33.0)]
    assert len(layer) == 0


def test_server_invite_ack_absorbed_then_timer_i() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = new_server_txn(layer, inv)
    resp = make_response(inv, 404, to_tag="b1")
    layer.send_response(txn, resp, 0.1)
    layer.outbox()
    ack = make_ack_for_non2xx(inv, resp)
    layer.receive_request(ack, UDP, 0.3)
    assert txn.state == "confirmed" and layer.events() == []
    layer.receive_request(ack, UDP, 0.4)  # ACK retransmission: absorbed
    layer.receive_request(inv, UDP, 0.4)  # late INVITE copy: absorbed too
    assert layer.events() == [] and layer.outbox() == []
    assert run(layer, 100.0) == []  # G and H were stopped
    assert layer.events() == [TransactionTerminated(txn, 5.3)]  # Timer I = T4


def test_server_invite_over_tcp_no_timer_g_and_i_is_zero() -> None:
    layer = TransactionLayer()
    inv = request(transport="TCP", sent_by="client.invalid")
    txn = new_server_txn(layer, inv, TCP)
    resp = make_response(inv, 480, to_tag="b1")
    layer.send_response(txn, resp, 0.1)
    [out] = layer.outbox()
    assert out.destination == TCP and out.destination.flow == "conn-7"
    assert layer.next_timer() == pytest.approx(32.1)  # only H
    layer.receive_request(make_ack_for_non2xx(inv, resp), TCP, 0.2)
    assert layer.events() == [TransactionTerminated(txn, 0.2)] and len(layer) == 0


def test_server_invite_accepted_state_rfc6026() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = new_server_txn(layer, inv)
    ok = make_response(inv, 200, to_tag="b1")
    layer.send_response(txn, ok, 0.1)
    assert txn.state == "accepted"
    assert wire(layer.outbox()) == ["SIP/2.0 200 OK"]
    layer.receive_request(inv, UDP, 0.6)  # INVITE retransmission: absorbed, nothing resent
    assert layer.outbox() == [] and layer.events() == []
    layer.send_response(txn, ok, 0.6)  # the TU's own 2xx retransmission (§13.3.1.4) goes out
    assert wire(layer.outbox()) == ["SIP/2.0 200 OK"]
    ack_same_branch = request("ACK", to_tag="b1")
    layer.receive_request(ack_same_branch, UDP, 0.7)
    ack_new_branch = request("ACK", "z9hG4bKack2", to_tag="b1")
    layer.receive_request(ack_new_branch, UDP, 0.7)
    assert layer.events() == [
        AckReceived(ack_same_branch, UDP, 0.7, txn), AckReceived(ack_new_branch, UDP, 0.7, None),
    ]
    with pytest.raises(TransactionError, match="'send_3xx-6xx' is not allowed in state 'accepted'"):
        layer.send_response(txn, make_response(inv, 500, to_tag="b1"), 0.8)
    assert layer.next_timer() == pytest.approx(32.1)  # Timer L = 64*T1
    layer.handle_timers(32.1)
    assert layer.events() == [TransactionTerminated(txn, 32.1)]  # no timeout: L is normal


def test_server_invite_ignores_ack_before_any_final_response() -> None:
    layer = TransactionLayer()
    txn = new_server_txn(layer, request())
    layer.receive_request(request("ACK", to_tag="b1"), UDP, 0.1)
    assert txn.state == "proceeding" and layer.events() == []


# --- server non-INVITE (§17.2.2) -------------------------------------------------------


def test_server_non_invite_absorbs_and_resends_then_timer_j() -> None:
    layer = TransactionLayer()
    req = request("REGISTER")
    txn = new_server_txn(layer, req)
    assert txn.state == "trying" and txn.role == "server non-INVITE"
    layer.receive_request(req, UDP, 0.5)  # Trying: absorbed, nothing to resend yet
    assert layer.outbox() == [] and layer.events() == []
    layer.send_response(txn, make_response(req, 100), 0.6)
    assert txn.state == "proceeding"
    layer.receive_request(req, UDP, 1.0)
    assert wire(layer.outbox()) == ["SIP/2.0 100 Trying", "SIP/2.0 100 Trying"]
    layer.send_response(txn, make_response(req, 200, to_tag="r1"), 1.1)
    assert txn.state == "completed" and txn.request is None
    layer.receive_request(req, UDP, 2.0)
    assert wire(layer.outbox()) == ["SIP/2.0 200 OK", "SIP/2.0 200 OK"] and layer.events() == []
    with pytest.raises(TransactionError) as info:
        layer.send_response(txn, make_response(req, 200, to_tag="r1"), 2.1)
    err = info.value
    assert isinstance(err, SIPError) and err.status == 500
    assert (err.role, err.state, err.event) == ("server non-INVITE", "completed", "send_2xx")
    assert "server non-INVITE transaction z9hG4bKaaa1" in str(err)
    assert layer.next_timer() == pytest.approx(33.1)  # Timer J = 64*T1 over UDP
    layer.handle_timers(33.1)
    assert layer.events() == [TransactionTerminated(txn, 33.1)] and len(layer) == 0
    with pytest.raises(TransactionError, match="in state 'terminated'"):
        layer.send_response(txn, make_response(req, 200), 34.0)
    layer.receive_request(req, UDP, 40.0)  # after J a copy is a new request again
    assert kinds(layer.events()) == ["RequestReceived"]


def test_server_non_invite_keeps_nothing_over_reliable_transports() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", transport="TLS")
    txn = new_server_txn(layer, req, TLS)
    layer.send_response(txn, make_response(req, 200, to_tag="o1"), 0.0)
    assert layer.outbox()[0].destination == TLS
    assert layer.events() == [TransactionTerminated(txn, 0.0)]
    assert len(layer) == 0 and layer.next_timer() is None


def test_send_response_refuses_a_client_transaction() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, PEER, 0.0)
    with pytest.raises(TransactionError, match="not a server transaction"):
        layer.send_response(txn, make_response(inv, 200), 0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("via_params", "sent_by", "expected"),
    [
        ("", "192.0.2.10:5070", ("192.0.2.10", 5070)),  # sent-by port (§18.2.2)
        (";rport", "192.0.2.10:5070", ("192.0.2.10", 5060)),  # RFC 3581: the source port
        ("", "client.invalid", ("192.0.2.10", 5060)),  # received = source host, default port
        (";rport=5060;received=192.0.2.10", "10.0.0.2:5099", ("192.0.2.10", 5060)),
    ],
)
def test_udp_responses_go_where_the_via_says(via_params: str, sent_by: str, expected: tuple[str, int]) -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", sent_by=sent_by, via_params=via_params)
    txn = new_server_txn(layer, req)
    layer.send_response(txn, make_response(req, 200, to_tag="x"), 0.0)
    [out] = layer.outbox()
    assert (out.destination.host, out.destination.port) == expected


# --- CANCEL, RFC 2543 matching, helpers ----------------------------------------------------


def test_cancel_matching_and_make_cancel() -> None:
    layer = TransactionLayer()
    inv = request(extra="Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n")
    invite_txn = new_server_txn(layer, inv)
    cancel = make_cancel(inv)
    assert cancel.method == "CANCEL" and cancel.uri == inv.uri and cancel.cseq == (1, "CANCEL")
    assert [v.branch for v in cancel.vias] == ["z9hG4bKaaa1"]
    assert cancel.headers.get_all("Route") == inv.headers.get_all("Route")
    assert cancel.to == inv.to and cancel.from_ == inv.from_ and cancel.call_id == inv.call_id
    cancel = parse_message(bytes(cancel))
    assert isinstance(cancel, Request)
    cancel_txn = new_server_txn(layer, cancel)  # a transaction of its own
    assert cancel_txn is not invite_txn and cancel_txn.role == "server non-INVITE"
    assert layer.find_invite_for_cancel(cancel) is invite_txn
    assert layer.find_invite_for_cancel(request("CANCEL", "z9hG4bKnone")) is None
    assert layer.find_invite_for_cancel(request("CANCEL", sent_by="192.0.2.99:5060")) is None
    with pytest.raises(TransactionError):
        make_cancel(request("ACK", to_tag="b1"))


def test_client_cancel_is_its_own_transaction_on_the_invite_branch() -> None:
    layer = TransactionLayer()
    inv = request()
    invite_txn = layer.send_request(inv, PEER, 0.0)
    cancel_txn = layer.send_request(make_cancel(inv), PEER, 0.1)
    assert cancel_txn.branch == invite_txn.branch and cancel_txn.method == "CANCEL"
    layer.receive_response(reply(make_cancel(inv), 200), PEER, 0.2)
    layer.receive_response(reply(inv, 487), PEER, 0.3)
    got = [(e.transaction, e.response.status) for e in layer.events() if isinstance(e, ResponseReceived)]
    assert got == [(cancel_txn, 200), (invite_txn, 487)]


def test_rfc2543_requests_without_magic_cookie_still_match() -> None:
    layer = TransactionLayer()
    inv = request(branch=None)
    txn = new_server_txn(layer, inv)
    assert txn.branch == ""
    layer.receive_request(request(branch=None), UDP, 0.1)  # retransmission
    assert layer.events() == []
    resp = make_response(inv, 486, to_tag="b1")
    layer.send_response(txn, resp, 0.2)
    layer.receive_request(make_ack_for_non2xx(inv, resp), UDP, 0.3)
    assert txn.state == "confirmed"
    assert layer.find_invite_for_cancel(make_cancel(inv)) is txn


def test_make_ack_for_non2xx_refuses_2xx() -> None:
    inv = request()
    with pytest.raises(TransactionError, match="non-2xx"):
        make_ack_for_non2xx(inv, make_response(inv, 200, to_tag="x"))


def test_branch_and_tag_generators() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000 and all(b.startswith("z9hG4bK") and len(b) >= 23 for b in branches)
    tags = {generate_tag() for _ in range(1000)}
    assert len(tags) == 1000 and all(t.isalnum() and len(t) == 16 for t in tags)


def test_stateless_send_goes_straight_to_the_outbox() -> None:
    layer = TransactionLayer()
    ack = request("ACK", "z9hG4bKack9", to_tag="b1")
    layer.send_stateless(ack, PEER)
    assert layer.outbox() == [Transmit(bytes(ack), PEER)] and len(layer) == 0


# --- scale --------------------------------------------------------------------------------


def _options(i: int) -> Request:
    return Request("OPTIONS", SipURI("sip", "pbx", "example.com"), Headers([
        ("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{i}"), ("Max-Forwards", "70"),
        ("From", "<sip:mon@example.com>;tag=m"), ("To", "<sip:pbx@example.com>"),
        ("Call-ID", f"c{i}"), ("CSeq", "1 OPTIONS"),
    ]))


def test_100k_server_transactions_are_created_and_expired_quickly() -> None:
    n = 100_000
    requests = [_options(i) for i in range(n)]
    ok = make_response(requests[0], 200, to_tag="t")  # the bytes do not matter here
    layer = TransactionLayer()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # measure the layer, not the collector walking 100k fresh requests
    try:
        start = time.perf_counter()
        for i, req in enumerate(requests):
            layer.receive_request(req, UDP, i * 1e-5)
        events = layer.events()
        for event in events:
            assert isinstance(event, RequestReceived)
            layer.send_response(event.transaction, ok, 1.0)
        assert len(layer) == n and len(layer.outbox()) == n
        txn = events[-1].transaction
        assert txn.request is None and not hasattr(txn, "__dict__")  # compact: bytes + Timer J
        del events, txn, requests
        layer.handle_timers(33.0)
        elapsed = time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    assert len(layer) == 0 and layer.next_timer() is None and len(layer._heap) == 0
    assert sum(isinstance(e, TransactionTerminated) for e in layer.events()) == n
    assert elapsed < 6.0, f"{n} transactions took {elapsed:.1f} s"


@pytest.mark.parametrize(("source", "limit"), [(UDP, 1000), (TCP, 100)])
def test_finished_server_transactions_are_compact(source: Source, limit: int) -> None:
    """Bytes still held per non-INVITE server transaction once its final response is out.

    UDP: the response bytes, the key, the slotted object and one heap entry (~780 B).
    TCP: nothing but the transaction dict's peak-sized table (~50 B a slot).
    """
    n = 3000
    ok = make_response(_options(0), 200, to_tag="t")  # 185 bytes on the wire
    layer = TransactionLayer()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            layer.receive_request(_options(i), source, 0.0)
        for event in layer.events():
            layer.send_response(event.transaction, ok, 1.0)
        layer.outbox()
        layer.events()
        del event
        gc.collect()
        per_txn = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert per_txn < limit, f"{per_txn:.0f} bytes per finished transaction over {source.transport}"
    assert len(layer) == (n if source is UDP else 0)


def test_terminated_transactions_keep_no_message_alive() -> None:
    """Stale timer entries outlive a transaction for up to 64*T1; they must not pin its messages."""
    layer = TransactionLayer()
    source = Source("udp", "192.0.2.1", 5060)
    raw = (b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKgone\r\n"
           b"From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: gone\r\nCSeq: 1 OPTIONS\r\n"
           b"Content-Length: 0\r\n\r\n")
    request = parse_message(raw)
    layer.receive_request(request, source, 0.0)
    [event] = layer.events()
    txn = event.transaction
    layer.send_response(txn, make_response(request, 200), 0.0)
    assert txn._data is not None  # kept for Timer J: a retransmitted request gets it again
    layer.handle_timers(40.0)  # Timer J fired: terminated
    assert txn.state == "terminated"
    assert txn.request is None and txn._data is None


def test_absorbing_states_keep_no_parsed_message() -> None:
    """Once a transaction only absorbs retransmissions it holds bytes at most, never a message:
    over UDP it lives 32 s, and a parsed message is dozens of objects for the garbage collector."""
    layer = TransactionLayer()
    inv = layer.send_request(request(branch="z9hG4bKacc"), PEER, 0.0)
    layer.receive_response(reply(inv.request, 200), PEER, 0.1)  # type: ignore[arg-type]
    bye = layer.send_request(request("BYE", "z9hG4bKbye", cseq=2, to_tag="b1"), PEER, 0.2)
    layer.receive_response(reply(bye.request, 200), PEER, 0.3)  # type: ignore[arg-type]
    busy = layer.send_request(request(branch="z9hG4bKbusy"), PEER, 0.4)
    layer.receive_response(reply(busy.request, 486), PEER, 0.5)  # type: ignore[arg-type]
    assert (inv.state, bye.state, busy.state) == ("accepted", "completed", "completed")
    assert inv.request is None and inv._data is None  # Timer M: the TU ACKs 2xx itself
    assert bye.request is None and bye._data is None  # Timer K: responses are only absorbed
    assert busy.request is None and busy._data is not None  # Timer D: the ACK's bytes are resent
    layer.outbox()
    layer.receive_response(reply(request(branch="z9hG4bKbusy"), 486), PEER, 0.6)
    assert wire(layer.outbox()) == ["ACK sip:bob@example.com SIP/2.0"]

    server = request(branch="z9hG4bKsrv")
    layer.receive_request(server, UDP, 1.0)
    txn = [e for e in layer.events() if isinstance(e, RequestReceived)][0].transaction
    layer.send_response(txn, make_response(server, 200, to_tag="t"), 1.1)
    assert txn.state == "accepted" and txn.request is None and txn._data is None  # Timer L


def test_timer_entries_hold_no_transaction() -> None:
    """Timer entries name their transaction by key: plain values the garbage collector stops
    tracking, and a stale entry (Timer B after the answer, up to 64*T1) pins no ended transaction."""
    layer = TransactionLayer()
    txn = layer.send_request(request("OPTIONS", "z9hG4bKopt"), PEER, 0.0)
    layer.receive_response(reply(txn.request, 200), PEER, 0.1)  # type: ignore[arg-type]
    layer.handle_timers(5.1)  # Timer K: terminated; Timer F's stale entry is still queued (32 s)
    assert txn.state == "terminated" and len(layer) == 0 and layer._heap
    layer.outbox()
    layer.events()
    gc.collect()
    gc.collect()  # a tuple is untracked once its items are: the key first, then the entry
    assert not any(gc.is_tracked(entry) for entry in layer._heap)
    assert gc.get_referrers(txn) == []  # nothing but this test holds it
    assert layer.next_timer() is None and not layer._heap  # stale entries are skipped


def test_stale_timer_never_fires_on_a_new_transaction_with_the_same_key() -> None:
    """A request retransmitted after its transaction ended makes a new one under the same key:
    the old transaction's queued timers must not drive it."""
    layer = TransactionLayer()
    req = request("OPTIONS", "z9hG4bKsame")
    layer.receive_request(req, UDP, 0.0)
    first = layer.events()[0].transaction  # type: ignore[union-attr]
    layer.send_response(first, make_response(req, 200, to_tag="t"), 0.0)
    layer.transport_error(first, 0.1)  # terminated at once; its Timer J entry stays queued for 32 s
    assert first.state == "terminated"
    layer.events()
    layer.receive_request(request("OPTIONS", "z9hG4bKsame"), UDP, 1.0)
    second = layer.events()[0].transaction  # type: ignore[union-attr]
    assert second is not first and second.state == "trying"
    layer.handle_timers(40.0)  # the old Timer J falls due: the new transaction is untouched
    assert second.state == "trying" and layer.events() == []


def test_transactions_of_one_udp_peer_share_its_source() -> None:
    """Each datagram comes with its own Source; 32 s of transactions must not keep one each."""
    layer = TransactionLayer()
    for i in range(3):
        layer.receive_request(request("OPTIONS", f"z9hG4bKshare{i}"), Source("udp", "192.0.2.10", 5060), 0.0)
    layer.receive_request(request("OPTIONS", "z9hG4bKtcp1"), TCP, 0.0)
    layer.receive_request(request("OPTIONS", "z9hG4bKtcp2"), Source("tcp", "192.0.2.10", 40312, flow="conn-7"), 0.0)
    server = [e.transaction for e in layer.events()]  # type: ignore[union-attr]
    assert server[0].destination == UDP and server[0].destination is server[1].destination is server[2].destination
    assert server[3].destination is TCP and server[4].destination is not TCP  # a flow's Source is its own
    first = layer.send_request(request("OPTIONS", "z9hG4bKout1"), Source("udp", "198.51.100.7", 5060), 0.0)
    second = layer.send_request(request("OPTIONS", "z9hG4bKout2"), Source("udp", "198.51.100.7", 5060), 0.0)
    assert first.destination is second.destination and first.destination == PEER


# --- tags, branches and random bytes (drawn from a shared pool) ------------------------------


def test_tags_and_branches_are_fresh_random_hex_across_pool_refills() -> None:
    tags = [generate_tag() for _ in range(3000)]  # 24 KB: several 4 KiB pool refills
    branches = [new_branch() for _ in range(3000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", t) for t in tags)
    assert all(re.fullmatch(r"z9hG4bK[0-9a-f]{24}", b) for b in branches)
    assert len(set(tags)) == len(tags) and len(set(branches)) == len(branches)
    assert len(random_bytes(10000)) == 10000  # more than the pool holds at once
    assert random_bytes(16) != random_bytes(16)


def test_a_forked_child_does_not_repeat_its_parents_tags() -> None:
    generate_tag()  # the pool holds unused bytes the child would inherit
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next tag and leave at once
        try:
            os.write(write_end, generate_tag().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        ours = generate_tag()
        theirs = os.read(read_end, 64).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{16}", theirs) and theirs != ours
