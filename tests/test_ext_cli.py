"""``warden-pbx ext ...`` run as a real subprocess against a temporary config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from warden.sip.auth import ha1
from warden.store import Binding, Store

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-pass"
REALM = "pbx.test"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "warden.db"


@pytest.fixture()
def ext(tmp_path: Path, db_path: Path) -> Run:
    """Run ``python -m warden --config <tmp> ext ARGS``; no certificates exist anywhere here."""
    cfg = tmp_path / "config.yml"
    cfg.write_text(f"store: {{path: '{db_path}'}}\nsip: {{realm: {REALM}}}\n")

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "warden", "--config", str(cfg), "ext", *args],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
            input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, timeout=30, check=False,
            # No controlling terminal: getpass falls back to reading stdin.
            start_new_session=True,
        )

    return run


def _error_line(run: subprocess.CompletedProcess[str], text: str, *, prompted: bool = False) -> None:
    """Exit non-zero with one ``error: ...`` line (after getpass's prompts when ``prompted``)."""
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    last = run.stderr.splitlines()[-1]
    assert last.startswith("error: ") and text in last
    if not prompted:
        assert run.stderr == last + "\n"


def test_add_list_and_json(ext: Run, db_path: Path) -> None:
    run = ext("add", "1001", "--password", PASSWORD, "--name", "Alice Smith")
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"added extension 1001 (Alice Smith), enabled, realm {REALM}\n"
    run = ext("add", "1002", "--password", PASSWORD, "--disabled")
    assert run.stdout == f"added extension 1002, disabled, realm {REALM}\n"
    assert PASSWORD not in run.stdout + run.stderr

    with Store(db_path) as s:
        assert s.credentials("1001") == (ha1("1001", REALM, PASSWORD, "MD5"),
                                         ha1("1001", REALM, PASSWORD, "SHA-256"), REALM)
        assert s.credentials("1002") is None
        s.upsert_binding(Binding(aor="1001", contact="sip:1001@192.0.2.1", expires_at=4e9, call_id="a", cseq=1,
                                 transport="tls", source_host="192.0.2.1", source_port=5061, registered_at=1.0))
        s.upsert_binding(Binding(aor="1001", contact="sip:1001@192.0.2.2", expires_at=1.0, call_id="b", cseq=1,
                                 transport="udp", source_host="192.0.2.2", source_port=5060, registered_at=1.0))

    run = ext("list")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["NUMBER", "NAME", "ENABLED", "CONTACTS"]
    assert lines[1].split() == ["1001", "Alice", "Smith", "yes", "1"]  # the expired binding is not counted
    assert lines[2].split() == ["1002", "-", "no", "0"]
    col = lines[0].index("ENABLED")
    assert lines[1][col:].startswith("yes") and lines[2][col:].startswith("no")

    data = json.loads(ext("list", "--json").stdout)
    assert [(d["number"], d["display_name"], d["enabled"], d["contacts"]) for d in data] == [
        ("1001", "Alice Smith", True, 1), ("1002", "", False, 0)]
    assert all("ha1_md5" not in d and "ha1_sha256" not in d for d in data)


def test_empty_list(ext: Run) -> None:
    assert ext("list").stdout == "no extensions\n"
    assert json.loads(ext("list", "--json").stdout) == []


def test_add_errors(ext: Run) -> None:
    assert ext("add", "1001", "--password", PASSWORD).returncode == 0
    _error_line(ext("add", "1001", "--password", PASSWORD), "extension 1001 already exists")
    _error_line(ext("add", "10 01", "--password", PASSWORD), "invalid extension number")
    _error_line(ext("add", "1001@example.com", "--password", PASSWORD), "invalid extension number")
    short = ext("add", "1003", "--password", "abc1234")
    _error_line(short, "at least 8 characters")
    assert "abc1234" not in short.stderr + short.stdout


def test_passwd_enable_disable_and_del(ext: Run, db_path: Path) -> None:
    assert ext("add", "1001", "--password", PASSWORD).returncode == 0
    run = ext("passwd", "1001", "--password", "brand-new-pass")
    assert run.returncode == 0 and run.stdout == "password of extension 1001 changed\n"
    assert "brand-new-pass" not in run.stdout + run.stderr
    with Store(db_path) as s:
        creds = s.credentials("1001")
    assert creds is not None and creds[1] == ha1("1001", REALM, "brand-new-pass", "SHA-256")
    _error_line(ext("passwd", "1999", "--password", "brand-new-pass"), "no extension 1999")
    _error_line(ext("passwd", "1001", "--password", "short"), "at least 8")

    assert ext("disable", "1001").stdout == "extension 1001 disabled\n"
    with Store(db_path) as s:
        assert s.credentials("1001") is None
        s.upsert_binding(Binding(aor="1001", contact="sip:1001@192.0.2.1", expires_at=4e9, call_id="a", cseq=1,
                                 transport="tls", source_host="192.0.2.1", source_port=5061, registered_at=1.0))
    assert ext("enable", "1001").stdout == "extension 1001 enabled\n"
    _error_line(ext("enable", "1999"), "no extension 1999")

    assert ext("del", "1001").stdout == "deleted extension 1001 and its 1 registration\n"
    with Store(db_path) as s:
        assert s.get_extension("1001") is None and s.count_bindings() == 0
    _error_line(ext("del", "1001"), "no extension 1001")


def test_passwd_prompts_twice_and_refuses_a_mismatch(ext: Run, db_path: Path) -> None:
    assert ext("add", "1001", "--password", PASSWORD).returncode == 0
    _error_line(ext("passwd", "1001", stdin="first-password\nsecond-password\n"), "do not match",
                prompted=True)
    run = ext("passwd", "1001", stdin="prompted-pass\nprompted-pass\n")
    assert run.returncode == 0, run.stderr
    assert "prompted-pass" not in run.stdout + run.stderr
    with Store(db_path) as s:
        creds = s.credentials("1001")
    assert creds is not None and creds[0] == ha1("1001", REALM, "prompted-pass", "MD5")
    _error_line(ext("passwd", "1001", stdin=""), "no password given", prompted=True)


def test_ext_needs_an_action(ext: Run) -> None:
    run = ext()
    assert run.returncode != 0 and "ACTION" in run.stderr


def test_a_running_pbx_store_never_serves_what_the_cli_changed(ext: Run, db_path: Path) -> None:
    """The PBX caches extensions and bindings in memory; the CLI writes the same file from
    another process. Every change shows at the PBX's next lookup, inside a batch or not."""
    assert ext("add", "1001", "--password", PASSWORD).returncode == 0
    with Store(db_path) as pbx:
        pbx.upsert_binding(Binding(aor="1001", contact="sip:1001@192.0.2.1", expires_at=4e9, call_id="a",
                                   cseq=1, transport="udp", source_host="192.0.2.1", source_port=5060,
                                   registered_at=1.0))
        old = pbx.credentials("1001")
        assert old is not None and pbx.get_extension("1001") is not None and len(pbx.bindings("1001")) == 1

        assert ext("passwd", "1001", "--password", "brand-new-pass").returncode == 0
        new = pbx.credentials("1001")
        assert new is not None and new[0] == ha1("1001", REALM, "brand-new-pass", "MD5") != old[0]

        assert ext("disable", "1001").returncode == 0
        with pbx.batch():  # the engine's turn: the transaction begins at the first write
            pbx.start_cdr("c1", "1001", "1002", 1.0, caller_transport="udp")
            assert pbx.credentials("1001") is None

        assert ext("enable", "1001").returncode == 0
        with pbx.batch():
            assert pbx.credentials("1001") == new  # before the batch's first write
            pbx.start_cdr("c2", "1001", "1002", 2.0, caller_transport="udp")
            assert pbx.credentials("1001") == new

        assert ext("del", "1001").returncode == 0
        assert pbx.get_extension("1001") is None and pbx.credentials("1001") is None
        assert pbx.bindings("1001") == []
