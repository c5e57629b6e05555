"""``/api/v1/extensions``: list, create, read, change and delete extensions.

Passwords are write-only: taken on POST and PATCH, turned into the two HA1
digests by the store, never returned or logged. Rules beyond the store's: a
number starts with a letter or digit (so ``.`` or ``..`` never become a URL
path segment).
"""

from __future__ import annotations

import re
import time
from typing import Any

from flask import Blueprint, Response, current_app, url_for

from warden.errors import ExtensionExists, NoSuchExtension
from warden.store import MIN_PASSWORD_LENGTH, Extension

from ..app import json_response, store
from ..auth import requires
from ..problems import APIProblem
from ..validate import has_control_characters, json_body, no_unknown_fields, require_text

__all__ = ["MAX_DISPLAY_NAME", "MAX_PASSWORD", "NUMBER_PATTERN", "bp"]

bp = Blueprint("extensions", __name__, url_prefix="/api/v1/extensions")

#: What the API accepts as an extension number (also in the OpenAPI document).
NUMBER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
MAX_PASSWORD = 256
MAX_DISPLAY_NAME = 128
_NUMBER = re.compile(NUMBER_PATTERN, re.ASCII)


def _to_json(ext: Extension, contacts: int) -> dict[str, Any]:
    return {**ext.to_dict(), "contacts": contacts}


def _contacts(number: str) -> int:
    return store().count_bindings(number, now=time.time())


def _number(value: Any) -> str:
    number = require_text("number", value)
    if not _NUMBER.fullmatch(number):
        raise APIProblem.invalid("number", "use 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return number


def _password(value: Any) -> str:
    password = require_text("password", value)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise APIProblem.invalid("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD:
        raise APIProblem.invalid("password", f"must be at most {MAX_PASSWORD} characters")
    if has_control_characters(password):
        raise APIProblem.invalid("password", "must not contain control characters")
    return password


def _display_name(value: Any) -> str:
    name = require_text("display_name", value, max_length=MAX_DISPLAY_NAME)
    if has_control_characters(name):
        raise APIProblem.invalid("display_name", "must not contain control characters")
    return name


def _enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise APIProblem.invalid("enabled", "must be true or false")
    return value


def _get(number: str) -> Extension:
    ext = store().get_extension(number)
    if ext is None:
        raise APIProblem(404, f"no extension {number}")
    return ext


@bp.get("")
@requires("viewer")
def list_extensions() -> Response:
    """``{"items": [extension, ...], "total": n}``, ordered by number."""
    s = store()
    exts = s.list_extensions()
    counts = s.binding_counts(now=time.time())
    return json_response({"items": [_to_json(e, counts.get(e.number, 0)) for e in exts], "total": len(exts)})


@bp.post("")
@requires("admin")
def create_extension() -> Response:
    """Create from ``{number, password, display_name?, enabled?}``: 201 + Location."""
    body = json_body()
    no_unknown_fields(body, ("number", "password", "display_name", "enabled"))
    for name in ("number", "password"):
        if name not in body:
            raise APIProblem.invalid(name, "is required")
    number = _number(body["number"])
    password = _password(body["password"])
    display_name = _display_name(body.get("display_name", ""))
    enabled = _enabled(body.get("enabled", True))
    cfg = current_app.extensions["warden.config"]
    try:
        ext = store().add_extension(number, password, realm=cfg.sip.realm, display_name=display_name, enabled=enabled)
    except ExtensionExists:
        raise APIProblem(409, f"extension {number} already exists") from None
    location = url_for("extensions.get_extension", number=number)
    return json_response(_to_json(ext, 0), 201, {"Location": location})


@bp.get("/<number>")
@requires("viewer")
def get_extension(number: str) -> Response:
    """One extension, or 404."""
    ext = _get(number)
    return json_response(_to_json(ext, _contacts(number)))


@bp.patch("/<number>")
@requires("admin")
def update_extension(number: str) -> Response:
    """Change any of ``display_name``, ``enabled``, ``password``; 404 if absent."""
    body = json_body()
    no_unknown_fields(body, ("display_name", "enabled", "password"))
    display_name = _display_name(body["display_name"]) if "display_name" in body else None
    enabled = _enabled(body["enabled"]) if "enabled" in body else None
    password = _password(body["password"]) if "password" in body else None
    _get(number)
    s = store()
    try:
        if password is not None:
            s.set_password(number, password, realm=current_app.extensions["warden.config"].sip.realm)
        ext = s.update_extension(number, display_name=display_name, enabled=enabled)
    except NoSuchExtension:  # deleted meanwhile
        raise APIProblem(404, f"no extension {number}") from None
    return json_response(_to_json(ext, _contacts(number)))


@bp.delete("/<number>")
@requires("admin")
def delete_extension(number: str) -> Response:
    """Delete the extension and its registrations: 204, or 404."""
    try:
        store().delete_extension(number)
    except NoSuchExtension:
        raise APIProblem(404, f"no extension {number}") from None
    return Response(status=204)
