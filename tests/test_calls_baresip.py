"""Calls between real SIP phones (baresip) over TLS through the PBX, and a
phone that never listens receiving its INVITE over its registration flow."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI, free_port, free_port_block
from phones import BaresipPhone, TLSPhone, read_wav, rtp_range, tone_power

from warden.control import ControlClient
from warden.sip.message import Request, make_response
from warden.store import Store

def pbx_config(pki: PKI, tmp: Path, tls_port: int, udp_port: int) -> str:
    return f"""
sip:
  listen: [127.0.0.1]
  udp_port: {udp_port}
  tcp_port: 0
  tls_port: {tls_port}
api: {{enabled: false, bind: 127.0.0.1, ssl: {{enabled: true, cert_file: {pki.cert}, key_file: {pki.key}}}}}
security: {{tls_cert_file: {pki.cert}, tls_key_file: {pki.key}, tls_ca_file: {pki.ca}}}
store: {{path: {tmp}/var/warden.db}}
logging: {{level: debug, file: ""}}
"""


@pytest.fixture()
def pbx(pki: PKI, pbx_factory: Any, tmp_path: Path) -> Any:
    tls_port, udp_port = free_port(), free_port()
    store = Store(tmp_path / "var" / "warden.db")
    for ext in ("1001", "1002", "1003"):
        store.add_extension(ext, f"secret-{ext}", realm="warden")
    store.close()
    proc = pbx_factory(pbx_config(pki, tmp_path, tls_port, udp_port), [("127.0.0.1", tls_port)])
    proc.tls_port = tls_port
    proc.db = tmp_path / "var" / "warden.db"
    proc.control = ControlClient(tmp_path / "var" / "warden.sock")
    return proc


@pytest.fixture()
def phones(pbx: Any, pki: PKI, tmp_path: Path) -> Any:
    started: list[BaresipPhone] = []

    def make(user: str, tone: float) -> BaresipPhone:
        phone = BaresipPhone(tmp_path / f"phone{user}", user, f"secret-{user}", pbx_port=pbx.tls_port, ca=pki.ca,
                             sip_port=free_port_block(6), tone=tone, rtp_ports=rtp_range())
        phone.start()
        started.append(phone)
        return phone

    yield make
    for phone in started:
        phone.stop()


def test_two_baresip_phones_call_over_tls(pbx: Any, phones: Any) -> None:
    alice, bob = phones("1001", 440.0), phones("1002", 1000.0)
    for phone in (alice, bob):
        phone.wait_for(r"\{0/TLS/v4\} 200 OK")
    regs = {r["aor"]: r for r in pbx.control.call("registrations.list")}
    assert regs["1001"]["transport"] == "tls" and regs["1001"]["tls_version"] == "TLSv1.3"
    assert regs["1002"]["flow_alive"] is True

    alice.command("/dial 1002")
    alice.wait_for(r"Call established", timeout=10)
    bob.wait_for(r"Call established", timeout=5)
    time.sleep(3)  # RTP flows both ways
    calls = pbx.control.call("calls.list")
    assert len(calls) == 1 and calls[0]["state"] == "answered"
    # the audio went through our relay, both ways, from the phones' real addresses
    [stream] = calls[0]["media"]
    assert 10000 <= stream["a_port"] <= 20000 and 10000 <= stream["b_port"] <= 20000
    assert stream["a_to_b"]["packets"] > 50 and stream["b_to_a"]["packets"] > 50
    assert stream["a_to_b"]["source"][0] == "127.0.0.1" and stream["a_to_b"]["dropped_foreign"] == 0
    alice.command("/hangup")
    bob.wait_for(r"terminated \(duration", timeout=10)

    # each phone heard the other's tone, not silence
    for listener, expected, own in ((bob, 440.0, 1000.0), (alice, 1000.0, 440.0)):
        [recording] = listener.recordings("dec")
        samples = read_wav(recording)[4000:]  # skip the first half second
        assert len(samples) > 8000, f"{listener.user} heard under a second of audio"
        assert tone_power(samples, expected) > 50 * tone_power(samples, own)

    deadline = time.monotonic() + 5
    while True:
        store = Store(pbx.db)
        [cdr] = store.query_cdrs(limit=5)
        store.close()
        if cdr.ended_at or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (cdr.caller, cdr.callee, cdr.disposition) == ("1001", "1002", "answered")
    assert cdr.duration is not None and 2.5 < cdr.duration < 15
    assert cdr.caller_transport == "tls" and cdr.caller_tls_version == "TLSv1.3"
    assert cdr.callee_transport == "tls" and cdr.callee_tls_version == "TLSv1.3"


def test_phone_that_never_listens_gets_invite_over_its_connection(pbx: Any, phones: Any, pki: PKI) -> None:
    callee = TLSPhone(("127.0.0.1", pbx.tls_port), pki.ca, "1003", "secret-1003")
    try:
        callee.register()
        caller = phones("1001", 440.0)
        caller.wait_for(r"\{0/TLS/v4\} 200 OK")
        caller.command("/dial 1003")
        invite = callee.receive(timeout=10)  # on the very socket it registered with
        assert isinstance(invite, Request) and invite.method == "INVITE"
        assert invite.uri.transport == "tls" and invite.uri.host == "192.0.2.1"  # its registered Contact
        assert invite.via.transport == "TLS"
        ringing = make_response(invite, 180, to_tag="callee1")
        callee.send(ringing)
        caller.wait_for(r"SIP Progress: 180 Ringing", timeout=5)
        busy = make_response(invite, 486, to_tag="callee1")
        callee.send(busy)
        ack = callee.receive()
        assert isinstance(ack, Request) and ack.method == "ACK"
        caller.wait_for(r"486 Busy Here", timeout=5)
    finally:
        callee.close()
