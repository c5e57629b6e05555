"""Wire text on its way into the store.

The SIP parser decodes header bytes as UTF-8 with ``surrogateescape`` so that
bytes which are not UTF-8 go back out unchanged; SQLite cannot hold such
strings (``UnicodeEncodeError``). What the core stores from the wire (a
phone's User-Agent in Latin-1, odd bytes in a Call-ID) therefore goes through
:func:`storable` first.
"""

from __future__ import annotations

__all__ = ["storable"]


def storable(text: str) -> str:
    """``text`` unchanged when it is valid Unicode, else with each escaped byte as U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text
