"""``GET /api/v1/health``: is the API up, and does the PBX answer (no token needed)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from ..app import json_response
from ..auth import public

__all__ = ["bp"]

bp = Blueprint("health", __name__, url_prefix="/api/v1/health")


@bp.get("")
@public
def health() -> Response:
    """``{"status": "ok", "pbx": "running" | "not running"}``."""
    running = current_app.extensions["warden.pbx"].running()
    return json_response({"status": "ok", "pbx": "running" if running else "not running"})
