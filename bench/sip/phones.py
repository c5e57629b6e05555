"""TLS phones for the SIP benchmark: one worker process of many asyncio phones.

Each phone opens its own TLS connection to the PBX (verifying the server's
certificate against the CA, as a provisioned phone would), REGISTERs as its
own extension with digest authentication (REGISTER, 401, REGISTER with
credentials, 200; ``warden.sip.auth`` computes the answer), keeps the
connection open and re-REGISTERs over it on a schedule, with one Call-ID
and a growing CSeq as RFC 3261 section 10.2.4 asks of a phone.

The benchmark (bench/sip/run.py) starts one or two of these workers and
drives them with one JSON object per line on stdin; each command gets one
JSON line back on stdout:

    {"op": "init", "host": ..., "port": ..., "cafile": ..., "extensions": [...]}
    {"op": "connect", "count": N, "concurrency": C}   open N more phones
    {"op": "hold", "seconds": W, "period": P}          re-REGISTER every P s for W s
    {"op": "churn", "rate": R, "seconds": D, "sources": [...]}
        R new phones a second for D s, each: connect (full TLS handshake),
        REGISTER, close; from the given loopback source addresses in turn
    {"op": "status"}                                   phones open / closed by the server
    {"op": "close"}                                    close every connection and exit

Everything is bounded: each transaction has a timeout, each command a
count, and the worker exits when its stdin closes (the benchmark died).

Why several source addresses for churn: every closed connection leaves a
TIME_WAIT socket for 60 s, and from one address the kernel's search for a
free local port slows down as they pile up (at 1,000 connections a second
there are more of them than ephemeral ports), so a one-address client
measures the kernel, not the PBX. Each 127.x.y.z is its own port space.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import ssl
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from warden.sip.auth import answer_challenge, format_credentials, parse_challenge

TRANSACTION_TIMEOUT = 15.0
HANDSHAKE_TIMEOUT = 15.0


def password(number: str) -> str:
    return f"secret{number}"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _latency(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * _percentile(values, 0.50), 1),
            "p99_ms": round(1000 * _percentile(values, 0.99), 1),
            "max_ms": round(1000 * max(values, default=0.0), 1)}


class RegisterFailed(Exception):
    pass


class Phone:
    """One extension on one TLS connection."""

    __slots__ = ("call_id", "contact", "cseq", "ext", "reader", "ruri", "tag", "via_host", "via_port", "writer")

    def __init__(self, ext: str, host: str, port: int, contact: str | None = None) -> None:
        self.ext = ext
        self.call_id = f"{secrets.token_hex(8)}@bench"
        self.tag = secrets.token_hex(4)
        self.cseq = 0
        self.ruri = f"sip:{host}:{port}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.via_host, self.via_port = "127.0.0.1", 0
        self.contact = contact
        """A fixed Contact host:port (a phone that reconnects keeps its Contact); None: the socket's."""

    async def connect(self, host: str, port: int, ctx: ssl.SSLContext, source: str | None = None) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            host, port, ssl=ctx, server_hostname="localhost", ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            local_addr=(source, 0) if source else None)
        self.via_host, self.via_port = self.writer.get_extra_info("sockname")[:2]

    def _request(self, authorization: str | None) -> bytes:
        self.cseq += 1
        lines = [
            f"REGISTER {self.ruri} SIP/2.0",
            f"Via: SIP/2.0/TLS {self.via_host}:{self.via_port};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.ext}@127.0.0.1>;tag={self.tag}",
            f"To: <sip:{self.ext}@127.0.0.1>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:{self.ext}@{self.contact or f'{self.via_host}:{self.via_port}'};transport=tls>",
            "Expires: 3600",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines += ["User-Agent: warden-bench-phone", "Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode()

    async def _response(self) -> tuple[int, dict[str, str]]:
        assert self.reader is not None
        while True:
            head = await self.reader.readuntil(b"\r\n\r\n")
            head = head.lstrip(b"\r\n")  # a CRLF keep-alive pong before the message
            if head:
                break
        lines = head.decode("utf-8", "replace").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("SIP/2.0"):
            raise RegisterFailed(f"not a response: {lines[0][:60]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), value.strip())
        length = int(headers.get("content-length", headers.get("l", "0")) or 0)
        if length:
            await self.reader.readexactly(length)
        return int(status_line[1]), headers

    async def register(self) -> None:
        """One REGISTER transaction pair (challenge and answer); RegisterFailed if it does not end in 200."""
        assert self.writer is not None
        self.writer.write(self._request(None))
        status, headers = await asyncio.wait_for(self._response(), TRANSACTION_TIMEOUT)
        if status == 401:
            challenge = parse_challenge(headers["www-authenticate"])
            creds = answer_challenge(challenge, username=self.ext, method="REGISTER", uri=self.ruri,
                                     password=password(self.ext))
            self.writer.write(self._request(format_credentials(creds)))
            status, headers = await asyncio.wait_for(self._response(), TRANSACTION_TIMEOUT)
        if status != 200:
            raise RegisterFailed(f"{status}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    @property
    def open(self) -> bool:
        return self.reader is not None and not self.reader.at_eof() and self.writer is not None \
            and not self.writer.is_closing()


class Worker:
    def __init__(self) -> None:
        self.phones: list[Phone] = []
        self.pending: list[str] = []
        self.host = "127.0.0.1"
        self.port = 0
        self.ctx: ssl.SSLContext | None = None

    def init(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.host, self.port = msg["host"], int(msg["port"])
        ctx = ssl.create_default_context(cafile=msg["cafile"])
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx = ctx
        self.pending = list(msg["extensions"])
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return {"pid": os.getpid(), "extensions": len(self.pending), "nofile": hard}

    async def connect(self, msg: dict[str, Any]) -> dict[str, Any]:
        count = min(int(msg["count"]), len(self.pending))
        batch, self.pending = self.pending[:count], self.pending[count:]
        sem = asyncio.Semaphore(int(msg.get("concurrency", 50)))
        errors: dict[str, int] = {}
        handshakes: list[float] = []
        registers: list[float] = []
        versions: dict[str, int] = {}
        assert self.ctx is not None
        ctx = self.ctx

        async def one(ext: str) -> None:
            async with sem:
                phone = Phone(ext, self.host, self.port)
                t0 = time.monotonic()
                try:
                    await phone.connect(self.host, self.port, ctx)
                except Exception as exc:  # noqa: BLE001 -- counted and reported, never raised
                    key = f"connect: {type(exc).__name__}"
                    errors[key] = errors.get(key, 0) + 1
                    phone.close()
                    return
                t1 = time.monotonic()
                handshakes.append(t1 - t0)
                assert phone.writer is not None
                v = phone.writer.get_extra_info("ssl_object").version()
                versions[v] = versions.get(v, 0) + 1
                try:
                    await phone.register()
                except Exception as exc:  # noqa: BLE001 -- counted and reported
                    key = f"register: {type(exc).__name__} {exc}"[:80]
                    errors[key] = errors.get(key, 0) + 1
                    phone.close()
                    return
                registers.append(time.monotonic() - t1)
                self.phones.append(phone)

        t0 = time.monotonic()
        await asyncio.gather(*(one(ext) for ext in batch))
        return {"requested": count, "connected": len(handshakes), "registered": len(registers),
                "failed": count - len(registers), "errors": errors, "seconds": round(time.monotonic() - t0, 3),
                "handshake": _latency(handshakes), "register": _latency(registers), "tls_versions": versions,
                "open": len(self.phones)}

    async def hold(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Every phone re-REGISTERs every ``period`` s for ``seconds`` s, spread evenly over the period."""
        seconds, period = float(msg["seconds"]), float(msg["period"])
        start = time.monotonic()
        end = start + seconds
        n = len(self.phones)
        ok = 0
        errors: dict[str, int] = {}
        latencies: list[float] = []

        async def cycle(i: int, phone: Phone) -> None:
            nonlocal ok
            at = start + period * (i + 0.5) / max(1, n)
            while at < end:
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                t0 = time.monotonic()
                try:
                    await phone.register()
                except Exception as exc:  # noqa: BLE001 -- counted and reported
                    key = f"{type(exc).__name__} {exc}"[:80]
                    errors[key] = errors.get(key, 0) + 1
                else:
                    ok += 1
                    latencies.append(time.monotonic() - t0)
                at += period

        await asyncio.gather(*(cycle(i, p) for i, p in enumerate(self.phones)))
        failed = sum(errors.values())
        return {"reregistered": ok, "failed": failed, "errors": errors, "latency": _latency(latencies),
                "seconds": round(time.monotonic() - start, 3), "open": sum(p.open for p in self.phones)}

    async def churn(self, msg: dict[str, Any]) -> dict[str, Any]:
        """``rate`` new connections a second for ``seconds``: connect, REGISTER, close each.

        Starts are paced on a fixed schedule; at most ``max_inflight`` are
        open at once (a start that has to wait counts as late: the PBX did not keep up).
        """
        rate, seconds = float(msg["rate"]), float(msg["seconds"])
        sources: list[str] = msg.get("sources") or [self.host]
        count = int(rate * seconds)
        exts = self.pending or [p.ext for p in self.phones]
        assert self.ctx is not None and exts
        ctx = self.ctx
        inflight = asyncio.Semaphore(int(msg.get("max_inflight", 2000)))
        errors: dict[str, int] = {}
        latencies: list[float] = []
        late = 0
        start = time.monotonic()

        async def one(i: int) -> None:
            nonlocal late
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            if inflight.locked():
                late += 1
            async with inflight:
                # one fixed Contact per extension: each REGISTER refreshes its one binding
                phone = Phone(exts[i % len(exts)], self.host, self.port, contact="127.0.0.1:5100")
                t0 = time.monotonic()
                try:
                    await phone.connect(self.host, self.port, ctx, sources[i % len(sources)])
                    await phone.register()
                except Exception as exc:  # noqa: BLE001 -- counted and reported
                    key = f"{type(exc).__name__} {exc}"[:80]
                    errors[key] = errors.get(key, 0) + 1
                else:
                    latencies.append(time.monotonic() - t0)
                finally:
                    phone.close()

        await asyncio.gather(*(one(i) for i in range(count)))
        return {"requested": count, "registered": len(latencies), "failed": count - len(latencies),
                "errors": errors, "late_starts": late, "seconds": round(time.monotonic() - start, 3),
                "latency": _latency(latencies)}

    def status(self) -> dict[str, Any]:
        still = sum(p.open for p in self.phones)
        return {"phones": len(self.phones), "open": still, "closed_by_server": len(self.phones) - still}

    async def close(self) -> dict[str, Any]:
        for p in self.phones:
            p.close()
        await asyncio.sleep(0.5)
        return {"closed": len(self.phones)}


async def main() -> None:
    loop = asyncio.get_running_loop()
    worker = Worker()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            await worker.close()
            return
        msg = json.loads(line)
        op = msg["op"]
        try:
            if op == "init":
                reply: dict[str, Any] = worker.init(msg)
            elif op == "connect":
                reply = await worker.connect(msg)
            elif op == "hold":
                reply = await worker.hold(msg)
            elif op == "churn":
                reply = await worker.churn(msg)
            elif op == "status":
                reply = worker.status()
            elif op == "close":
                reply = await worker.close()
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # noqa: BLE001 -- reported to the benchmark, which decides
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if op == "close":
            return


if __name__ == "__main__":
    asyncio.run(main())
