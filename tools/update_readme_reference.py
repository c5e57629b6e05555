#!/usr/bin/env python3
"""Rewrite the configuration reference table in README.md from warden.config."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from warden import config  # noqa: E402

readme = ROOT / "README.md"
text = readme.read_text()
start = text.index("| key | default | meaning |")
end = text.index("\n\n", start)
readme.write_text(text[:start] + config.reference() + text[end:])
print("README.md reference updated")
