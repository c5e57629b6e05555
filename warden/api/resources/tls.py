"""``GET /api/v1/tls/stats``: TLS handshakes by version and cipher, failures by reason, per listener.

Listeners are the PBX's (``sips``, ``tcp``) and ``api``, whose counts the API
workers push to the PBX; ``deprecated`` counts SSLv3/TLS 1.0/TLS 1.1 attempts.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from ..app import json_response
from ..auth import requires
from ..pbx import bad_reply

__all__ = ["bp"]

bp = Blueprint("tls", __name__, url_prefix="/api/v1/tls")


@bp.get("/stats")
@requires("viewer")
def tls_stats() -> Response:
    """``{"listeners": {name: {"handshakes": [...], "failures": [...], "open_connections": n}}}``."""
    result = current_app.extensions["warden.pbx"].call("tls.stats")
    if not isinstance(result, dict) or not all(isinstance(v, dict) for v in result.values()):
        raise bad_reply("tls.stats", "expected an object of listener objects")
    return json_response({"listeners": result})
