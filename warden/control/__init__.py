"""Local control channel between the PBX process and the admin API or CLI.

Newline-delimited JSON over a UNIX stream socket (see
:mod:`warden.control.protocol`). The PBX runs a :class:`ControlServer` and
registers operations; other local processes call them with a
:class:`ControlClient`::

    server = ControlServer("/run/warden-pbx/control.sock", allowed_uids={api_uid})
    server.register("registrations", lambda args: registrar.list(args.get("aor")))
    server.start()

    ControlClient("/run/warden-pbx/control.sock").call("registrations", aor="1001")
"""

from .client import ControlClient
from .protocol import (
    MAX_LINE,
    MAX_RESPONSE,
    ControlError,
    ControlProtocolError,
    ControlUnavailable,
    LineBuffer,
    Request,
    Response,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_result,
)
from .server import ControlServer, Handler

__all__ = [
    "MAX_LINE",
    "MAX_RESPONSE",
    "ControlClient",
    "ControlError",
    "ControlProtocolError",
    "ControlServer",
    "ControlUnavailable",
    "Handler",
    "LineBuffer",
    "Request",
    "Response",
    "decode_request",
    "decode_response",
    "encode_error",
    "encode_request",
    "encode_result",
]
