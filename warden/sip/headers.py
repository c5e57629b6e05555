"""SIP header fields: a case-insensitive multi-map, compact forms, and Via.

RFC 3261 §7.3 (header syntax, compact forms, comma-separated lists),
§18.2 and §20.42 (Via), RFC 3581 (``rport``).

Strategy: a header section is kept as the list of fields the peer sent, in
order, with the name as spelled and the value unfolded; nothing is split or
parsed until asked. A B2BUA forwards most headers untouched, and this keeps
their order and spelling. Lookups fold case and compact forms (``v`` is
``Via``), and :meth:`Headers.get_all` splits on commas only for headers whose
grammar is a list, respecting quotes and ``<...>``; challenge and credential
headers (``WWW-Authenticate: Digest realm="a", nonce="b"``) and ``Date`` are
never split.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from warden.errors import SIPParseError

from .uri import _NO_PARAMS, Params, _format_host, _parse_header_params, _parse_hostport, _parse_uint

__all__ = [
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "Headers",
    "Via",
    "canonical_name",
    "header_key",
    "parse_via",
]

COMPACT_FORMS: Mapping[str, str] = MappingProxyType(
    {
        "a": "Accept-Contact",
        "b": "Referred-By",
        "c": "Content-Type",
        "d": "Request-Disposition",
        "e": "Content-Encoding",
        "f": "From",
        "i": "Call-ID",
        "j": "Reject-Contact",
        "k": "Supported",
        "l": "Content-Length",
        "m": "Contact",
        "n": "Identity-Info",
        "o": "Event",
        "r": "Refer-To",
        "s": "Subject",
        "t": "To",
        "u": "Allow-Events",
        "v": "Via",
        "x": "Session-Expires",
        "y": "Identity",
    }
)
"""Single-letter compact header names (RFC 3261 §7.3.3 and later RFCs) to full names."""

_KNOWN_NAMES = [
    *COMPACT_FORMS.values(),
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Authentication-Info",
    "Authorization",
    "Call-Info",
    "Content-Disposition",
    "Content-Language",
    "CSeq",
    "Date",
    "Error-Info",
    "Expires",
    "History-Info",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Replaces",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Subscription-State",
    "Timestamp",
    "Unsupported",
    "User-Agent",
    "Warning",
    "WWW-Authenticate",
]
_CANONICAL = {name.lower(): name for name in _KNOWN_NAMES}

LIST_HEADERS: frozenset[str] = frozenset(
    name.lower()
    for name in (
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "History-Info",
        "In-Reply-To",
        "P-Asserted-Identity",
        "P-Associated-URI",
        "P-Preferred-Identity",
        "Path",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Reject-Contact",
        "Request-Disposition",
        "Require",
        "Route",
        "Security-Client",
        "Security-Server",
        "Security-Verify",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    )
)
"""Lower-cased names of headers whose grammar is a comma-separated list."""

_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_T = TypeVar("_T")
_BAD_VALUE_RE = re.compile(r"[\x00\r\n]")


_KEYS: dict[str, str] = {}
_VALID_NAMES: set[str] = set()
"""Header names :meth:`Headers.add` found to be tokens (bounded)."""


def header_key(name: str) -> str:
    """The lookup key of a header name: lower-case, compact form expanded."""
    key = _KEYS.get(name)
    if key is not None:
        return key
    key = name.lower()
    full = COMPACT_FORMS.get(key)
    key = full.lower() if full else key
    if len(_KEYS) < 4096:  # names come from peers: keep the memo bounded
        _KEYS[name] = key
    return key


def canonical_name(name: str) -> str:
    """The conventional spelling of a header name (``i`` and ``call-id`` give ``Call-ID``)."""
    return _CANONICAL.get(header_key(name), name)


def _split_list(value: str) -> list[str]:
    """Split a list header value on commas outside quotes and ``<...>``; drop empty items."""
    if "," not in value:  # one element: nothing to split
        value = value.strip(" \t")
        return [value] if value else []
    if '"' not in value and "<" not in value:  # the common case, without a character loop
        return [item for item in (part.strip(" \t") for part in value.split(",")) if item]
    items: list[str] = []
    start, depth, quoted, i = 0, 0, False, 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif ch == "," and not depth:
            items.append(value[start:i])
            start = i + 1
        i += 1
    items.append(value[start:])
    return [item.strip(" \t") for item in items if item.strip(" \t")]


class Headers:
    """An ordered, case-insensitive, multi-valued collection of header fields.

    Iteration yields ``(name, value)`` pairs in wire order with names as
    spelled. Lookups accept any case and compact forms. Values never contain
    CR or LF: :meth:`add` refuses them, which rules out header injection.
    """

    __slots__ = ("_fields", "_memo", "_index", "_lists")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str, str]] = []
        self._memo: dict[str, object] = {}
        self._index: dict[str, list[str]] | None = None
        """Values by key, built on the first lookup and dropped by every change
        (a message is looked up a dozen times and rarely changed; code that
        appends to ``_fields`` directly must do so before any lookup)."""
        self._lists: dict[str, tuple[str, ...]] = {}
        """Split values of list headers, by key (:meth:`get_all`), dropped with the index."""
        for name, value in fields:
            self.add(name, value)

    def _build_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for key, _, value in self._fields:
            values = index.get(key)
            if values is None:
                index[key] = [value]
            else:
                values.append(value)
        self._index = index
        return index

    def memo(self, key: str, compute: Callable[[], _T]) -> _T:
        """``compute()``, remembered until header ``key`` changes.

        Parsed views of a header (From, To, Via...) are asked for many times per
        message. ``key`` must be the :func:`header_key` of the one header the
        value derives from: changing that header forgets it, so it is never stale.
        """
        try:
            return self._memo[key]  # type: ignore[return-value]
        except KeyError:
            value = self._memo[key] = compute()
            return value

    @classmethod
    def _trusted(cls, fields: list[tuple[str, str, str]]) -> Headers:
        """Build from ``(key, name, value)`` triples the parser already checked."""
        headers = cls()
        headers._fields = fields
        return headers

    @staticmethod
    def _check(name: str, value: str) -> None:
        if name not in _VALID_NAMES:
            if not _TOKEN_RE.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if len(_VALID_NAMES) < 4096:
                _VALID_NAMES.add(name)
        if "\r" in value or "\n" in value or "\x00" in value:
            raise ValueError(f"header {name} value contains CR, LF or NUL")

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a field, or with ``first=True`` put it above same-named fields (a new Via)."""
        self._check(name, value)
        key = header_key(name)
        entry = (key, name, value)
        if first:
            at = next((i for i, f in enumerate(self._fields) if f[0] == key), 0)
            self._fields.insert(at, entry)
        else:
            self._fields.append(entry)
        if self._memo:
            self._memo.pop(key, None)
        self._index = None
        if self._lists:
            self._lists = {}

    def set(self, name: str, value: str) -> None:
        """Replace every field named ``name`` with one, where the first one was."""
        self._check(name, value)
        key = header_key(name)
        at = next((i for i, f in enumerate(self._fields) if f[0] == key), len(self._fields))
        self._fields = [f for f in self._fields if f[0] != key]
        self._fields.insert(min(at, len(self._fields)), (key, name, value))
        self._memo.pop(key, None)
        self._index = None
        self._lists = {}

    def remove(self, name: str) -> int:
        """Remove every field named ``name``; return how many there were."""
        key = header_key(name)
        before = len(self._fields)
        self._fields = [f for f in self._fields if f[0] != key]
        self._memo.pop(key, None)
        self._index = None
        self._lists = {}
        return before - len(self._fields)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first field named ``name``."""
        values = (self._index or self._build_index()).get(_KEYS.get(name) or header_key(name))
        return values[0] if values else default

    def get_fields(self, name: str) -> list[str]:
        """Every field value named ``name``, one per header line, unsplit."""
        values = (self._index or self._build_index()).get(_KEYS.get(name) or header_key(name))
        return list(values) if values else []

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, with list headers split into their elements."""
        key = _KEYS.get(name) or header_key(name)
        split = self._lists.get(key)
        if split is not None:
            return list(split)
        values = (self._index or self._build_index()).get(key)
        if not values:
            return []
        if key not in LIST_HEADERS:
            return list(values)
        split = self._lists[key] = tuple(item for value in values for item in _split_list(value))
        return list(split)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        if not self.remove(name):
            raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return header_key(name) in (self._index or self._build_index())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for _, name, value in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._fields] == [(k, v) for k, _, v in other._fields]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        return Headers._trusted(list(self._fields))


_VIA_RE = re.compile(
    r"[ \t]*([A-Za-z0-9.!%*_+`'~-]+)[ \t]*/[ \t]*([A-Za-z0-9.!%*_+`'~-]+)[ \t]*/"
    r"[ \t]*([A-Za-z0-9.!%*_+`'~-]+)[ \t]+([^;]*)(.*)",
    re.S,
)
_COLON_RE = re.compile(r"[ \t]*:[ \t]*")
_DEFAULT_PORTS = {"TLS": 5061, "WSS": 443, "WS": 80}


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: ``SIP/2.0/<transport> host[:port];params`` (RFC 3261 §20.42).

    ``transport`` is upper-case (``UDP``, ``TCP``, ``TLS``, ``WS``, ``WSS``);
    ``host`` is bare, as in :class:`~warden.sip.uri.SipURI`.
    """

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=Params)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"SIP/2.0/{self.transport} {_format_host(self.host)}{port}{self.params}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """``(host, port)`` the client put in the Via."""
        return self.host, self.port

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The filled-in ``rport`` value, or ``None`` if absent or still empty."""
        value = self.params.get("rport")
        return None if value is None else _parse_uint(value, "Via rport", 65535)

    @property
    def has_rport(self) -> bool:
        """True if the client asked for symmetric response routing (RFC 3581)."""
        return "rport" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def alias(self) -> bool:
        """True if the client offers connection reuse (RFC 5923 ``alias``)."""
        return "alias" in self.params

    def with_received(self, host: str, port: int) -> Via:
        """Stamp the source address the request came from (RFC 3261 §18.2.1, RFC 3581 §4).

        ``received`` is added when ``host`` differs from the sent-by host, and
        always when ``rport`` is present, whose value becomes ``port``.
        """
        params = self.params
        if self.has_rport:
            params = params.set("rport", str(port)).set("received", host)
        elif not _same_address(self.host, host):
            params = params.set("received", host)
        return Via(self.transport, self.host, self.port, params)

    def response_target(self) -> tuple[str, int]:
        """Where an unreliable-transport response goes (RFC 3261 §18.2.2, RFC 3581 §4).

        ``maddr``, else ``received``, else the sent-by host; the ``rport``
        value, else the sent-by port, else the transport's default port.
        """
        host = self.maddr or self.received or self.host
        port = self.rport or self.port or _DEFAULT_PORTS.get(self.transport, 5060)
        return host, port


def parse_via(text: str) -> Via:
    """Parse one Via value (already split from its list). Raises :class:`SIPParseError` (400).

    Every request has a new branch, so whole values are not memoised (that
    would keep thousands of Vias alive), but the part before the parameters
    (protocol and sent-by, the same in all of a peer's requests) is.
    """
    head, semi, params = text.strip(" \t").partition(";")
    base = _VIA_BASES.get(head)
    if base is None:
        base = _parse_via_base(head, text)
    via = Via(base[0], base[1], base[2], _parse_header_params(semi + params) if semi else _NO_PARAMS)
    if semi:
        rport = via.params.get("rport")
        if rport is not None:
            _parse_uint(rport, "Via rport", 65535)
        if via.branch == "" or via.received == "":
            raise SIPParseError(f"empty branch or received in Via: {text[:120]!r}", 400)
    return via


_VIA_BASES: dict[str, tuple[str, str, int | None]] = {}
"""Via text before the first ``;`` -> ``(transport, host, port)``, bounded."""


def _parse_via_base(head: str, text: str) -> tuple[str, str, int | None]:
    """Transport and sent-by of ``head``, the part of Via ``text`` before its
    parameters (the regex splits there too: sent-by holds no ``;``)."""
    m = _VIA_RE.fullmatch(head)
    if m is None:
        raise SIPParseError(f"malformed Via: {text[:120]!r}", 400)
    protocol, version, transport, sent_by, _ = m.groups()
    if protocol.upper() != "SIP" or version != "2.0":
        raise SIPParseError(f"Via protocol must be SIP/2.0: {text[:120]!r}", 400)
    host, port = _parse_hostport(_COLON_RE.sub(":", sent_by.strip(" \t")), text)
    base = (transport.upper(), host, port)
    if len(_VIA_BASES) < 1024:
        _VIA_BASES[head] = base
    return base
