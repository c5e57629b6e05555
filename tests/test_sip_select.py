"""Compiled SIP wire modules or their pure twins (warden/sip/_select.py).

The selection happens once per process, so every case runs a child Python.
The unit tests of the modules themselves run over both: ``make test`` runs
them again with ``WARDEN_NO_EXTENSIONS=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PKI, ROOT, free_port, loopback_config

import warden

#: The package under test: this checkout's, or the installed one when the tests
#: run from a copy without it (the Debian package's autopkgtest).
PKG = Path(warden.__file__).resolve().parent

COMPILED = ("uri", "headers", "message", "auth", "transaction", "framing", "dialog", "sdp")
PROBE = (
    "import json, warden.sip._select as s; "
    "print(json.dumps([s.implementation(), s.modules(), list(s.COMPILED)]))"
)


def _child(env_value: str | None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WARDEN_NO_EXTENSIONS"}
    if env_value is not None:
        env["WARDEN_NO_EXTENSIONS"] = env_value
    env["PYTHONPATH"] = str(cwd)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("value", [None, "", "0"])
def test_compiled_modules_are_the_default(value: str | None) -> None:
    done = _child(value)
    assert done.returncode == 0, done.stderr
    implementation, files, names = json.loads(done.stdout)
    assert implementation == "accelerated"
    assert tuple(names) == COMPILED
    for name in COMPILED:
        assert files[name].endswith(".so"), files[name]


@pytest.mark.parametrize("value", ["1", "yes"])
def test_switch_selects_the_pure_twins(value: str) -> None:
    done = _child(value)
    assert done.returncode == 0, done.stderr
    implementation, files, _ = json.loads(done.stdout)
    assert implementation == "pure"
    for name in COMPILED:
        assert files[name] == str(PKG / "sip" / f"{name}.py")


def _tree_copy(tmp_path: Path, *, checkout: bool) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(PKG, tree / "warden", ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    if checkout:
        (tree / "setup.py").write_text("# marks a source checkout\n")
    return tree


def test_missing_build_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    tree = _tree_copy(tmp_path, checkout=False)
    for built in (tree / "warden" / "sip").glob("message.*.so"):
        built.unlink()
    done = _child(None, cwd=tree)
    assert done.returncode != 0
    assert "warden.sip.message is not built" in done.stderr
    assert "WARDEN_NO_EXTENSIONS=1" in done.stderr
    pure = _child("1", cwd=tree)
    assert pure.returncode == 0, pure.stderr
    assert json.loads(pure.stdout)[0] == "pure"


def test_source_newer_than_build_is_refused_in_a_checkout(tmp_path: Path) -> None:
    tree = _tree_copy(tmp_path, checkout=True)
    source = tree / "warden" / "sip" / "uri.py"
    built = next((tree / "warden" / "sip").glob("uri.*.so"))
    os.utime(source, (built.stat().st_atime, built.stat().st_mtime + 10))
    done = _child(None, cwd=tree)
    assert done.returncode != 0
    assert f"{built.name} is older than uri.py" in done.stderr
    # An installed package (no setup.py beside it): file times are not compared.
    (tree / "setup.py").unlink()
    done = _child(None, cwd=tree)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0] == "accelerated"


@pytest.mark.parametrize("pure", [False, True])
def test_pbx_logs_and_serves_with_either(pbx_factory, pki: PKI, tmp_path: Path, pure: bool) -> None:
    udp, tcp, tls = free_port(socket.SOCK_DGRAM), free_port(), free_port()
    env = {"WARDEN_NO_EXTENSIONS": "1" if pure else "0"}
    proc = pbx_factory(loopback_config(pki, tmp_path, udp, tcp, tls), [("127.0.0.1", tcp)], env=env)
    expected = "pure" if pure else "accelerated"
    assert f"SIP wire modules: {expected}; media: {expected}" in proc.output()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.bind(("127.0.0.1", 0))
        request = (
            f"OPTIONS sip:127.0.0.1:{udp} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};branch=z9hG4bK-select-1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
            "Call-ID: select-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        s.sendto(request, ("127.0.0.1", udp))
        reply, _ = s.recvfrom(65535)
    assert reply.startswith(b"SIP/2.0 ")
    assert b"Call-ID: select-1@127.0.0.1" in reply
