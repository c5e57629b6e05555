"""Structure-aware fuzzing of a running PBX over real sockets (issue #7 item 6).

A real ``warden-pbx run`` gets 2,000 mutated SIP messages: half as UDP
datagrams, half over TLS and TCP streams cut into random reads (a stream the
PBX closes on a framing error is reopened). The messages start from real
phone traffic (REGISTER with digest, INVITE with SDP, BYE, CANCEL, ACK,
OPTIONS, SUBSCRIBE, MESSAGE, responses) and are mutated per header (dropped,
doubled, emptied, flooded, replaced by garbage) and per byte. Afterwards the
process is alive, its log has no traceback (every unexpected exception in the
engine and transports is logged with one), the phone registered before the
fuzz re-registers over its kept TLS flow, and a new phone registers.

The fuzz traffic comes from 127.0.0.2 and the phones from 127.0.0.1, so that
per-source abuse limits (bans after failed digests, rate limits) hitting the
fuzzer cannot be mistaken for the PBX failing its phones.

Bounded: 2,000 messages, paced, each stream write under a timeout; about
15 s. ``WARDEN_FUZZ_SEED`` replays a run (the seed is in the failure message).
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI, free_port, loopback_config
from phones import TLSPhone, UDPPhone

from warden.sip.auth import answer_challenge, format_credentials, parse_challenge
from warden.sip.message import Response, parse_message
from warden.store import Store

FUZZ_SOURCE = "127.0.0.2"
MESSAGES = 2000


def _base_messages(host: str, port: int, transport: str, answer: str = "", invite_answer: str = "") -> list[bytes]:
    """Valid traffic a phone sends, as templates for mutation; ``answer`` and
    ``invite_answer`` are correct Authorization values of 2001 for a REGISTER and
    for an INVITE to 2002 (real nonces reach the digest check and the b2bua)."""
    branch, tag, call = f"z9hG4bK{secrets.token_hex(4)}", secrets.token_hex(4), secrets.token_hex(6)
    via = f"Via: SIP/2.0/{transport} {FUZZ_SOURCE}:5999;branch={branch};rport"
    common = [f"From: \"Fuzz\" <sip:2001@{host}>;tag={tag}", f"Call-ID: {call}@{FUZZ_SOURCE}", "Max-Forwards: 70",
              f"Contact: <sip:2001@{FUZZ_SOURCE}:5999;transport={transport.lower()}>", "User-Agent: fuzz/1"]
    sdp = (f"v=0\r\no=- 1 1 IN IP4 {FUZZ_SOURCE}\r\ns=-\r\nc=IN IP4 {FUZZ_SOURCE}\r\nt=0 0\r\n"
           "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
           "a=fmtp:101 0-15\r\na=sendrecv\r\na=rtcp:40001\r\n")
    auth = (f'Authorization: Digest username="2001", realm="warden", nonce="{secrets.token_hex(16)}", '
            f'uri="sip:{host}:{port}", response="{secrets.token_hex(16)}", algorithm=MD5, '
            'cnonce="abc", qop=auth, nc=00000001')

    def request(method: str, uri: str, to: str, extra: list[str] = (), body: str = "", cseq: int = 1) -> bytes:  # type: ignore[assignment]
        lines = [f"{method} {uri} SIP/2.0", via, *common, f"To: {to}", f"CSeq: {cseq} {method}", *extra]
        if body:
            lines.append("Content-Type: application/sdp")
        return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}").encode()

    target = f"sip:2000@{host}:{port}"
    return [
        request("REGISTER", f"sip:{host}:{port}", f"<sip:2001@{host}>", ["Expires: 600"]),
        request("REGISTER", f"sip:{host}:{port}", f"<sip:2001@{host}>", ["Expires: 600", auth], cseq=2),
        request("REGISTER", f"sip:{host}:{port}", f"<sip:2001@{host}>", ["Expires: 60", f"Authorization: {answer}"],
                cseq=3) if answer else request("OPTIONS", f"sip:{host}:{port}", f"<sip:{host}>"),
        request("INVITE", target, f"<{target}>", ["Allow: INVITE, ACK, BYE, CANCEL", "Supported: replaces, timer"], sdp),
        request("INVITE", f"sip:2002@{host}:{port}", f"<sip:2002@{host}>", [f"Authorization: {invite_answer}"], sdp,
                cseq=4) if invite_answer else request("OPTIONS", f"sip:{host}:{port}", f"<sip:{host}>"),
        request("INVITE", target, f"<{target}>", [auth.replace("Authorization", "Proxy-Authorization")], sdp, cseq=2),
        request("ACK", target, f"<{target}>;tag=x", cseq=2),
        request("BYE", target, f"<{target}>;tag=x", cseq=3),
        request("CANCEL", target, f"<{target}>"),
        request("OPTIONS", f"sip:{host}:{port}", f"<sip:{host}>", ["Accept: application/sdp"]),
        request("SUBSCRIBE", target, f"<{target}>", ["Event: presence", "Expires: 60"]),
        request("MESSAGE", target, f"<{target}>", ["Content-Type: text/plain"]),
        request("REFER", target, f"<{target}>;tag=x", [f"Refer-To: <sip:2002@{host}>"]),
        ("\r\n".join(["SIP/2.0 200 OK", via, *common, f"To: <{target}>;tag=y", "CSeq: 1 INVITE"])
         + f"\r\nContent-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode(),
        ("\r\n".join(["SIP/2.0 180 Ringing", via, *common, f"To: <{target}>;tag=y", "CSeq: 1 INVITE"])
         + "\r\nContent-Length: 0\r\n\r\n").encode(),
    ]


GARBAGE = [b"", b"\x00", b"\xff" * 5, b"%", b"<", b">", b'"', b"\\", b";", b",", b":", b"=", b"[", b"]", b"@",
           b"sip:", b"-1", b"4294967296", b"99999999999999999999", b"\r", b"\n", b" ", b"\t", b"\r\n ", b"a" * 9000,
           b"\xc3\x28", b"SIP/2.0", b";branch=", b";tag=", b";rport=", b";received=", b"<sip:@>", b"sips:[::1]:0"]


# Values that parse but are unusual, so that half the fuzz reaches the engine and core.
ODD_VALUES: dict[bytes, list[bytes]] = {
    b"Expires": [b"0", b"1", b"4294967295", b"3600", b"59"],
    b"Max-Forwards": [b"0", b"1", b"255"],
    b"CSeq": [b"0 INVITE", b"4294967295 BYE", b"2 ACK", b"1 CANCEL", b"7 REGISTER", b"1 PRACK", b"1 UPDATE"],
    b"To": [b"<sip:2000@127.0.0.1>;tag=1", b"<sips:2001@127.0.0.1>", b"<tel:+15551234>", b'"\\"" <sip:x@[::1]>',
            b"sip:2002@127.0.0.1", b"<sip:%32000@127.0.0.1;user=phone>"],
    b"From": [b"<sip:2000@127.0.0.1>;tag=1", b"<sip:anonymous@anonymous.invalid>;tag=2", b"<sip:2001@127.0.0.1>"],
    b"Contact": [b"*", b"<sip:2001@127.0.0.2:1>;expires=0", b"<sips:2001@[::1]:5061;transport=tls>;+sip.instance=\"<urn:uuid:1>\";reg-id=1",
                 b"<sip:2001@127.0.0.2:5999>;q=0.5, <sip:2001@127.0.0.2:6000>;q=1.0", b"<sip:2001@192.0.2.1;ob>"],
    b"Via": [b"SIP/2.0/UDP 127.0.0.2:5999", b"SIP/2.0/UDP 127.0.0.2;branch=z9hG4bK1;received=10.0.0.1;rport=9",
             b"SIP/2.0/TLS [::1]:5061;branch=z9hG4bKx, SIP/2.0/UDP h;branch=z9hG4bKy", b"SIP/2.0/UDP 127.0.0.2;branch=1"],
    b"Call-ID": [b"a", b"x" * 200, b"same@call"],
    b"Authorization": [b'Digest username="2001", realm="warden", nonce="", uri="sip:x", response=""',
                       b'Basic YWxhZGRpbjpvcGVuc2VzYW1l', b'Digest username="2001", realm="other", nonce="n", uri="sip:x", response="0", algorithm=SHA-512-256'],
    b"Event": [b"presence", b"message-summary", b"dialog;id=1"],
    b"Content-Type": [b"application/sdp", b"multipart/mixed;boundary=x", b"text/plain"],
}


def mutate(rng: random.Random, msg: bytes) -> bytes:
    """Half the time: unusual but valid header values; else header-aware damage and a few byte-level edits."""
    head, sep, body = msg.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if rng.random() < 0.5:
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(1, len(lines))
            name = lines[i].partition(b":")[0]
            if name in ODD_VALUES:
                lines[i] = name + b": " + rng.choice(ODD_VALUES[name])
            else:
                lines.insert(i, rng.choice(list(ODD_VALUES)) + b": " + rng.choice(rng.choice(list(ODD_VALUES.values()))))
        if rng.random() < 0.2 and body:
            body = mutate_sdp(rng, body)
            lines = [ln for ln in lines if not ln.startswith(b"Content-Length")] + [b"Content-Length: %d" % len(body)]
        return b"\r\n".join(lines) + sep + body
    for _ in range(rng.choice([1, 1, 2, 3])):
        i = rng.randrange(len(lines))
        op = rng.randrange(9)
        name, _, value = lines[i].partition(b":")
        if op == 0 and i:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2 and i:
            lines[i] = name + b":"
        elif op == 3 and i:
            lines[i] = name + b": " + rng.choice(GARBAGE) + value[: rng.randrange(len(value) + 1)] + rng.choice(GARBAGE)
        elif op == 4 and rng.random() < 0.3:
            lines[i:i] = [b"X-Flood: " + str(n).encode() for n in range(rng.choice([50, 99, 101, 300]))]
        elif op == 5 and i:
            lines[i] = name + b":" + value * rng.randint(2, 50)
        elif op == 6:
            lines.insert(i, b"Content-Length: " + rng.choice([b"0", b"-5", b"70000", b"1" * 30, b"abc", b"5, 6"]))
        elif op == 7 and i:
            lines[i] = lines[i].replace(b" ", b"", 1)
        elif op == 8:
            lines[i] = lines[i][::-1] if rng.random() < 0.3 else lines[i].lower()
    data = bytearray(b"\r\n".join(lines) + sep + body)
    for _ in range(rng.choice([0, 0, 1, 3])):
        pos = rng.randrange(len(data) + 1)
        choice = rng.randrange(3)
        if choice == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif choice == 1:
            data[pos:pos] = rng.choice(GARBAGE)
        else:
            del data[pos : pos + rng.randint(1, 40)]
    return bytes(data)


def mutate_sdp(rng: random.Random, body: bytes) -> bytes:
    lines = body.split(b"\r\n")
    i = rng.randrange(len(lines))
    lines[i] = rng.choice([b"m=audio 0 RTP/AVP 0", b"m=video 1 RTP/SAVP 96", b"c=IN IP6 ::1", b"c=IN IP4 0.0.0.0",
                           b"a=rtpmap:96", b"a=inactive", b"m=audio 70000 RTP/AVP", b"a=rtcp:0", b"o=- x y IN IP4",
                           b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + b"A" * 40, b"m=audio 4000/2 RTP/AVP 0",
                           b"m=image 4000 udptl t38", b"c=IN IP4 224.2.1.1/127", lines[i] * 3, b""])
    return b"\r\n".join(lines)


class _Stream:
    """A TLS or TCP stream from the fuzz source address, reopened when the PBX closes it."""

    def __init__(self, address: tuple[str, int], ctx: ssl.SSLContext | None) -> None:
        self.address, self.ctx = address, ctx
        self.sock: socket.socket | None = None
        self.reopened = 0

    def _open(self) -> socket.socket:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.bind((FUZZ_SOURCE, 0))
        raw.settimeout(5)
        raw.connect(self.address)
        sock = self.ctx.wrap_socket(raw, server_hostname="localhost") if self.ctx else raw
        sock.settimeout(0.5)
        self.reopened += 1
        return sock

    def send(self, rng: random.Random, data: bytes) -> None:
        for attempt in range(2):
            try:
                if self.sock is None:
                    self.sock = self._open()
                pos = 0
                while pos < len(data):  # random read boundaries for the framer
                    step = rng.choice([1, 7, 100, 1500, len(data)])
                    self.sock.sendall(data[pos : pos + step])
                    pos += step
                self._drain()
                return
            except (OSError, ssl.SSLError):
                self.close()
        # The PBX may close a fresh connection while a bad message is still being
        # written (its first bytes already broke framing); the listener itself
        # must still take a new connection and finish a handshake.
        try:
            self._open().close()
        except (OSError, ssl.SSLError) as exc:
            raise AssertionError(f"{self.address} takes no new connection: {exc}") from None

    def _drain(self) -> None:
        assert self.sock is not None
        self.sock.setblocking(False)
        try:
            while self.sock.recv(65536):
                pass
            self.close()  # EOF: the PBX closed the stream (framing error); reopen next time
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        finally:
            if self.sock is not None:
                self.sock.settimeout(0.5)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _answer(udp: socket.socket, port: int, uri: str, method: str = "REGISTER") -> str:
    """A correct Authorization for 2001 to a real challenge (the nonce is bound to the fuzz source)."""
    request = _base_messages("127.0.0.1", port, "UDP")[0]
    udp.settimeout(5)
    udp.sendto(request, ("127.0.0.1", port))
    reply = parse_message(udp.recv(65536))
    assert isinstance(reply, Response) and reply.status == 401, reply
    challenge = parse_challenge(reply.headers.get_all("WWW-Authenticate")[0])
    return format_credentials(answer_challenge(challenge, username="2001", method=method, uri=uri,
                                               password="secret-2001"))


@pytest.fixture()
def pbx(pki: PKI, pbx_factory: Any, tmp_path: Path) -> Any:
    udp, tcp, tls = free_port(), free_port(), free_port()
    store = Store(tmp_path / "var" / "warden.db")
    for ext in ("2000", "2001", "2002"):
        store.add_extension(ext, f"secret-{ext}", realm="warden")
    store.close()
    proc = pbx_factory(loopback_config(pki, tmp_path, udp, tcp, tls), [("127.0.0.1", tls), ("127.0.0.1", tcp)])
    proc.ports = {"udp": udp, "tcp": tcp, "tls": tls}
    return proc


def test_fuzzed_pbx_keeps_serving_its_phones(pbx: Any, pki: PKI) -> None:
    seed = int(os.environ.get("WARDEN_FUZZ_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    ports = pbx.ports
    phone = TLSPhone(("127.0.0.1", ports["tls"]), pki.ca, "2000", "secret-2000")
    phone.register()
    rss_before = _rss_kib(pbx.proc.pid)

    ctx = ssl.create_default_context(cafile=str(pki.ca))
    streams = {"TLS": _Stream(("127.0.0.1", ports["tls"]), ctx), "TCP": _Stream(("127.0.0.1", ports["tcp"]), None)}
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((FUZZ_SOURCE, 0))
    answers = {t: _answer(udp, ports["udp"], f"sip:127.0.0.1:{ports[t.lower()]}") for t in ("UDP", "TCP", "TLS")}
    invites = {t: _answer(udp, ports["udp"], f"sip:2002@127.0.0.1:{ports[t.lower()]}", "INVITE") for t in ("UDP", "TCP", "TLS")}
    bases = {t: _base_messages("127.0.0.1", ports[t.lower()], t, answers[t], invites[t]) for t in ("UDP", "TCP", "TLS")}
    udp.setblocking(False)
    deadline = time.monotonic() + 120
    sent = {"UDP": 0, "TCP": 0, "TLS": 0}
    try:
        for n in range(MESSAGES):
            assert time.monotonic() < deadline, f"fuzz run over its time budget (seed {seed})"
            transport = "UDP" if n % 2 == 0 else ("TLS" if n % 4 == 1 else "TCP")
            data = mutate(rng, rng.choice(bases[transport]))
            if transport == "UDP":
                try:
                    udp.sendto(data[:65000], ("127.0.0.1", ports["udp"]))
                except OSError:
                    pass
                try:
                    while udp.recv(65536):
                        pass
                except BlockingIOError:
                    pass
            else:
                if rng.random() < 0.1:
                    data = rng.choice([b"\r\n\r\n", b"\r\n"]) + data  # keep-alives between messages
                streams[transport].send(rng, data)
            sent[transport] += 1
            if n % 50 == 49:
                time.sleep(0.02)  # pacing: this is a fuzz, not a flood
            if n % 500 == 499:
                assert pbx.proc.poll() is None, f"PBX died after {n + 1} messages (seed {seed}):\n{pbx.output()[-4000:]}"
    finally:
        udp.close()
        for s in streams.values():
            s.close()

    assert pbx.proc.poll() is None, f"PBX died (seed {seed}):\n{pbx.output()[-4000:]}"
    grown = _rss_kib(pbx.proc.pid) - rss_before
    assert grown < 64 * 1024, f"PBX grew by {grown} KiB under 2,000 messages (seed {seed})"
    assert phone.register().status == 200  # over the flow it kept through the fuzz
    late = UDPPhone(("127.0.0.1", ports["udp"]), "2002", "secret-2002")
    try:
        assert late.register().status == 200
    finally:
        late.close()
    phone.close()
    log = pbx.output()
    assert "Traceback" not in log, f"unexpected exception under fuzz (seed {seed}, sent {sent}):\n" + log[log.index("Traceback") - 2000 : log.index("Traceback") + 3000]
    print(f"fuzz seed {seed}: sent {sent}, streams opened TLS {streams['TLS'].reopened} TCP {streams['TCP'].reopened}")
    assert streams["TLS"].reopened >= 1 and streams["TCP"].reopened >= 1


def _ask(sock: socket.socket, port: int, data: bytes) -> Response:
    """Send ``data``; the first final response (a 1xx is skipped)."""
    sock.sendto(data, ("127.0.0.1", port))
    sock.settimeout(3)
    while True:
        reply = parse_message(sock.recv(65536))
        if isinstance(reply, Response) and reply.status >= 200:
            return reply


def _authed(sock: socket.socket, port: int, method: str, uri: str, to: str, user: str, *, call_id: bytes,
            extra: bytes = b"", username: bytes | None = None) -> Response:
    """``method`` with a digest answer to a fresh challenge; odd bytes allowed in Call-ID, extra headers, username."""
    local = sock.getsockname()

    def request(auth: bytes, cseq: int) -> bytes:
        return (f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{secrets.token_hex(5)};rport\r\n"
                f"From: <sip:{user}@127.0.0.1>;tag={secrets.token_hex(3)}\r\nTo: <{to}>\r\n").encode() + \
               b"Call-ID: " + call_id + f"\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n".encode() + \
               f"Contact: <sip:{user}@{local[0]}:{local[1]}>\r\nExpires: 60\r\n".encode() + extra + auth + \
               b"Content-Length: 0\r\n\r\n"

    first = _ask(sock, port, request(b"", 1))
    if first.status != 401:
        return first
    challenge = parse_challenge(first.headers.get_all("WWW-Authenticate")[0])
    creds = answer_challenge(challenge, username=user, method=method, uri=uri, password=f"secret-{user}")
    value = format_credentials(creds).encode()
    if username is not None:
        value = value.replace(f'username="{user}"'.encode(), b'username="' + username + b'"')
    return _ask(sock, port, request(b"Authorization: " + value + b"\r\n", 2))


@pytest.mark.parametrize("case", ["latin1-user-agent", "call-id-bytes", "username-bytes", "callee-escape"])
def test_bytes_that_are_not_utf8_get_an_answer(pbx: Any, case: str) -> None:
    """Found by the live fuzz: header bytes that are not UTF-8 reach the core
    surrogate-escaped; where they went into SQLite the engine logged a
    traceback and the phone got no answer."""
    port = pbx.ports["udp"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        register_uri, me = f"sip:127.0.0.1:{port}", "sip:2001@127.0.0.1"
        if case == "latin1-user-agent":  # an old phone's vendor string in Latin-1
            reply = _authed(sock, port, "REGISTER", register_uri, me, "2001", call_id=b"ua-1",
                            extra=b"User-Agent: T\xe9l\xe9phone 3\r\n")
            assert reply.status == 200
        elif case == "call-id-bytes":
            reply = _authed(sock, port, "REGISTER", register_uri, me, "2001", call_id=b"c\xb8\xff-2")
            assert reply.status in (200, 400)
        elif case == "username-bytes":
            reply = _authed(sock, port, "REGISTER", register_uri, me, "2001", call_id=b"u-3", username=b"20\xb801")
            assert reply.status in (401, 403)
        else:
            reply = _authed(sock, port, "INVITE", f"sip:%B8@127.0.0.1:{port}", f"sip:%B8@127.0.0.1", "2001",
                            call_id=b"i-4")
            assert 400 <= reply.status < 500
    assert pbx.proc.poll() is None
    assert "Traceback" not in pbx.output(), pbx.output()[-3000:]
