"""``warden-pbx cert check``: monitoring exit codes for certificate expiry,
and the expiry warnings in the log."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, tls_config

from warden import certtool
from warden.tls import TLSManager


def check(tmp_path: Path, days: int) -> subprocess.CompletedProcess[str]:
    pki_dir = tmp_path / f"pki{days}"
    files = certtool.generate(pki_dir, days=days, sans=["localhost"])
    pki = type("P", (), {"cert": files.server_cert, "key": files.server_key, "ca": files.ca_cert})
    cfg = tmp_path / f"config{days}.yml"
    cfg.write_text(tls_config(pki, 5061))  # type: ignore[arg-type]
    return subprocess.run([sys.executable, "-m", "warden", "--config", str(cfg), "cert", "check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("days, code, word", [(365, 0, "OK"), (20, 1, "WARNING"), (3, 2, "CRITICAL")])
def test_exit_codes_follow_expiry(tmp_path: Path, days: int, code: int, word: str) -> None:
    result = check(tmp_path, days)
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stdout.startswith(f"{word}: CN=localhost expires on")


def test_missing_certificate_is_critical(tmp_path: Path) -> None:
    result = check(tmp_path, 365)
    cfg = tmp_path / "config365.yml"
    cfg.write_text(cfg.read_text().replace(str(tmp_path / "pki365" / "server.crt"), str(tmp_path / "gone.crt")))
    result = subprocess.run([sys.executable, "-m", "warden", "--config", str(cfg), "cert", "check"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2 and "CRITICAL: certificate file not found" in result.stdout


def test_log_warns_near_expiry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = certtool.generate(tmp_path, days=5, sans=["localhost"])
    with caplog.at_level(logging.WARNING, logger="warden.tls"):
        TLSManager(files.server_cert, files.server_key).log_expiry()
    assert any(r.levelno == logging.ERROR and "CRITICAL" in r.getMessage() for r in caplog.records)
