"""Wire format of the control channel: newline-delimited JSON over a UNIX socket.

One request per line, one response per line, in order::

    {"id": 7, "op": "registrations", "args": {"aor": "1001"}}
    {"id": 7, "ok": true, "result": [...]}
    {"id": 7, "ok": false, "error": "no such extension 1001", "status": 404}

A line is at most :data:`MAX_LINE` bytes (the newline not counted). A longer
line is a framing error: the receiver answers once with ``"id": null`` and
closes the connection, since it cannot tell where the next message starts.
A line that is not a valid message (not UTF-8, not JSON, wrong fields) is
answered with status 400 and the connection stays usable. Blank lines are
ignored, so a person can talk to the socket with ``socat``.

This module is sans-I/O, like h11: bytes in, messages or errors out. The
socket code lives in :mod:`warden.control.server` and
:mod:`warden.control.client`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..errors import WardenError

__all__ = [
    "MAX_LINE",
    "MAX_RESPONSE",
    "ControlError",
    "ControlUnavailable",
    "ControlProtocolError",
    "Request",
    "Response",
    "LineBuffer",
    "encode_request",
    "decode_request",
    "encode_result",
    "encode_error",
    "decode_response",
]

MAX_LINE = 1 << 20
MAX_RESPONSE = 64 << 20
"""Responses come from the trusted PBX and may list every binding (10,000
phones are about 5 MB): only requests, which anyone allowed may send, are
held to MAX_LINE."""
"""Largest message line in bytes, without its newline (1 MiB)."""


class ControlError(WardenError):
    """A control operation failed; ``status`` says how, in HTTP terms.

    Handlers raise it to answer ``ok: false`` with their own status (404 for
    a missing object, 409 for a conflict, ...); :class:`ControlClient` raises
    it with the status and message the PBX sent.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ControlUnavailable(ControlError):
    """The PBX cannot be reached: no socket, refused, closed or too slow."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message, status)


class ControlProtocolError(ControlError):
    """Bytes on the wire are not a valid control message.

    ``request_id`` is the id of the offending request when it could be read,
    so the answer can still be matched to it; otherwise ``None``.
    """

    def __init__(self, message: str, status: int = 400, request_id: int | None = None) -> None:
        super().__init__(message, status)
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded request line."""

    id: int
    """Chosen by the client; echoed in the response."""
    op: str
    """Name of the operation, e.g. ``ping``."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the operation (a JSON object)."""


@dataclass(frozen=True, slots=True)
class Response:
    """One decoded response line."""

    id: int | None
    """The request's id; ``None`` when the server could not read one."""
    ok: bool
    """True for a result, false for an error."""
    result: Any = None
    """The operation's return value (when ``ok``)."""
    error: str | None = None
    """Message for a person (when not ``ok``)."""
    status: int | None = None
    """HTTP-like status of the error (when not ``ok``)."""

    def unwrap(self) -> Any:
        """The result, or raise :class:`ControlError` with the error's status."""
        if self.ok:
            return self.result
        raise ControlError(self.error or "unknown error", self.status or 500)


# -- encoding ----------------------------------------------------------------


def _dump(obj: dict[str, Any], what: str, status: int, request_id: int | None, limit: int = MAX_LINE) -> bytes:
    # ensure_ascii keeps lone surrogates encodable; json never emits a raw newline.
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ControlProtocolError(f"{what} is not JSON-serializable: {exc}", status, request_id) from None
    data = text.encode("ascii")
    if len(data) > limit:
        raise ControlProtocolError(
            f"{what} is {len(data)} bytes, over the {limit}-byte line limit", 413, request_id
        )
    return data + b"\n"


def encode_request(request_id: int, op: str, args: dict[str, Any] | None = None) -> bytes:
    """One request line. Raises :class:`ControlProtocolError` (400 or 413)."""
    _check_id(request_id, "request")
    if not isinstance(op, str) or not op:
        raise ControlProtocolError(f"operation name must be a non-empty string, not {op!r}", 400, request_id)
    message = {"id": request_id, "op": op, "args": {} if args is None else args}
    return _dump(message, f"request {op!r}", 400, request_id)


def encode_result(request_id: int, result: Any) -> bytes:
    """A success line. Raises :class:`ControlProtocolError` (500 or 413)."""
    _check_id(request_id, "response")
    return _dump({"id": request_id, "ok": True, "result": result}, "result", 500, request_id, MAX_RESPONSE)


def encode_error(request_id: int | None, message: str, status: int) -> bytes:
    """An error line; ``request_id`` is ``None`` when the request was unreadable."""
    if request_id is not None:
        _check_id(request_id, "response")
    if len(message) > 4096:
        message = message[:4093] + "..."
    return _dump({"id": request_id, "ok": False, "error": str(message), "status": int(status)}, "error", 500, None)


def _check_id(request_id: object, what: str) -> None:
    if type(request_id) is not int:
        raise ControlProtocolError(f"{what} id must be an integer, not {type(request_id).__name__}")


# -- decoding ----------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _load(line: bytes, what: str) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ControlProtocolError(f"{what} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ControlProtocolError(f"{what} is not JSON: {exc.msg} at column {exc.colno}") from None
    except ValueError as exc:  # NaN / Infinity
        raise ControlProtocolError(f"{what} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ControlProtocolError(f"{what} must be a JSON object, not {_json_type(obj)}")
    return obj


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def decode_request(line: bytes) -> Request:
    """Parse one request line (without its newline).

    Raises :class:`ControlProtocolError` (status 400) naming the problem;
    its ``request_id`` is set when the id itself was valid.
    """
    obj = _load(line, "request")
    if "id" not in obj:
        raise ControlProtocolError("request has no 'id'")
    request_id = obj["id"]
    if type(request_id) is not int:
        raise ControlProtocolError(f"request 'id' must be an integer, not {_json_type(request_id)}")
    op = obj.get("op")
    if not isinstance(op, str) or not op:
        if "op" not in obj:
            found = "missing"
        elif isinstance(op, str):
            found = "empty"
        else:
            kind = _json_type(op)
            found = f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
        raise ControlProtocolError(f"request 'op' must be a non-empty string ({found})", 400, request_id)
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ControlProtocolError(f"request 'args' must be an object, not {_json_type(args)}", 400, request_id)
    return Request(request_id, op, args)


def decode_response(line: bytes) -> Response:
    """Parse one response line (without its newline); errors have status 400."""
    obj = _load(line, "response")
    if "id" not in obj:
        raise ControlProtocolError("response has no 'id'")
    request_id = obj["id"]
    if request_id is not None and type(request_id) is not int:
        raise ControlProtocolError(f"response 'id' must be an integer or null, not {_json_type(request_id)}")
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise ControlProtocolError(f"response 'ok' must be true or false, not {_json_type(ok)}", 400, request_id)
    if ok:
        if "result" not in obj:
            raise ControlProtocolError("success response has no 'result'", 400, request_id)
        return Response(request_id, True, result=obj["result"])
    error = obj.get("error")
    if not isinstance(error, str):
        raise ControlProtocolError(f"error response 'error' must be a string, not {_json_type(error)}", 400, request_id)
    status = obj.get("status")
    if type(status) is not int:
        raise ControlProtocolError(f"error response 'status' must be an integer, not {_json_type(status)}", 400, request_id)
    return Response(request_id, False, error=error, status=status)


# -- framing -----------------------------------------------------------------


class LineBuffer:
    """Splits a byte stream into lines, refusing any line over ``limit``.

    Strategy: :meth:`feed` only appends; :meth:`next_line` returns one
    complete line, ``None`` for "need more data", or raises
    :class:`ControlProtocolError` (status 413) once the line at the front is
    known to be too long, without waiting for its end. The scan resumes where
    the last one stopped, so a 1 MiB line arriving in small reads costs
    linear time.
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._scanned = 0

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a line."""
        return len(self._buf)

    def next_line(self) -> bytes | None:
        """The next complete line without its newline, or ``None``."""
        end = self._buf.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(self._buf)
            if len(self._buf) > self.limit:
                raise ControlProtocolError(
                    f"line exceeds {self.limit} bytes ({len(self._buf)} bytes and no newline yet)", 413
                )
            return None
        if end > self.limit:
            raise ControlProtocolError(f"line exceeds {self.limit} bytes ({end} bytes)", 413)
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        self._scanned = 0
        return line
