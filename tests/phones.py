"""Real SIP phones for tests: baresip processes, and a minimal TLS phone.

``BaresipPhone`` runs Debian's baresip headless: audio from a WAV file
(aufile), what it hears recorded by sndfile, commands over the cons module.
Without a ``sip_certificate`` baresip cannot accept TLS connections, which is
exactly the hardware phone behind NAT: its calls must arrive over the
connection it registered on.

``TLSPhone`` is a phone in a few lines of Python (REGISTER with digest over one
TLS socket, then read what arrives on it), used to prove where requests go.
"""

from __future__ import annotations

import math
import re
import secrets
import socket
import ssl
import struct
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from warden.sip.auth import answer_challenge, format_credentials, parse_challenge
from warden.sip.framing import MessageReceived, StreamFramer
from warden.sip.message import Request, Response, make_response, parse_message
from warden.sip.transaction import make_ack_for_non2xx

__all__ = ["BaresipPhone", "TLSCall", "TLSPhone", "UDPPhone", "await_bye", "place_call", "rtp_range", "tone_power", "write_tone"]


def rtp_range(size: int = 100) -> tuple[int, int]:
    """A random even-aligned RTP port range for one phone (tests may run side by side)."""
    import random

    base = random.randrange(12000, 19800, 2)  # in no other range the tests use
    return base, base + size - 1


def write_tone(path: Path, freq: float, seconds: float = 10.0, rate: int = 8000) -> Path:
    """A mono 16-bit sine WAV (what a phone's microphone will 'say')."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(int(rate * seconds))
        ))
    return path


def tone_power(samples: list[int], freq: float, rate: int = 8000) -> float:
    """Goertzel power of ``freq`` in ``samples``, normalised by length."""
    k = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - k * s1 * s2) / max(1, len(samples)) ** 2


def read_wav(path: Path) -> list[int]:
    with wave.open(str(path), "rb") as w:
        data = w.readframes(w.getnframes())
        width, channels = w.getsampwidth(), w.getnchannels()
    assert width == 2
    samples = list(struct.unpack(f"<{len(data) // 2}h", data))
    return samples[::channels]


class BaresipPhone:
    """One headless baresip registered over TLS to the PBX."""

    def __init__(self, workdir: Path, user: str, password: str, *, pbx_port: int, ca: Path, sip_port: int,
                 tone: float, rtp_ports: tuple[int, int]) -> None:
        self.dir = workdir
        self.user = user
        workdir.mkdir(parents=True, exist_ok=True)
        self.cons_port = sip_port + 5
        self.wav = write_tone(workdir / "tone.wav", tone)
        (workdir / "config").write_text(f"""
poll_method		epoll
sip_listen		127.0.0.1:{sip_port}
sip_cafile		{ca}
net_interface		127.0.0.1
audio_player		alsa,null
audio_source		aufile,{self.wav}
audio_alert		alsa,null
module_path		/usr/lib/baresip/modules
module			cons.so
module			g711.so
module			aufile.so
module			alsa.so
module			sndfile.so
module_app		account.so
module_app		menu.so
cons_listen		127.0.0.1:{self.cons_port}
snd_path		{workdir}
rtp_ports		{rtp_ports[0]}-{rtp_ports[1]}
""")
        (workdir / "accounts").write_text(
            f"<sip:{user}@127.0.0.1:{pbx_port};transport=tls>;auth_pass={password};answermode=auto;regint=600\n"
        )
        self.log = workdir / "out.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(["baresip", "-f", str(self.dir)], cwd=self.dir, stdout=self._out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, pattern: str, timeout: float = 10.0) -> str:
        """Wait until baresip's output matches ``pattern``; return the match."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output())
            if m:
                return m.group(0)
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"baresip {self.user}: no {pattern!r} within {timeout}s:\n{self.output()[-3000:]}")

    def command(self, text: str) -> None:
        """Send a menu command (``/dial 1002``, ``/hangup``) to the cons module."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(text.encode() + b"\n", ("127.0.0.1", self.cons_port))

    def recordings(self, kind: str = "dec") -> list[Path]:
        """sndfile's recordings: ``dec`` is what the phone heard."""
        return sorted(self.dir.glob(f"dump-*-{kind}.wav"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_out", None):
            self._out.close()


@dataclass
class TLSCall:
    """The caller's side of a dialog set up by :meth:`TLSPhone.call`."""

    to: str
    call_id: str
    from_tag: str
    to_tag: str
    remote_target: str
    cseq: int


class TLSPhone:
    """A phone that only ever has one TLS connection: the one it registers on."""

    def __init__(self, address: tuple[str, int], ca: Path, user: str, password: str, *,
                 cert: tuple[Path, Path] | None = None, user_agent: str = "warden-test-phone",
                 context: ssl.SSLContext | None = None) -> None:
        """Connect and handshake; ``cert`` is a (certificate, key) pair for mutual TLS,
        ``context`` a client context of the test's own (e.g. TLS 1.2 with one cipher)."""
        self.address = address
        self.user = user
        self.password = password
        self.user_agent = user_agent
        ctx = context or ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        raw = socket.create_connection(address, timeout=5)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        self.local = self.sock.getsockname()[:2]
        self.framer = StreamFramer()
        self.call_id = secrets.token_hex(8)
        self.cseq = 0

    def _register_request(self, auth: str | None = None) -> bytes:
        self.cseq += 1
        host, port = self.address
        host = f"[{host}]" if ":" in host else host  # an IPv6 reference in a SIP URI
        local = f"[{self.local[0]}]" if ":" in self.local[0] else self.local[0]
        lines = [
            f"REGISTER sip:{host}:{port};transport=tls SIP/2.0",
            f"Via: SIP/2.0/TLS {local}:{self.local[1]};branch=z9hG4bK{secrets.token_hex(6)};rport",
            f"From: <sip:{self.user}@{host}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{self.user}@{host}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            # a private address nobody can reach: only the connection works
            f"Contact: <sip:{self.user}@192.0.2.1:5061;transport=tls>",
            "Expires: 600",
            "Max-Forwards: 70",
            f"User-Agent: {self.user_agent}",
        ]
        if auth:
            lines.append(f"Authorization: {auth}")
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def register(self, expect: int | None = 200) -> Response:
        """REGISTER with digest; the final response must have status ``expect`` (None: any)."""
        self.sock.sendall(self._register_request())
        challenge = self.receive()
        assert isinstance(challenge, Response) and challenge.status == 401, challenge
        ch = parse_challenge(challenge.headers.get_all("WWW-Authenticate")[0])
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        creds = answer_challenge(ch, username=self.user, method="REGISTER",
                                 uri=f"sip:{host}:{port};transport=tls", password=self.password)
        self.sock.sendall(self._register_request(format_credentials(creds)))
        ok = self.receive()
        assert isinstance(ok, Response), ok
        assert expect is None or ok.status == expect, (ok.status, ok.reason)
        return ok

    def _request(self, method: str, to: str, call_id: str, cseq: int, *, from_tag: str, to_tag: str | None = None,
                 auth: str | None = None, body: bytes = b"", uri: str | None = None) -> bytes:
        host, port = self.address
        lines = [
            f"{method} {uri or f'sip:{to}@{host}:{port};transport=tls'} SIP/2.0",
            f"Via: SIP/2.0/TLS {self.local[0]}:{self.local[1]};branch=z9hG4bK{secrets.token_hex(6)};rport",
            f"From: <sip:{self.user}@{host}>;tag={from_tag}",
            f"To: <sip:{to}@{host}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.user}@192.0.2.1:5061;transport=tls>",
            "Max-Forwards: 70",
        ]
        if auth:
            lines.append(f"Authorization: {auth}")
        if body:
            lines.append("Content-Type: application/sdp")
        return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    def _final(self, timeout: float = 10.0) -> Response:
        """The next final response on the connection (requests that arrive meanwhile are a test error)."""
        while True:
            msg = self.receive(timeout)
            if isinstance(msg, Response) and msg.status >= 200:
                return msg

    def call(self, to: str, rtp_port: int) -> "TLSCall":
        """INVITE ``to`` over this connection (with digest), ACK the 200; return the dialog."""
        host, port = self.address
        call_id, tag = secrets.token_hex(8), secrets.token_hex(4)
        uri = f"sip:{to}@{host}:{port};transport=tls"
        body = audio_offer("127.0.0.1", rtp_port)
        invite = self._request("INVITE", to, call_id, 1, from_tag=tag, body=body)
        self.sock.sendall(invite)
        first = self._final()
        assert first.status == 401, first.status
        request = parse_message(invite)
        assert isinstance(request, Request)
        self.send(make_ack_for_non2xx(request, first))
        ch = parse_challenge(first.headers.get_all("WWW-Authenticate")[0])
        creds = answer_challenge(ch, username=self.user, method="INVITE", uri=uri, password=self.password)
        self.sock.sendall(self._request("INVITE", to, call_id, 2, from_tag=tag, auth=format_credentials(creds),
                                        body=body))
        ok = self._final()
        assert ok.status == 200, (ok.status, ok.reason)
        call = TLSCall(to, call_id, tag, ok.to.tag or "", str(ok.contacts[0].uri), 3)
        self.sock.sendall(self._request("ACK", to, call_id, 2, from_tag=tag, to_tag=call.to_tag,
                                        uri=call.remote_target))
        return call

    def hang_up(self, call: "TLSCall") -> Response:
        """BYE in the dialog; the final response."""
        self.sock.sendall(self._request("BYE", call.to, call.call_id, call.cseq, from_tag=call.from_tag,
                                        to_tag=call.to_tag, uri=call.remote_target))
        return self._final()

    def answer(self, rtp_port: int, timeout: float = 10.0) -> Request:
        """Wait for an INVITE on the connection and answer it 200 with SDP; return the INVITE."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive(max(0.1, deadline - time.monotonic()))
            if isinstance(msg, Request) and msg.method == "INVITE":
                break
        ok = make_response(msg, 200, "OK", to_tag=secrets.token_hex(4), headers=[
            ("Contact", f"<sip:{self.user}@192.0.2.1:5061;transport=tls>"), ("Content-Type", "application/sdp")],
            body=audio_offer("127.0.0.1", rtp_port))
        self.send(ok)
        return msg

    def answer_bye(self, timeout: float = 10.0) -> Request:
        """Wait for a BYE (skipping ACKs and other in-dialog traffic), answer 200; return it."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive(max(0.1, deadline - time.monotonic()))
            if isinstance(msg, Request) and msg.method == "BYE":
                self.send(make_response(msg, 200, "OK"))
                return msg

    def receive(self, timeout: float = 5.0) -> Request | Response:
        """The next SIP message on the connection."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.framer.next_event()
            if isinstance(event, MessageReceived):
                return event.message
            if event is not None:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no SIP message")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("PBX closed the connection")
            self.framer.feed(data)

    def send(self, message: Request | Response) -> None:
        self.sock.sendall(bytes(message))

    def close(self) -> None:
        self.sock.close()



class UDPPhone:
    """A phone over UDP from one socket: REGISTER with digest, simple INVITEs."""

    def __init__(self, address: tuple[str, int], user: str, password: str, *, bind: str = "127.0.0.1") -> None:
        self.address = address
        self.user = user
        self.password = password
        self.sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind, 0))
        self.local = self.sock.getsockname()[:2]
        self.call_id = secrets.token_hex(8)
        self.cseq = 0

    def request(self, method: str, uri: str, *, to: str, auth: str | None = None, call_id: str | None = None,
                extra: tuple[str, ...] = ()) -> bytes:
        self.cseq += 1
        host, port = self.address
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.local[0]}:{self.local[1]};branch=z9hG4bK{secrets.token_hex(6)};rport",
            f"From: <sip:{self.user}@{host}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{to}@{host}>",
            f"Call-ID: {call_id or self.call_id}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{self.user}@{self.local[0]}:{self.local[1]}>",
            "Max-Forwards: 70",
            *extra,
        ]
        if auth:
            lines.append(f"Authorization: {auth}")
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def exchange(self, data: bytes, timeout: float = 3.0) -> Response:
        """Send, and return the first final response (skipping 1xx); ACK a failed INVITE."""
        self.sock.sendto(data, self.address)
        self.sock.settimeout(timeout)
        while True:
            msg = parse_message(self.sock.recvfrom(65535)[0])
            if isinstance(msg, Response) and msg.status >= 200:
                request = parse_message(data)
                if isinstance(request, Request) and request.method == "INVITE" and msg.status >= 300:
                    self.sock.sendto(bytes(make_ack_for_non2xx(request, msg)), self.address)
                return msg

    def authed(self, method: str, to: str, *, extra: tuple[str, ...] = ()) -> Response:
        """A request, its 401, and the same request with credentials."""
        host, port = self.address
        uri = f"sip:{to}@{host}:{port}" if method != "REGISTER" else f"sip:{host}:{port}"
        call_id = self.call_id if method == "REGISTER" else secrets.token_hex(8)
        first = self.exchange(self.request(method, uri, to=to, call_id=call_id, extra=extra))
        if first.status != 401:
            return first
        ch = parse_challenge(first.headers.get_all("WWW-Authenticate")[0])
        creds = answer_challenge(ch, username=self.user, method=method, uri=uri, password=self.password)
        return self.exchange(self.request(method, uri, to=to, call_id=call_id, auth=format_credentials(creds),
                                          extra=extra))

    def register(self, expires: int = 600) -> Response:
        return self.authed("REGISTER", self.user, extra=(f"Expires: {expires}",))

    def close(self) -> None:
        self.sock.close()


def audio_offer(host: str, port: int) -> bytes:
    """A plain G.711 offer, as a simple phone sends it."""
    return (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            "a=sendrecv\r\n").encode()


def place_call(phone: UDPPhone, to: str, rtp_port: int, timeout: float = 10.0) -> Response:
    """INVITE (with digest) from ``phone`` offering media on ``rtp_port``; ACK the 2xx; return it."""
    host, port = phone.address
    uri = f"sip:{to}@{host}:{port}"
    body = audio_offer("127.0.0.1", rtp_port)
    call_id = secrets.token_hex(8)
    extra = ("Content-Type: application/sdp",)

    def invite(auth: str | None) -> bytes:
        data = phone.request("INVITE", uri, to=to, call_id=call_id, auth=auth, extra=extra)
        head, _, _ = data.partition(b"Content-Length: 0\r\n\r\n")
        return head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body

    first = phone.exchange(invite(None))
    assert first.status == 401, first.status
    ch = parse_challenge(first.headers.get_all("WWW-Authenticate")[0])
    creds = answer_challenge(ch, username=phone.user, method="INVITE", uri=uri, password=phone.password)
    ok = phone.exchange(invite(format_credentials(creds)), timeout=timeout)
    assert ok.status == 200, ok.status
    contact = ok.contacts[0].uri
    ack = "\r\n".join([
        f"ACK {contact} SIP/2.0",
        f"Via: SIP/2.0/UDP {phone.local[0]}:{phone.local[1]};branch=z9hG4bK{secrets.token_hex(6)};rport",
        f"From: {ok.headers['From']}", f"To: {ok.headers['To']}", f"Call-ID: {call_id}",
        f"CSeq: {ok.cseq[0]} ACK", "Max-Forwards: 70", "Content-Length: 0", "", "",
    ]).encode()
    phone.sock.sendto(ack, phone.address)
    return ok


def await_bye(phone: UDPPhone, timeout: float) -> Request:
    """Wait for a BYE on ``phone``'s socket (answering it 200), skipping other traffic."""
    deadline = time.monotonic() + timeout
    while True:
        phone.sock.settimeout(max(0.05, deadline - time.monotonic()))
        msg = parse_message(phone.sock.recvfrom(65535)[0])
        if isinstance(msg, Request) and msg.method == "BYE":
            phone.sock.sendto(bytes(make_response(msg, 200, "OK")), phone.address)
            return msg
