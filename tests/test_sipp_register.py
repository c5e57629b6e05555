"""REGISTER with digest auth from a real UA (sipp) over UDP, TCP and TLS.

TLS runs sipp over TCP through stunnel (Debian's sipp has no TLS), so the PBX
sees a real, verified TLS 1.3 connection. What the PBX stored is read back
through its control socket, as the admin API will.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import PKI
from sipp_helpers import (
    RunningPBX,
    Sipp,
    SippResult,
    SipMessage,
    Stunnel,
    auth_keyword,
    password,
    start_pbx,
)

EXTENSIONS = ["1001", "1002"] + [str(n) for n in range(3000, 3100)]
SIPP_TRANSPORT = {"udp": "u1", "tcp": "t1", "tls": "t1"}


@pytest.fixture()
def pbx(pbx_factory: Any, pki: PKI, tmp_path: Path) -> RunningPBX:
    return start_pbx(pbx_factory, pki, tmp_path / "pbx", EXTENSIONS)


def target_for(transport: str, pbx: RunningPBX, request: pytest.FixtureRequest) -> tuple[str, int]:
    if transport == "tls":
        tunnel: Stunnel = request.getfixturevalue("stunnel")
        return tunnel.address
    return pbx.target(transport)


def register(sipp: Callable[..., Sipp], name: str, target: tuple[str, int], transport: str, user: str,
             secret: str, *, scenario: str = "register.xml", **kw: Any) -> SippResult:
    return sipp(name, scenario, target=target, transport=SIPP_TRANSPORT[transport],
                rows=[(user, auth_keyword(user, secret))], timeout=15, **kw).run()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_register_with_digest_gets_200_and_binding(transport: str, pbx: RunningPBX, sipp: Callable[..., Sipp],
                                                    request: pytest.FixtureRequest) -> None:
    target = target_for(transport, pbx, request)
    result = register(sipp, "reg", target, transport, "1001", password("1001"))
    assert result.returncode == 0 and result.successful == 1 and result.failed == 0, result.explain()
    statuses = [m.status for m in result.received()]
    assert statuses == [401, 200], statuses
    challenge = result.received(401)[0]
    assert any(v.startswith("Digest ") and "algorithm=MD5" in v for v in challenge.all("WWW-Authenticate"))

    contact = result.sent("REGISTER")[-1].header("Contact")
    assert contact is not None
    bindings = pbx.registrations("1001")
    assert len(bindings) == 1, bindings
    b = bindings[0]
    assert f"<{b['contact']}>" == contact
    assert b["transport"] == transport
    assert b["user_agent"] == "sipp"
    if transport == "udp":
        assert (b["source_host"], b["source_port"]) == ("127.0.0.1", result_port(contact))
        assert b["flow_token"] == ""
    else:
        assert str(b["flow_token"]).startswith(f"{transport}:")
    if transport == "tls":
        assert b["tls_version"] in ("TLSv1.3", "TLSv1.2"), b
        assert b["tls_cipher"], b
        assert b["local_port"] == pbx.ports.tls
    else:
        assert b["tls_version"] is None and b["tls_cipher"] is None


def result_port(contact: str) -> int:
    match = re.search(r":(\d+)[;>]", contact)
    assert match, contact
    return int(match.group(1))


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_wrong_password_never_gets_200(transport: str, pbx: RunningPBX, sipp: Callable[..., Sipp],
                                       request: pytest.FixtureRequest) -> None:
    target = target_for(transport, pbx, request)
    # register_fail.xml expects 401 after the credentials; a 200 there fails the call
    result = register(sipp, "bad", target, transport, "1001", "not-the-password", scenario="register_fail.xml",
                      calls=3, rate=10)
    assert result.returncode == 0 and result.successful == 3 and result.failed == 0, result.explain()
    statuses = [m.status for m in result.received()]
    assert statuses == [401] * 6, statuses
    assert all(m.status != 200 for m in result.messages)
    assert pbx.registrations("1001") == []
    assert "REGISTER auth failed for '1001'" in pbx.output()


def _comparable(resp: SipMessage) -> tuple[object, ...]:
    """A response with what must differ between two requests taken out: the nonce
    (fresh each time), and the values copied from each request (Via, From, To,
    Call-ID, CSeq), of which only the shape is kept (a To tag or not)."""
    copied = {"via", "from", "to", "call-id", "cseq"}
    headers = []
    for name, value in resp.headers:
        key = name.lower()
        if key in copied:
            value = "tag" if key == "to" and ";tag=" in value else ""
        elif key == "www-authenticate":
            value = re.sub(r'nonce="[^"]*"', 'nonce=""', value)
            value = re.sub(r'opaque="[^"]*"', 'opaque=""', value)
        headers.append((key, value))
    return resp.start_line, headers, resp.body


@pytest.mark.parametrize("transport", ["udp", "tls"])
def test_unknown_user_gets_the_same_answer_as_a_wrong_password(
        transport: str, pbx: RunningPBX, sipp: Callable[..., Sipp], request: pytest.FixtureRequest) -> None:
    target = target_for(transport, pbx, request)
    wrong = register(sipp, "wrong", target, transport, "1001", "not-the-password", scenario="register_fail.xml")
    unknown = register(sipp, "unknown", target, transport, "7777", "not-the-password", scenario="register_fail.xml")
    for result in (wrong, unknown):
        assert result.returncode == 0 and result.successful == 1, result.explain()
    answers_wrong, answers_unknown = wrong.received(), unknown.received()
    assert [m.status for m in answers_wrong] == [m.status for m in answers_unknown] == [401, 401]
    for a, b in zip(answers_wrong, answers_unknown):
        assert _comparable(a) == _comparable(b), f"wrong password:\n{a}\n\nunknown user:\n{b}"
    # and the nonces really are fresh ones, not a replayed constant
    nonces = [re.search(r'nonce="([^"]+)"', m.all("WWW-Authenticate")[0]) for m in answers_wrong + answers_unknown]
    assert all(nonces) and len({n.group(1) for n in nonces if n}) == 4
    assert pbx.registrations("7777") == [] and pbx.registrations("1001") == []


def test_thousand_tls_registrations_over_one_connection(pbx: RunningPBX, stunnel: Stunnel,
                                                         sipp: Callable[..., Sipp]) -> None:
    users = [str(n) for n in range(3000, 3100)]
    run = sipp("load", "register.xml", target=stunnel.address, transport="t1",
               rows=[(u, auth_keyword(u, password(u))) for u in users],
               calls=1000, rate=200, limit=200, timeout=60, trace_msg=False)
    result = run.run()
    assert result.returncode == 0, result.explain()
    assert (result.successful, result.failed) == (1000, 0), result.explain()
    assert result.stats.get("FailedUnexpectedMessage(C)") == "0"

    bindings = [b for b in pbx.registrations() if b["aor"] in set(users)]
    assert sorted(str(b["aor"]) for b in bindings) == sorted(users)
    assert {b["transport"] for b in bindings} == {"tls"}
    assert all(b["tls_version"] and b["tls_cipher"] for b in bindings)
    # one persistent connection: every binding was refreshed over the same flow
    assert len({b["flow_token"] for b in bindings}) == 1, {b["flow_token"] for b in bindings}
    stats = pbx.control("sip.stats")
    assert isinstance(stats, dict)
    assert stats["requests_received"].get("REGISTER", 0) >= 2000
