"""A small, strict parser of the Prometheus text exposition format 0.0.4, for tests.

Strict where Prometheus is: a sample belongs to the family of the last
``# TYPE`` line (same name, or the name plus ``_total`` for counters written
the older way); ``# HELP`` and ``# TYPE`` at most once per family and before
its samples; label names are identifiers, values are double-quoted with only
``\\\\``, ``\\"`` and ``\\n`` escapes; no series twice; values are floats
(``NaN``, ``+Inf``, ``-Inf`` allowed); the text ends with a newline.
Written here rather than adding prometheus_client as a test dependency: its
parser is lenient (it accepts samples without TYPE lines and unescaped
oddities), and the format is small.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*,?)?\}})? (\S+)(?: (-?\d+))?$")
_LABEL_RE = re.compile(_LABEL)
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class ExpositionError(ValueError):
    pass


@dataclass
class Family:
    name: str
    type: str = "untyped"
    help: str | None = None
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)

    def get(self, **labels: str) -> float | None:
        return self.samples.get(tuple(sorted(labels.items())))

    def total(self, **labels: str) -> float:
        """Sum of the samples whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for k, v in self.samples.items() if want <= set(k))


def _value(text: str, line: str) -> float:
    if text in ("NaN", "+Inf", "-Inf"):
        return float(text.replace("+", ""))
    try:
        return float(text)
    except ValueError:
        raise ExpositionError(f"bad value in {line!r}") from None


def parse(text: str) -> dict[str, Family]:
    if not text.endswith("\n"):
        raise ExpositionError("the exposition must end with a newline")
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text[:-1].split("\n"):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not re.fullmatch(_NAME, name):
                    raise ExpositionError(f"bad metric name in {line!r}")
                fam = families.setdefault(name, Family(name))
                if fam.samples:
                    raise ExpositionError(f"{parts[1]} for {name} after its samples")
                if parts[1] == "HELP":
                    if fam.help is not None:
                        raise ExpositionError(f"second HELP for {name}")
                    raw = parts[3] if len(parts) > 3 else ""
                    if any(e.group(1) not in ("\\", "n") for e in re.finditer(r"\\(.?)", raw)):
                        raise ExpositionError(f"bad escape in HELP {line!r}")
                    fam.help = re.sub(r"\\([\\n])", lambda e: "\n" if e.group(1) == "n" else "\\", raw)
                else:
                    if fam.type != "untyped" or len(parts) != 4:
                        raise ExpositionError(f"bad or second TYPE line {line!r}")
                    if parts[3] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                        raise ExpositionError(f"unknown type in {line!r}")
                    fam.type = parts[3]
                current = fam
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ExpositionError(f"bad sample line {line!r}")
        name = m.group(1)
        if current is None or name not in (current.name, current.name + "_total"):
            raise ExpositionError(f"sample {name} outside its family (no TYPE line before it)")
        if current.type == "counter" and not name.endswith("_total"):
            raise ExpositionError(f"counter sample {name} does not end in _total")
        labels: dict[str, str] = {}
        for lm in _LABEL_RE.finditer(m.group(2) or ""):
            if lm.group(1) in labels:
                raise ExpositionError(f"label {lm.group(1)} twice in {line!r}")
            labels[lm.group(1)] = re.sub(r"\\[\\\"n]", lambda e: _UNESCAPE[e.group(0)], lm.group(2))
        key = tuple(sorted(labels.items()))
        if key in current.samples:
            raise ExpositionError(f"series twice: {line!r}")
        value = _value(m.group(7), line)  # 1 name, 2 labels, 3-6 first/last label, 7 value, 8 time
        current.samples[key] = value
    return families

