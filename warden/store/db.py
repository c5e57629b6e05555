"""The :class:`Store`: one SQLite file holding extensions, bindings, CDRs and API tokens."""

from __future__ import annotations

from .bindings import BindingsMixin
from .cdrs import CDRsMixin
from .extensions import ExtensionsMixin
from .tokens import TokensMixin

__all__ = ["Store"]


class Store(ExtensionsMixin, BindingsMixin, CDRsMixin, TokensMixin):
    """The durable store (SQLite, WAL), safe to share between threads.

    ``Store(path)`` creates the folders (0750) and the file (0640) if needed
    and brings the schema up to date, refusing (StoreError) a file written by
    a newer Warden. Several processes (the PBX, API workers, the CLI) may
    open the same file at once; open one per process, after any fork.
    ``Store(":memory:")`` gives a private in-memory database.

    Keyword options: ``busy_timeout`` (seconds another process's write lock
    is waited for, default 5) and ``clock`` (what stamps extensions'
    ``created_at``/``updated_at``, default ``time.time``).
    """
