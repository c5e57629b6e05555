"""Where the PBX's control socket lives: beside its database.

The state directory (``/var/lib/warden-pbx`` when packaged, ``var/`` in a
checkout) is private to the service user, which is what the socket needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["control_path"]


def control_path(cfg: Any) -> Path:
    """``<folder of store.path>/warden.sock`` for a ``warden.config.Config``."""
    return Path(cfg.store.path).parent / "warden.sock"
