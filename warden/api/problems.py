"""Errors as RFC 9457 problem objects (``application/problem+json``).

Every error the API sends, from a view, from routing, from Werkzeug or from
a bug, leaves through :func:`problem_response`, so a client always gets::

    {"type": "urn:warden-pbx:problem:invalid-params", "title": "Invalid request",
     "status": 400, "detail": "...", "instance": "/api/v1/extensions",
     "invalid-params": [{"name": "number", "reason": "..."}]}

and never a traceback or an HTML page. Views raise :class:`APIProblem` (like
h11's errors, it carries the status it should become).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

__all__ = [
    "PROBLEM_JSON",
    "PROBLEM_TYPES",
    "APIProblem",
    "InvalidParams",
    "init_app",
    "problem_response",
]

log = logging.getLogger("warden.api")

PROBLEM_JSON = "application/problem+json"

#: Problem ``type`` URIs this API uses, with their titles. Any other status
#: gets ``about:blank`` and the HTTP reason phrase (RFC 9457 section 4.2.1).
PROBLEM_TYPES: dict[str, str] = {
    "urn:warden-pbx:problem:invalid-params": "Invalid request",
    "urn:warden-pbx:problem:unauthorized": "Authentication required",
    "urn:warden-pbx:problem:forbidden": "Not allowed for this token's role",
    "urn:warden-pbx:problem:not-found": "Not found",
    "urn:warden-pbx:problem:method-not-allowed": "Method not allowed",
    "urn:warden-pbx:problem:conflict": "Conflict",
    "urn:warden-pbx:problem:too-large": "Request body too large",
    "urn:warden-pbx:problem:unsupported-media-type": "Unsupported media type",
    "urn:warden-pbx:problem:throttled": "Too many failed authentication attempts",
    "urn:warden-pbx:problem:internal": "Internal server error",
    "urn:warden-pbx:problem:pbx-error": "The PBX failed",
    "urn:warden-pbx:problem:pbx-unavailable": "The PBX is not running",
}

_BY_STATUS = {
    400: "urn:warden-pbx:problem:invalid-params",
    401: "urn:warden-pbx:problem:unauthorized",
    403: "urn:warden-pbx:problem:forbidden",
    404: "urn:warden-pbx:problem:not-found",
    405: "urn:warden-pbx:problem:method-not-allowed",
    409: "urn:warden-pbx:problem:conflict",
    413: "urn:warden-pbx:problem:too-large",
    415: "urn:warden-pbx:problem:unsupported-media-type",
    429: "urn:warden-pbx:problem:throttled",
    500: "urn:warden-pbx:problem:internal",
    502: "urn:warden-pbx:problem:pbx-error",
    503: "urn:warden-pbx:problem:pbx-unavailable",
}

#: ``invalid-params`` entries: (field name, reason).
InvalidParams = list[tuple[str, str]]


class APIProblem(Exception):
    """Raise in a view to answer with a problem object.

    ``invalid_params`` names the failing fields (400); ``headers`` are added
    to the response (``WWW-Authenticate``, ``Retry-After``, ``Allow``).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str | None = None,
        title: str | None = None,
        invalid_params: InvalidParams | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type or _BY_STATUS.get(status, "about:blank")
        self.title = title
        self.invalid_params = invalid_params or []
        self.headers = headers or {}

    @classmethod
    def invalid(cls, name: str, reason: str) -> "APIProblem":
        """A 400 naming one failing field."""
        return cls(400, f"{name}: {reason}", invalid_params=[(name, reason)])


def _title(status: int, type_: str) -> str:
    if type_ in PROBLEM_TYPES:
        return PROBLEM_TYPES[type_]
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(problem: APIProblem) -> Response:
    """The ``application/problem+json`` response for ``problem``."""
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title or _title(problem.status, problem.type),
        "status": problem.status,
        "detail": problem.detail,
    }
    try:
        body["instance"] = request.path
    except RuntimeError:  # outside a request (should not happen)
        pass
    if problem.invalid_params:
        body["invalid-params"] = [{"name": n, "reason": r} for n, r in problem.invalid_params]
    response = Response(json.dumps(body, ensure_ascii=True), problem.status, mimetype=PROBLEM_JSON)
    for name, value in problem.headers.items():
        response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response


def _from_http_exception(exc: HTTPException) -> APIProblem:
    status = exc.code or 500
    headers: dict[str, str] = {}
    if status == 405:
        allowed = sorted(getattr(exc, "valid_methods", None) or [])
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed here; allowed: {', '.join(allowed) or 'none'}"
    elif status == 404:
        detail = f"no resource at {request.path}"
    elif status == 413:
        limit = request.max_content_length
        detail = f"the request body is over the {limit}-byte limit" if limit else "the request body is too large"
    elif status == 400:
        detail = "the request could not be understood"
    else:
        detail = exc.description or _title(status, "about:blank")
    return APIProblem(status, detail, headers=headers)


def _handle_api_problem(exc: APIProblem) -> Response:
    return problem_response(exc)


def _handle_http_exception(exc: HTTPException) -> Response:
    if exc.code is None:  # a RoutingException that is not an error (redirects)
        return exc.get_response()  # type: ignore[return-value]
    return problem_response(_from_http_exception(exc))


def _handle_unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _handle_http_exception(exc)
    # Method and path only: headers may carry a token, bodies a password.
    log.exception("unhandled error on %s %s", request.method, request.path)
    return problem_response(APIProblem(500, "an internal error occurred; it has been logged"))


def init_app(app: Flask) -> None:
    """Route every error of ``app`` through :func:`problem_response`."""
    app.register_error_handler(APIProblem, _handle_api_problem)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
