"""SIP digest authentication, server side (RFC 3261 §22, RFC 7616, RFC 8760).

Sans-I/O: every time is a ``now: float`` parameter and nothing here reads a
clock or a socket. Passwords are never stored: an extension keeps only its two
HA1 hashes (:class:`HA1Pair`), which are kept out of reprs, logs and errors.

Strategy: nonces are self-authenticating (HMAC over issue time, randomness and
optionally the peer address), so a challenge costs no memory and a flood of
unauthenticated requests cannot grow any table. Memory is spent only on nonces
that carried a *correct* response, to refuse replays; that table is bounded.
When the cap forces an entry out, its issue time raises a watermark and any
older nonce not in the table is answered "stale": an evicted nonce can cost a
phone one silent re-challenge, but never lets a replay through.

Anti-enumeration: an unknown user and a wrong password give the same
outward result (same status, same challenge, same work done); only
:attr:`AuthResult.reason` — for logs — tells them apart.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from warden.errors import SIPError, SIPParseError

__all__ = [
    "ALGORITHMS", "HA1Pair", "Credentials", "Challenge", "NonceStatus", "NonceManager",
    "AuthReason", "AuthResult", "DigestAuthenticator", "ha1", "parse_credentials",
    "format_credentials", "parse_challenge", "format_challenge", "client_response",
    "answer_challenge",
]

#: Algorithms we offer, in RFC 8760 order of preference.
ALGORITHMS: tuple[str, ...] = ("SHA-256", "MD5")

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_CANONICAL = {n.upper(): n for n in ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess")}
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN)
_SCHEME = re.compile(rf"[ \t]*({_TOKEN})(?:[ \t]+|\Z)")
# One list element: empty, or name = "quoted" / token-ish value, then ',' or end.
_ITEM = re.compile(
    rf"[ \t]*(?:,|(?P<name>{_TOKEN})[ \t]*=[ \t]*"
    r'(?:"(?P<q>(?:[^"\\\r\n\x00]|\\[^\r\n\x00])*)"|(?P<t>[\x21\x23-\x2b\x2d-\x7e]+))'
    r"[ \t]*(?:,|\Z))"
)
_DIAGNOSE = re.compile(rf"[ \t]*((?:{_TOKEN})?)[ \t]*(=?)[ \t]*")
_UNESCAPE = re.compile(r"\\(.)", re.S)
_MAX_HEADER = 8192
_NC = re.compile(r"[0-9A-Fa-f]{1,8}")


def _split_algorithm(algorithm: str) -> tuple[str, bool]:
    """Return (base hash name, is-session-variant); ValueError if unknown."""
    canonical = _CANONICAL.get(algorithm.upper())
    if canonical is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    sess = canonical.endswith("-sess")
    return (canonical[:-5] if sess else canonical), sess


def _h(base: str, text: str) -> str:
    # surrogateescape: header bytes that are not UTF-8 (say, in a cnonce) reach
    # us surrogate-escaped; the client hashed those very bytes.
    return _HASHES[base](text.encode("utf-8", "surrogateescape")).hexdigest()


def _is_text(value: str) -> bool:
    """False for header text holding bytes that are not UTF-8 (surrogate-escaped
    by the parser): no extension has such a name, and no store can look it up."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """Hex ``H(username:realm:password)``; a ``-sess`` name gives its base HA1.

    This is what we store: the ``-sess`` session key is derived from it per
    request, so one stored value serves both variants.
    """
    base, _ = _split_algorithm(algorithm)
    return _h(base, f"{username}:{realm}:{password}")


@dataclass(frozen=True, slots=True, eq=False)
class HA1Pair:
    """An extension's stored secrets; ``eq=False`` so nobody compares them in
    variable time, ``repr=False`` so they never reach a log."""

    ha1_md5: str = field(repr=False)
    """Hex MD5 of ``username:realm:password``."""
    ha1_sha256: str = field(repr=False)
    """Hex SHA-256 of ``username:realm:password``."""

    @classmethod
    def from_password(cls, username: str, realm: str, password: str) -> HA1Pair:
        return cls(ha1(username, realm, password, "MD5"),
                   ha1(username, realm, password, "SHA-256"))

    def for_algorithm(self, algorithm: str) -> str:
        base, _ = _split_algorithm(algorithm)
        return self.ha1_md5 if base == "MD5" else self.ha1_sha256


def _response(
    algorithm: str, ha1_hex: str, *, nonce: str, method: str, uri: str,
    qop: str | None, nc: str | None, cnonce: str | None,
) -> str:
    """The RFC 7616 §3.4.1 request-digest; one formula for client and server."""
    base, sess = _split_algorithm(algorithm)
    if sess:
        if cnonce is None:
            raise ValueError("a -sess algorithm needs a cnonce")
        ha1_hex = _h(base, f"{ha1_hex}:{nonce}:{cnonce}")
    ha2 = _h(base, f"{method}:{uri}")
    if qop is None:
        return _h(base, f"{ha1_hex}:{nonce}:{ha2}")
    return _h(base, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --------------------------------------------------------------------------
# Header syntax


def _parse_auth_header(value: str, what: str) -> tuple[str, dict[str, str]]:
    """Split ``Scheme name=value, name="quoted"`` into scheme and lower-cased
    parameters. Errors name a column, never the value (it may hold a digest)."""

    def bad(msg: str, col: int) -> SIPParseError:
        return SIPParseError(f"malformed {what} header: {msg} at column {col + 1}", 400)

    if len(value) > _MAX_HEADER:
        raise SIPParseError(f"malformed {what} header: longer than {_MAX_HEADER} characters", 400)
    s = value.rstrip(" \t")
    m = _SCHEME.match(s)
    if m is None:
        raise bad("expected an auth scheme and a space", 0)
    scheme, pos, params = m.group(1), m.end(), {}
    while pos < len(s):
        m = _ITEM.match(s, pos)
        if m is None:
            d = _DIAGNOSE.match(s, pos)
            assert d is not None  # every part of it is optional
            name = d.group(1).lower()
            if not name:
                raise bad("expected a parameter name", d.start(1))
            if not d.group(2):
                raise bad(f"expected '=' after {name!r}", d.end())
            if s.startswith('"', d.end()):
                raise bad(f"bad quoted string for {name!r}", d.end())
            raise bad(f"bad value for {name!r} or missing ','", d.end())
        name, quoted, token = m.group("name", "q", "t")
        if name:
            name = name.lower()
            if name in params:
                raise bad(f"duplicate parameter {name!r}", m.start("name"))
            if quoted is None:
                params[name] = token
            else:
                params[name] = _UNESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
        pos = m.end()
    if not params:
        raise bad("no parameters", pos)
    return scheme, params


def _quote(value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise ValueError("control character in a quoted auth parameter")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _token(value: str) -> str:
    """A token stays bare (as phones expect for algorithm=, qop=, nc=)."""
    return value if _TOKEN_RE.fullmatch(value) else _quote(value)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A parsed ``Authorization`` / ``Proxy-Authorization`` Digest value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str = field(repr=False)
    """The request-digest; kept out of reprs as it allows offline guessing."""
    algorithm: str = "MD5"
    """Canonical name when known (``MD5-sess``, ``SHA-256``…), else as sent."""
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    """The nonce-count exactly as sent (the digest covers this text)."""

    @property
    def nonce_count(self) -> int | None:
        return None if self.nc is None else int(self.nc, 16)


def parse_credentials(header_value: str) -> Credentials:
    """Parse a Digest credentials header value; SIPParseError(400) if malformed."""
    scheme, p = _parse_auth_header(header_value, "Authorization")
    if scheme.lower() != "digest":
        raise SIPParseError("malformed Authorization header: scheme is not Digest", 400)
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    qop = p.get("qop")
    if qop is not None:
        missing += [k for k in ("cnonce", "nc") if k not in p]
    if missing:
        raise SIPParseError(f"malformed Authorization header: missing {', '.join(missing)}", 400)
    nc = p.get("nc") if qop is not None else None
    if nc is not None and not _NC.fullmatch(nc):
        raise SIPParseError("malformed Authorization header: nc is not 1-8 hex digits", 400)
    algorithm = p.get("algorithm", "MD5")
    return Credentials(
        username=p["username"], realm=p["realm"], nonce=p["nonce"], uri=p["uri"],
        response=p["response"], algorithm=_CANONICAL.get(algorithm.upper(), algorithm),
        cnonce=p.get("cnonce"), opaque=p.get("opaque"), qop=qop, nc=nc,
    )


def format_credentials(credentials: Credentials) -> str:
    """Render credentials as a header value, in the parameter order phones use."""
    c = credentials
    parts = [
        f"username={_quote(c.username)}", f"realm={_quote(c.realm)}",
        f"nonce={_quote(c.nonce)}", f"uri={_quote(c.uri)}",
        f"response={_quote(c.response)}", f"algorithm={_token(c.algorithm)}",
    ]
    if c.cnonce is not None:
        parts.append(f"cnonce={_quote(c.cnonce)}")
    if c.opaque is not None:
        parts.append(f"opaque={_quote(c.opaque)}")
    if c.qop is not None:
        parts.append(f"qop={_token(c.qop)}")
    if c.nc is not None:
        parts.append(f"nc={_token(c.nc)}")
    return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    opaque: str | None = None
    qop: str | None = "auth"
    """Comma-separated qop options as sent; None for an RFC 2069 challenge."""
    stale: bool = False


def format_challenge(challenge: Challenge) -> str:
    """``Digest realm="..", nonce="..", opaque="..", algorithm=.., qop="auth"``."""
    c = challenge
    parts = [f"realm={_quote(c.realm)}", f"nonce={_quote(c.nonce)}"]
    if c.opaque is not None:
        parts.append(f"opaque={_quote(c.opaque)}")
    parts.append(f"algorithm={_token(c.algorithm)}")
    if c.qop is not None:
        parts.append(f"qop={_quote(c.qop)}")
    if c.stale:
        parts.append("stale=true")
    return "Digest " + ", ".join(parts)


def parse_challenge(header_value: str) -> Challenge:
    """Parse a Digest challenge (for our own outgoing requests)."""
    scheme, p = _parse_auth_header(header_value, "WWW-Authenticate")
    if scheme.lower() != "digest":
        raise SIPParseError("malformed WWW-Authenticate header: scheme is not Digest", 400)
    if "realm" not in p or "nonce" not in p:
        raise SIPParseError("malformed WWW-Authenticate header: missing realm or nonce", 400)
    algorithm = p.get("algorithm", "MD5")
    return Challenge(
        realm=p["realm"], nonce=p["nonce"],
        algorithm=_CANONICAL.get(algorithm.upper(), algorithm),
        opaque=p.get("opaque"), qop=p.get("qop"),
        stale=p.get("stale", "").lower() == "true",
    )


# --------------------------------------------------------------------------
# Client side


def client_response(
    *, username: str, realm: str, nonce: str, uri: str, method: str,
    password: str | None = None, ha1_hex: str | None = None,
    algorithm: str = "MD5", qop: str | None = "auth",
    nc: str | int = 1, cnonce: str | None = None,
) -> str:
    """The ``response=`` a phone would send (give ``password`` or ``ha1_hex``).

    ``nc`` as an int is rendered as the usual 8 hex digits.
    """
    if (password is None) == (ha1_hex is None):
        raise ValueError("give exactly one of password and ha1_hex")
    key = ha1_hex if ha1_hex is not None else ha1(username, realm, password or "", algorithm)
    nc_text = f"{nc:08x}" if isinstance(nc, int) else nc
    if qop is not None and cnonce is None:
        raise ValueError("qop needs a cnonce")
    return _response(
        algorithm, key, nonce=nonce, method=method, uri=uri,
        qop=qop, nc=nc_text if qop is not None else None, cnonce=cnonce,
    )


def answer_challenge(
    challenge: Challenge, *, username: str, method: str, uri: str,
    password: str | None = None, ha1_hex: str | None = None,
    nc: int = 1, cnonce: str | None = None,
) -> Credentials:
    """Build the credentials answering ``challenge`` (qop=auth when offered).

    Raises SIPError(401) when the challenge cannot be answered: the 401 we
    were given stays the outcome of our request.
    """
    if challenge.algorithm.upper() not in _CANONICAL:
        raise SIPError(f"cannot answer digest algorithm {challenge.algorithm!r}", 401)
    qop: str | None = None
    if challenge.qop is not None:
        offered = {q.strip().lower() for q in challenge.qop.split(",")}
        if "auth" not in offered:
            raise SIPError("challenge offers no qop we support (only auth)", 401)
        qop = "auth"
    if cnonce is None and (qop is not None or challenge.algorithm.endswith("-sess")):
        cnonce = secrets.token_urlsafe(16)
    nc_text = f"{nc:08x}" if qop is not None else None
    response = client_response(
        username=username, realm=challenge.realm, nonce=challenge.nonce, uri=uri,
        method=method, password=password, ha1_hex=ha1_hex, algorithm=challenge.algorithm,
        qop=qop, nc=nc_text or 1, cnonce=cnonce,
    )
    return Credentials(
        username=username, realm=challenge.realm, nonce=challenge.nonce, uri=uri,
        response=response, algorithm=challenge.algorithm, cnonce=cnonce,
        opaque=challenge.opaque, qop=qop, nc=nc_text,
    )


# --------------------------------------------------------------------------
# Nonces


class NonceStatus(enum.Enum):
    """Outcome of :meth:`NonceManager.check` / :meth:`NonceManager.use`."""

    VALID = "valid"
    STALE = "stale"
    """Ours and intact, but too old (or forgotten): re-challenge with stale=true."""
    INVALID = "invalid"
    """Forged, garbled, or bound to another peer."""
    REPLAY = "replay"
    """Only from :meth:`~NonceManager.use`: the nonce-count did not increase."""


_NONCE_RAND = 12
_NONCE_MAC = 16
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{48}")  # base64url of 8 + 12 + 16 bytes
_CLOCK_SKEW = 5.0
_BURNT = -1  # last nc of a nonce used once without qop: any reuse is a replay


class NonceManager:
    """Issues HMAC-authenticated nonces and refuses replayed nonce-counts.

    ``peer`` binds a nonce to whatever the caller passes — normally the source
    IP, not the port, so NAT rebinding and TCP reconnects keep working.
    """

    __slots__ = ("_key", "lifetime", "max_tracked", "_random", "_seen", "_watermark", "_last")

    def __init__(
        self, secret: bytes, lifetime: float = 300.0, *, max_tracked: int = 65536,
        random: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if lifetime <= 0 or max_tracked <= 0:
            raise ValueError("lifetime and max_tracked must be positive")
        self._key = hashlib.sha256(b"warden-nonce-v1\x00" + secret).digest()
        self.lifetime = float(lifetime)
        self.max_tracked = max_tracked
        self._random = random
        # nonce -> (issued, last nc); insertion order ~ issue order, for eviction. Tuples
        # of numbers, not lists: the garbage collector stops tracking them, and up to
        # max_tracked of them live for the nonce lifetime (65,536 at 1,000 calls/s).
        self._seen: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._watermark = float("-inf")
        self._last: tuple[str, str | None, float | None] = ("", None, None)
        """The last nonce decoded (check() then use() of one request decode it once)."""

    def __repr__(self) -> str:
        return f"<NonceManager lifetime={self.lifetime} tracked={len(self._seen)}>"

    def __len__(self) -> int:
        """Number of nonces currently tracked for replay detection."""
        return len(self._seen)

    def _mac(self, body: bytes, peer: str | None) -> bytes:
        bound = b"\x00" if peer is None else b"\x01" + peer.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, body + bound, hashlib.sha256).digest()[:_NONCE_MAC]

    def issue(self, now: float, peer: str | None = None) -> str:
        """A fresh nonce; costs no memory until a correct response uses it."""
        body = struct.pack(">d", now) + self._random(_NONCE_RAND)
        return base64.urlsafe_b64encode(body + self._mac(body, peer)).decode("ascii")

    def _issued_at(self, nonce: str, peer: str | None) -> float | None:
        last = self._last
        if last[0] == nonce and last[1] == peer and nonce:
            return last[2]
        if not _NONCE_RE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce)
        body, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
        if not hmac.compare_digest(mac, self._mac(body, peer)):
            return None
        issued = float(struct.unpack(">d", body[:8])[0])
        self._last = (nonce, peer, issued)
        return issued

    def _status(self, issued: float | None, now: float) -> NonceStatus:
        if issued is None:
            return NonceStatus.INVALID
        if issued + self.lifetime < now or issued > now + _CLOCK_SKEW:
            return NonceStatus.STALE
        return NonceStatus.VALID

    def check(self, nonce: str, now: float, peer: str | None = None) -> NonceStatus:
        """VALID, STALE or INVALID; reads no state, so safe before the digest."""
        return self._status(self._issued_at(nonce, peer), now)

    def use(
        self, nonce: str, nc: int | None, now: float, peer: str | None = None,
    ) -> NonceStatus:
        """Record a use after a correct response; REPLAY if ``nc`` did not grow.

        ``nc=None`` (no qop) allows one use per nonce. Call only once the
        digest verified, or an attacker could burn a phone's nonce-counts.
        """
        issued = self._issued_at(nonce, peer)
        status = self._status(issued, now)
        if status is not NonceStatus.VALID or issued is None:
            return status
        self._expire(now)
        entry = self._seen.get(nonce)
        if entry is None:
            if issued <= self._watermark:
                return NonceStatus.STALE  # maybe evicted: never risk a replay
            self._seen[nonce] = (issued, _BURNT if nc is None else nc)
            while len(self._seen) > self.max_tracked:
                self._evict()
            return NonceStatus.VALID
        if nc is None or entry[1] == _BURNT or nc <= entry[1]:
            return NonceStatus.REPLAY
        self._seen[nonce] = (entry[0], nc)  # an existing key keeps its place in the order
        return NonceStatus.VALID

    def _evict(self) -> None:
        _, (issued, _nc) = self._seen.popitem(last=False)
        self._watermark = max(self._watermark, issued)

    def _expire(self, now: float) -> None:
        seen = self._seen
        # The same expression as _status, so an entry leaves only once stale.
        while seen and next(iter(seen.values()))[0] + self.lifetime < now:
            self._evict()


# --------------------------------------------------------------------------
# Server side


class AuthReason(enum.Enum):
    """Why :meth:`DigestAuthenticator.verify` decided as it did — for logs only."""

    OK = "ok"
    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN_USER = "unknown_user"
    BAD_RESPONSE = "bad_response"
    STALE_NONCE = "stale_nonce"
    INVALID_NONCE = "invalid_nonce"
    REPLAY = "replay"
    REALM_MISMATCH = "realm_mismatch"
    URI_MISMATCH = "uri_mismatch"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    UNSUPPORTED_QOP = "unsupported_qop"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of a verification.

    On failure answer :attr:`DigestAuthenticator.status` with
    ``challenge(now, peer, stale=result.stale)``; nothing else reaches the
    peer, which is what keeps unknown users and bad passwords alike.
    """

    reason: AuthReason
    username: str | None = None
    """The authenticated user; set only when :attr:`ok`."""
    claimed_username: str | None = None
    """The username the peer sent, for logs (fail2ban); never trust it."""
    stale: bool = False
    """Re-challenge with stale=true: the password was right, the nonce was not."""
    detail: str = ""
    """Human text for logs; holds no secret."""

    @property
    def ok(self) -> bool:
        return self.reason is AuthReason.OK


class DigestAuthenticator:
    """Challenges and verifies Digest credentials for one realm.

    ``lookup(username)`` returns the stored :class:`HA1Pair` or None. The
    HA1s depend on the realm: changing the realm invalidates all of them.
    MD5 is refused by OpenSSL in FIPS mode; offer ``("SHA-256",)`` there.
    """

    __slots__ = ("realm", "nonces", "_lookup", "algorithms", "allow_no_qop", "proxy",
                 "opaque", "_dummy", "on_wrong_guess")

    def __init__(
        self, realm: str, nonces: NonceManager, lookup: Callable[[str], HA1Pair | None],
        algorithms: Sequence[str] = ALGORITHMS, *, allow_no_qop: bool = True,
        proxy: bool = False, opaque: str | None = None,
    ) -> None:
        chosen = list(dict.fromkeys(_split_algorithm(a)[0] for a in algorithms))
        if not chosen:
            raise ValueError("at least one digest algorithm is needed")
        unknown = [a for a in chosen if a not in ALGORITHMS]
        if unknown:
            raise ValueError(f"unsupported digest algorithm(s): {', '.join(unknown)}")
        self.realm = realm
        self.nonces = nonces
        self._lookup = lookup
        self.algorithms: tuple[str, ...] = tuple(chosen)
        """Offered algorithms in the caller's order: clients take the first they support
        (RFC 7616 §3.7), and many phones and sipp know only MD5, so the order is a setting."""
        self.allow_no_qop = allow_no_qop
        """Accept RFC 2069 responses (no qop), one request per nonce; old phones need it."""
        self.proxy = proxy
        """True for 407 / Proxy-Authenticate instead of 401 / WWW-Authenticate."""
        self.opaque = opaque
        """Echoed by phones; not checked, the nonce is already authenticated."""
        self._dummy = HA1Pair(secrets.token_hex(16), secrets.token_hex(32))
        self.on_wrong_guess: Callable[[str], None] | None = None
        """Called with the peer when an answer was checked against a password and
        failed (wrong password or unknown user): what brute-force bans count.
        Stale, foreign or malformed nonces and credentials are no guesses."""

    def __repr__(self) -> str:
        return f"<DigestAuthenticator realm={self.realm!r} algorithms={self.algorithms}>"

    @property
    def status(self) -> int:
        return 407 if self.proxy else 401

    @property
    def challenge_header(self) -> str:
        return "Proxy-Authenticate" if self.proxy else "WWW-Authenticate"

    @property
    def credentials_header(self) -> str:
        return "Proxy-Authorization" if self.proxy else "Authorization"

    def challenge(self, now: float, peer: str | None = None, stale: bool = False) -> list[str]:
        """One header value per algorithm, most preferred first, sharing a nonce."""
        nonce = self.nonces.issue(now, peer)
        return [
            format_challenge(Challenge(self.realm, nonce, a, self.opaque, "auth", stale))
            for a in self.algorithms
        ]

    def verify(
        self, method: str, credentials_header: str | Sequence[str] | None, now: float,
        peer: str | None = None, *, request_uri: str | None = None,
    ) -> AuthResult:
        """Check a request's credentials; give ``request_uri`` to enforce uri=.

        Several header values (proxy chains) are accepted: the first for our
        realm is used.
        """
        if credentials_header is None or not credentials_header:
            return AuthResult(AuthReason.MISSING)
        values = ([credentials_header] if isinstance(credentials_header, str)
                  else credentials_header)
        creds: Credentials | None = None
        error = ""
        for value in values:
            try:
                parsed = parse_credentials(value)
            except SIPParseError as exc:
                error = error or str(exc)
                continue
            if creds is None or (creds.realm != self.realm and parsed.realm == self.realm):
                creds = parsed
        if creds is None:
            return AuthResult(AuthReason.MALFORMED, detail=error)
        result = self._verify(method, creds, now, peer, request_uri)
        if peer and self.on_wrong_guess is not None and result.reason in (
                AuthReason.BAD_RESPONSE, AuthReason.UNKNOWN_USER):
            self.on_wrong_guess(peer)
        return result

    def _verify(
        self, method: str, c: Credentials, now: float, peer: str | None,
        request_uri: str | None,
    ) -> AuthResult:
        def fail(reason: AuthReason, detail: str, stale: bool = False) -> AuthResult:
            return AuthResult(reason, claimed_username=c.username, stale=stale, detail=detail)

        # Checks that do not depend on the user come first, so they cannot
        # tell an unknown user from a known one.
        if c.realm != self.realm:
            return fail(AuthReason.REALM_MISMATCH, "credentials for another realm")
        try:
            base, sess = _split_algorithm(c.algorithm)
        except ValueError:
            base, sess = "", False
        if base not in self.algorithms:
            return fail(AuthReason.UNSUPPORTED_ALGORITHM, f"algorithm {c.algorithm!r} not offered")
        if c.qop is None and not self.allow_no_qop:
            return fail(AuthReason.UNSUPPORTED_QOP, "qop is required")
        if c.qop is not None and c.qop.lower() != "auth":
            return fail(AuthReason.UNSUPPORTED_QOP, f"qop {c.qop!r} not supported")
        if sess and c.cnonce is None:
            return fail(AuthReason.MALFORMED, f"{c.algorithm} without cnonce")
        if request_uri is not None and c.uri != request_uri:
            return fail(AuthReason.URI_MISMATCH, "uri= differs from the Request-URI")
        nonce_status = self.nonces.check(c.nonce, now, peer)
        if nonce_status is NonceStatus.INVALID:
            return fail(AuthReason.INVALID_NONCE, "nonce is not ours or bound to another peer")

        stored = self._lookup(c.username) if _is_text(c.username) else None
        key = (stored or self._dummy).for_algorithm(base)
        expected = _response(
            c.algorithm, key, nonce=c.nonce, method=method, uri=c.uri,
            qop=c.qop, nc=c.nc, cnonce=c.cnonce,
        )
        matches = hmac.compare_digest(
            expected.encode("ascii"), c.response.lower().encode("utf-8", "replace")
        )
        if stored is None:
            return fail(AuthReason.UNKNOWN_USER, "no such user")
        if not matches:
            return fail(AuthReason.BAD_RESPONSE, "response does not match")
        # Only a correct digest earns stale=true (RFC 7616 §3.3).
        if nonce_status is NonceStatus.STALE:
            return fail(AuthReason.STALE_NONCE, "nonce expired", stale=True)
        used = self.nonces.use(c.nonce, c.nonce_count, now, peer)
        if used is NonceStatus.REPLAY:
            return fail(AuthReason.REPLAY, "nonce-count did not increase", stale=True)
        if used is not NonceStatus.VALID:
            return fail(AuthReason.STALE_NONCE, "nonce no longer tracked", stale=True)
        return AuthResult(AuthReason.OK, username=c.username, claimed_username=c.username)
