"""Registrations (RFC 3261 §10 bindings), kept on disk so they survive a restart.

One row per (AOR, binding key). The key follows RFC 5626 §6 / RFC 5627: a
phone that sends ``+sip.instance`` and ``reg-id`` is identified by both (one
binding per flow); ``+sip.instance`` alone identifies the device; otherwise
the Contact URI is the key. The registrar passes the contact already in the
form it compares (this module compares strings).

Times are parameters (epoch seconds); nothing here reads a clock.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sqlite3
from dataclasses import dataclass
from typing import Any

from warden.errors import NoSuchExtension, StoreError

from ._connection import Database

__all__ = ["TRANSPORTS", "Binding", "BindingsMixin", "binding_key"]

log = logging.getLogger("warden.store")

#: Transports a binding can be reached over.
TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "tls")


def binding_key(contact: str, instance_id: str | None, reg_id: int | None) -> str:
    """The key a binding is stored under (see the module docstring)."""
    if instance_id:
        return instance_id if reg_id is None else f"{instance_id};reg-id={reg_id:d}"
    return contact


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One registered contact of an AOR."""

    aor: str
    """The extension number the phone registered."""
    contact: str
    """The Contact URI, as text."""
    instance_id: str | None = None
    """``+sip.instance`` (e.g. ``<urn:uuid:...>``), when sent."""
    reg_id: int | None = None
    """RFC 5626 ``reg-id``, when sent."""
    expires_at: float
    """Epoch seconds when the binding lapses."""
    call_id: str
    """Call-ID of the REGISTER that last refreshed it."""
    cseq: int
    """CSeq number of that REGISTER."""
    transport: str
    """``udp``, ``tcp`` or ``tls``."""
    source_host: str
    """Address the REGISTER came from."""
    source_port: int
    """Port the REGISTER came from."""
    local_host: str = ""
    """Our address it arrived on."""
    local_port: int = 0
    """Our port it arrived on."""
    flow_token: str = ""
    """Opaque; the transport layer finds the connection with it."""
    path: str = ""
    """Path header values (RFC 3327), as text; empty when none."""
    user_agent: str = ""
    """User-Agent of the phone."""
    tls_version: str | None = None
    """Negotiated TLS version (e.g. ``TLSv1.3``) for TLS bindings."""
    tls_cipher: str | None = None
    """Negotiated cipher for TLS bindings."""
    q: float = 1.0
    """Contact preference, 0 to 1."""
    registered_at: float
    """Epoch seconds of the first registration of this key (kept on refresh)."""
    updated_at: float | None = None
    """Epoch seconds of the last refresh; defaults to ``registered_at``."""

    def __post_init__(self) -> None:
        if self.updated_at is None:
            object.__setattr__(self, "updated_at", self.registered_at)

    @property
    def key(self) -> str:
        """``instance;reg-id=N``, the instance alone, or the contact URI."""
        return binding_key(self.contact, self.instance_id, self.reg_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, plus ``key``."""
        d = dataclasses.asdict(self)
        d["key"] = self.key
        return d


_FIELDS = tuple(f.name for f in dataclasses.fields(Binding))
_COLUMNS = ", ".join(_FIELDS)
_INSERT = (
    f"INSERT INTO bindings (binding_key, {_COLUMNS}) VALUES (?{', ?' * len(_FIELDS)}) "
    "ON CONFLICT (aor, binding_key) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in _FIELDS if n not in ("aor", "registered_at"))
)
_SELECT_AOR = f"SELECT {_COLUMNS} FROM bindings WHERE aor = ? ORDER BY q DESC, updated_at DESC, binding_key"


def _from_row(row: tuple[Any, ...]) -> Binding:
    return Binding(**dict(zip(_FIELDS, row)))


def _all(rows: list[tuple[Any, ...]]) -> tuple[Binding, ...]:
    return tuple(_from_row(r) for r in rows)


def _check(b: Binding) -> None:
    if b.transport not in TRANSPORTS:
        raise StoreError(f"binding transport must be one of {', '.join(TRANSPORTS)}, got {b.transport!r}")
    for name in ("source_port", "local_port"):
        port = getattr(b, name)
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise StoreError(f"binding {name} must be 0-65535, got {port!r}")
    if not isinstance(b.cseq, int) or b.cseq < 0:
        raise StoreError(f"binding cseq must be a non-negative integer, got {b.cseq!r}")
    if not (isinstance(b.q, (int, float)) and 0.0 <= b.q <= 1.0):
        raise StoreError(f"binding q must be between 0 and 1, got {b.q!r}")
    for name in ("expires_at", "registered_at", "updated_at"):
        value = getattr(b, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise StoreError(f"binding {name} must be a finite number, got {value!r}")
    if not b.contact or not b.aor:
        raise StoreError("binding needs an aor and a contact")


class BindingsMixin(Database):
    """Binding methods of :class:`warden.store.Store`."""

    def upsert_binding(self, binding: Binding) -> None:
        """Insert or refresh a binding (same AOR and key); keep its ``registered_at``.

        Raises NoSuchExtension (404) when the AOR is not an extension.
        """
        _check(binding)
        values = (binding.key, *(getattr(binding, n) for n in _FIELDS))
        with self._lock:
            conn = self._connection(write=True)
            self._forget(("bindings", binding.aor))
            try:
                conn.execute(_INSERT, values)
            except sqlite3.IntegrityError:
                raise NoSuchExtension(f"no extension {binding.aor}") from None
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def remove_binding(self, aor: str, key: str) -> bool:
        """Remove one binding; return whether it existed."""
        with self._lock:  # no other thread may read (and cache) between the write and the forget
            removed = self._execute("DELETE FROM bindings WHERE aor = ? AND binding_key = ?", (aor, key)) > 0
            self._forget(("bindings", aor))
        return removed

    def remove_bindings(self, aor: str) -> int:
        """Remove every binding of an AOR; return how many went."""
        with self._lock:
            removed = self._execute("DELETE FROM bindings WHERE aor = ?", (aor,))
            self._forget(("bindings", aor))
        return removed

    def bindings(self, aor: str | None = None, *, now: float | None = None) -> list[Binding]:
        """Bindings of one AOR (or all), best ``q`` first; only unexpired when ``now`` is given."""
        if aor is not None:  # the call path: cached (see warden.store._connection)
            cached: tuple[Binding, ...] = self._cached_read(("bindings", aor), _SELECT_AOR, (aor,), _all)
            return [b for b in cached if now is None or b.expires_at > now]
        where, params = _filter(aor, now)
        rows = self._query(
            f"SELECT {_COLUMNS} FROM bindings{where} ORDER BY aor, q DESC, updated_at DESC, binding_key",
            params,
        )
        return [_from_row(r) for r in rows]

    def expire_bindings(self, now: float) -> list[Binding]:
        """Delete the bindings with ``expires_at <= now`` and return them."""
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM bindings WHERE expires_at <= ? ORDER BY aor, binding_key", (now,)
            ).fetchall()
            if rows:
                conn.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
                for row in rows:
                    self._forget(("bindings", row[0]))
        if rows:
            log.debug("%d bindings expired", len(rows))
        return [_from_row(r) for r in rows]

    def count_bindings(self, aor: str | None = None, *, now: float | None = None) -> int:
        """How many bindings (of one AOR, unexpired at ``now`` when given)."""
        where, params = _filter(aor, now)
        return int(self._query(f"SELECT count(*) FROM bindings{where}", params)[0][0])

    def binding_counts(self, *, now: float | None = None) -> dict[str, int]:
        """Bindings per AOR (unexpired at ``now`` when given); AORs with none are absent."""
        where, params = _filter(None, now)
        rows = self._query(f"SELECT aor, count(*) FROM bindings{where} GROUP BY aor", params)
        return {aor: int(n) for aor, n in rows}


    def binding_counts_by_transport(self, *, now: float | None = None) -> dict[str, int]:
        """Bindings per transport (unexpired at ``now`` when given); every transport present, 0 if none."""
        where, params = _filter(None, now)
        rows = self._query(f"SELECT transport, count(*) FROM bindings{where} GROUP BY transport", params)
        counts = dict.fromkeys(TRANSPORTS, 0)
        counts.update({t: int(n) for t, n in rows})
        return counts


def _filter(aor: str | None, now: float | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if aor is not None:
        clauses.append("aor = ?")
        params.append(aor)
    if now is not None:
        clauses.append("expires_at > ?")
        params.append(now)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
