"""Calls through the B2BUA between real UAs: sipp uac -> PBX -> sipp uas.

The caller's leg is TLS (sipp over TCP through stunnel, verified against the
test CA); the callee is a sipp uas registered as an extension over UDP: a
first sipp run REGISTERs from the port the uas then listens on, so the
binding's source address is the uas. CDRs are read from the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI
from sipp_helpers import (
    RunningPBX,
    Sipp,
    SipMessage,
    SippResult,
    Stunnel,
    auth_keyword,
    password,
    start_pbx,
    wait_until,
)

from warden.store import CDR

CALLER, CALLEE, OTHER_CALLER, OFFLINE = "1001", "1002", "1003", "1004"


@pytest.fixture()
def pbx(pbx_factory: Any, pki: PKI, tmp_path: Path) -> RunningPBX:
    return start_pbx(pbx_factory, pki, tmp_path / "pbx", [CALLER, CALLEE, OTHER_CALLER, OFFLINE])


def start_callee(sipp: Callable[..., Sipp], pbx: RunningPBX, scenario: str, *, calls: int,
                 timeout: float = 60) -> Sipp:
    """Register ``CALLEE`` over UDP from a port, then run the uas ``scenario`` on that port."""
    reg = sipp("callee-reg", "register.xml", target=pbx.target("udp"), transport="u1",
               rows=[(CALLEE, auth_keyword(CALLEE, password(CALLEE)))], timeout=10)
    result = reg.run()
    assert result.returncode == 0 and result.successful == 1, result.explain()
    [binding] = pbx.registrations(CALLEE)
    assert binding["source_port"] == reg.local_port
    return sipp("uas", scenario, target=None, transport="u1", local_port=reg.local_port, calls=calls,
                timeout=timeout).start()


def caller_rows(caller: str, callee: str) -> list[tuple[str, str, str]]:
    return [(caller, callee, auth_keyword(caller, password(caller)))]


def final_invite_statuses(result: SippResult) -> list[int]:
    return [m.status for m in result.received() if m.status and m.status >= 200 and m.cseq_method == "INVITE"]


def _to_tag(message: SipMessage) -> str:
    to = message.header("To") or ""
    return to.split(";tag=", 1)[1].split(";")[0] if ";tag=" in to else ""


def _cdrs(pbx: RunningPBX, since: float, limit: int = 100) -> list[CDR]:
    store = pbx.store()
    try:
        return store.query_cdrs(since=since, limit=limit)
    finally:
        store.close()


def test_200_calls_tls_caller_to_udp_callee(pbx: RunningPBX, stunnel: Stunnel, sipp: Callable[..., Sipp]) -> None:
    calls = 200
    uas = start_callee(sipp, pbx, "uas.xml", calls=calls, timeout=90)
    since = time.time() - 1
    # one call at a time: a callee in an answered call is busy (486) by design
    uac = sipp("uac", "uac.xml", target=stunnel.address, transport="t1", rows=caller_rows(CALLER, CALLEE),
               calls=calls, rate=100, limit=1, pause_ms=20, timeout=80, trace_msg=False)
    caller = uac.run()
    callee = uas.wait()
    assert caller.returncode == 0, caller.explain()
    assert (caller.successful, caller.failed) == (calls, 0), caller.explain()
    assert (callee.successful, callee.failed) == (calls, 0), callee.explain()

    assert wait_until(lambda: pbx.calls() == [], 5), pbx.calls()
    cdrs = [c for c in _cdrs(pbx, since, limit=1000) if c.caller == CALLER]
    assert len(cdrs) == calls
    assert {c.disposition for c in cdrs} == {"answered"}, {c.disposition for c in cdrs}
    for c in cdrs:
        assert c.callee == CALLEE and c.answered_at is not None and c.ended_at is not None
        assert c.duration > 0 and c.hangup_cause == "caller hung up"
        assert c.caller_transport == "tls" and c.caller_tls_version in ("TLSv1.3", "TLSv1.2") and c.caller_tls_cipher
        assert c.callee_transport == "udp"


def test_cancel_before_answer(pbx: RunningPBX, stunnel: Stunnel, sipp: Callable[..., Sipp]) -> None:
    uas = start_callee(sipp, pbx, "uas_cancel.xml", calls=1, timeout=20)
    since = time.time() - 1
    caller = sipp("uac", "uac_cancel.xml", target=stunnel.address, transport="t1",
                  rows=caller_rows(CALLER, CALLEE), calls=1, timeout=20).run()
    callee = uas.wait()
    assert caller.returncode == 0 and caller.successful == 1, caller.explain()
    assert callee.returncode == 0 and callee.successful == 1, callee.explain()

    # the caller: 200 for its CANCEL, 487 for its INVITE, and it ACKed the 487
    finals = [m for m in caller.received() if m.status and m.status >= 200]
    assert [(m.status, m.cseq_method) for m in finals] == [(401, "INVITE"), (200, "CANCEL"), (487, "INVITE")]
    assert caller.sent("ACK")[-1].header("CSeq") == "2 ACK"
    # §9.2: the CANCEL's 200 has the To tag of the INVITE's responses
    ringing = caller.received(180)[0]
    assert _to_tag(finals[1]) == _to_tag(finals[2]) == _to_tag(ringing) != ""
    # the callee: rang, then saw the CANCEL for the INVITE it had, and its 487 was ACKed
    invite, cancel, ack = (callee.received(method=m)[0] for m in ("INVITE", "CANCEL", "ACK"))
    assert cancel.header("Call-ID") == invite.header("Call-ID")
    invite_seq = (invite.header("CSeq") or "").split()[0]
    assert cancel.header("CSeq") == f"{invite_seq} CANCEL"
    assert ack.header("CSeq") == f"{invite_seq} ACK"

    assert wait_until(lambda: pbx.calls() == [], 5), pbx.calls()
    [cdr] = _cdrs(pbx, since)
    assert cdr.disposition == "cancelled" and cdr.answered_at is None and cdr.duration == 0
    assert cdr.caller_transport == "tls"


def test_cancel_reuses_the_invite_branch(pbx: RunningPBX, stunnel: Stunnel, sipp: Callable[..., Sipp]) -> None:
    """RFC 3261 §9.1: the CANCEL the callee gets has one Via, the INVITE's (same branch),
    so a callee matches it to the INVITE transaction (§9.2) and stops ringing."""
    uas = start_callee(sipp, pbx, "uas_cancel.xml", calls=1, timeout=20)
    caller = sipp("uac", "uac_cancel.xml", target=stunnel.address, transport="t1",
                  rows=caller_rows(CALLER, CALLEE), calls=1, timeout=20).run()
    callee = uas.wait()
    assert caller.returncode == 0 and callee.returncode == 0, callee.explain()
    invite, cancel = callee.received(method="INVITE")[0], callee.received(method="CANCEL")[0]
    assert cancel.all("Via") == invite.all("Via")[:1] == invite.all("Via"), f"{invite}\n\n{cancel}"


def test_caller_connection_lost_while_ringing_cancels_the_callee(
        pbx: RunningPBX, stunnel: Stunnel, sipp: Callable[..., Sipp]) -> None:
    """A TLS phone that vanishes while its call rings (battery, Wi-Fi): the callee
    must stop ringing (CANCEL) and must not be left holding a call no one hears."""
    uas = start_callee(sipp, pbx, "uas_cancel.xml", calls=1, timeout=20)
    since = time.time() - 1
    uac = sipp("uac", "uac.xml", target=stunnel.address, transport="t1", rows=caller_rows(CALLER, CALLEE),
               calls=1, timeout=20).start()
    assert wait_until(lambda: [c["state"] for c in pbx.calls()] == ["ringing"], 10), pbx.calls()
    uac.kill()  # its TCP socket closes, so stunnel closes the TLS connection
    callee = uas.wait()
    assert callee.returncode == 0 and callee.successful == 1, callee.explain()
    assert len(callee.received(method="CANCEL")) == 1

    assert wait_until(lambda: pbx.calls() == [], 5), pbx.calls()
    [cdr] = _cdrs(pbx, since)
    assert (cdr.disposition, cdr.hangup_cause) == ("cancelled", "caller connection lost")
    assert "Traceback" not in pbx.output()


def test_unknown_callee_404_and_offline_480(pbx: RunningPBX, stunnel: Stunnel, sipp: Callable[..., Sipp]) -> None:
    since = time.time() - 1
    for name, callee, status, disposition in (("unknown", "9999", 404, "not_found"),
                                              ("offline", OFFLINE, 480, "offline")):
        result = sipp(name, "uac_reject.xml", target=stunnel.address, transport="t1",
                      rows=caller_rows(CALLER, callee), timeout=15).run()
        assert result.returncode == 0 and result.successful == 1, result.explain()
        assert final_invite_statuses(result) == [401, status], [str(m) for m in result.received()]
        # §8.2.6.2: every final response, the challenge too, carries a To tag
        assert _to_tag(result.received(401)[0]) and _to_tag(result.received(status)[0])
        assert result.sent("ACK")[-1].header("CSeq") == "2 ACK"
        [cdr] = [c for c in _cdrs(pbx, since) if c.callee == callee]
        assert cdr.disposition == disposition and cdr.answered_at is None, cdr
    assert pbx.calls() == []


def test_busy_callee_486(pbx: RunningPBX, stunnel: Stunnel, sipp: Callable[..., Sipp]) -> None:
    since = time.time() - 1
    uas = start_callee(sipp, pbx, "uas.xml", calls=1, timeout=30)
    first = sipp("first", "uac.xml", target=stunnel.address, transport="t1", rows=caller_rows(CALLER, CALLEE),
                 calls=1, pause_ms=3000, timeout=20).start()
    assert wait_until(lambda: [c["state"] for c in pbx.calls()] == ["answered"], 10), pbx.calls()

    second = sipp("second", "uac_reject.xml", target=stunnel.address, transport="t1",
                  rows=caller_rows(OTHER_CALLER, CALLEE), timeout=15).run()
    assert second.returncode == 0 and second.successful == 1, second.explain()
    assert final_invite_statuses(second) == [401, 486]

    answered, callee = first.wait(), uas.wait()
    assert answered.returncode == 0 and answered.successful == 1, answered.explain()
    assert callee.successful == 1 and len(callee.received(method="INVITE")) == 1, "the busy call reached the callee"
    by_caller = {c.caller: c for c in _cdrs(pbx, since)}
    assert by_caller[OTHER_CALLER].disposition == "busy"
    assert by_caller[CALLER].disposition == "answered"
