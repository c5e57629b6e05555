"""Fixtures shared by the test suite (helpers live in tests/helpers.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any
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


@pytest.fixture()
def stunnel(pbx: Any, pki: helpers.PKI, tmp_path: Path) -> Iterator[Any]:
    """stunnel in client mode to the module's ``pbx`` TLS port (sipp has no TLS)."""
    from sipp_helpers import Stunnel

    tunnel = Stunnel(tmp_path, pki, pbx.ports.tls).start()
    yield tunnel
    tunnel.stop()


@pytest.fixture()
def sipp(tmp_path: Path) -> Iterator[Any]:
    """Make sipp runs; any still running at teardown is stopped."""
    from sipp_helpers import Sipp

    made: list[Any] = []

    def make(*args: Any, **kw: Any) -> Any:
        run = Sipp(tmp_path, *args, **kw)
        made.append(run)
        return run

    yield make
    for run in made:
        run.stop()
