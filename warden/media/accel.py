"""Choose between the compiled ``warden_ext`` modules and their pure twins.

``WARDEN_NO_EXTENSIONS`` set to anything but "" or "0" selects the pure
twins in ``warden.media.pure``. Otherwise the compiled module is required:
a missing build is an ImportError, never a silent fallback, because the
appliance must run the accelerated media path it was tested with.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["ENV_VAR", "implementation", "load"]

ENV_VAR = "WARDEN_NO_EXTENSIONS"


def _pure_requested() -> bool:
    # Read on every call, not cached at import, so tests and tools can flip it.
    return os.environ.get(ENV_VAR, "") not in ("", "0")


def implementation() -> str:
    """Return "pure" or "accelerated": which kind ``load`` hands out now."""
    return "pure" if _pure_requested() else "accelerated"


def load(name: str) -> ModuleType:
    """Return ``warden_ext.<name>``, or ``warden.media.pure.<name>`` in pure mode.

    Raises ImportError naming the module and the fix if the compiled module
    was not built, and ValueError if ``name`` is not a plain module name.
    """
    if not name.isidentifier():
        raise ValueError(f"accel.load: {name!r} is not a module name")
    if _pure_requested():
        return importlib.import_module(f"warden.media.pure.{name}")
    qualified = f"warden_ext.{name}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name not in ("warden_ext", qualified):
            raise
        raise ImportError(
            f"compiled extension {qualified} is not built: run "
            f"'python setup.py build_ext --inplace' (or install the package), "
            f"or set {ENV_VAR}=1 to use the pure-Python twin",
            name=qualified,
        ) from exc
