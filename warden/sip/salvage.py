"""Best-effort error responses for messages that did not parse.

RFC 3261 §21.4.1: a malformed request gets a 400 when we can still address
one. We pull Via, From, To, Call-ID and CSeq out of the raw header lines
without trusting anything else. A response needs all five (§8.2.6), so when
one is missing or the message is not a request there is no answer: the
caller logs and drops it.
"""

from __future__ import annotations

import re

from .headers import COMPACT_FORMS

__all__ = ["error_response"]

_NEEDED = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
_LONG = {short: long.lower() for short, long in COMPACT_FORMS.items()}
_REASON_SAFE = re.compile(r"[^\x20-\x7e]")


def error_response(data: bytes, status: int, reason: str) -> bytes | None:
    """A response with ``status`` to the request in ``data``, or None."""
    head = data[:8192].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    if not lines or lines[0].startswith("SIP/") or " SIP/2.0" not in lines[0]:
        return None
    found: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        key = _LONG.get(key, key)
        if key in _NEEDED and len(value) < 1024:
            found.setdefault(key, []).append(value.strip())
    if any(key not in found for key in _NEEDED):
        return None
    phrase = _REASON_SAFE.sub("", reason)[:80] or "Bad Request"
    out = [f"SIP/2.0 {status} {phrase}"]
    for key, name in _NEEDED.items():
        for value in found.get(key, []):
            out.append(f"{name}: {_REASON_SAFE.sub('', value)}")
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode()
