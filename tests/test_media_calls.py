"""Media through the PBX in real calls: media timeout ends a silent call with
its cause in the CDR; three phones in conference room 8000 hear each other."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path
from typing import Any

from helpers import PKI, free_port, free_port_block
from phones import BaresipPhone, UDPPhone, await_bye, place_call, read_wav, rtp_range, tone_power

from warden.sip.sdp import parse_sdp
from warden.store import Store


def config(pki: PKI, tmp: Path, udp: int, tls: int, media_timeout: float = 30) -> str:
    return f"""
sip: {{listen: [127.0.0.1], udp_port: {udp}, tcp_port: 0, tls_port: {tls}}}
api: {{enabled: false, bind: 127.0.0.1, ssl: {{enabled: true, cert_file: {pki.cert}, key_file: {pki.key}}}}}
security: {{tls_cert_file: {pki.cert}, tls_key_file: {pki.key}, tls_ca_file: {pki.ca}}}
media: {{rtp_port_min: 6400, rtp_port_max: 6999, media_timeout: {media_timeout}, conference_rooms: [8000]}}
store: {{path: {tmp}/var/warden.db}}
logging: {{level: debug, file: ""}}
"""


def start(pki: PKI, pbx_factory: Any, tmp_path: Path, **kw: Any) -> Any:
    udp, tls = free_port(), free_port()
    store = Store(tmp_path / "var" / "warden.db")
    for ext in ("1001", "1002", "1003", "1004"):
        store.add_extension(ext, f"secret-{ext}", realm="warden")
    store.close()
    proc = pbx_factory(config(pki, tmp_path, udp, tls, **kw), [("127.0.0.1", tls)])
    proc.udp, proc.tls, proc.db = udp, tls, tmp_path / "var" / "warden.db"
    return proc


def baresip(tmp_path: Path, pbx: Any, pki: PKI, user: str, tone: float) -> BaresipPhone:
    phone = BaresipPhone(tmp_path / f"phone{user}", user, f"secret-{user}", pbx_port=pbx.tls, ca=pki.ca,
                         sip_port=free_port_block(6), tone=tone, rtp_ports=rtp_range())
    phone.start()
    phone.wait_for(r"\{0/TLS/v4\} 200 OK")
    return phone


def test_media_timeout_ends_a_call_whose_phone_stops_sending(pki: PKI, pbx_factory: Any, tmp_path: Path) -> None:
    pbx = start(pki, pbx_factory, tmp_path, media_timeout=2)
    callee = baresip(tmp_path, pbx, pki, "1002", 440.0)
    caller = UDPPhone(("127.0.0.1", pbx.udp), "1001", "secret-1001")
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    try:
        ok = place_call(caller, "1002", rtp.getsockname()[1])
        answer = parse_sdp(ok.body)
        relay = (answer.connection_of(answer.media[0]).host, answer.media[0].port)  # type: ignore[union-attr]
        assert relay[0] == "127.0.0.1" and 6400 <= relay[1] <= 6999  # the PBX's relay, not the callee
        for seq in range(25):  # half a second of audio, then the caller goes silent
            rtp.sendto(struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 7) + b"\xff" * 160, relay)
            time.sleep(0.02)
        silent_at = time.monotonic()
        bye = await_bye(caller, timeout=8)
        waited = time.monotonic() - silent_at
        assert 1.5 < waited < 8, waited
        assert "media timeout" in bye.headers.get("Reason", "")
        callee.wait_for(r"terminated \(duration", timeout=5)
    finally:
        callee.stop()
        caller.close()
        rtp.close()
    store = Store(pbx.db)
    [cdr] = store.query_cdrs(limit=5)
    store.close()
    assert (cdr.disposition, cdr.hangup_cause) == ("answered", "media timeout")


def test_three_phones_in_room_8000_hear_the_others_not_themselves(pki: PKI, pbx_factory: Any,
                                                                  tmp_path: Path) -> None:
    pbx = start(pki, pbx_factory, tmp_path)
    tones = {"1001": 400.0, "1002": 700.0, "1003": 1100.0}
    phones = [baresip(tmp_path, pbx, pki, user, tone) for user, tone in tones.items()]
    try:
        for phone in phones:
            phone.command("/dial 8000")
        for phone in phones:
            phone.wait_for(r"Call established", timeout=10)
        time.sleep(4)
        for phone in phones:
            phone.command("/hangup")
        for phone in phones:
            phone.wait_for(r"terminated \(duration", timeout=10)
    finally:
        for phone in phones:
            phone.stop()
    for phone in phones:
        [recording] = phone.recordings("dec")
        samples = read_wav(recording)[8000:]  # after everyone has joined
        assert len(samples) > 8000, f"{phone.user} heard {len(samples)} samples"
        own = tone_power(samples, tones[phone.user])
        others = [tone_power(samples, f) for u, f in tones.items() if u != phone.user]
        assert min(others) > 20 * own, (phone.user, own, others)
    store = Store(pbx.db)
    cdrs = store.query_cdrs(callee="8000", limit=10)
    store.close()
    assert len(cdrs) == 3 and all(c.disposition == "answered" for c in cdrs)
