"""``GET /api/v1/calls``: live calls, from the PBX (503 when it is not running)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from ..app import json_response
from ..auth import requires
from ..pbx import bad_reply

__all__ = ["bp"]

bp = Blueprint("calls", __name__, url_prefix="/api/v1/calls")


@bp.get("")
@requires("viewer")
def list_calls() -> Response:
    """``{"items": [call, ...]}`` as control op ``calls.list`` gives them."""
    result = current_app.extensions["warden.pbx"].call("calls.list")
    if not isinstance(result, list) or not all(isinstance(c, dict) for c in result):
        raise bad_reply("calls.list", "expected a list of objects")
    for call in result:
        legs = call.get("legs")
        if not isinstance(legs, list) or not all(isinstance(leg, dict) for leg in legs):
            raise bad_reply("calls.list", "a call's 'legs' is not a list of objects")
    return json_response({"items": result, "total": len(result)})
