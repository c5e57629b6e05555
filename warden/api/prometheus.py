"""Prometheus text exposition format 0.0.4, written by hand (no client library: runtime deps stay four).

Sans-I/O: :class:`Exposition` collects metric families and renders one text
document. Label values are escaped (``\\``, ``"``, newline), HELP text too
(``\\`` and newline); every family gets its ``# HELP`` and ``# TYPE`` line once,
before its samples, and a counter's name ends in ``_total``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = ["CONTENT_TYPE", "Exposition", "escape_label_value"]

#: The Content-Type of the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TYPES = ("counter", "gauge", "untyped")


def escape_label_value(value: str) -> str:
    """A label value for inside double quotes."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class _Family:
    name: str
    type: str
    help: str
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


class Exposition:
    """Metric families in the order they were first declared."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def declare(self, name: str, type_: str, help_: str) -> None:
        """A family with no samples yet (rendered with its HELP/TYPE lines even when empty)."""
        if not _NAME.match(name):
            raise ValueError(f"bad metric name {name!r}")
        if type_ not in _TYPES:
            raise ValueError(f"bad metric type {type_!r}")
        if type_ == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        family = self._families.get(name)
        if family is None:
            self._families[name] = _Family(name, type_, help_)
        elif family.type != type_:
            raise ValueError(f"metric {name!r} declared as {family.type} and {type_}")

    def add(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        """One sample of a declared family; the same label set twice adds up."""
        family = self._families[name]
        items = tuple(sorted((labels or {}).items()))
        for label, _ in items:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"bad label name {label!r}")
        family.samples[items] = family.samples.get(items, 0) + value

    def render(self) -> str:
        lines: list[str] = []
        for family in self._families.values():
            lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {family.name} {family.type}")
            for labels, value in family.samples.items():
                text = ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in labels)
                lines.append(f"{family.name}{{{text}}} {_number(value)}" if text else f"{family.name} {_number(value)}")
        return "\n".join(lines) + "\n"
