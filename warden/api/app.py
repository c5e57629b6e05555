"""``create_app(config)``: the admin API as a Flask application.

One blueprint per resource (``warden/api/resources/``), JSON in and out,
every error a problem object (:mod:`warden.api.problems`), every view behind
a bearer token unless marked public (:mod:`warden.api.auth`).

The app holds, in ``app.extensions``:

``warden.config``   the frozen :class:`warden.config.Config`
``warden.store``    a callable giving this process's :class:`warden.store.Store`
                    (opened on first use, so a gunicorn worker opens its own
                    after the fork)
``warden.pbx``      a :class:`warden.api.pbx.PBX` for the control socket
``warden.throttle`` the :class:`warden.api.auth.FailureThrottle`
``warden.api_tls``  a callable giving the API's own TLS report (or None)
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, Response, request

from warden.config import Config
from warden.errors import StoreError, WardenError
from warden.store import Store

from . import problems
from .auth import DEFAULT_FAILURE_LIMIT, DEFAULT_FAILURE_WINDOW, FailureThrottle, authenticate
from .pbx import PBX
from .pbx import control_path as default_control_path
from .problems import APIProblem

__all__ = ["MAX_BODY", "create_app", "json_response"]

log = logging.getLogger("warden.api")

#: The largest request body accepted (bytes); more gives 413.
MAX_BODY = 64 * 1024


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` as an ``application/json`` response (same bytes on Flask 2.2 and 3.x)."""
    response = Response(json.dumps(data, ensure_ascii=True, allow_nan=False), status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class _StorePerProcess:
    """Opens the store on first use in each process (a Store cannot cross fork)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._pid = 0

    def __call__(self) -> Store:
        with self._lock:
            if self._store is None or self._pid != os.getpid():
                self._store = Store(self.path)
                self._pid = os.getpid()
            return self._store


class _APITLSReport:
    """The API's own TLS policy report, built once (None when TLS is off or broken)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._report: dict[str, Any] | None = None
        self._built = False

    def __call__(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._built:
                self._built = True
                from warden.tls import TLSManager

                try:
                    if self.config.api.ssl.enabled:
                        manager = TLSManager.for_api(self.config)
                    else:
                        manager = TLSManager.from_config(self.config.security)
                    self._report = manager.report()
                except WardenError as exc:
                    log.warning("cannot report the API's TLS policy: %s", exc)
            return self._report


def _store_error(exc: StoreError) -> Response:
    status = getattr(exc, "status", 500)
    if status >= 500:
        log.error("store error on %s %s: %s", request.method, request.path, exc)
        detail = "the database is busy; retry" if status == 503 else "the database failed; see the API log"
        return problems.problem_response(APIProblem(status, detail))
    return problems.problem_response(APIProblem(status, str(exc)))


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


def create_app(
    config: Config,
    *,
    control_path: str | os.PathLike[str] | None = None,
    auth_failure_limit: int = DEFAULT_FAILURE_LIMIT,
    auth_failure_window: float = DEFAULT_FAILURE_WINDOW,
) -> Flask:
    """The admin API for ``config``.

    ``control_path`` is the PBX's control socket (default:
    :func:`warden.api.control_path`). ``auth_failure_limit`` failed token
    attempts per ``auth_failure_window`` seconds from one address are
    allowed before 429.
    """
    from .openapi import bp as openapi_bp
    from .resources import BLUEPRINTS

    app = Flask("warden.api")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["warden.config"] = config
    app.extensions["warden.started_at"] = time.time()
    app.extensions["warden.store"] = _StorePerProcess(config.store.path)
    path = Path(control_path) if control_path is not None else default_control_path(config)
    app.extensions["warden.pbx"] = PBX(path)
    app.extensions["warden.throttle"] = FailureThrottle(auth_failure_limit, auth_failure_window)
    app.extensions["warden.api_tls"] = _APITLSReport(config)

    problems.init_app(app)
    app.register_error_handler(StoreError, _store_error)
    app.before_request(authenticate)
    app.after_request(_security_headers)
    for blueprint in (*BLUEPRINTS, openapi_bp):
        app.register_blueprint(blueprint)
    log.debug("admin API app created (control socket %s)", path)
    return app


def store() -> Store:
    """This process's store (inside a request)."""
    from flask import current_app

    getter: Callable[[], Store] = current_app.extensions["warden.store"]
    return getter()
