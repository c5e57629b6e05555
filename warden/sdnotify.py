"""systemd readiness notifications (``Type=notify``) without a dependency.

``sd_notify(3)`` is one datagram to the socket named in ``$NOTIFY_SOCKET``;
outside systemd the variable is unset and every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["notify"]

log = logging.getLogger("warden.sdnotify")


def notify(*states: str) -> bool:
    """Send ``READY=1``, ``STOPPING=1``, ``STATUS=...``; True if systemd got it."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall("\n".join(states).encode())
        return True
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", path, exc)
        return False
