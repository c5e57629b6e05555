"""The API's view of the PBX: control-channel calls turned into problems.

The PBX listens on a UNIX socket (:func:`control_path`); each API worker
keeps one :class:`warden.control.ControlClient` (thread-safe, reconnects on
its own, so a PBX restart never needs an API restart).

Operations the API calls, and the results it expects (JSON):

``ping``
    ``{"pong": true, ...}`` (built into ``ControlServer``).
``status``
    ``{"version": str, "uptime": number, "listeners": [{"transport": str,
    "address": str, "port": int}], "tls": TLSManager.report() | null, ...}``
``registrations.list`` (args ``{"aor": str}`` optional)
    a list of ``Binding.to_dict()`` objects plus ``"expires_in"`` (seconds).
``calls.list``
    a list of ``{"id", "caller", "callee", "state", "started_at",
    "answered_at", "duration", "legs": [{"side", "transport", "peer",
    "call_id", ...}], ...}``.
``tls.stats``
    ``{listener_name: {"handshakes": [{"transport", "version", "cipher",
    "count"}], "failures": [{"transport", "reason", "count"}],
    "deprecated": [{"transport", "version", "count"}],
    "open_connections": int | null}}`` (``api`` included: see ``tls.api_report``).
``tls.api_report`` (args ``{"pid": int, "ok": [[version, cipher, n]],
"failed": [[openssl_code, n]], "deprecated": [[version, n]]}``, cumulative)
    an API worker's handshake counts (:mod:`warden.api._handshakes`); the
    PBX keeps every worker's last report; ``{"stored": true}``.
``metrics``
    ``{"uptime": s, "tls": tls.stats without ``tcp``, "certificates":
    [{"listener", "subject", "not_after", "expires_in_seconds", "level"}],
    "registrations": {transport: n}, "calls": n, "sip": sip.stats}``.
``reload``
    ``{"reloaded": bool, ...}``.
``bans.list``
    a list of ``{"address": str, "reason": str, "banned_at": number,
    "expires_at": number, "expires_in": int, "dropped": int}``.
``bans.lift`` (args ``{"address": str}``)
    ``{"address": str, "lifted": true}``; status 404 when it is not banned.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from warden.control import ControlClient, ControlError, ControlUnavailable

from .problems import APIProblem

__all__ = ["PBX", "control_path"]

log = logging.getLogger("warden.api")


def control_path(config: Any) -> Path:
    """Where the PBX's control socket is: ``<folder of store.path>/warden.sock``.

    The state folder (``var/`` in a checkout, ``/var/lib/warden-pbx`` when
    packaged) is private to the service user, as the socket must be.
    """
    return Path(config.store.path).parent / "warden.sock"


class PBX:
    """Calls control operations; raises :class:`APIProblem` on failure."""

    def __init__(self, path: str | Path, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.client = ControlClient(self.path, timeout=timeout)
        self._probe = ControlClient(self.path, timeout=1.0, max_idle=1)

    def running(self) -> bool:
        """Whether the PBX answers ``ping`` within a second."""
        try:
            self._probe.call("ping")
        except ControlError:
            return False
        return True

    def call(self, op: str, **args: Any) -> Any:
        """The result of ``op``; a 503 problem when the PBX is down, 502 when it fails the operation."""
        try:
            return self.client.call(op, **args)
        except ControlUnavailable as exc:
            log.info("control op %s: %s", op, exc)
            raise APIProblem(503, f"the PBX is not running or not answering ({exc})",
                             headers={"Retry-After": "5"}) from None
        except ControlError as exc:
            # Our operations name no resource, so any refusal is a PBX/API mismatch, not the client's fault.
            log.error("control op %s failed: %s (status %d)", op, exc, exc.status)
            raise APIProblem(502, f"the PBX failed the {op!r} operation: {exc}") from None

    def call_resource(self, op: str, **args: Any) -> Any:
        """Like :meth:`call`, for operations on one named object: the PBX's 404 stays a 404."""
        try:
            return self.client.call(op, **args)
        except ControlUnavailable:
            return self.call(op, **args)  # the same 503 (and a second chance)
        except ControlError as exc:
            if exc.status == 404:
                raise APIProblem(404, str(exc)) from None
            log.error("control op %s failed: %s (status %d)", op, exc, exc.status)
            raise APIProblem(502, f"the PBX failed the {op!r} operation: {exc}") from None

    def try_call(self, op: str, **args: Any) -> tuple[bool, Any]:
        """``(True, result)``, or ``(False, None)`` when the PBX is not reachable."""
        try:
            return True, self.client.call(op, **args)
        except ControlUnavailable as exc:
            log.debug("control op %s: %s", op, exc)
            return False, None
        except ControlError as exc:
            log.error("control op %s failed: %s (status %d)", op, exc, exc.status)
            raise APIProblem(502, f"the PBX failed the {op!r} operation: {exc}") from None


def bad_reply(op: str, why: str) -> APIProblem:
    """A 502 for a PBX answer that does not have the agreed shape."""
    log.error("control op %s: unexpected reply: %s", op, why)
    return APIProblem(502, f"the PBX answered {op!r} with an unexpected reply: {why}")
