"""``GET /api/v1/cdrs``: call detail records, filtered and paginated, newest first."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, request

from warden.store import DISPOSITIONS

from ..app import json_response, store
from ..auth import requires
from ..problems import APIProblem
from ..validate import MAX_FILTER, parse_int, parse_time, require_text

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "MAX_OFFSET", "bp"]

bp = Blueprint("cdrs", __name__, url_prefix="/api/v1/cdrs")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000_000
_FILTERS = ("caller", "callee", "since", "until", "disposition")


@bp.get("")
@requires("viewer")
def list_cdrs() -> Response:
    """``{"total", "limit", "offset", "items", "next"}``; ``next`` is the following page's URL or null.

    Filters: ``caller``, ``callee`` (exact), ``since`` (inclusive) and
    ``until`` (exclusive) on the start time as ISO 8601 or epoch seconds,
    ``disposition``.
    """
    args = request.args
    caller = require_text("caller", args["caller"], max_length=MAX_FILTER) if "caller" in args else None
    callee = require_text("callee", args["callee"], max_length=MAX_FILTER) if "callee" in args else None
    since = parse_time("since", args.get("since"))
    until = parse_time("until", args.get("until"))
    disposition = args.get("disposition")
    if disposition is not None and disposition not in DISPOSITIONS:
        raise APIProblem.invalid("disposition", f"must be one of {', '.join(DISPOSITIONS)}")
    limit = parse_int("limit", args.get("limit"), default=DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT)
    offset = parse_int("offset", args.get("offset"), default=0, lo=0, hi=MAX_OFFSET)
    filters: dict[str, Any] = {
        "caller": caller, "callee": callee, "since": since, "until": until, "disposition": disposition,
    }
    s = store()
    total = s.count_cdrs(**filters)
    items = s.query_cdrs(**filters, limit=limit, offset=offset) if offset < total else []
    next_url = None
    if offset + limit < total:
        query = [(k, args[k]) for k in _FILTERS if k in args]
        query += [("limit", str(limit)), ("offset", str(offset + limit))]
        next_url = f"{request.path}?{urlencode(query)}"
    return json_response({
        "total": total, "limit": limit, "offset": offset,
        "items": [c.to_dict() for c in items], "next": next_url,
    })
