"""SIP dialogs (RFC 3261 §12): creation on both sides, route sets, CSeq, in-dialog requests."""

from __future__ import annotations

import pytest

from warden.errors import SIPError
from warden.sip import Request, Response, make_response, parse_message, parse_uri
from warden.sip.dialog import Dialog, DialogError, dialog_id_of_request, dialog_id_of_response

ALICE_CONTACT = parse_uri("sip:alice@192.0.2.10:5060;transport=tls")
BOB_CONTACT = "<sip:bob@198.51.100.7:5061;transport=tls>"


def parse(text: str) -> Request | Response:
    return parse_message(text.replace("\n", "\r\n").encode())


def invite(*, record_route: tuple[str, ...] = (), uri: str = "sip:bob@example.com", cseq: int = 1) -> Request:
    rr = "".join(f"Record-Route: {r}\n" for r in record_route)
    msg = parse(
        f"INVITE {uri} SIP/2.0\n"
        "Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bKinv1\n"
        "Max-Forwards: 70\n"
        'From: "Alice" <sip:alice@example.com>;tag=a1\n'
        "To: <sip:bob@example.com>\n"
        "Call-ID: d1@192.0.2.10\n"
        f"CSeq: {cseq} INVITE\n"
        f"Contact: <{ALICE_CONTACT}>\n"
        f"{rr}Content-Length: 0\n\n"
    )
    assert isinstance(msg, Request)
    return msg


def answer(req: Request, status: int, *, tag: str = "b1", record_route: tuple[str, ...] = (),
           contact: str | None = BOB_CONTACT) -> Response:
    if "Via" not in req.headers:  # a request the dialog built: the transport adds the Via
        req.headers.add("Via", "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bKdlg", first=True)
    headers = [("Record-Route", r) for r in record_route]
    if contact is not None:
        headers.append(("Contact", contact))
    msg = parse_message(bytes(make_response(req, status, to_tag=tag, headers=headers)))
    assert isinstance(msg, Response)
    return msg


RR = ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")  # as the UAS sees them: p1 nearest the UAS


def uac_dialog(status: int = 200) -> tuple[Request, Dialog]:
    req = invite()
    return req, Dialog.from_uac(req, answer(req, status, record_route=RR), tls=True, local_target=ALICE_CONTACT)


# --- UAC ---------------------------------------------------------------------------


def test_uac_dialog_from_2xx() -> None:
    req, dialog = uac_dialog()
    assert (dialog.role, dialog.state) == ("uac", "confirmed")
    assert dialog.id == ("d1@192.0.2.10", "a1", "b1")
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert str(dialog.remote_target) == "sip:bob@198.51.100.7:5061;transport=tls"
    assert (dialog.local_seq, dialog.remote_seq, dialog.invite_seq) == (1, None, 1)
    assert str(dialog.local_uri) == '"Alice" <sip:alice@example.com>' and dialog.local_uri.tag is None
    assert str(dialog.remote_uri) == "<sip:bob@example.com>"
    assert not dialog.secure  # sip: Request-URI, so not secure even over TLS (§12.1.2)


def test_uac_ack_for_2xx_repeats_the_invite_cseq_and_follows_the_route_set() -> None:
    _, dialog = uac_dialog()
    ack = dialog.create_request("ACK")
    assert ack.method == "ACK" and ack.uri == dialog.remote_target
    assert ack.cseq == (1, "ACK") and dialog.local_seq == 1
    assert ack.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert ack.to.tag == "b1" and ack.from_.tag == "a1" and ack.call_id == "d1@192.0.2.10"
    assert ack.max_forwards == 70 and "Contact" not in ack.headers and "Via" not in ack.headers


def test_uac_in_dialog_requests_count_up_and_bye_ends_the_dialog() -> None:
    _, dialog = uac_dialog()
    info = dialog.create_request("INFO", body=b"Signal=1\r\n", content_type="application/dtmf-relay")
    assert info.cseq == (2, "INFO") and info.headers["Content-Type"] == "application/dtmf-relay"
    assert "Content-Length: 10" in bytes(info).decode()
    bye = dialog.create_request("BYE")
    assert bye.cseq == (3, "BYE") and dialog.state == "terminated"
    dialog.receive_response(answer(bye, 200))  # the BYE's 200 arrives after: fine
    with pytest.raises(DialogError, match="uac dialog d1@192.0.2.10: event 'request' is not allowed in state 'term"):
        dialog.create_request("INFO")


def test_uac_reinvite_refreshes_target_and_is_acked_with_its_own_cseq() -> None:
    _, dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert reinvite.cseq == (2, "INVITE") and dialog.invite_seq == 2
    assert reinvite.contacts[0].uri == ALICE_CONTACT  # a target refresh carries our Contact
    dialog.receive_response(answer(reinvite, 200, contact="<sip:bob@203.0.113.9:5061;transport=tls>"))
    assert str(dialog.remote_target) == "sip:bob@203.0.113.9:5061;transport=tls"
    assert dialog.create_request("ACK").cseq == (2, "ACK")
    pending = dialog.create_request("INVITE")
    dialog.receive_response(answer(pending, 491, contact=None))  # glare: the dialog stays
    assert dialog.state == "confirmed" and dialog.create_request("ACK").cseq == (3, "ACK")


def test_uac_early_dialog_is_confirmed_by_2xx_with_a_recomputed_route_set() -> None:
    req = invite()
    ringing = answer(req, 180, record_route=RR, contact=None)
    dialog = Dialog.from_uac(req, ringing)
    assert dialog.state == "early" and dialog.remote_target == req.uri  # no Contact yet
    with pytest.raises(DialogError, match="event 'ack' is not allowed in state 'early'"):
        dialog.create_request("ACK")
    update = dialog.create_request("UPDATE")  # allowed in early dialogs (RFC 3311)
    assert update.cseq == (2, "UPDATE")
    dialog.receive_response(answer(req, 183, contact=BOB_CONTACT))
    assert str(dialog.remote_target).startswith("sip:bob@198.51.100.7")
    dialog.receive_response(answer(req, 200, record_route=("<sip:p3.example.com;lr>",),
                                   contact="<sip:bob@203.0.113.9>"))
    assert dialog.state == "confirmed"
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p3.example.com;lr"]
    assert str(dialog.remote_target) == "sip:bob@203.0.113.9"


def test_uac_early_dialog_ends_on_a_failure_response() -> None:
    req, dialog = uac_dialog(180)
    dialog.receive_response(answer(req, 486))
    assert dialog.state == "terminated"


def test_481_or_408_ends_the_dialog() -> None:
    for status in (481, 408):
        _, dialog = uac_dialog()
        info = dialog.create_request("INFO")
        dialog.receive_response(answer(info, status))
        assert dialog.state == "terminated"


def test_responses_of_another_dialog_are_refused() -> None:
    req, dialog = uac_dialog()
    with pytest.raises(DialogError) as info:
        dialog.receive_response(answer(req, 200, tag="fork2"))
    assert info.value.status == 481 and isinstance(info.value, SIPError)
    assert dialog_id_of_response(answer(req, 200, tag="fork2")) == ("d1@192.0.2.10", "a1", "fork2")


def test_from_uac_needs_a_to_tag_and_a_contact_on_2xx() -> None:
    req = invite()
    with pytest.raises(DialogError, match="without To tag"):
        Dialog.from_uac(req, parse_message(bytes(make_response(req, 180))))  # type: ignore[arg-type]
    with pytest.raises(DialogError, match="100"):
        Dialog.from_uac(req, answer(req, 100))
    with pytest.raises(DialogError, match="without Contact") as info:
        Dialog.from_uac(req, answer(req, 200, contact=None))
    assert info.value.status == 400


def test_secure_only_for_sips_over_tls() -> None:
    req = invite(uri="sips:bob@example.com")
    assert Dialog.from_uac(req, answer(req, 200), tls=True).secure
    assert not Dialog.from_uac(req, answer(req, 200), tls=False).secure


def test_no_route_set_sends_to_the_remote_target() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req, 200))
    bye = dialog.create_request("BYE")
    assert bye.uri == dialog.remote_target and "Route" not in bye.headers


def test_strict_router_first_in_route_set() -> None:
    req = invite()
    rr = ("<sip:loose.example.com;lr>", "<sip:strict.example.com;method=INVITE>")
    dialog = Dialog.from_uac(req, answer(req, 200, record_route=rr))
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:strict.example.com"  # §12.2.1.1: method param stripped
    assert bye.headers.get_all("Route") == [
        "<sip:loose.example.com;lr>", "<sip:bob@198.51.100.7:5061;transport=tls>",
    ]


def test_cancel_is_not_built_by_the_dialog() -> None:
    _, dialog = uac_dialog(180)
    with pytest.raises(DialogError, match="make_cancel"):
        dialog.create_request("CANCEL")


# --- UAS ---------------------------------------------------------------------------------


def uas_dialog() -> tuple[Request, Dialog]:
    req = invite(record_route=RR)
    return req, Dialog.from_uas(req, local_tag="b1", tls=True, local_target=parse_uri(BOB_CONTACT[1:-1]))


def in_dialog(method: str, cseq: int, *, contact: str | None = None, from_tag: str = "a1",
              to_tag: str = "b1") -> Request:
    msg = parse(
        f"{method} sip:bob@198.51.100.7:5061;transport=tls SIP/2.0\n"
        f"Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK{method}{cseq}\n"
        "Max-Forwards: 70\n"
        f"From: <sip:alice@example.com>;tag={from_tag}\n"
        f"To: <sip:bob@example.com>;tag={to_tag}\n"
        "Call-ID: d1@192.0.2.10\n"
        f"CSeq: {cseq} {method}\n"
        + (f"Contact: {contact}\n" if contact else "")
        + "Content-Length: 0\n\n"
    )
    assert isinstance(msg, Request)
    return msg


def test_uas_dialog_from_request() -> None:
    req, dialog = uas_dialog()
    assert (dialog.role, dialog.state, dialog.id) == ("uas", "early", ("d1@192.0.2.10", "b1", "a1"))
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert dialog.remote_target == ALICE_CONTACT
    assert (dialog.remote_seq, dialog.local_seq) == (1, None)
    assert str(dialog.remote_uri) == '"Alice" <sip:alice@example.com>'
    assert len(Dialog.from_uas(req).local_tag) == 16  # generated when not given


def test_uas_response_copies_record_route_and_confirms_on_2xx() -> None:
    req, dialog = uas_dialog()
    ringing = dialog.make_response(req, 180)
    assert ringing.to.tag == "b1" and ringing.headers.get_all("Record-Route") == list(RR)
    assert str(ringing.contacts[0].uri) == "sip:bob@198.51.100.7:5061;transport=tls"
    dialog.response_sent(ringing)
    assert dialog.state == "early"
    ok = dialog.make_response(req, 200, headers=[("Content-Type", "application/sdp")], body=b"v=0\r\n")
    dialog.response_sent(ok)
    assert dialog.state == "confirmed"
    # the UAC sees the same dialog, with the route set reversed
    uac = Dialog.from_uac(req, parse_message(bytes(ok)))  # type: ignore[arg-type]
    assert uac.id == (dialog.id[0], dialog.id[2], dialog.id[1])
    assert [r.uri for r in uac.route_set] == [r.uri for r in reversed(dialog.route_set)]


def test_uas_early_dialog_ends_when_we_refuse() -> None:
    req, dialog = uas_dialog()
    dialog.response_sent(dialog.make_response(req, 603))
    assert dialog.state == "terminated"
    assert "Record-Route" not in dialog.make_response(req, 603).headers


def test_uas_cseq_order_target_refresh_and_bye() -> None:
    req, dialog = uas_dialog()
    dialog.response_sent(dialog.make_response(req, 200))
    dialog.receive_request(in_dialog("ACK", 1))
    dialog.receive_request(in_dialog("INFO", 5))
    assert dialog.remote_seq == 5
    with pytest.raises(DialogError, match="out of order") as info:
        dialog.receive_request(in_dialog("INFO", 4))
    assert info.value.status == 500 and dialog.remote_seq == 5  # §12.2.2
    dialog.receive_request(in_dialog("INVITE", 6, contact="<sip:alice@203.0.113.50:5061;transport=tls>"))
    assert str(dialog.remote_target) == "sip:alice@203.0.113.50:5061;transport=tls"
    dialog.receive_request(in_dialog("ACK", 6))
    dialog.receive_request(in_dialog("INFO", 7, contact="<sip:elsewhere@203.0.113.51>"))
    assert str(dialog.remote_target).startswith("sip:alice@203.0.113.50")  # INFO is no target refresh
    dialog.receive_request(in_dialog("BYE", 8))
    assert dialog.state == "terminated"
    with pytest.raises(DialogError, match="uas dialog d1@192.0.2.10: event 'request' is not allowed in state") as info:
        dialog.receive_request(in_dialog("INFO", 9))
    assert (info.value.status, info.value.role, info.value.state, info.value.event) == (
        481, "uas", "terminated", "request",
    )


def test_uas_refuses_requests_of_another_dialog() -> None:
    req, dialog = uas_dialog()
    for bad in (in_dialog("INFO", 2, from_tag="zz"), in_dialog("INFO", 2, to_tag="zz")):
        with pytest.raises(DialogError) as info:
            dialog.receive_request(bad)
        assert info.value.status == 481
    assert dialog_id_of_request(in_dialog("INFO", 2)) == dialog.id
    with pytest.raises(DialogError, match="already has a To tag"):
        Dialog.from_uas(in_dialog("INVITE", 2, contact="<sip:a@192.0.2.10>"))


def test_uas_requests_start_from_a_random_cseq_and_bye_waits_for_confirmation() -> None:
    req, dialog = uas_dialog()
    with pytest.raises(DialogError, match="'bye' is not allowed in state 'early'"):
        dialog.create_request("BYE")  # §15: the callee may not BYE an early dialog
    dialog.response_sent(dialog.make_response(req, 200))
    with pytest.raises(DialogError, match="nothing to ACK"):
        dialog.create_request("ACK")
    first = dialog.create_request("INFO")
    assert 1 <= first.cseq[0] <= 2**30
    bye = dialog.create_request("BYE")
    assert bye.cseq[0] == first.cseq[0] + 1
    assert bye.uri == ALICE_CONTACT and bye.headers.get_all("Route") == list(RR)  # UAS keeps RR order
    assert bye.from_.tag == "b1" and bye.to.tag == "a1"
    assert dialog.state == "terminated"
