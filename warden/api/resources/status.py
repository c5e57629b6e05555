"""``GET /api/v1/status``: version, uptime, listeners and the TLS policy in force.

From the PBX (control op ``status``) when it is running; otherwise from the
API alone, with ``"pbx": "not running"`` and the API's own TLS policy.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, Response, current_app

from warden import __version__

from ..app import json_response
from ..auth import requires
from ..pbx import bad_reply

__all__ = ["bp"]

bp = Blueprint("status", __name__, url_prefix="/api/v1/status")


def _certificate(report: dict[str, Any] | None) -> dict[str, Any] | None:
    cert = report.get("certificate") if isinstance(report, dict) else None
    if not isinstance(cert, dict):
        return None
    days = cert.get("expires_in_days")
    days = days if isinstance(days, (int, float)) and not isinstance(days, bool) else None
    return {
        "subject": cert.get("subject"),
        "sans": cert.get("sans") or [],
        "not_after": cert.get("not_after"),
        "expires_in_days": days,
        "expiry_level": _level(days),
    }


def _level(days: float | None) -> str | None:
    """``OK``, ``WARNING`` (under 30 days) or ``CRITICAL`` (under 7, or expired), as ``warden-pbx cert check``."""
    from warden.tls import EXPIRY_CRITICAL_DAYS, EXPIRY_WARNING_DAYS

    if days is None:
        return None
    return "CRITICAL" if days < EXPIRY_CRITICAL_DAYS else "WARNING" if days < EXPIRY_WARNING_DAYS else "OK"


def _listeners(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise bad_reply("status", "'listeners' is not a list")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise bad_reply("status", "a listener is not an object")
        out.append({"transport": str(item.get("transport", "")), "address": str(item.get("address", "")),
                    "port": item.get("port") if isinstance(item.get("port"), int) else 0})
    return out


@bp.get("")
@requires("viewer")
def status() -> Response:
    """The status object (see the OpenAPI ``Status`` schema)."""
    cfg = current_app.extensions["warden.config"]
    api_tls = current_app.extensions["warden.api_tls"]()
    api_listener = {"transport": "https" if cfg.api.ssl.enabled else "http",
                    "address": cfg.api.bind, "port": cfg.api.port}
    api = {
        "version": __version__,
        "pid": os.getpid(),
        "uptime": round(time.time() - current_app.extensions["warden.started_at"], 1),
        "listener": api_listener,
        "tls": api_tls if cfg.api.ssl.enabled else None,
        "certificate": _certificate(api_tls) if cfg.api.ssl.enabled else None,
    }
    running, result = current_app.extensions["warden.pbx"].try_call("status")
    if running:
        if not isinstance(result, dict):
            raise bad_reply("status", "expected an object")
        tls = result.get("tls")
        if tls is not None and not isinstance(tls, dict):
            raise bad_reply("status", "'tls' is not an object")
        if tls is None:  # SIPS is off: the policy in force is the API's own
            tls = api_tls
        uptime = result.get("uptime")
        body = {
            "pbx": "running",
            "version": str(result.get("version", "")),
            "uptime": float(uptime) if isinstance(uptime, (int, float)) and not isinstance(uptime, bool) else None,
            "listeners": _listeners(result.get("listeners", [])) + [api_listener],
            "tls": tls,
            "certificate": _certificate(tls),
            "api": api,
        }
    else:
        body = {
            "pbx": "not running",
            "version": __version__,
            "uptime": None,
            "listeners": [api_listener],
            "tls": api_tls,
            "certificate": _certificate(api_tls),
            "api": api,
        }
    return json_response(body)
