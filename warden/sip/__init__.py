"""The SIP wire layer (RFC 3261): URIs, headers, messages and stream framing.

Sans-I/O: bytes in, objects and bytes out; no sockets, threads or clocks.
Every parse failure is a :class:`warden.errors.SIPParseError` whose
``status`` is the response it should become.

The wire modules run compiled (Cython) or as their pure ``.py``: see
``_select`` (``WARDEN_NO_EXTENSIONS``).
"""

from ._select import install as _install_selection

_install_selection()

from .framing import (
    FramerEvent,
    InvalidMessage,
    KeepAlivePing,
    KeepAlivePong,
    MessageReceived,
    StreamFramer,
)
from .headers import (
    COMPACT_FORMS,
    LIST_HEADERS,
    Headers,
    Via,
    canonical_name,
    header_key,
    parse_via,
)
from .message import (
    DEFAULT_LIMITS,
    REASON_PHRASES,
    ParserLimits,
    Request,
    Response,
    make_response,
    parse_message,
)
from .uri import NameAddr, Params, SipURI, parse_name_addr, parse_uri, unquote

__all__ = [
    "COMPACT_FORMS",
    "DEFAULT_LIMITS",
    "LIST_HEADERS",
    "REASON_PHRASES",
    "FramerEvent",
    "Headers",
    "InvalidMessage",
    "KeepAlivePing",
    "KeepAlivePong",
    "MessageReceived",
    "NameAddr",
    "Params",
    "ParserLimits",
    "Request",
    "Response",
    "SipURI",
    "StreamFramer",
    "Via",
    "canonical_name",
    "header_key",
    "make_response",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "unquote",
]
