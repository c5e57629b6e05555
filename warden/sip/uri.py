"""SIP and tel URIs, and the name-addr values of From, To and Contact.

RFC 3261 §19.1 (SIP/SIPS URIs), §20.10 and §25.1 (name-addr / addr-spec),
RFC 3966 (tel, minimal) and RFC 5118 (IPv6 references).

Strategy: keep what the peer wrote. User parts, parameter values and URI
headers stay escaped exactly as received, and parameter names keep their
case, so ``str(parse_uri(t)) == t`` for well-formed input (only the scheme is
lower-cased). Comparison rules (RFC 3261 §19.1.4) belong to the layers that
need them; equality here is structural, with case-insensitive parameter names.
Every failure is a :class:`SIPParseError` (400, or 416 for a scheme we do not
speak) so a bad Request-URI becomes the right response.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import TYPE_CHECKING
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote as _pct_unquote

from warden.errors import SIPParseError

__all__ = ["NameAddr", "Params", "SipURI", "parse_name_addr", "parse_uri", "unquote"]

_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_URI_BAD_CHAR_RE = re.compile(r'[^!-~]|[<>"]')
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*)")
_IPV4ISH_RE = re.compile(r"[0-9.]+")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")  # ipaddress.IPv4Address, 10x faster
_TEL_RE = re.compile(r"[0-9A-Fa-f*#+().-]+")
_DIGITS_RE = re.compile(r"[0-9]+")
_PARAM_VALUE_RE = re.compile(r"[!-~]+")
_ANGLE_OR_QUOTE_RE = re.compile(r'["<>]')
_PLAIN_PARAMS_RE = re.compile(
    r"(?:;[ \t]*[A-Za-z0-9.!%*_+`'~-]+[ \t]*(?:=[ \t]*[!#-:=?-~]*[ \t]*)?)*"
)
"""Header parameters without quoted values, each valid (fast path of _parse_header_params)."""


def _bad(what: str, text: str) -> SIPParseError:
    return SIPParseError(f"{what}: {text[:120]!r}", 400)


def _parse_uint(text: str, what: str, maximum: int) -> int:
    """ASCII digits only: ``int()`` would also take ``'1_0'``, ``'٣'`` and 5000-digit numbers."""
    if len(text) <= 10 and text.isdigit() and text.isascii():  # fast path: plain digits
        value = int(text)
        if value <= maximum:
            return value
    text = text.strip()
    digits = text.lstrip("0") or "0"
    if not _DIGITS_RE.fullmatch(text) or len(digits) > len(str(maximum)) or int(digits) > maximum:
        raise SIPParseError(
            f"{what} must be an integer from 0 to {maximum}, got {text[:40]!r}", 400
        )
    return int(digits)


if TYPE_CHECKING:
    _ParamsBase = Mapping[str, "str | None"]
else:  # Cython 0.29 (Debian's, compiles this module) cannot subscript an ABC at run time
    _ParamsBase = Mapping


class Params(_ParamsBase):
    """Ordered ``;name=value`` parameters with case-insensitive names.

    ``None`` marks a valueless parameter (``;lr``, ``;ob``, ``;rport``); ``""``
    is an empty value (``;tag=``). Immutable and hashable so it can live in
    frozen dataclasses: :meth:`set` and :meth:`without` return new instances.
    Names keep the case they arrived in; duplicates are refused because two
    ``tag`` or ``branch`` values would make matching ambiguous.
    """

    __slots__ = ("_items", "_keys")

    def __init__(
        self, items: Iterable[tuple[str, str | None]] | Mapping[str, str | None] = ()
    ) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        out = tuple(pairs)
        keys = tuple([name.lower() for name, _ in out])
        if len(keys) > 1 and len(set(keys)) != len(keys):
            seen: set[str] = set()
            for (name, _), key in zip(out, keys):
                if key in seen:
                    raise ValueError(f"duplicate parameter {name!r}")
                seen.add(key)
        self._items: tuple[tuple[str, str | None], ...] = out
        self._keys: tuple[str, ...] = keys
        """The lower-cased names, in order, for lookups."""

    def __getitem__(self, name: str) -> str | None:
        try:
            return self._items[self._keys.index(name.lower())][1]
        except ValueError:
            raise KeyError(name) from None

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        keys = self._keys
        if name in keys:  # callers ask with lower-case names: no lower() for them
            return self._items[keys.index(name)][1]
        key = name.lower()
        return self._items[keys.index(key)][1] if key in keys else default

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name.lower() in self._keys

    def __iter__(self) -> Iterator[str]:
        return (n for n, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def _folded(self) -> tuple[tuple[str, str | None], ...]:
        return tuple(zip(self._keys, (v for _, v in self._items)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Params):
            return self._folded() == other._folded()
        if isinstance(other, Mapping):
            return dict(self._folded()) == {str(k).lower(): v for k, v in other.items()}
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._folded())

    def __repr__(self) -> str:
        return f"Params({list(self._items)!r})"

    def __str__(self) -> str:
        return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in self._items)

    @classmethod
    def _checked(cls, items: tuple[tuple[str, str | None], ...], keys: tuple[str, ...]) -> Params:
        """Build from items whose lower-cased ``keys`` are known to be distinct."""
        params = cls.__new__(cls)
        params._items, params._keys = items, keys
        return params

    def set(self, name: str, value: str | None) -> Params:
        """A copy with ``name`` set, in place if present, else appended."""
        key = name.lower()
        keys = self._keys
        if key not in keys:
            return Params._checked((*self._items, (name, value)), (*keys, key))
        at = keys.index(key)
        items = self._items
        return Params._checked((*items[:at], (items[at][0], value), *items[at + 1 :]), keys)

    def without(self, name: str) -> Params:
        """A copy without ``name`` (no error if it was absent)."""
        key = name.lower()
        return Params((n, v) for n, v in self._items if n.lower() != key)


_NO_PARAMS = Params()
"""The empty parameters (immutable, so shared)."""


def _format_host(host: str) -> str:
    """IPv6 addresses are stored bare and bracketed on output (RFC 3261 §19.1.1)."""
    return f"[{host}]" if ":" in host else host


_HOSTS: set[str] = set()
"""Hosts already found valid (peers repeat theirs in every message); bounded."""


def _parse_host(host: str, text: str) -> str:
    if host in _HOSTS:
        return host
    if host.startswith("["):
        if not host.endswith("]"):
            raise _bad("unterminated IPv6 reference", text)
        inner = host[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise _bad("invalid IPv6 address", text) from None
        return inner
    if _IPV4ISH_RE.fullmatch(host):
        if not _IPV4_RE.fullmatch(host):
            raise _bad("invalid IPv4 address", text)
    elif not _HOSTNAME_RE.fullmatch(host):
        raise _bad("invalid host", text)
    if len(_HOSTS) < 4096:
        _HOSTS.add(host)
    return host


def _parse_hostport(hostport: str, text: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _bad("unterminated IPv6 reference", text)
        host, rest = hostport[: end + 1], hostport[end + 1 :]
    else:
        host, colon, port = hostport.partition(":")
        rest = colon + port
    host = _parse_host(host, text)
    if not rest:
        return host, None
    if not rest.startswith(":"):
        raise _bad("junk after host", text)
    return host, _parse_uint(rest[1:], "port", 65535)


def _parse_uri_params(pieces: list[str], text: str) -> Params:
    items: list[tuple[str, str | None]] = []
    for piece in pieces:
        name, eq, value = piece.partition("=")
        if not name:
            raise _bad("empty URI parameter", text)
        items.append((name, value if eq else None))
    try:
        return Params(items)
    except ValueError as exc:
        raise _bad(str(exc), text) from None


@dataclass(frozen=True, slots=True)
class SipURI:
    """A ``sip:``, ``sips:`` or ``tel:`` URI.

    ``host`` is bare (``2001:db8::1``, no brackets); a tel URI keeps its number
    in ``user`` and has an empty host. ``user`` and parameter values are kept
    percent-escaped as received; see :attr:`user_unescaped`.
    """

    scheme: str = "sip"
    user: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = field(default_factory=Params)
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{self.params}"
        out = f"{self.scheme}:"
        if self.user is not None:
            out += f"{self.user}@"
        out += _format_host(self.host)
        if self.port is not None:
            out += f":{self.port}"
        out += str(self.params)
        if self.headers:
            out += "?" + "&".join(f"{n}={v}" for n, v in self.headers)
        return out

    @property
    def user_unescaped(self) -> str | None:
        """The user part with ``%XX`` escapes decoded."""
        return None if self.user is None else _pct_unquote(self.user, errors="surrogateescape")

    @property
    def hostport(self) -> str:
        """``host[:port]`` as it would appear on the wire."""
        host = _format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased."""
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def is_secure(self) -> bool:
        """True for ``sips:`` (RFC 3261 §26.2.2: TLS on every hop)."""
        return self.scheme == "sips"

    @property
    def lr(self) -> bool:
        """True when the URI carries the loose-routing ``lr`` flag (RFC 3261 §16.12)."""
        return "lr" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    def with_params(self, **params: str | None) -> SipURI:
        """A copy with parameters set (``None`` makes a valueless one)."""
        new = self.params
        for name, value in params.items():
            new = new.set(name.replace("_", "-"), value)
        return replace(self, params=new)


@lru_cache(maxsize=8192)
def parse_uri(text: str) -> SipURI:
    """Parse a ``sip:``, ``sips:`` or ``tel:`` URI.

    Raises :class:`SIPParseError` with status 416 for any other scheme and 400
    for malformed input. Passwords in the userinfo (deprecated by RFC 3261
    §19.1.1) are refused rather than silently carried around. Results are
    immutable, so they are memoised: phones repeat the same URIs all day.
    """
    text = text.strip()
    if _URI_BAD_CHAR_RE.search(text):
        raise _bad('URI contains whitespace, non-ASCII, control characters or <>"', text)
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        raise _bad("URI has no scheme", text)
    scheme = scheme.lower()
    if _BAD_ESCAPE_RE.search(rest):
        raise _bad("malformed %-escape in URI", text)
    if scheme == "tel":
        number, *pieces = rest.split(";")
        if not _TEL_RE.fullmatch(number):
            raise _bad("invalid tel number", text)
        return SipURI("tel", number, "", None, _parse_uri_params(pieces, text))
    if scheme not in ("sip", "sips"):
        raise SIPParseError(f"unsupported URI scheme {scheme!r}", 416)
    user: str | None = None
    if "@" in rest:
        user, _, rest = rest.partition("@")
        if not user:
            raise _bad("empty user part in URI", text)
        if ":" in user:
            raise _bad("passwords in SIP URIs are not supported", text)
        if "@" in rest:
            raise _bad("more than one '@' in URI", text)
    rest, _, hpart = rest.partition("?")
    hostport, *pieces = rest.split(";")
    host, port = _parse_hostport(hostport, text)
    params = _parse_uri_params(pieces, text)
    headers: list[tuple[str, str]] = []
    if hpart:
        for item in hpart.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise _bad("URI header must be name=value", text)
            headers.append((name, value))
    return SipURI(scheme, user, host, port, params, tuple(headers))


def _parse_quoted(text: str, pos: int) -> tuple[str, int]:
    """Decode the quoted-string at ``text[pos]``; return it and the index after it."""
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise _bad("unterminated quoted string", text)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote(value: str | None) -> str | None:
    """The text of a parameter value that may be a quoted-string (``+sip.instance``)."""
    if value is None or not value.startswith('"'):
        return value
    text, end = _parse_quoted(value, 0)
    if end != len(value):
        raise _bad("junk after quoted string", value)
    return text


def _split_semicolons(text: str) -> list[str]:
    """Split on ``;`` outside quoted strings."""
    parts: list[str] = []
    start, i, quoted = 0, 0, False
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise _bad("unterminated quoted string", text)
    parts.append(text[start:])
    return parts


def _parse_header_params(text: str) -> Params:
    """Parse ``*( SEMI generic-param )`` as in Via, From, To and Contact.

    Values stay raw: a quoted value keeps its quotes (use :func:`unquote`).
    """
    text = text.strip(" \t")
    if not text:
        return _NO_PARAMS
    if not text.startswith(";"):
        raise _bad("expected ';' before header parameters", text)
    items: list[tuple[str, str | None]] = []
    if _PLAIN_PARAMS_RE.fullmatch(text):
        keys: list[str] = []
        if " " in text or "\t" in text:
            for piece in text[1:].split(";"):
                name, eq, value = piece.partition("=")
                name = name.strip(" \t")
                items.append((name, value.strip(" \t") if eq else None))
                keys.append(name.lower())
        else:  # nothing to strip (the rule)
            for piece in text[1:].split(";"):
                name, eq, value = piece.partition("=")
                items.append((name, value if eq else None))
                keys.append(name.lower())
        if len(keys) > 1 and len(set(keys)) != len(keys):
            try:
                Params(items)
            except ValueError as exc:
                raise _bad(str(exc), text) from None
        return Params._checked(tuple(items), tuple(keys))
    for piece in _split_semicolons(text)[1:]:
        name, eq, value = piece.partition("=")
        name, value = name.strip(" \t"), value.strip(" \t")
        if not _TOKEN_RE.fullmatch(name):
            raise _bad("invalid header parameter name", piece)
        if value.startswith('"'):
            unquote(value)
        elif (
            eq
            and value
            and (not _PARAM_VALUE_RE.fullmatch(value) or _ANGLE_OR_QUOTE_RE.search(value))
        ):
            raise _bad("invalid header parameter value", piece)
        items.append((name, value if eq else None))
    try:
        return Params(items)
    except ValueError as exc:
        raise _bad(str(exc), text) from None


@dataclass(frozen=True, slots=True)
class NameAddr:
    """``"Display" <uri>;params`` as in From, To, Contact, Route (RFC 3261 §20.10).

    ``display_name`` is the decoded text (``None`` when absent, ``""`` for
    ``""``). ``params`` are header parameters (``tag``, ``expires``,
    ``+sip.instance``, ``reg-id``, ``q``), never the URI's own.
    """

    uri: SipURI
    display_name: str | None = None
    params: Params = field(default_factory=Params)

    def __str__(self) -> str:
        name = "" if self.display_name is None else _quote(self.display_name) + " "
        return f"{name}<{self.uri}>{self.params}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        """The ``expires`` parameter of a Contact, in seconds."""
        value = self.params.get("expires")
        return None if value is None else _parse_uint(value, "expires parameter", 2**32 - 1)

    @property
    def q(self) -> float | None:
        """The ``q`` preference of a Contact (0 to 1)."""
        value = self.params.get("q")
        if value is None:
            return None
        if not re.fullmatch(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?", value):
            raise SIPParseError(f"invalid q value {value[:20]!r}", 400)
        return float(value)

    @property
    def instance(self) -> str | None:
        """The unquoted ``+sip.instance`` (RFC 5626), e.g. ``<urn:uuid:...>``."""
        return unquote(self.params.get("+sip.instance"))

    @property
    def reg_id(self) -> int | None:
        """The RFC 5626 ``reg-id`` flow number."""
        value = self.params.get("reg-id")
        return None if value is None else _parse_uint(value, "reg-id", 2**31 - 1)

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(self.uri, self.display_name, self.params.set("tag", tag))


def _addr_spec_end(text: str) -> int:
    """Where header parameters start in a bare addr-spec.

    Strategy: without angle brackets every ``;`` after the URI starts a header
    parameter (RFC 3261 §20.10), but a user part may itself contain ``;``
    (``sip:+1;isub=2@gw``). So look for the first ``;`` after the ``@`` when
    the text before that ``@`` could be a user part.
    """
    at = text.find("@")
    start = at if at >= 0 and not re.search(r'[\s"<>]', text[:at]) else 0
    semi = text.find(";", start)
    return len(text) if semi < 0 else semi


@lru_cache(maxsize=8192)
def parse_name_addr(text: str) -> NameAddr:
    """Parse one name-addr or addr-spec with header parameters.

    Raises :class:`SIPParseError` (400, or 416 for an unsupported scheme).
    Memoised like :func:`parse_uri` (a dialog's From and To recur in every message).
    """
    s = text.strip(" \t")
    if not s:
        raise _bad("empty address", text)
    display: str | None = None
    if s.startswith('"'):
        display, end = _parse_quoted(s, 0)
        s = s[end:].lstrip(" \t")
        if not s.startswith("<"):
            raise _bad("a quoted display name must be followed by <uri>", text)
    else:
        lt, quote = s.find("<"), s.find('"')
        if lt < 0 or (0 <= quote < lt):
            end = _addr_spec_end(s)
            return NameAddr(parse_uri(s[:end]), None, _parse_header_params(s[end:]))
        if lt:
            display = " ".join(s[:lt].split()) or None
            s = s[lt:]
    gt = s.find(">")
    if gt < 0:
        raise _bad("missing '>' after URI", text)
    return NameAddr(parse_uri(s[1:gt]), display, _parse_header_params(s[gt + 1 :]))
