"""Logging set-up: a rotated file in development, stderr under systemd.

Every record carries a timestamp, the level and the component (the logger
name, e.g. ``warden.tls``). Secrets never reach a log call in the first
place; this module only decides where records go.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from .config import LoggingConfig

__all__ = ["setup", "under_systemd"]

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def under_systemd() -> bool:
    """True when started by systemd, whose journal already stores stderr."""
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))


def setup(cfg: LoggingConfig, *, console: bool = True) -> list[str]:
    """Route the ``warden`` loggers; return where records go (for a start-up line)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(cfg.level.upper())
    formatter = logging.Formatter(FORMAT)
    targets: list[str] = []
    if cfg.file and not under_systemd():
        path = Path(cfg.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=cfg.max_bytes, backupCount=cfg.backups, encoding="utf-8"
        )
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
        targets.append(str(path))
    if console or not targets:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)
        targets.append("stderr")
    logging.captureWarnings(True)
    return targets
