"""``POST /api/v1/config/reload``: ask the PBX to reload (certificates), admin only."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from ..app import json_response
from ..auth import requires
from ..pbx import bad_reply
from ..validate import json_body

__all__ = ["bp"]

bp = Blueprint("config", __name__, url_prefix="/api/v1/config")


@bp.post("/reload")
@requires("admin")
def reload() -> Response:
    """The PBX's answer to control op ``reload`` (``{"reloaded": bool, ...}``).

    The request needs no body; one that is sent must be JSON and is ignored.
    """
    if request.content_length or request.headers.get("Transfer-Encoding"):
        json_body()
    result = current_app.extensions["warden.pbx"].call("reload")
    if not isinstance(result, dict) or not isinstance(result.get("reloaded"), bool):
        raise bad_reply("reload", "expected an object with a boolean 'reloaded'")
    return json_response(result)
