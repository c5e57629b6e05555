"""``warden-pbx tls report``: what clients negotiate, as aligned tables.

Sans-I/O: :func:`build` takes the PBX's ``tls.stats`` and
``registrations.list`` results and gives plain rows; :func:`render` lays them
out. The question it answers before a policy change: which listeners still
see TLS 1.2 or CBC ciphers, who tries TLS 1.1, and which phone models
(User-Agent) hold those sessions.
"""

from __future__ import annotations

import collections
from typing import Any

from .tables import aligned

__all__ = ["build", "render"]

_MAX_EXTENSIONS = 6
_MAX_USER_AGENT = 60
_NUMERIC = ("COUNT", "SHARE")


def _clip(text: str, limit: int = _MAX_USER_AGENT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _items(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def build(stats: dict[str, Any], registrations: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows for each table: handshakes (with their share per listener), failures, deprecated, phones."""
    handshakes, failures, deprecated = [], [], []
    for listener, data in sorted(stats.items()):
        if not isinstance(data, dict):
            continue
        ok = [h for h in _items(data.get("handshakes")) if _count(h.get("count"))]
        total = sum(_count(h.get("count")) for h in ok)
        for h in sorted(ok, key=lambda h: -_count(h.get("count"))):
            n = _count(h.get("count"))
            handshakes.append({"listener": listener, "version": str(h.get("version")), "cipher": str(h.get("cipher")),
                               "count": n, "share": n / total})
        for f in sorted(_items(data.get("failures")), key=lambda f: -_count(f.get("count"))):
            failures.append({"listener": listener, "reason": str(f.get("reason")), "count": _count(f.get("count"))})
        for d in sorted(_items(data.get("deprecated")), key=lambda d: -_count(d.get("count"))):
            deprecated.append({"listener": listener, "version": str(d.get("version")), "count": _count(d.get("count"))})
    groups: dict[tuple[str, str, str, str], list[str]] = collections.defaultdict(list)
    for b in registrations:
        key = (str(b.get("user_agent") or "-"), str(b.get("transport") or "-"),
               str(b.get("tls_version") or "-"), str(b.get("tls_cipher") or "-"))
        groups[key].append(str(b.get("aor", "")))
    phones = [{"user_agent": ua, "transport": t, "version": v, "cipher": c, "count": len(aors),
               "extensions": sorted(set(aors))} for (ua, t, v, c), aors in groups.items()]
    phones.sort(key=lambda p: (-p["count"], p["user_agent"]))
    return {"handshakes": handshakes, "failures": failures, "deprecated": deprecated, "phones": phones}


def render(report: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["TLS handshakes by listener, version and cipher"]
    rows = [(h["listener"], h["version"], h["cipher"], str(h["count"]), f"{h['share'] * 100:.1f}%")
            for h in report["handshakes"]]
    lines += aligned(("LISTENER", "VERSION", "CIPHER", "COUNT", "SHARE"), rows, _NUMERIC) if rows else ["  (none yet)"]
    lines += ["", "Failed handshakes by listener and reason"]
    rows = [(f["listener"], f["reason"], str(f["count"])) for f in report["failures"]]
    lines += aligned(("LISTENER", "REASON", "COUNT"), rows, _NUMERIC) if rows else ["  (none)"]
    lines += ["", "Deprecated-protocol attempts (SSLv3, TLS 1.0, TLS 1.1 offered)"]
    rows = [(d["listener"], d["version"], str(d["count"])) for d in report["deprecated"]]
    lines += aligned(("LISTENER", "VERSION", "COUNT"), rows, _NUMERIC) if rows else ["  (none)"]
    total = sum(p["count"] for p in report["phones"])
    lines += ["", f"Registered phones by User-Agent, TLS version and cipher ({total} bindings)"]
    rows = []
    for p in report["phones"]:
        shown = p["extensions"][:_MAX_EXTENSIONS]
        more = len(p["extensions"]) - len(shown)
        rows.append((_clip(p["user_agent"]), p["transport"], p["version"], p["cipher"], str(p["count"]),
                     ",".join(shown) + (f",+{more}" if more > 0 else "")))
    header = ("USER-AGENT", "TRANSPORT", "VERSION", "CIPHER", "PHONES", "EXTENSIONS")
    lines += aligned(header, rows, ("PHONES",)) if rows else ["  (no registered phones)"]
    return "\n".join(lines)
