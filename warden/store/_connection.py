"""One SQLite connection shared by threads, opened the way every table needs.

Strategy: the connection is in autocommit mode (``isolation_level=None``), so
a single statement is its own transaction and nothing is ever left open
between calls; several statements that must agree run inside
``BEGIN IMMEDIATE``, which takes the write lock up front (a deferred
transaction that later upgrades to a writer can fail with "database is
locked" without waiting). WAL lets the PBX, the API workers and the CLI read
while one of them writes; ``synchronous=NORMAL`` in WAL mode makes every
commit survive a crash or ``kill -9`` of the process (only a power cut can
lose the last commits), without an fsync per commit. A Python lock serialises
threads on the one connection; ``busy_timeout`` makes another process's
writer wait rather than fail.

Read cache: extensions and bindings are read for every call and REGISTER
(digest credentials, "does the callee exist", "where is it registered") and
change rarely, but other processes change them too (the CLI's ``ext
passwd``, the API). So cached rows are only served while ``PRAGMA
data_version`` (which changes when another connection commits) is what it
was when they were read; our own writes drop what they touch, and a
rollback drops everything. Inside our own write transaction (the batch)
nobody else can commit, so after one check when it begins, lookups there
cost no statement at all: a call's three lookups went from three SELECTs to
none, and a password changed by the CLI is never served stale.

Batches: the PBX's protocol thread wraps each turn of its loop in
:meth:`Database.batch`, so the writes of many requests share one transaction
and one commit (a commit per REGISTER was the registrar's largest cost). The
transaction begins at the first write and commits when the batch ends, before
the engine sends any response, so an answered request is as durable as
before. Inside a batch, ``_write`` blocks become savepoints.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from warden.errors import StoreError

from .migrations import migrate

__all__ = ["MEMORY", "Database"]

log = logging.getLogger("warden.store")

_fork_generation = 0
"""How many times this process's ancestry forked since import (see _connection())."""


def _forked() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_forked)

_MISSING = object()
_CACHE_LIMIT = 8192
"""Most cached lookups; past it the cache starts again empty (a scan of unknown numbers cannot grow it)."""

#: Pass as the path for a private in-memory database (tests, tools).
MEMORY = ":memory:"

_DIR_MODE = 0o750
_FILE_MODE = 0o640


def _prepare_file(path: Path) -> None:
    """Create missing parent folders (0750) and the database file (0640).

    Only what we create gets those modes; existing folders and files keep
    whatever the administrator gave them. SQLite gives its ``-wal`` and
    ``-shm`` files the database file's mode.
    """
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=_DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, _DIR_MODE)  # mkdir's mode is filtered by the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, _FILE_MODE)
    finally:
        os.close(fd)


def _busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is SQLITE_BUSY ("database is locked"), in any of its extended forms."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "locked" in str(exc)


class Database:
    """The connection, its lock and the helpers the table mixins use."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        memory = str(path) == MEMORY
        self.path: str = MEMORY if memory else str(Path(path))
        self._clock = clock
        self._lock = threading.RLock()
        self._batching = False
        self._generation = _fork_generation
        self._cache: dict[tuple[str, str], Any] = {}
        self._data_version = -1
        if not memory:
            try:
                _prepare_file(Path(self.path))
            except OSError as exc:
                raise StoreError(
                    f"{self.path}: cannot create the database: {exc.strerror or exc}", status=500
                ) from None
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc}", status=500) from None
        try:
            found = self._set_up(conn, busy_timeout, memory)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{self.path}: cannot open the database: {exc}", status=500) from None
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn
        log.debug("store %s open (schema version %d on open)", self.path, found)

    def _set_up(self, conn: sqlite3.Connection, busy_timeout: float, memory: bool) -> int:
        """Set the connection's pragmas, switch to WAL and migrate; return the schema version found.

        Why the retry: SQLite answers the switch to WAL with SQLITE_BUSY at
        once, without calling the busy handler, while another connection
        holds the write lock on a file not yet in WAL mode (the PBX and the
        API workers creating the file on first boot). Every step here is
        idempotent, so the sequence is retried until ``busy_timeout`` has
        passed, as a busy handler would have waited.
        """
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000):d}")
                conn.execute("PRAGMA foreign_keys = ON")
                if not memory:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise StoreError(
                            f"{self.path}: cannot switch the database to WAL mode (got {mode})", status=500
                        )
                conn.execute("PRAGMA synchronous = NORMAL")
                return migrate(conn, self.path)
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                log.debug("store %s busy while opening (%s); trying again", self.path, exc)
                time.sleep(0.01)

    # --- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; later calls raise StoreError. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"<{type(self).__name__} {self.path!r} {state}>"

    # --- helpers for the table mixins -----------------------------------------

    def _now(self) -> float:
        return self._clock()

    def _connection(self, *, write: bool = False) -> sqlite3.Connection:
        """The connection (call with the lock held); ``write=True`` before a
        write statement, which opens the batch's transaction if one is due."""
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self.path}: the store is closed", status=500)
        if _fork_generation != self._generation:  # cheaper than os.getpid(), a system call per query
            # A SQLite connection must not be used on both sides of fork().
            raise StoreError(f"{self.path}: a Store cannot cross fork(); open one in the child", status=500)
        if write and self._batching and not conn.in_transaction:
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._check_version(conn)  # the cache now holds for the whole transaction
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        return conn

    # --- the read cache (see the module docstring) ------------------------------

    def _check_version(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._cache.clear()
            self._data_version = version

    def _cached_read(self, key: tuple[str, str], sql: str, params: Sequence[Any],
                     build: Callable[[list[Any]], Any]) -> Any:
        """``build(rows)`` of a read statement (immutable), from the cache while no one else has written."""
        with self._lock:
            conn = self._connection()
            try:
                if not conn.in_transaction:  # in our write transaction no one else can commit
                    self._check_version(conn)
                cache = self._cache
                rows = cache.get(key, _MISSING)
                if rows is _MISSING:
                    rows = build(conn.execute(sql, params).fetchall())
                    if len(cache) >= _CACHE_LIMIT:
                        cache.clear()
                    cache[key] = rows
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            return rows

    def _forget(self, key: tuple[str, str]) -> None:
        """Drop a cached lookup our own write makes stale (call it with the lock held, around the write)."""
        self._cache.pop(key, None)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run the body's writes in one transaction, committed when it ends.

        Holds the store's lock throughout, so other threads of the process
        wait rather than join the transaction; keep the body short. Nested
        batches join the outer one. A failed commit is rolled back and raised
        as StoreError.
        """
        with self._lock:
            if self._batching:
                yield
                return
            self._batching = True
            try:
                yield
            finally:
                self._batching = False
                conn = self._conn
                if conn is not None and conn.in_transaction:
                    try:
                        conn.execute("COMMIT")
                    except sqlite3.Error as exc:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise self._error(exc) from None

    def _error(self, exc: sqlite3.Error) -> StoreError:
        self._cache.clear()  # a failed statement may have rolled back writes the cache saw
        text = str(exc)
        busy = isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)
        return StoreError(f"{self.path}: {text}", status=503 if busy else 500)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one read statement; return all its rows (tuples)."""
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement as its own transaction (or in the batch); return rows changed."""
        with self._lock:
            conn = self._connection(write=True)
            try:
                return conn.execute(sql, params).rowcount
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def _insert(self, sql: str, params: Sequence[Any] = (), *, conflict: str | None = None) -> int:
        """Run one INSERT as its own transaction (or in the batch); return the new row's id.

        ``conflict``: the message of a StoreError 409 when a constraint refuses the row
        (otherwise that is a 500 like any other SQLite error)."""
        with self._lock:
            conn = self._connection(write=True)
            try:
                rowid = conn.execute(sql, params).lastrowid
            except sqlite3.IntegrityError as exc:
                if conflict is None:
                    raise self._error(exc) from None
                raise StoreError(conflict, status=409) from None
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        assert rowid is not None
        return int(rowid)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on success, else rolled back.

        The body may raise StoreError itself; any sqlite3.Error becomes one.
        """
        with self._lock:
            conn = self._connection(write=True)
            if self._batching:
                with self._savepoint(conn):
                    yield conn
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self._error(exc) from None
            except BaseException:
                self._cache.clear()
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _savepoint(self, conn: sqlite3.Connection) -> Iterator[None]:
        """``_write`` inside a batch: undo only this block on failure."""
        try:
            conn.execute("SAVEPOINT warden_write")
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            yield
            conn.execute("RELEASE warden_write")
        except BaseException as exc:
            self._cache.clear()
            conn.execute("ROLLBACK TO warden_write")
            conn.execute("RELEASE warden_write")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from None
            raise
