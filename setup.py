"""Build the Cython extensions: warden_ext/*.pyx and the SIP wire modules.

A missing Cython or a failed compile is an error, never a silent pure-Python
fallback: the appliance must run the accelerated path it was tested with.

The SIP wire modules (``SIP_COMPILED``) are plain Python compiled in Cython's
pure-Python mode, so each ``.py`` is its own pure twin (selected with
``WARDEN_NO_EXTENSIONS=1``, see ``warden/sip/_select.py``).
``annotation_typing=False``: type hints never become C types, checks or
conversions, so the compiled module behaves exactly as the ``.py``.

Strategy for Debian 12's Cython 0.29 (the .deb builds with it): it rejects
``from __future__ import annotations``, evaluates annotations at ``def`` time
(and cannot subscript ``tuple``/ABCs there), and drops class-level
annotations, which ``@dataclass`` needs. So for Cython < 3 each module is
compiled from a copy in ``build/cython029/`` made by ``_for_cython029``: the
future import and every annotation removed, and each class given the
``__annotations__`` dict (the annotation texts as strings) that the future
import would have made. Cython 3 compiles the ``.py`` itself.
"""
import ast
from pathlib import Path

import Cython
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent


def _compiled_sip_modules() -> tuple[str, ...]:
    """``COMPILED`` of ``warden/sip/_select.py``, the one list of compiled SIP modules.

    Read from the source, not imported: importing ``warden.sip`` needs the build.
    """
    tree = ast.parse((HERE / "warden" / "sip" / "_select.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMPILED" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise SystemExit("warden/sip/_select.py: no COMPILED tuple to read the compiled SIP modules from")


SIP_COMPILED = _compiled_sip_modules()


def _for_cython029(source: str) -> str:
    """``source`` without annotations, classes carrying ``__annotations__`` (see above)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(lineno: int, col: int) -> int:  # ast columns are UTF-8 byte offsets
        return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col].decode())

    cuts: list[tuple[int, int, str]] = []  # (start, end, replacement)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            cuts.append((offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset), "None"))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]:
                if arg.annotation is not None:
                    name_end = offset(arg.lineno, arg.col_offset) + len(arg.arg)
                    cuts.append((name_end, offset(arg.annotation.end_lineno, arg.annotation.end_col_offset), ""))
            if getattr(node, "returns", None) is not None:
                ret = node.returns
                end = offset(ret.end_lineno, ret.end_col_offset)
                arrow = source.rindex("->", 0, offset(ret.lineno, ret.col_offset))
                cuts.append((arrow, end, ""))
        elif isinstance(node, ast.ClassDef):
            names = []
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    text = ast.get_source_segment(source, stmt.annotation)
                    names.append(f"{stmt.target.id!r}: {' '.join(text.split())!r}")
            if names:  # after the last annotated field: a simple statement, at class level
                last = [stmt for stmt in node.body if isinstance(stmt, ast.AnnAssign)][-1]
                end = offset(last.end_lineno, last.end_col_offset)
                cuts.append((end, end, f"; __annotations__ = {{{', '.join(names)}}}"))
        if isinstance(node, ast.AnnAssign):
            start = offset(node.target.end_lineno, node.target.end_col_offset)
            end = offset(node.annotation.end_lineno, node.annotation.end_col_offset)
            if node.value is None:  # a bare declaration: nothing left to run
                cuts.append((offset(node.lineno, node.col_offset), end, "None"))  # not pass: 0.29 rejects "pass; x = 1"
            else:
                cuts.append((start, end, ""))
    for start, end, new in sorted(cuts, reverse=True):
        gap = source[start:end]
        # keep the line count: tracebacks' line numbers match the .py
        source = source[:start] + new + "\n" * gap.count("\n") + source[end:]
    return source


def _sip_source(name: str) -> str:
    """The file Cython compiles for ``warden.sip.<name>``."""
    original = f"warden/sip/{name}.py"
    if int(Cython.__version__.split(".")[0]) >= 3:
        return original
    copy = HERE / "build" / "cython029" / original
    copy.parent.mkdir(parents=True, exist_ok=True)
    for package in (copy.parent, copy.parent.parent):
        (package / "__init__.py").touch()
    text = _for_cython029((HERE / original).read_text(encoding="utf-8"))
    stale = copy.exists() and (HERE / original).stat().st_mtime > copy.stat().st_mtime
    if stale or not copy.exists() or copy.read_text(encoding="utf-8") != text:  # else no rebuild
        copy.write_text(text, encoding="utf-8")
    return str(copy.relative_to(HERE))


extensions = [
    Extension(
        f"warden_ext.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        extra_compile_args=["-O2"],
    )
    for pyx in sorted((HERE / "warden_ext").glob("*.pyx"))
]

sip_extensions = [
    Extension(f"warden.sip.{name}", [_sip_source(name)], extra_compile_args=["-O2"])
    for name in SIP_COMPILED
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
    + cythonize(
        sip_extensions,
        compiler_directives={"language_level": 3, "annotation_typing": False, "binding": True},
    ),
)
