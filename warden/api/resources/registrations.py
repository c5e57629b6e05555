"""``GET /api/v1/registrations``: registered contacts, live from the PBX or from the store.

When the PBX is not running the store's unexpired bindings are shown
(``"source": "store"``): what the PBX will serve once it is back.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, request

from ..app import json_response, store
from ..auth import requires
from ..pbx import bad_reply
from ..validate import MAX_FILTER, require_text

__all__ = ["bp"]

bp = Blueprint("registrations", __name__, url_prefix="/api/v1/registrations")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _item(b: dict[str, Any], now: float) -> dict[str, Any]:
    """One registration in the API's shape, from ``Binding.to_dict()`` (+ ``expires_in``)."""
    expires_at = _number(b.get("expires_at"))
    expires_in = b.get("expires_in")
    if not isinstance(expires_in, int) or isinstance(expires_in, bool):
        expires_in = max(0, int(expires_at - now)) if expires_at is not None else 0
    host, port = b.get("source_host"), b.get("source_port")
    source = b.get("source") if isinstance(b.get("source"), str) else None
    if source is None and isinstance(host, str):
        source = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    flow_alive = b.get("flow_alive")
    return {
        "aor": str(b.get("aor", "")),
        "contact": str(b.get("contact", "")),
        "transport": str(b.get("transport", "")),
        "source": source or "",
        "tls_version": _text(b.get("tls_version")),
        "tls_cipher": _text(b.get("tls_cipher")),
        "user_agent": str(b.get("user_agent") or ""),
        "instance_id": _text(b.get("instance_id")),
        "expires_in": max(0, expires_in),
        "expires_at": expires_at,
        "registered_at": _number(b.get("registered_at")),
        "flow_alive": flow_alive if isinstance(flow_alive, bool) else None,
    }


@bp.get("")
@requires("viewer")
def list_registrations() -> Response:
    """``{"source": "pbx" | "store", "items": [...], "total": n}``, optionally for one ``aor``."""
    aor = request.args.get("aor")
    if aor is not None:
        aor = require_text("aor", aor, max_length=MAX_FILTER)
    args = {"aor": aor} if aor is not None else {}
    now = time.time()
    running, result = current_app.extensions["warden.pbx"].try_call("registrations.list", **args)
    if running:
        if not isinstance(result, list) or not all(isinstance(b, dict) for b in result):
            raise bad_reply("registrations.list", "expected a list of objects")
        items = [_item(b, now) for b in result]
        source = "pbx"
    else:
        items = [_item(b.to_dict(), now) for b in store().bindings(aor, now=now)]
        source = "store"
    return json_response({"source": source, "items": items, "total": len(items)})
