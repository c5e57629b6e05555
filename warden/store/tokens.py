"""Admin API bearer tokens: random secrets, stored only as SHA-256 hashes.

A token is ``wdn_`` followed by 43 URL-safe characters (32 random bytes,
:func:`secrets.token_urlsafe`). The prefix lets an admin, a log scrubber or a
secret scanner recognise one. The plaintext is returned once by
:meth:`TokensMixin.create_token` and never stored, logged or kept: the table
holds ``sha256(token)`` in hex, which is all :meth:`TokensMixin.verify_token`
needs. A 256-bit secret needs no slow hash (there is nothing to brute-force),
and a lookup by hash takes the same path whatever the token.

Names identify tokens for people (``api token revoke ci-bot``); they start
with a letter so a name is never mistaken for a numeric id. A name is unique
among unrevoked tokens: revoking frees it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

from warden.errors import StoreError

from ._connection import Database

__all__ = [
    "ROLES",
    "TOKEN_PREFIX",
    "APIToken",
    "TokensMixin",
    "check_token_name",
    "hash_token",
]

log = logging.getLogger("warden.store")

#: ``admin`` reads and writes; ``viewer`` only reads.
ROLES: tuple[str, ...] = ("admin", "viewer")

#: What every token starts with.
TOKEN_PREFIX = "wdn_"

# last_used_at is refreshed at most this often (seconds): not a write per request.
_TOUCH_INTERVAL = 60.0
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
_SECRET = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")
_COLUMNS = "id, name, role, created_at, last_used_at, revoked, revoked_at"


@dataclass(frozen=True, slots=True)
class APIToken:
    """One token as stored (never the secret, never its hash)."""

    id: int
    """Row id; never reused."""
    name: str
    """What people call it; unique among unrevoked tokens."""
    role: str
    """``admin`` or ``viewer``."""
    created_at: float
    """Epoch seconds of creation."""
    last_used_at: float | None
    """Epoch seconds of the last successful use (to within a minute); None if never."""
    revoked: bool
    """A revoked token authenticates nothing."""
    revoked_at: float | None
    """Epoch seconds of revocation; None while active."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
        }


def _from_row(row: tuple[Any, ...]) -> APIToken:
    tid, name, role, created, used, revoked, revoked_at = row
    return APIToken(int(tid), name, role, created, used, bool(revoked), revoked_at)


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token, the only form stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_token_name(name: str) -> str:
    """Return ``name`` if valid (a letter, then up to 63 of letters, digits, . _ -)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise StoreError(
            f"invalid token name {name!r}: start with a letter, then up to 63 letters, digits, '.', '_' or '-'"
        )
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise StoreError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    return role


class TokensMixin(Database):
    """API token methods of :class:`warden.store.Store`."""

    def create_token(self, name: str, role: str) -> tuple[APIToken, str]:
        """Create a token; return it and its secret (shown once, never stored).

        Raises StoreError 409 when an unrevoked token already has ``name``.
        """
        check_token_name(name)
        _check_role(role)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        token_id = self._insert(
            "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES (?, ?, ?, ?)",
            (name, role, hash_token(secret), now),
            conflict=f"an active API token named {name!r} already exists",
        )
        log.info("API token %r (id %d, %s) created", name, token_id, role)
        return APIToken(token_id, name, role, now, None, False, None), secret

    def verify_token(self, secret: str, *, now: float | None = None) -> APIToken | None:
        """The unrevoked token whose secret this is, or None.

        Refreshes ``last_used_at`` (at most once a minute per token).
        Malformed input is simply not a token: no error, no store access.
        """
        if not isinstance(secret, str) or not _SECRET.fullmatch(secret):
            return None
        rows = self._query(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE token_sha256 = ? AND revoked = 0", (hash_token(secret),)
        )
        if not rows:
            return None
        token = _from_row(rows[0])
        when = self._now() if now is None else now
        if token.last_used_at is None or when - token.last_used_at >= _TOUCH_INTERVAL:
            try:
                self._execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (when, token.id))
            except StoreError as exc:  # a busy database must not turn a valid token away
                log.warning("could not record use of API token %d: %s", token.id, exc)
        return token

    def list_tokens(self, *, include_revoked: bool = True) -> list[APIToken]:
        """Tokens by id (oldest first)."""
        where = "" if include_revoked else " WHERE revoked = 0"
        return [_from_row(r) for r in self._query(f"SELECT {_COLUMNS} FROM api_tokens{where} ORDER BY id")]

    def revoke_token(self, name_or_id: str | int) -> APIToken:
        """Revoke the active token with this name (or this id); return it as revoked.

        Raises StoreError 404 when no active token matches.
        """
        key: int | str
        if isinstance(name_or_id, int) or (isinstance(name_or_id, str) and name_or_id.isdigit()):
            where, key = "id = ?", int(name_or_id)
        else:
            where, key = "name = ?", check_token_name(str(name_or_id))
        with self._write() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE {where} AND revoked = 0", (key,)).fetchone()
            if row is None:
                raise StoreError(f"no active API token {name_or_id!r}", status=404)
            now = self._now()
            conn.execute("UPDATE api_tokens SET revoked = 1, revoked_at = ? WHERE id = ?", (now, row[0]))
        token = _from_row(row)
        log.info("API token %r (id %d) revoked", token.name, token.id)
        return APIToken(token.id, token.name, token.role, token.created_at, token.last_used_at, True, now)
