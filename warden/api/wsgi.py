"""The WSGI entry point gunicorn loads: ``warden.api.wsgi:app``.

The configuration file comes from ``$WARDEN_CONFIG`` (else the usual search:
``conf/config.yml`` in a checkout, ``/etc/warden-pbx/config.yml``).
``$WARDEN_API_AUTH_FAILURES`` changes how many failed token attempts per
minute one address may make before 429 (default 10, per worker process).
"""

from __future__ import annotations

import os
import sys

from warden import config as _config
from warden.errors import WardenError

from .app import create_app
from .auth import DEFAULT_FAILURE_LIMIT

__all__ = ["app", "auth_failure_limit"]

AUTH_FAILURES_ENV = "WARDEN_API_AUTH_FAILURES"


def auth_failure_limit() -> int:
    """``$WARDEN_API_AUTH_FAILURES`` as a positive whole number, else the default."""
    raw = os.environ.get(AUTH_FAILURES_ENV, "").strip()
    if not raw:
        return DEFAULT_FAILURE_LIMIT
    if not raw.isdigit() or int(raw) < 1:
        raise WardenError(f"{AUTH_FAILURES_ENV} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


try:
    app = create_app(_config.load(check_files=False), auth_failure_limit=auth_failure_limit())
except WardenError as exc:  # a clear line, not a traceback, in the service log
    sys.exit(f"warden-pbx api: {exc}")
