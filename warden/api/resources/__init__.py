"""One blueprint per resource of ``/api/v1``."""

from __future__ import annotations

from flask import Blueprint

from .bans import bp as bans
from .calls import bp as calls
from .cdrs import bp as cdrs
from .config import bp as config
from .extensions import bp as extensions
from .health import bp as health
from .metrics import bp as metrics
from .registrations import bp as registrations
from .status import bp as status
from .tls import bp as tls

__all__ = ["BLUEPRINTS"]

BLUEPRINTS: tuple[Blueprint, ...] = (health, status, extensions, registrations, calls, cdrs, tls, config, bans,
                                   metrics)
