"""``/api/v1/bans``: addresses the PBX banned for failed authentication; lift one (admin).

Bans live in the PBX's memory (a restart ends them), so both need the PBX
running: 503 otherwise.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from flask import Blueprint, Response, current_app

from ..app import json_response
from ..auth import requires
from ..pbx import bad_reply
from ..problems import APIProblem

__all__ = ["bp"]

bp = Blueprint("bans", __name__, url_prefix="/api/v1/bans")

_FIELDS = {"address": str, "reason": str, "banned_at": (int, float), "expires_at": (int, float),
           "expires_in": int, "dropped": int}


def _item(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad_reply("bans.list", "a ban is not an object")
    out = {}
    for name, kind in _FIELDS.items():
        value = raw.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad_reply("bans.list", f"a ban's {name!r} is missing or of the wrong type")
        out[name] = value
    return out


def _address(text: str) -> str:
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=False))
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:  # no such resource: only addresses and IPv6 /64s are ever banned
        raise APIProblem(404, "no ban of that: not an IP address or network") from None


@bp.get("")
@requires("viewer")
def list_bans() -> Response:
    """``{"items": [...], "total": n}``, oldest ban first."""
    result = current_app.extensions["warden.pbx"].call("bans.list")
    if not isinstance(result, list):
        raise bad_reply("bans.list", "expected a list")
    items = [_item(b) for b in result]
    return json_response({"items": items, "total": len(items)})


@bp.delete("/<path:address>")
@requires("admin")
def lift_ban(address: str) -> Response:
    """Lift the ban of ``address`` (or of the IPv6 /64 it is in, or of ``2001:db8::/64``):
    204, or 404 when it is not banned (or not an address)."""
    current_app.extensions["warden.pbx"].call_resource("bans.lift", address=_address(address))
    return Response(status=204)
