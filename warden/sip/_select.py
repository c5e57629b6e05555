"""Compiled or pure SIP wire modules, chosen once per process.

``setup.py`` compiles the modules in ``COMPILED`` with Cython (pure-Python
mode): each ``.py`` is its own pure twin. Python's import system prefers the
compiled file next to it; ``WARDEN_NO_EXTENSIONS`` set to anything but "" or
"0" (the switch ``warden.media.accel`` reads too) puts a finder first that
loads the ``.py`` instead. Without the switch a missing or stale build is an
ImportError, never a silent fallback: the appliance runs the compiled code it
was tested with, and a developer who edited a ``.py`` is not testing an old
build of it (in a source checkout a ``.py`` newer than its build is refused). Chosen when ``warden.sip`` is first imported, so set the switch
before that (tests run a child process per mode).
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional, Sequence

__all__ = ["COMPILED", "ENV_VAR", "implementation", "install", "modules"]

ENV_VAR = "WARDEN_NO_EXTENSIONS"
# The one list of compiled modules: setup.py and the Makefile read it from here.
COMPILED = ("uri", "headers", "message", "auth", "transaction", "framing", "dialog", "sdp")
_HERE = Path(__file__).resolve().parent
_chosen: Optional[str] = None
# Staleness (a .py newer than its build) is checked only in a source checkout:
# an installed package's file times say nothing about which was built from which.
_IN_SOURCE_TREE = (_HERE.parent.parent / "setup.py").exists()


def _pure_requested() -> bool:
    return os.environ.get(ENV_VAR, "") not in ("", "0")


class _PureFinder(importlib.abc.MetaPathFinder):
    """Finds ``warden.sip.<name>`` for ``name`` in ``COMPILED`` as the ``.py``."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        package, _, name = fullname.rpartition(".")
        if package != __package__ or name not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, _HERE / f"{name}.py")


def _compiled_file(name: str) -> Optional[Path]:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = _HERE / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return None


def install() -> str:
    """Choose the implementation (once) and return it: "pure" or "accelerated"."""
    global _chosen
    if _chosen is not None:
        return _chosen
    if _pure_requested():
        sys.meta_path.insert(0, _PureFinder())
        _chosen = "pure"
        return _chosen
    for name in COMPILED:
        built = _compiled_file(name)
        source = _HERE / f"{name}.py"
        if built is None:
            raise ImportError(
                f"compiled module warden.sip.{name} is not built: run 'make venv' or "
                f"'python setup.py build_ext --inplace' (or install the package), "
                f"or set {ENV_VAR}=1 to use the pure-Python modules",
                name=f"warden.sip.{name}",
            )
        if _IN_SOURCE_TREE and source.stat().st_mtime > built.stat().st_mtime:
            raise ImportError(
                f"compiled module {built.name} is older than {source.name}: rebuild it "
                f"('make venv' or 'python setup.py build_ext --inplace'), "
                f"or set {ENV_VAR}=1 to use the pure-Python modules",
                name=f"warden.sip.{name}",
            )
    _chosen = "accelerated"
    return _chosen


def implementation() -> str:
    """"pure" or "accelerated": what this process's ``warden.sip`` runs."""
    return install()


def modules() -> dict[str, str]:
    """Each compiled-or-pure module and the file it was loaded from (for logs and tests)."""
    return {
        name: str(importlib.import_module(f"{__package__}.{name}").__file__) for name in COMPILED
    }
