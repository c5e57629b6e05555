"""Aligned plain-text tables for the command line (``ext list``, ``ban list``, ``tls report``)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["aligned"]


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[str] = ()) -> list[str]:
    """Lines of columns two spaces apart, without trailing blanks.

    The columns named in ``numeric`` (and their headers) are right-aligned,
    the others left-aligned.
    """
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    numeric_columns = [name in numeric for name in header]
    out = []
    for r in (header, *rows):
        cells = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric_columns)]
        out.append("  ".join(cells).rstrip())
    return out
