"""Bad input and restarts: the PBX answers or drops garbage, keeps serving a
registered phone, and keeps bindings and CDRs across SIGTERM and kill -9."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI, client_context, free_port, loopback_config
from phones import TLSPhone, UDPPhone

from warden.sip.auth import answer_challenge, format_credentials, parse_challenge
from warden.sip.message import Request, parse_message
from warden.store import Store

GOOD = (
    "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKgood;rport\r\n"
    "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: bad-{n}\r\nCSeq: 1 OPTIONS\r\n"
    "Max-Forwards: 70\r\n"
)

CORPUS: dict[str, bytes] = {
    "truncated": GOOD.format(n=1).encode()[:60],
    "huge header": (GOOD.format(n=2) + "X-Big: " + "a" * (1 << 20) + "\r\nContent-Length: 0\r\n\r\n").encode(),
    "negative content-length": (GOOD.format(n=3) + "Content-Length: -5\r\n\r\n").encode(),
    "oversized content-length": (GOOD.format(n=4) + "Content-Length: 99999999\r\n\r\nabc").encode(),
    "binary garbage": bytes(range(256)) * 8,
    "missing call-id": GOOD.format(n=5).replace("Call-ID: bad-5\r\n", "").encode() + b"Content-Length: 0\r\n\r\n",
    "missing cseq": GOOD.format(n=6).replace("CSeq: 1 OPTIONS\r\n", "").encode() + b"Content-Length: 0\r\n\r\n",
    "missing via": GOOD.format(n=7).split("\r\n", 2)[0].encode() + b"\r\n" + GOOD.format(n=7).split("\r\n", 2)[2].encode() + b"Content-Length: 0\r\n\r\n",
    "bad uri": GOOD.format(n=8).replace("OPTIONS sip:127.0.0.1", "OPTIONS sip:[not-a-host").encode() + b"Content-Length: 0\r\n\r\n",
    "bad cseq method": GOOD.format(n=9).replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE").encode() + b"Content-Length: 0\r\n\r\n",
}


@pytest.fixture()
def pbx(pki: PKI, pbx_factory: Any, tmp_path: Path) -> Any:
    udp, tcp, tls = free_port(), free_port(), free_port()
    store = Store(tmp_path / "var" / "warden.db")
    for i in range(101):  # 2100 stays unregistered
        store.add_extension(str(2000 + i), f"secret-{2000 + i}", realm="warden")
    store.close()
    text = loopback_config(pki, tmp_path, udp, tcp, tls)
    proc = pbx_factory(text, [("127.0.0.1", tls), ("127.0.0.1", tcp)])
    proc.ports = {"udp": udp, "tcp": tcp, "tls": tls}
    proc.db = tmp_path / "var" / "warden.db"
    return proc


def test_malformed_udp_gets_400_or_is_dropped_and_phone_keeps_working(pbx: Any, pki: PKI) -> None:
    phone = TLSPhone(("127.0.0.1", pbx.ports["tls"]), pki.ca, "2000", "secret-2000")
    phone.register()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        answered = {}
        for name, data in CORPUS.items():
            s.sendto(data[:65000], ("127.0.0.1", pbx.ports["udp"]))
            try:
                reply = parse_message(s.recvfrom(65535)[0])
                answered[name] = reply.status  # type: ignore[union-attr]
            except socket.timeout:
                answered[name] = None
            assert phone.register().status == 200, f"phone stopped being served after {name}"
    # every malformed request that names where to answer gets a 4xx/5xx; none gets a 2xx
    assert all(v is None or 400 <= v < 600 for v in answered.values()), answered
    for name in ("negative content-length", "bad uri", "bad cseq method", "oversized content-length"):
        assert answered[name] is not None and 400 <= answered[name] < 500, (name, answered)
    for name in ("binary garbage", "truncated", "missing via", "missing call-id", "missing cseq"):
        assert answered[name] is None, (name, answered)  # no complete request to answer: dropped
    phone.close()
    assert "malformed SIP" in pbx.output()


def test_malformed_streams_closed_and_others_served(pbx: Any, pki: PKI) -> None:
    """On TCP and TLS each bad message gets a 4xx/5xx, or closes the connection
    (framing lost), or is dropped with the stream still in sync: an OPTIONS sent
    right after it on the same connection is answered."""
    phone = TLSPhone(("127.0.0.1", pbx.ports["tls"]), pki.ca, "2001", "secret-2001")
    phone.register()
    probe = (GOOD.format(n="probe") + "Content-Length: 0\r\n\r\n").encode()
    outcomes = {}
    for name, data in CORPUS.items():
        for transport in ("tcp", "tls"):
            raw = socket.create_connection(("127.0.0.1", pbx.ports[transport]), timeout=3)
            sock = client_context(pki.ca).wrap_socket(raw, server_hostname="localhost") if transport == "tls" else raw
            got = b""
            try:
                sock.sendall(data)
                try:
                    sock.sendall(probe)
                except OSError:
                    pass  # already closed by the PBX
                sock.settimeout(3)
                while b"\r\n\r\n" not in got:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                pass
            finally:
                sock.close()
            status = got.split(b" ", 2)[1] if got.startswith(b"SIP/2.0 ") else b"closed"
            outcomes[(name, transport)] = status.decode()
            answered_probe = status == b"200" and b"Call-ID: bad-probe" in got  # dropped, stream in sync
            assert status == b"closed" or status.startswith((b"4", b"5")) or answered_probe, (name, transport, got[:100])
        assert phone.register().status == 200, f"registered phone not served after {name}"
    phone.close()
    assert outcomes[("huge header", "tcp")] in ("closed", "413", "513", "400"), outcomes


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_restart_keeps_bindings_and_cdrs(pbx: Any, pbx_factory: Any, sig: int) -> None:
    address = ("127.0.0.1", pbx.ports["udp"])
    phones = [UDPPhone(address, str(2000 + i), f"secret-{2000 + i}") for i in range(100)]
    for phone in phones:
        assert phone.register().status == 200
    # calls to extensions that are not registered: each leaves a CDR
    for i in range(5):
        resp = phones[i].authed("INVITE", "2100" if i % 2 else "9999")
        assert resp.status in (404, 480), resp.status
    store = Store(pbx.db)
    before_bindings = {(b.aor, b.contact) for b in store.bindings(now=time.time())}
    before_cdrs = [c.to_dict() for c in store.query_cdrs(limit=100)]
    store.close()
    assert len(before_bindings) == 100 and len(before_cdrs) == 5

    pbx.stop(sig)
    pbx.start([("127.0.0.1", pbx.ports["tls"])])  # same config, same database
    store = Store(pbx.db)
    after_bindings = {(b.aor, b.contact) for b in store.bindings(now=time.time())}
    after_cdrs = [c.to_dict() for c in store.query_cdrs(limit=100)]
    store.close()
    assert after_bindings == before_bindings
    assert after_cdrs == before_cdrs
    # and the restarted PBX routes to them: a call to a registered phone reaches its socket
    caller, callee = phones[1], phones[0]
    host, port = address
    uri = f"sip:2000@{host}:{port}"
    challenge = caller.exchange(caller.request("INVITE", uri, to="2000", call_id="after-restart"))
    ch = parse_challenge(challenge.headers.get_all("WWW-Authenticate")[0])
    creds = answer_challenge(ch, username=caller.user, method="INVITE", uri=uri, password=caller.password)
    caller.sock.sendto(caller.request("INVITE", uri, to="2000", call_id="after-restart",
                                      auth=format_credentials(creds)), address)
    callee.sock.settimeout(5)
    invite = parse_message(callee.sock.recvfrom(65535)[0])
    assert isinstance(invite, Request) and invite.method == "INVITE" and invite.uri.user == "2000"
    for phone in phones:
        phone.close()
