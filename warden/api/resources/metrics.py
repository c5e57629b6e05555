"""``GET /metrics``: Prometheus text exposition of the PBX's and the API's counters.

Served on the API listener; a token (``viewer`` is enough) or a client address
in ``api.metrics_without_token`` (loopback by default). Everything about the
PBX comes from one control op (``metrics``); when the PBX is down the answer
still comes, with ``warden_pbx_up 0`` and the API's own certificate.

Label values that peers choose (SIP methods) are folded into ``other``
beyond a known set, so a scanner cannot grow the series without bound.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from flask import Blueprint, Response, current_app

from ..auth import requires, trusted_addresses_skip_token
from ..prometheus import CONTENT_TYPE, Exposition

__all__ = ["bp", "render"]

bp = Blueprint("metrics", __name__)

_METHODS = frozenset({"REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK",
                      "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"})

_FAMILIES = (
    ("warden_pbx_up", "gauge", "1 when the PBX answers on its control socket"),
    ("warden_pbx_uptime_seconds", "gauge", "seconds since the PBX process started"),
    ("warden_tls_handshakes_total", "counter",
     "TLS handshakes by listener and outcome; completed ones by negotiated version and cipher"),
    ("warden_tls_handshake_failures_total", "counter", "failed TLS handshakes by listener and reason"),
    ("warden_tls_deprecated_protocol_attempts_total", "counter",
     "handshakes whose ClientHello offered at most SSLv3, TLS 1.0 or TLS 1.1, by listener and version"),
    ("warden_tls_open_connections", "gauge", "open connections of a SIP stream listener"),
    ("warden_tls_certificate_expiry_seconds", "gauge",
     "seconds until the served certificate's notAfter (negative once expired)"),
    ("warden_tls_certificate_not_after_timestamp_seconds", "gauge", "the served certificate's notAfter, epoch seconds"),
    ("warden_tls_certificate_expiry_level", "gauge",
     "0 OK, 1 WARNING (under 30 days), 2 CRITICAL (under 7 days or expired)"),
    ("warden_registrations", "gauge", "unexpired registrations (bindings) by transport"),
    ("warden_calls_active", "gauge", "calls in progress"),
    ("warden_sip_requests_received_total", "counter", "SIP requests received, by method"),
    ("warden_sip_responses_sent_total", "counter", "SIP responses sent, by status code"),
    ("warden_sip_malformed_messages_total", "counter", "SIP messages that did not parse"),
    ("warden_sip_messages_dropped_total", "counter", "SIP messages dropped: the connection to the peer was gone"),
)


def _num(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _items(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _expiry_level(seconds: float) -> int:
    from warden.tls import EXPIRY_CRITICAL_DAYS, EXPIRY_WARNING_DAYS

    days = seconds / 86400
    return 2 if days < EXPIRY_CRITICAL_DAYS else 1 if days < EXPIRY_WARNING_DAYS else 0


def _certificate(out: Exposition, listener: str, subject: str, key_type: str, not_after: float, level: int,
                 now: float) -> None:
    labels = {"listener": listener, "subject": subject, "key_type": key_type}
    out.add("warden_tls_certificate_expiry_seconds", round(not_after - now, 1), labels)
    out.add("warden_tls_certificate_not_after_timestamp_seconds", not_after, labels)
    out.add("warden_tls_certificate_expiry_level", level, labels)


def _tls(out: Exposition, stats: Any) -> None:
    if not isinstance(stats, dict):
        return
    for listener, data in stats.items():
        if not isinstance(data, dict):
            continue
        listener = str(listener)
        for h in _items(data.get("handshakes")):
            if (n := _num(h.get("count"))) is not None:
                out.add("warden_tls_handshakes_total", n, {"listener": listener, "outcome": "success",
                                                           "version": str(h.get("version") or ""),
                                                           "cipher": str(h.get("cipher") or "")})
        failed: float = 0
        for f in _items(data.get("failures")):
            if (n := _num(f.get("count"))) is not None:
                failed += n
                out.add("warden_tls_handshake_failures_total", n,
                        {"listener": listener, "reason": str(f.get("reason") or "")})
        if data.get("handshakes") is not None or failed:
            out.add("warden_tls_handshakes_total", failed,
                    {"listener": listener, "outcome": "failure", "version": "", "cipher": ""})
        for d in _items(data.get("deprecated")):
            if (n := _num(d.get("count"))) is not None:
                out.add("warden_tls_deprecated_protocol_attempts_total", n,
                        {"listener": listener, "version": str(d.get("version") or "")})
        if (n := _num(data.get("open_connections"))) is not None:
            out.add("warden_tls_open_connections", n, {"listener": listener})


def render(pbx: dict[str, Any] | None, api_certificates: list[dict[str, Any]], now: float) -> str:
    """The exposition text for the PBX's ``metrics`` result (None: not running) and the API's certificates."""
    out = Exposition()
    for name, type_, help_ in _FAMILIES:
        out.declare(name, type_, help_)
    out.add("warden_pbx_up", 1 if pbx is not None else 0)
    if pbx is not None:
        if (uptime := _num(pbx.get("uptime"))) is not None:
            out.add("warden_pbx_uptime_seconds", uptime)
        _tls(out, pbx.get("tls"))
        for c in _items(pbx.get("certificates")):
            not_after, level = _num(c.get("not_after")), _num(c.get("level"))
            if not_after is not None and level is not None:
                _certificate(out, str(c.get("listener", "")), str(c.get("subject", "")), str(c.get("key_type", "")),
                             not_after, int(level), now)
        registrations = pbx.get("registrations")
        if isinstance(registrations, dict):
            for transport, n in registrations.items():
                if (count := _num(n)) is not None:
                    out.add("warden_registrations", count, {"transport": str(transport)})
        if (calls := _num(pbx.get("calls"))) is not None:
            out.add("warden_calls_active", calls)
        sip = pbx.get("sip") if isinstance(pbx.get("sip"), dict) else {}
        received = sip.get("requests_received")
        for method, n in (received.items() if isinstance(received, dict) else ()):
            if (count := _num(n)) is not None:
                out.add("warden_sip_requests_received_total", count,
                        {"method": method if method in _METHODS else "other"})
        sent = sip.get("responses_sent")
        for code, n in (sent.items() if isinstance(sent, dict) else ()):
            if (count := _num(n)) is not None:
                code = str(code)
                out.add("warden_sip_responses_sent_total", count,
                        {"code": code if code.isdigit() and len(code) == 3 else "other"})
        for key, name in (("malformed", "warden_sip_malformed_messages_total"),
                          ("dropped", "warden_sip_messages_dropped_total")):
            if (count := _num(sip.get(key))) is not None:
                out.add(name, count)
    for cert in api_certificates:
        try:
            not_after = datetime.datetime.fromisoformat(str(cert.get("not_after"))).timestamp()
        except ValueError:
            continue
        _certificate(out, "api", str(cert.get("subject", "")), str(cert.get("key_type", "")), not_after,
                     _expiry_level(not_after - now), now)
    return out.render()


@bp.get("/metrics")
@requires("viewer")
@trusted_addresses_skip_token
def metrics() -> Response:
    """Prometheus text format 0.0.4."""
    running, result = current_app.extensions["warden.pbx"].try_call("metrics")
    cfg = current_app.extensions["warden.config"]
    report = current_app.extensions["warden.api_tls"]() if cfg.api.ssl.enabled else None
    certs = [report.get(key) for key in ("certificate", "ecdsa_certificate")] if isinstance(report, dict) else []
    body = render(result if running and isinstance(result, dict) else None,
                  [c for c in certs if isinstance(c, dict)], time.time())
    return Response(body, 200, content_type=CONTENT_TYPE)
