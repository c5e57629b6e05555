"""Reading request bodies and query parameters, failing with the field named.

Bodies are read here, not through ``request.get_json``, so the rules are the
same on Flask 2.2 and 3.x: a body on POST/PUT/PATCH must be
``application/json`` (or ``+json``) else 415; more than
``MAX_CONTENT_LENGTH`` bytes gives 413 whether or not a Content-Length was
sent (chunked bodies are counted as they are read); malformed JSON, a
non-object, an unknown field or a bad value gives 400 naming the field.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from typing import Any

from flask import current_app, request

from .problems import APIProblem

__all__ = [
    "MAX_FILTER",
    "json_body",
    "no_unknown_fields",
    "parse_int",
    "parse_time",
    "require_text",
]

#: Longest text filter in a query (caller, callee, aor), in characters.
MAX_FILTER = 128

_JSON_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.ASCII)
# RFC 3339 date-time, case-insensitive T/Z, any fraction, leap second allowed.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_EPOCH = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_body() -> dict[str, Any]:
    """The request body as a JSON object (see the module docstring for errors)."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or (64 * 1024)
    length = request.content_length
    if length is not None and length > limit:
        raise APIProblem(413, f"the request body is {length} bytes, over the {limit}-byte limit")
    mimetype = (request.mimetype or "").lower()
    if not _JSON_TYPE.fullmatch(mimetype):
        shown = request.content_type or "none"
        raise APIProblem(415, f"the request body must be application/json (Content-Type was {shown})",
                         headers={"Accept-Post": "application/json", "Accept-Patch": "application/json"})
    data = _read_at_most(limit)
    if not data.strip():
        raise APIProblem.invalid("body", "a JSON object is required")
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise APIProblem.invalid("body", "the body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise APIProblem.invalid("body", f"not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(value, dict):
        raise APIProblem.invalid("body", f"must be a JSON object, not {type(value).__name__}")
    return value


def _read_at_most(limit: int) -> bytes:
    """The whole body, or 413 as soon as it is over ``limit`` (reads may come back short)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        block = request.stream.read(min(65536, limit + 1 - total))
        if not block:
            return b"".join(chunks)
        total += len(block)
        if total > limit:
            raise APIProblem(413, f"the request body is over the {limit}-byte limit")
        chunks.append(block)


def no_unknown_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """400 naming the first field not in ``allowed``."""
    for name in body:
        if name not in allowed:
            raise APIProblem.invalid(str(name), f"unknown field; allowed: {', '.join(allowed)}")


def require_text(name: str, value: Any, *, max_length: int | None = None) -> str:
    """``value`` if it is a string that UTF-8 can carry, else 400 naming ``name``."""
    if not isinstance(value, str):
        raise APIProblem.invalid(name, f"must be a string, not {_json_type(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise APIProblem.invalid(name, "must be valid Unicode text (no lone surrogates)") from None
    if max_length is not None and len(value) > max_length:
        raise APIProblem.invalid(name, f"must be at most {max_length} characters")
    return value


def has_control_characters(value: str) -> bool:
    """True if ``value`` holds an ASCII control character."""
    return _CONTROL.search(value) is not None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_int(name: str, raw: str | None, *, default: int, lo: int, hi: int) -> int:
    """A query integer in ``[lo, hi]``; ``default`` when absent; else 400."""
    if raw is None:
        return default
    text = raw.strip()
    if not re.fullmatch(r"[+-]?\d{1,20}", text, re.ASCII):
        raise APIProblem.invalid(name, f"must be a whole number from {lo} to {hi}")
    value = int(text)
    if not lo <= value <= hi:
        raise APIProblem.invalid(name, f"must be from {lo} to {hi}, got {value}")
    return value


def parse_time(name: str, raw: str | None) -> float | None:
    """A query time as epoch seconds: ISO 8601 / RFC 3339, or epoch seconds.

    A date-time without an offset is taken as UTC; a date alone as its
    midnight UTC. Absent gives None; anything else 400.
    """
    if raw is None:
        return None
    text = raw.strip()
    if _EPOCH.fullmatch(text):
        value = float(text)
        if not math.isfinite(value):
            raise APIProblem.invalid(name, "must be a finite number of epoch seconds")
        return value
    m = _RFC3339.fullmatch(text)
    try:
        if m:
            year, month, day, hour, minute, second = (int(x) for x in m.groups()[:6])
            fraction = float(m.group(7)) if m.group(7) else 0.0
            zone = m.group(8).upper()
            if zone == "Z":
                tz = datetime.timezone.utc
            else:
                sign = 1 if zone[0] == "+" else -1
                offset = datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
                tz = datetime.timezone(sign * offset)
            leap = second == 60  # RFC 3339 allows a leap second; count it as the next second
            moment = datetime.datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=tz)
            return moment.timestamp() + (1 if leap else 0) + fraction
        moment = datetime.datetime.fromisoformat(text.upper() if "t" in text or "z" in text else text)
    except (ValueError, OverflowError):
        raise APIProblem.invalid(name, "must be an ISO 8601 date-time (e.g. 2024-05-01T12:00:00Z) "
                                       "or epoch seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    try:
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise APIProblem.invalid(name, "is out of range") from None
