"""The OpenAPI 3.0 document of the admin API, served at ``/api/v1/openapi.json``.

Written as a Python dict beside the code it describes (no generator, no new
dependency). ``tests/test_api.py`` checks that every route of the app is in
it and every path in it is a route, and a schemathesis run against the
served document checks that responses match it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from warden import __version__
from warden.store import DISPOSITIONS, MIN_PASSWORD_LENGTH

from .app import MAX_BODY, json_response
from .auth import DEFAULT_FAILURE_LIMIT, DEFAULT_FAILURE_WINDOW, public
from .resources.cdrs import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET
from .resources.extensions import MAX_DISPLAY_NAME, MAX_PASSWORD, NUMBER_PATTERN
from .validate import MAX_FILTER

__all__ = ["bp", "document"]

bp = Blueprint("openapi", __name__, url_prefix="/api/v1/openapi.json")

_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _resp(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _nullable(type_: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "nullable": True, **extra}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }
    if headers:
        out["headers"] = headers
    return out


def _obj(properties: dict[str, Any], *, required: list[str] | None = None, extra: bool = False,
         description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required is None:
        required = list(properties)
    if required:
        out["required"] = required
    if description:
        out["description"] = description
    return out


_SCHEMAS: dict[str, Any] = {
    "Problem": _obj(
        {
            "type": {"type": "string",
                     "description": "URI naming the kind of problem (`urn:warden-pbx:problem:...` or `about:blank`)"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 100, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string", "description": "the request path"},
            "invalid-params": {
                "type": "array",
                "items": _obj({"name": {"type": "string"}, "reason": {"type": "string"}}),
                "description": "for 400: the failing fields",
            },
        },
        required=["type", "title", "status", "detail"],
        extra=True,
        description="RFC 9457 problem details",
    ),
    "Health": _obj({
        "status": {"type": "string", "enum": ["ok"]},
        "pbx": {"type": "string", "enum": ["running", "not running"],
                "description": "whether the PBX answers on its control socket"},
    }),
    "Listener": _obj({
        "transport": {"type": "string", "description": "udp, tcp, tls (SIP) or http/https (this API)"},
        "address": {"type": "string"},
        "port": {"type": "integer"},
    }),
    "Certificate": _nullable("object", properties={
        "subject": _nullable("string"),
        "sans": {"type": "array", "items": {"type": "string"}},
        "not_after": _nullable("string"),
        "expires_in_days": _nullable("number"),
        "expiry_level": _nullable("string", enum=["OK", "WARNING", "CRITICAL", None],
                                  description="CRITICAL under 7 days (or expired), WARNING under 30"),
    }, required=["subject", "sans", "expires_in_days", "expiry_level"], additionalProperties=False),
    "TLSReport": _nullable("object", description="`TLSManager.report()`: the TLS policy in force", properties={
        "policy": {"type": "string"},
        "fips_mode": {"type": "boolean"},
        "enforce_fips": {"type": "boolean"},
        "minimum_version": {"type": "string"},
        "maximum_version": {"type": "string"},
        "tls12_ciphers": {"type": "array", "items": {"type": "string"}},
        "tls13_suites": {"type": "array", "items": {"type": "string"}},
        "tls13_restricted": {"type": "boolean"},
        "groups": {"type": "array", "items": {"type": "string"}},
        "openssl": {"type": "string"},
        "certificate": {"type": "object", "additionalProperties": True},
    }, additionalProperties=True),
    "Status": _obj({
        "pbx": {"type": "string", "enum": ["running", "not running"]},
        "version": {"type": "string", "description": "the PBX's version (the API's when the PBX is not running)"},
        "uptime": _nullable("number", description="seconds the PBX has been running; null when it is not"),
        "listeners": {"type": "array", "items": _ref("Listener")},
        "tls": _ref("TLSReport"),
        "certificate": _ref("Certificate"),
        "api": _obj({
            "version": {"type": "string"},
            "pid": {"type": "integer"},
            "uptime": {"type": "number"},
            "listener": _ref("Listener"),
            "tls": _ref("TLSReport"),
            "certificate": _ref("Certificate"),
        }),
    }),
    "Extension": _obj({
        "number": {"type": "string"},
        "display_name": {"type": "string"},
        "realm": {"type": "string"},
        "enabled": {"type": "boolean"},
        "created_at": {"type": "number", "description": "epoch seconds"},
        "updated_at": {"type": "number", "description": "epoch seconds"},
        "contacts": {"type": "integer", "minimum": 0, "description": "unexpired registered contacts"},
    }, description="an extension; its password is write-only and never returned"),
    "ExtensionList": _obj({
        "items": {"type": "array", "items": _ref("Extension")},
        "total": {"type": "integer", "minimum": 0},
    }),
    "ExtensionCreate": _obj({
        "number": {"type": "string", "pattern": NUMBER_PATTERN, "minLength": 1, "maxLength": 32},
        "password": {"type": "string", "minLength": MIN_PASSWORD_LENGTH, "maxLength": MAX_PASSWORD,
                     "pattern": _NO_CONTROL, "writeOnly": True,
                     "description": "stored only as HA1 digests (MD5 and SHA-256)"},
        "display_name": {"type": "string", "maxLength": MAX_DISPLAY_NAME, "pattern": _NO_CONTROL, "default": ""},
        "enabled": {"type": "boolean", "default": True},
    }, required=["number", "password"]),
    "ExtensionUpdate": _obj({
        "display_name": {"type": "string", "maxLength": MAX_DISPLAY_NAME, "pattern": _NO_CONTROL},
        "enabled": {"type": "boolean"},
        "password": {"type": "string", "minLength": MIN_PASSWORD_LENGTH, "maxLength": MAX_PASSWORD,
                     "pattern": _NO_CONTROL, "writeOnly": True},
    }, required=[]),
    "Registration": _obj({
        "aor": {"type": "string", "description": "the extension number"},
        "contact": {"type": "string"},
        "transport": {"type": "string", "description": "udp, tcp or tls"},
        "source": {"type": "string", "description": "host:port the REGISTER came from"},
        "tls_version": _nullable("string"),
        "tls_cipher": _nullable("string"),
        "user_agent": {"type": "string"},
        "instance_id": _nullable("string"),
        "expires_in": {"type": "integer", "minimum": 0, "description": "seconds"},
        "expires_at": _nullable("number"),
        "registered_at": _nullable("number"),
        "flow_alive": _nullable("boolean", description="whether the phone's connection is open (PBX only)"),
    }),
    "RegistrationList": _obj({
        "source": {"type": "string", "enum": ["pbx", "store"],
                   "description": "live from the PBX, or the store's bindings when the PBX is not running"},
        "items": {"type": "array", "items": _ref("Registration")},
        "total": {"type": "integer", "minimum": 0},
    }),
    "CallLeg": _obj({
        "side": {"type": "string"},
        "transport": {"type": "string"},
        "peer": {"type": "string"},
        "call_id": {"type": "string"},
    }, required=[], extra=True),
    "Call": _obj({
        "id": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
        "caller": {"type": "string"},
        "callee": {"type": "string"},
        "state": {"type": "string"},
        "started_at": {"type": "number"},
        "answered_at": _nullable("number"),
        "duration": {"type": "number"},
        "legs": {"type": "array", "items": _ref("CallLeg")},
    }, required=["legs"], extra=True,
        description="a live call as the PBX reports it (media relay ports once media exists)"),
    "CallList": _obj({
        "items": {"type": "array", "items": _ref("Call")},
        "total": {"type": "integer", "minimum": 0},
    }),
    "CDR": _obj({
        "id": {"type": "integer"},
        "call_id": {"type": "string"},
        "caller": {"type": "string"},
        "callee": {"type": "string"},
        "started_at": {"type": "number"},
        "answered_at": _nullable("number"),
        "ended_at": _nullable("number"),
        "duration": {"type": "number"},
        "disposition": _nullable("string", enum=[*DISPOSITIONS, None]),
        "hangup_cause": _nullable("string"),
        "caller_transport": {"type": "string"},
        "caller_tls_version": _nullable("string"),
        "caller_tls_cipher": _nullable("string"),
        "caller_source": _nullable("string"),
        "callee_contact": _nullable("string"),
        "callee_transport": _nullable("string"),
        "callee_tls_version": _nullable("string"),
        "callee_tls_cipher": _nullable("string"),
    }),
    "CDRPage": _obj({
        "total": {"type": "integer", "minimum": 0, "description": "matching CDRs in all pages"},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
        "items": {"type": "array", "items": _ref("CDR")},
        "next": _nullable("string", description="URL of the next page; null on the last"),
    }),
    "ListenerTLSStats": _obj({
        "handshakes": {"type": "array", "items": _obj({
            "transport": {"type": "string"}, "version": _nullable("string"),
            "cipher": _nullable("string"), "count": {"type": "integer"},
        }, required=["count"], extra=True)},
        "failures": {"type": "array", "items": _obj({
            "transport": {"type": "string"}, "reason": {"type": "string"}, "count": {"type": "integer"},
        }, required=["reason", "count"], extra=True)},
        "deprecated": {"type": "array", "description": "handshakes offering at most SSLv3/TLS 1.0/TLS 1.1",
                       "items": _obj({
                           "transport": {"type": "string"}, "version": {"type": "string"},
                           "count": {"type": "integer"},
                       }, required=["version", "count"], extra=True)},
        "open_connections": _nullable("integer", description="null for the API (its workers hold them)"),
    }, required=[], extra=True),
    "TLSStats": _obj({
        "listeners": {"type": "object", "additionalProperties": _ref("ListenerTLSStats")},
    }),
    "Ban": _obj({
        "address": {"type": "string", "description": "the banned IPv4 address or IPv6 /64 (`2001:db8:1:2::/64`)"},
        "reason": {"type": "string", "description": "e.g. `10 failed authentications within 60 s`"},
        "banned_at": {"type": "number", "description": "epoch seconds"},
        "expires_at": {"type": "number", "description": "epoch seconds"},
        "expires_in": {"type": "integer", "minimum": 0, "description": "seconds"},
        "dropped": {"type": "integer", "minimum": 0,
                    "description": "messages and connections from it dropped unanswered since"},
    }),
    "BanList": _obj({
        "items": {"type": "array", "items": _ref("Ban")},
        "total": {"type": "integer"},
    }),
    "ReloadResult": _obj({
        "reloaded": {"type": "boolean"},
    }, extra=True, description="the PBX's answer (e.g. the new certificate's subject, or why it kept the old one)"),
}

_RESPONSES: dict[str, Any] = {
    "BadRequest": _problem("invalid input; `invalid-params` names the failing fields"),
    "Unauthorized": _problem("no token, or an invalid or revoked one", headers={
        "WWW-Authenticate": {"required": True, "schema": {"type": "string"},
                             "description": 'Bearer realm="warden"'},
    }),
    "Forbidden": _problem("the token's role may not do this (viewer tokens only read)"),
    "NotFound": _problem("no such resource"),
    "Conflict": _problem("the extension number is taken"),
    "TooLarge": _problem(f"the request body is over {MAX_BODY} bytes"),
    "UnsupportedMediaType": _problem("the request body is not application/json"),
    "URITooLong": _problem("the request line is over 8190 bytes (answered by gunicorn)"),
    "TooManyRequests": _problem(
        f"more than {DEFAULT_FAILURE_LIMIT} failed token attempts from this address in "
        f"{DEFAULT_FAILURE_WINDOW:g} s (per API worker process)",
        headers={"Retry-After": {"required": True, "schema": {"type": "string"}, "description": "seconds"}},
    ),
    "InternalError": _problem("an unexpected error (logged; never a traceback)"),
    "BadGateway": _problem("the PBX failed the operation or answered in an unexpected shape"),
    "ServiceUnavailable": _problem("the PBX is not running (or the database is busy)", headers={
        "Retry-After": {"required": False, "schema": {"type": "string"}, "description": "seconds"},
    }),
}

_NUMBER_PARAM = {
    "name": "number", "in": "path", "required": True, "description": "extension number",
    "schema": {"type": "string", "pattern": NUMBER_PATTERN, "minLength": 1, "maxLength": 32},
}

_TIME = {"anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]}


def _op(summary: str, ok: dict[str, Any], *, role: str | None = "viewer", errors: tuple[str, ...] = (),
        params: list[dict[str, Any]] | None = None, body: str | None = None, op_id: str,
        tag: str, description: str | None = None, token_optional: bool = False) -> dict[str, Any]:
    """One operation; ``ok`` maps status to response, ``errors`` names extra error responses."""
    responses: dict[str, Any] = dict(ok)
    codes = {
        "BadRequest": "400", "Unauthorized": "401", "Forbidden": "403", "NotFound": "404", "Conflict": "409",
        "TooLarge": "413", "URITooLong": "414", "UnsupportedMediaType": "415", "TooManyRequests": "429",
        "InternalError": "500", "BadGateway": "502", "ServiceUnavailable": "503",
    }
    names = list(errors)
    if role is not None:
        names += ["Unauthorized", "TooManyRequests"]
        if role == "admin":
            names.append("Forbidden")
    if body is not None:
        names += ["BadRequest", "TooLarge", "UnsupportedMediaType"]
    names.append("InternalError")
    for name in names:
        responses[codes[name]] = _resp(name)
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "responses": dict(sorted(responses.items())),
    }
    if description:
        op["description"] = description
    if role is None:
        op["security"] = []
    elif token_optional:  # a token, or none at all from a trusted address
        op["security"] = [{"bearerAuth": []}, {}]
    else:
        op["description"] = (description + "\n\n" if description else "") + f"Needs a token with the `{role}` role" + (
            " (or `admin`)." if role == "viewer" else ".")
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return op


def _paths() -> dict[str, Any]:
    cdr_params = [
        {"name": "caller", "in": "query", "schema": {"type": "string", "maxLength": MAX_FILTER},
         "description": "calling extension (exact)"},
        {"name": "callee", "in": "query", "schema": {"type": "string", "maxLength": MAX_FILTER},
         "description": "dialled number (exact)"},
        {"name": "since", "in": "query", "schema": _TIME,
         "description": "calls started at or after: ISO 8601 date-time or epoch seconds"},
        {"name": "until", "in": "query", "schema": _TIME,
         "description": "calls started before: ISO 8601 date-time or epoch seconds"},
        {"name": "disposition", "in": "query", "schema": {"type": "string", "enum": list(DISPOSITIONS)}},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
        {"name": "offset", "in": "query",
         "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}},
    ]
    created_headers = {"Location": {"required": True, "schema": {"type": "string"},
                                    "description": "URL of the new extension"}}
    return {
        "/api/v1/health": {"get": _op(
            "Is the API up; does the PBX answer", {"200": _json(_ref("Health"), "the API is up")},
            role=None, op_id="getHealth", tag="health")},
        "/api/v1/openapi.json": {"get": _op(
            "This document", {"200": _json({"type": "object"}, "the OpenAPI 3.0 document")},
            role=None, op_id="getOpenAPI", tag="health")},
        "/api/v1/status": {"get": _op(
            "Version, uptime, listeners and the TLS policy in force", {"200": _json(_ref("Status"), "status")},
            op_id="getStatus", tag="status",
            description="From the PBX when it runs; otherwise the API's own view with `pbx: not running`.")},
        "/api/v1/extensions": {
            "get": _op("List extensions", {"200": _json(_ref("ExtensionList"), "every extension")},
                       op_id="listExtensions", tag="extensions"),
            "post": _op("Create an extension",
                        {"201": _json(_ref("Extension"), "created", headers=created_headers)},
                        role="admin", body="ExtensionCreate", errors=("Conflict",),
                        op_id="createExtension", tag="extensions"),
        },
        "/api/v1/extensions/{number}": {
            "parameters": [_NUMBER_PARAM],
            "get": _op("Read an extension", {"200": _json(_ref("Extension"), "the extension")},
                       errors=("NotFound",), op_id="getExtension", tag="extensions"),
            "patch": _op("Change an extension's name, state or password",
                         {"200": _json(_ref("Extension"), "the extension as changed")},
                         role="admin", body="ExtensionUpdate", errors=("NotFound",),
                         op_id="updateExtension", tag="extensions"),
            "delete": _op("Delete an extension and its registrations",
                          {"204": {"description": "deleted"}}, role="admin", errors=("NotFound",),
                          op_id="deleteExtension", tag="extensions"),
        },
        "/api/v1/registrations": {"get": _op(
            "Registered contacts", {"200": _json(_ref("RegistrationList"), "registrations")},
            params=[{"name": "aor", "in": "query", "schema": {"type": "string", "maxLength": MAX_FILTER},
                     "description": "only this extension's"}],
            errors=("BadRequest", "URITooLong", "BadGateway"), op_id="listRegistrations", tag="registrations",
            description="Live from the PBX; from the store's bindings when the PBX is not running.")},
        "/api/v1/calls": {"get": _op(
            "Live calls", {"200": _json(_ref("CallList"), "calls in progress")},
            errors=("BadGateway", "ServiceUnavailable"), op_id="listCalls", tag="calls")},
        "/api/v1/cdrs": {"get": _op(
            "Call detail records, newest first", {"200": _json(_ref("CDRPage"), "one page of CDRs")},
            params=cdr_params, errors=("BadRequest", "URITooLong"), op_id="listCDRs", tag="cdrs")},
        "/api/v1/tls/stats": {"get": _op(
            "TLS handshakes by version and cipher, failures by reason, deprecated-protocol attempts, per listener",
            {"200": _json(_ref("TLSStats"), "TLS statistics")},
            errors=("BadGateway", "ServiceUnavailable"), op_id="getTLSStats", tag="tls")},
        "/api/v1/bans": {"get": _op(
            "Addresses banned for failed SIP authentication", {"200": _json(_ref("BanList"), "current bans")},
            errors=("BadGateway", "ServiceUnavailable"), op_id="listBans", tag="bans",
            description="Bans live in the PBX's memory: a restart ends them.")},
        "/api/v1/bans/{address}": {
            "parameters": [{"name": "address", "in": "path", "required": True,
                            "description": "a banned IPv4 address or IPv6 /64, or an address in one "
                                           "(anything else is 404)",
                            "schema": {"type": "string"}}],
            "delete": _op("Lift a ban", {"204": {"description": "lifted: the address may talk SIP again"}},
                          role="admin", errors=("NotFound", "BadGateway", "ServiceUnavailable"),
                          op_id="liftBan", tag="bans"),
        },
        "/metrics": {"get": _op(
            "Prometheus metrics (text exposition format 0.0.4)",
            {"200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            op_id="getMetrics", tag="tls", token_optional=True,
            description=("TLS handshakes by listener, version, cipher and outcome; failures by reason; "
                         "deprecated-protocol attempts; certificate expiry; registrations by transport; "
                         "active calls; SIP counters; PBX uptime. Clients whose address is in "
                         "`api.metrics_without_token` (loopback by default) need no token."))},
        "/api/v1/config/reload": {"post": _op(
            "Reload the PBX's configuration (certificates)", {"200": _json(_ref("ReloadResult"), "the PBX's answer")},
            role="admin", errors=("BadGateway", "ServiceUnavailable", "UnsupportedMediaType", "BadRequest",
                                  "TooLarge"),
            op_id="reloadConfig", tag="config")},
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.0 document (a fresh dict each call)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Warden PBX admin API",
            "version": __version__,
            "description": (
                "HTTPS admin API of Warden PBX. Every operation except `health` and this document needs "
                "`Authorization: Bearer <token>` (create one with `warden-pbx api token create`). "
                "Errors are RFC 9457 problem objects (`application/problem+json`)."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": n} for n in
                 ("health", "status", "extensions", "registrations", "calls", "cdrs", "tls", "config", "bans")],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "wdn_ token"},
            },
            "schemas": _SCHEMAS,
            "responses": _RESPONSES,
        },
    }


@bp.get("")
@public
def openapi() -> Response:
    """The document as JSON."""
    return json_response(document())
