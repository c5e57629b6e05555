"""The store's schema, as an ordered list of migrations.

Migration *n* (1-based) takes a database at ``PRAGMA user_version`` *n-1* to
*n*. Each runs in its own ``BEGIN IMMEDIATE`` transaction together with the
version bump, so a crash or a second process opening the same file at the same
time leaves the schema either before or after a step, never half-way.

Append only: a released migration is never edited; a change is a new entry.
"""

from __future__ import annotations

import sqlite3

from warden.errors import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "user_version"]

#: Each entry is the statements of one migration, run in order.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: extensions, registrations (bindings) and call detail records.
    (
        """
        CREATE TABLE extensions (
            number       TEXT NOT NULL PRIMARY KEY,
            display_name TEXT NOT NULL DEFAULT '',
            realm        TEXT NOT NULL,
            ha1_md5      TEXT NOT NULL,
            ha1_sha256   TEXT NOT NULL,
            enabled      INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
            created_at   REAL NOT NULL,
            updated_at   REAL NOT NULL
        ) WITHOUT ROWID
        """,
        # A binding belongs to an extension: deleting the extension deletes its
        # bindings, and a binding for an unknown AOR cannot be written, even by
        # a PBX process racing a CLI `ext del`.
        """
        CREATE TABLE bindings (
            aor           TEXT NOT NULL REFERENCES extensions (number)
                              ON DELETE CASCADE ON UPDATE CASCADE,
            binding_key   TEXT NOT NULL,
            contact       TEXT NOT NULL,
            instance_id   TEXT,
            reg_id        INTEGER,
            expires_at    REAL NOT NULL,
            call_id       TEXT NOT NULL,
            cseq          INTEGER NOT NULL,
            transport     TEXT NOT NULL,
            source_host   TEXT NOT NULL,
            source_port   INTEGER NOT NULL,
            local_host    TEXT NOT NULL,
            local_port    INTEGER NOT NULL,
            flow_token    TEXT NOT NULL,
            path          TEXT NOT NULL,
            user_agent    TEXT NOT NULL,
            tls_version   TEXT,
            tls_cipher    TEXT,
            q             REAL NOT NULL,
            registered_at REAL NOT NULL,
            updated_at    REAL NOT NULL,
            PRIMARY KEY (aor, binding_key)
        )
        """,
        "CREATE INDEX bindings_expires_at ON bindings (expires_at)",
        # AUTOINCREMENT: a CDR id is never reused, even after the newest rows go.
        """
        CREATE TABLE cdrs (
            id                 INTEGER PRIMARY KEY AUTOINCREMENT,
            call_id            TEXT NOT NULL,
            caller             TEXT NOT NULL,
            callee             TEXT NOT NULL,
            started_at         REAL NOT NULL,
            answered_at        REAL,
            ended_at           REAL,
            duration           REAL NOT NULL DEFAULT 0,
            disposition        TEXT,
            hangup_cause       TEXT,
            caller_transport   TEXT NOT NULL,
            caller_tls_version TEXT,
            caller_tls_cipher  TEXT,
            caller_source      TEXT,
            callee_contact     TEXT,
            callee_transport   TEXT,
            callee_tls_version TEXT,
            callee_tls_cipher  TEXT
        )
        """,
        "CREATE INDEX cdrs_started_at ON cdrs (started_at)",
        "CREATE INDEX cdrs_caller ON cdrs (caller, started_at)",
        "CREATE INDEX cdrs_callee ON cdrs (callee, started_at)",
        "CREATE INDEX cdrs_call_id ON cdrs (call_id)",
    ),
    # 2: admin API bearer tokens (SHA-256 of the secret only; see store/tokens.py).
    (
        """
        CREATE TABLE api_tokens (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            name         TEXT NOT NULL,
            role         TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
            token_sha256 TEXT NOT NULL UNIQUE,
            created_at   REAL NOT NULL,
            last_used_at REAL,
            revoked      INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
            revoked_at   REAL
        )
        """,
        # A name is unique among active tokens; revoking one frees its name.
        "CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked = 0",
    ),
)

#: The schema version this code writes and understands.
SCHEMA_VERSION: int = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the database file."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _too_new(where: str, version: int) -> StoreError:
    return StoreError(
        f"{where}: database schema version {version} is newer than this Warden PBX "
        f"understands ({SCHEMA_VERSION}); upgrade warden-pbx or restore a matching database",
        status=500,
    )


def migrate(conn: sqlite3.Connection, where: str) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`; return the version found.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Raises
    StoreError, without changing anything, when the file is newer than us.
    """
    found = user_version(conn)
    if found > SCHEMA_VERSION:
        raise _too_new(where, found)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated.
            version = user_version(conn)
            if version > SCHEMA_VERSION:
                raise _too_new(where, version)
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return found
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
