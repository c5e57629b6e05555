"""Call detail records, written at each step of a call.

``start_cdr`` when the INVITE is accepted for routing, ``answer_cdr`` on the
2xx, ``end_cdr`` on the BYE, CANCEL or final failure. Each step is its own
committed transaction, so a ``kill -9`` of the PBX loses nothing already
written: a call cut short that way keeps a CDR without ``ended_at``.

Times are parameters (epoch seconds); nothing here reads a clock. Each step is
one statement (atomic on its own, no savepoint inside the engine's batch):
three per call where there were ten (savepoints, a SELECT before the end).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from warden.errors import StoreError

from ._connection import Database

__all__ = ["CDR", "DISPOSITIONS", "MAX_QUERY_LIMIT", "CDRsMixin"]

#: How a call ended.
DISPOSITIONS: tuple[str, ...] = (
    "answered", "no_answer", "busy", "cancelled", "failed", "not_found", "offline", "rejected",
)

#: The most CDRs one query returns.
MAX_QUERY_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class CDR:
    """One call as recorded."""

    id: int
    """Row id; never reused."""
    call_id: str
    """Call-ID of the caller's INVITE."""
    caller: str
    """Calling extension or user part."""
    callee: str
    """Dialled number."""
    started_at: float
    """Epoch seconds the call started."""
    answered_at: float | None
    """Epoch seconds it was answered; None if it never was."""
    ended_at: float | None
    """Epoch seconds it ended; None while in progress (or if the PBX died)."""
    duration: float
    """Seconds from answer to end; 0 for unanswered or unfinished calls."""
    disposition: str | None
    """One of :data:`DISPOSITIONS`; None until the call ends."""
    hangup_cause: str | None
    """Free text: who hung up, or the final SIP status and reason."""
    caller_transport: str
    """``udp``, ``tcp`` or ``tls`` on the caller's leg."""
    caller_tls_version: str | None
    """TLS version of the caller's leg, if TLS."""
    caller_tls_cipher: str | None
    """Cipher of the caller's leg, if TLS."""
    caller_source: str | None
    """``host:port`` the caller's INVITE came from."""
    callee_contact: str | None
    """Contact URI that answered."""
    callee_transport: str | None
    """Transport of the callee's leg."""
    callee_tls_version: str | None
    """TLS version of the callee's leg, if TLS."""
    callee_tls_cipher: str | None
    """Cipher of the callee's leg, if TLS."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)


_FIELDS = tuple(f.name for f in dataclasses.fields(CDR))
_COLUMNS = ", ".join(_FIELDS)


def _check_disposition(disposition: str) -> str:
    if disposition not in DISPOSITIONS:
        raise StoreError(f"unknown disposition {disposition!r}: use one of {', '.join(DISPOSITIONS)}")
    return disposition


def _filter(
    caller: str | None, callee: str | None, since: float | None, until: float | None, disposition: str | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("caller = ?", caller),
        ("callee = ?", callee),
        ("started_at >= ?", since),
        ("started_at < ?", until),
        ("disposition = ?", None if disposition is None else _check_disposition(disposition)),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class CDRsMixin(Database):
    """CDR methods of :class:`warden.store.Store`."""

    def start_cdr(
        self,
        call_id: str,
        caller: str,
        callee: str,
        started_at: float,
        *,
        caller_transport: str,
        caller_tls_version: str | None = None,
        caller_tls_cipher: str | None = None,
        caller_source: str | None = None,
    ) -> int:
        """Record a new call; return its CDR id."""
        return self._insert(
            "INSERT INTO cdrs (call_id, caller, callee, started_at, caller_transport, "
            "caller_tls_version, caller_tls_cipher, caller_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (call_id, caller, callee, started_at, caller_transport,
             caller_tls_version, caller_tls_cipher, caller_source),
        )

    def answer_cdr(
        self,
        cdr_id: int,
        answered_at: float,
        *,
        callee_contact: str | None = None,
        callee_transport: str | None = None,
        callee_tls_version: str | None = None,
        callee_tls_cipher: str | None = None,
    ) -> None:
        """Record the answer; StoreError 404 if unknown, 409 if already answered or ended."""
        changed = self._execute(
            "UPDATE cdrs SET answered_at = ?, callee_contact = ?, callee_transport = ?, "
            "callee_tls_version = ?, callee_tls_cipher = ? "
            "WHERE id = ? AND answered_at IS NULL AND ended_at IS NULL",
            (answered_at, callee_contact, callee_transport, callee_tls_version, callee_tls_cipher, cdr_id),
        )
        if not changed:
            rows = self._query("SELECT ended_at FROM cdrs WHERE id = ?", (cdr_id,))
            if not rows:
                raise StoreError(f"no CDR {cdr_id}", status=404)
            state = "ended" if rows[0][0] is not None else "answered"
            raise StoreError(f"CDR {cdr_id} is already {state}", status=409)

    def end_cdr(self, cdr_id: int, ended_at: float, disposition: str, hangup_cause: str | None) -> None:
        """Record the end; duration is ``ended_at - answered_at`` for answered calls, else 0.

        StoreError 404 if unknown, 409 if already ended, 400 for an unknown disposition.
        """
        _check_disposition(disposition)
        changed = self._execute(
            "UPDATE cdrs SET ended_at = ?1, disposition = ?2, hangup_cause = ?3, "
            "duration = CASE WHEN answered_at IS NULL THEN 0.0 ELSE max(0.0, ?1 - answered_at) END "
            "WHERE id = ?4 AND ended_at IS NULL",
            (ended_at, disposition, hangup_cause, cdr_id),
        )
        if not changed:
            if not self._query("SELECT 1 FROM cdrs WHERE id = ?", (cdr_id,)):
                raise StoreError(f"no CDR {cdr_id}", status=404)
            raise StoreError(f"CDR {cdr_id} is already ended", status=409)

    def get_cdr(self, cdr_id: int) -> CDR | None:
        """One CDR by id, or None."""
        rows = self._query(f"SELECT {_COLUMNS} FROM cdrs WHERE id = ?", (cdr_id,))
        return CDR(*rows[0]) if rows else None

    def query_cdrs(
        self,
        *,
        caller: str | None = None,
        callee: str | None = None,
        since: float | None = None,
        until: float | None = None,
        disposition: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[CDR]:
        """CDRs matching every filter given, newest first.

        ``since`` is inclusive and ``until`` exclusive, both on ``started_at``.
        """
        if not isinstance(limit, int) or not 1 <= limit <= MAX_QUERY_LIMIT:
            raise StoreError(f"limit must be 1 to {MAX_QUERY_LIMIT}, got {limit!r}")
        if not isinstance(offset, int) or offset < 0:
            raise StoreError(f"offset must be 0 or more, got {offset!r}")
        where, params = _filter(caller, callee, since, until, disposition)
        rows = self._query(
            f"SELECT {_COLUMNS} FROM cdrs{where} ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [CDR(*r) for r in rows]

    def count_cdrs(
        self,
        *,
        caller: str | None = None,
        callee: str | None = None,
        since: float | None = None,
        until: float | None = None,
        disposition: str | None = None,
    ) -> int:
        """How many CDRs match (same filters as :meth:`query_cdrs`)."""
        where, params = _filter(caller, callee, since, until, disposition)
        return int(self._query(f"SELECT count(*) FROM cdrs{where}", params)[0][0])
