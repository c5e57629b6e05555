"""The registrar (RFC 3261 §10.3, RFC 5626 outbound, RFC 3327 Path).

Sans-I/O: ``Registrar.handle(request, origin, now)`` returns the response to
send and writes bindings to the store; it knows nothing of sockets. Where a
request came from (transport, source address, flow, TLS parameters) arrives
as an :class:`Origin` filled in by the engine.

Strategy for NAT: phones behind NAT register private Contact addresses. We
keep the address the REGISTER really came from, and the flow it came over,
with every binding; requests to the phone go back there (over the same TLS
connection for stream transports), never to the private Contact address.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.utils import formatdate

from ..sip.auth import AuthReason, DigestAuthenticator
from ..sip.message import Request, Response, make_response
from ..sip.transaction import generate_tag
from ..store import Binding, Store
from ..store.bindings import binding_key
from .text import storable

__all__ = ["Origin", "Registrar", "RegistrarPolicy"]

log = logging.getLogger("warden.registrar")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from, as the transport saw it."""

    transport: str
    """``udp``, ``tcp`` or ``tls``."""
    host: str
    port: int
    local_host: str = ""
    local_port: int = 0
    flow: str | None = None
    """Token of the TCP/TLS connection (None for UDP)."""
    tls_version: str | None = None
    tls_cipher: str | None = None
    client_cert_names: tuple[str, ...] | None = None
    """Identities in the verified TLS client certificate of the flow (CN,
    ``sip:`` URI users); None when the phone presented no certificate."""


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    """Registration limits."""

    min_expires: int = 60
    """Shorter registrations get 423 Interval Too Brief."""
    max_expires: int = 7200
    """Longer requests are cut down to this."""
    default_expires: int = 3600
    """When the phone names no expiry."""
    max_contacts: int = 10
    """Bindings per extension."""
    require_tls: bool = False
    """Refuse REGISTER that did not arrive over TLS (403)."""
    flow_timer: int = 30
    """Seconds between keep-alives we ask of RFC 5626 phones."""
    client_cert_binds_extension: bool = False
    """A REGISTER over a flow with a client certificate may only register an
    extension the certificate names (403 otherwise); digest auth still applies."""


class Registrar:
    """Handles REGISTER for the extensions in the store."""

    def __init__(self, store: Store, auth: DigestAuthenticator, policy: RegistrarPolicy = RegistrarPolicy()) -> None:
        self.store = store
        self.auth = auth
        self.policy = policy
        self._tag = generate_tag()
        """One To tag for every REGISTER response (§8.2.6.2 needs one; a registrar has no dialogs)."""
        self._date_cache: tuple[int, str] = (-1, "")

    def handle(self, req: Request, origin: Origin, now: float) -> Response:
        """Answer one REGISTER (any error becomes a response, never an exception)."""
        policy = self.policy
        if policy.require_tls and origin.transport != "tls":
            log.info("REGISTER from %s:%d over %s refused: TLS required", origin.host, origin.port, origin.transport)
            return make_response(req, 403, "TLS Required", to_tag=self._tag)
        aor = req.to.uri.user_unescaped
        peer = f"{origin.host}"
        result = self.auth.verify("REGISTER", req.headers.get_all(self.auth.credentials_header), now, peer=peer)
        if not result.ok:
            if result.reason is not AuthReason.MISSING:
                log.info(
                    "REGISTER auth failed for %r from %s:%d (%s)",
                    result.claimed_username, origin.host, origin.port, result.reason.value,
                )
            return self._challenge(req, now, peer, stale=result.stale)
        if not aor or result.username != aor:
            log.info("REGISTER from %s:%d: user %r may not register %r", origin.host, origin.port, result.username, aor)
            return make_response(req, 403, "Forbidden", to_tag=self._tag)
        if policy.client_cert_binds_extension and origin.client_cert_names is not None \
                and aor not in origin.client_cert_names:
            log.warning("REGISTER from %s:%d for %s refused: its client certificate names %s",
                        origin.host, origin.port, aor, ", ".join(origin.client_cert_names) or "nothing")
            return make_response(req, 403, "Certificate Not For This Extension", to_tag=self._tag)
        if req.contact_wildcard:
            if req.expires != 0 or len(req.headers.get_all("Contact")) != 1:
                return make_response(req, 400, "Wildcard Contact needs Expires: 0 alone", to_tag=self._tag)
            self.store.remove_bindings(aor)
            log.info("%s unregistered all contacts", aor)
            return self._ok(req, aor, now, [])
        contacts = req.contacts
        header_expires = req.expires
        current = {b.key: b for b in self.store.bindings(aor, now=now)}
        call_id, (cseq, _) = req.call_id, req.cseq
        updates: list[tuple[str, Binding | None]] = []
        for contact in contacts:
            expires = contact.expires if contact.expires is not None else header_expires
            if expires is None:
                expires = policy.default_expires
            if 0 < expires < policy.min_expires:
                resp = make_response(req, 423, "Interval Too Brief", to_tag=self._tag)
                resp.headers.add("Min-Expires", str(policy.min_expires))
                return resp
            expires = min(expires, policy.max_expires)
            key = binding_key(str(contact.uri), contact.instance, contact.reg_id)
            old = current.get(key)
            if old is not None and old.call_id == storable(call_id) and cseq <= old.cseq:
                return make_response(req, 500, "Out of order REGISTER", to_tag=self._tag)  # RFC 3261 §10.3 step 7
            if expires == 0:
                updates.append((key, None))
                continue
            updates.append((key, Binding(
                aor=aor,
                contact=storable(str(contact.uri)),
                instance_id=None if contact.instance is None else storable(contact.instance),
                reg_id=contact.reg_id,
                expires_at=now + expires,
                call_id=storable(call_id),
                cseq=cseq,
                transport=origin.transport,
                source_host=origin.host,
                source_port=origin.port,
                local_host=origin.local_host,
                local_port=origin.local_port,
                flow_token=origin.flow or "",
                path=storable(", ".join(req.headers.get_all("Path"))),
                user_agent=storable(req.headers.get("User-Agent") or ""),
                tls_version=origin.tls_version,
                tls_cipher=origin.tls_cipher,
                q=contact.q if contact.q is not None else 1.0,
                registered_at=old.registered_at if old is not None else now,
                updated_at=now,
            )))
        remaining = dict(current)
        for key, binding in updates:
            if binding is None:
                remaining.pop(key, None)
            else:
                remaining[key] = binding
        if len(remaining) > policy.max_contacts:
            return make_response(req, 403, f"Too many contacts (at most {policy.max_contacts})", to_tag=self._tag)
        for key, binding in updates:
            if binding is None:
                self.store.remove_binding(aor, key)
            else:
                self.store.upsert_binding(binding)
        if updates:
            log.debug("%s registered %d contact(s) via %s %s:%d", aor, len(remaining), origin.transport, origin.host, origin.port)
        return self._ok(req, aor, now, list(remaining.values()), outbound=any(c.uri.params.get("ob", "x") is None or c.instance for c in contacts))

    def _challenge(self, req: Request, now: float, peer: str, *, stale: bool) -> Response:
        resp = make_response(req, self.auth.status, "Unauthorized" if self.auth.status == 401 else None, to_tag=self._tag)
        for value in self.auth.challenge(now, peer=peer, stale=stale):
            resp.headers.add(self.auth.challenge_header, value)
        return resp

    def _ok(self, req: Request, aor: str, now: float, bindings: list[Binding], *, outbound: bool = False) -> Response:
        resp = make_response(req, 200, "OK", to_tag=self._tag)
        for b in bindings:
            resp.headers.add("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}")
        for path in req.headers.get_all("Path"):
            resp.headers.add("Path", path)
        if outbound and "outbound" in {s.strip().lower() for s in req.headers.get_all("Supported")}:
            resp.headers.add("Require", "outbound")
            resp.headers.add("Flow-Timer", str(self.policy.flow_timer))
        resp.headers.add("Date", self._date(now))
        return resp

    def _date(self, now: float) -> str:
        """The Date header for ``now``, formatted once per second (formatdate is slow)."""
        second = int(now)
        if self._date_cache[0] != second:
            self._date_cache = (second, formatdate(second, usegmt=True))
        return self._date_cache[1]

