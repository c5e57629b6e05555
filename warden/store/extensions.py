"""Extensions: the numbers phones register as, and their digest secrets.

Only the two HA1 hashes (RFC 7616: ``H(username:realm:password)`` with MD5
and SHA-256) are stored; the plaintext password is hashed on the way in and
never written, logged or kept. HA1 fields are out of reprs and comparisons.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from warden.errors import ExtensionExists, NoSuchExtension, StoreError
from warden.sip.auth import ha1

from ._connection import Database

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "Extension",
    "ExtensionsMixin",
    "check_display_name",
    "check_number",
    "check_password",
]

log = logging.getLogger("warden.store")

#: The shortest password an extension may have.
MIN_PASSWORD_LENGTH = 8
_MAX_PASSWORD_LENGTH = 256
_MAX_DISPLAY_NAME = 128
# Digits, or a SIP user part limited to letters, digits and . _ -
_NUMBER = re.compile(r"[A-Za-z0-9._-]{1,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_COLUMNS = "number, display_name, realm, ha1_md5, ha1_sha256, enabled, created_at, updated_at"
_SELECT_ONE = f"SELECT {_COLUMNS} FROM extensions WHERE number = ?"


@dataclass(frozen=True, slots=True)
class Extension:
    """One extension as stored."""

    number: str
    """The SIP user part phones register and are called as (e.g. ``1001``)."""
    display_name: str
    """Name shown to callees; may be empty."""
    realm: str
    """The digest realm the HA1 hashes were computed for."""
    ha1_md5: str = field(repr=False, compare=False)
    """Hex MD5 of ``number:realm:password``."""
    ha1_sha256: str = field(repr=False, compare=False)
    """Hex SHA-256 of ``number:realm:password``."""
    enabled: bool
    """A disabled extension cannot authenticate (``credentials`` gives None)."""
    created_at: float
    """Epoch seconds of creation."""
    updated_at: float
    """Epoch seconds of the last change (name, state or password)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, without the HA1 hashes."""
        return {
            "number": self.number,
            "display_name": self.display_name,
            "realm": self.realm,
            "enabled": self.enabled,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def _from_row(row: tuple[Any, ...]) -> Extension:
    number, name, realm, md5, sha256, enabled, created, updated = row
    return Extension(number, name, realm, md5, sha256, bool(enabled), created, updated)


def _first(rows: list[tuple[Any, ...]]) -> Extension | None:
    return _from_row(rows[0]) if rows else None


def _number_order(ext: Extension) -> tuple[bool, int, str]:
    # All-digit numbers first, in numeric order (shorter is smaller); then the rest.
    digits = ext.number.isdigit()
    return (not digits, len(ext.number) if digits else 0, ext.number)


def check_number(number: str) -> str:
    """Return ``number`` if it is a valid extension number, else raise StoreError."""
    if not isinstance(number, str) or not _NUMBER.fullmatch(number):
        raise StoreError(
            f"invalid extension number {number!r}: use 1-32 characters among "
            "digits, letters and . _ - (no spaces, no '@')"
        )
    return number


def check_password(password: str) -> str:
    """Return ``password`` if the policy accepts it; the error never quotes it."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise StoreError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > _MAX_PASSWORD_LENGTH:
        raise StoreError(f"password too long: use at most {_MAX_PASSWORD_LENGTH} characters")
    if _CONTROL.search(password):
        raise StoreError("password must not contain control characters")
    return password


def check_display_name(name: str) -> str:
    """Return ``name`` if it is a valid display name, else raise StoreError."""
    if not isinstance(name, str) or len(name) > _MAX_DISPLAY_NAME or _CONTROL.search(name):
        raise StoreError(
            f"invalid display name {name!r}: at most {_MAX_DISPLAY_NAME} characters, no control characters"
        )
    return name


def _check_realm(realm: str) -> str:
    if not isinstance(realm, str) or not realm or _CONTROL.search(realm) or '"' in realm:
        raise StoreError(f"invalid realm {realm!r}")
    return realm


class ExtensionsMixin(Database):
    """Extension methods of :class:`warden.store.Store`."""

    def add_extension(
        self, number: str, password: str, *, realm: str, display_name: str = "", enabled: bool = True
    ) -> Extension:
        """Create an extension; raise ExtensionExists (409) if the number is taken."""
        check_number(number)
        check_password(password)
        check_display_name(display_name)
        _check_realm(realm)
        now = self._now()
        ext = Extension(
            number, display_name, realm,
            ha1(number, realm, password, "MD5"), ha1(number, realm, password, "SHA-256"),
            bool(enabled), now, now,
        )
        with self._lock:
            conn = self._connection(write=True)
            try:
                conn.execute(
                    f"INSERT INTO extensions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (ext.number, ext.display_name, ext.realm, ext.ha1_md5, ext.ha1_sha256,
                     int(ext.enabled), ext.created_at, ext.updated_at),
                )
            except sqlite3.IntegrityError:
                raise ExtensionExists(f"extension {number} already exists") from None
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            finally:
                self._forget(("extension", number))
        log.info("extension %s added (%s)", number, "enabled" if enabled else "disabled")
        return ext

    def get_extension(self, number: str) -> Extension | None:
        """The extension with this number, or None."""
        ext: Extension | None = self._cached_read(("extension", number), _SELECT_ONE, (number,), _first)
        return ext

    def list_extensions(self) -> list[Extension]:
        """Every extension, ordered by number (numerically for all-digit numbers)."""
        exts = [_from_row(r) for r in self._query(f"SELECT {_COLUMNS} FROM extensions")]
        exts.sort(key=_number_order)
        return exts

    def credentials(self, number: str) -> tuple[str, str, str] | None:
        """``(ha1_md5, ha1_sha256, realm)`` of an *enabled* extension, else None.

        This is the digest authenticator's lookup; a disabled or unknown
        extension looks the same to it.
        """
        ext = self.get_extension(number)
        return (ext.ha1_md5, ext.ha1_sha256, ext.realm) if ext is not None and ext.enabled else None

    def set_password(self, number: str, password: str, *, realm: str) -> None:
        """Replace an extension's HA1 hashes (and realm); NoSuchExtension (404) if absent."""
        check_password(password)
        _check_realm(realm)
        with self._lock:  # no other thread may read (and cache) between the write and the forget
            changed = self._execute(
                "UPDATE extensions SET ha1_md5 = ?, ha1_sha256 = ?, realm = ?, updated_at = ? WHERE number = ?",
                (ha1(number, realm, password, "MD5"), ha1(number, realm, password, "SHA-256"),
                 realm, self._now(), number),
            )
            self._forget(("extension", number))
        if not changed:
            raise NoSuchExtension(f"no extension {number}")
        log.info("extension %s password changed", number)

    def update_extension(
        self, number: str, *, display_name: str | None = None, enabled: bool | None = None
    ) -> Extension:
        """Change the name and/or enabled state; return the extension as stored."""
        sets: list[str] = []
        params: list[Any] = []
        if display_name is not None:
            sets.append("display_name = ?")
            params.append(check_display_name(display_name))
        if enabled is not None:
            sets.append("enabled = ?")
            params.append(int(bool(enabled)))
        with self._write() as conn:
            if sets:
                conn.execute(
                    f"UPDATE extensions SET {', '.join(sets)}, updated_at = ? WHERE number = ?",
                    (*params, self._now(), number),
                )
            self._forget(("extension", number))
            row = conn.execute(_SELECT_ONE, (number,)).fetchone()
            if row is None:
                raise NoSuchExtension(f"no extension {number}")
        if sets:
            log.info("extension %s updated", number)
        return _from_row(row)

    def delete_extension(self, number: str) -> int:
        """Delete an extension and its bindings; return how many bindings went.

        Raises NoSuchExtension (404) if absent. CDRs are kept.
        """
        with self._write() as conn:
            bindings = conn.execute("SELECT count(*) FROM bindings WHERE aor = ?", (number,)).fetchone()[0]
            self._forget(("extension", number))
            self._forget(("bindings", number))  # gone with it (ON DELETE CASCADE)
            if not conn.execute("DELETE FROM extensions WHERE number = ?", (number,)).rowcount:
                raise NoSuchExtension(f"no extension {number}")
        log.info("extension %s deleted (%d bindings removed)", number, bindings)
        return int(bindings)
