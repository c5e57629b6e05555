"""Fixtures shared by the test suite (helpers live in tests/helpers.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> helpers.PKI:
    """An RSA 2048 CA + server certificate for localhost, 127.0.0.1 and ::1."""
    return helpers.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture()
def pbx_factory(tmp_path: Path) -> Iterator[object]:
    """Start ``warden-pbx run`` processes; every one is stopped at teardown."""
    started: list[helpers.PBXProcess] = []

    def start(config_text: str, wait_for: list[tuple[str, int]], **kw: object) -> helpers.PBXProcess:
        workdir = tmp_path / f"pbx{len(started)}"
        workdir.mkdir()
        proc = helpers.PBXProcess(workdir, config_text, **kw)  # type: ignore[arg-type]
        started.append(proc)
        proc.start(wait_for)
        return proc

    yield start
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()
