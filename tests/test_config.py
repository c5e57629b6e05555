"""The config loader: defaults, validation messages with file:line, paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PKI, ROOT, tls_config

from warden import config
from warden.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def errors_of(path: Path, **kw: bool) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load(path, **kw)
    return info.value.problems


def test_seed_keys_load_as_written(tmp_path: Path, pki: PKI) -> None:
    (tmp_path / "certs").mkdir()
    for name in ("server.crt", "server.key"):
        (tmp_path / "certs" / name).write_bytes((pki.dir / name).read_bytes())
    path = write(tmp_path, """
api:
  ssl: {enabled: true, cert_file: certs/server.crt, key_file: certs/server.key}
security:
  enable_tls: true
  tls_cert_file: certs/server.crt
  tls_key_file: certs/server.key
  fips_mode: false
  enforce_fips: false
""")
    cfg = config.load(path)
    assert cfg.api.ssl.enabled is True
    assert cfg.api.ssl.cert_file == str(tmp_path / "certs/server.crt")  # relative to the file's folder
    assert cfg.security.tls_key_file == str(tmp_path / "certs/server.key")
    assert cfg.security.fips_mode is False
    assert cfg.sip.tls_port == 5061 and cfg.sip.udp_port == 5060 and cfg.api.port == 9000  # defaults merged
    with pytest.raises(dataclasses_frozen_error()):
        cfg.security.fips_mode = True  # type: ignore[misc]


def dataclasses_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_project_config_is_valid() -> None:
    cfg = config.load(ROOT / "conf" / "config.yml", check_files=False)
    assert cfg.base_dir == str(ROOT)
    assert cfg.security.tls_cert_file == str(ROOT / "certs" / "server.crt")
    assert cfg.sip.tls_port == 5061 and cfg.api.port == 9000


def test_wrong_type_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "security:\n  enable_tls: true\n  fips_mode: yes please\n")
    assert errors_of(path, check_files=False) == [
        f"{path}:3: security.fips_mode must be true or false, got 'yes please'"
    ]


def test_typo_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(tmp_path, "security:\n  fips_mod: true\n")
    assert errors_of(path, check_files=False) == [
        f"{path}:2: security.fips_mod is not a known setting (did you mean security.fips_mode?)"
    ]


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "sip:\n  tls_port: 70000\n  udp_port: five\napi:\n  bind: nowhere\nfrobnicate: 1\n")
    problems = errors_of(path, check_files=False)
    assert f"{path}:2: sip.tls_port must be from 0 to 65535, got 70000" in problems
    assert f"{path}:3: sip.udp_port must be a whole number from 0 to 65535, got 'five'" in problems
    assert f"{path}:5: api.bind must be an IP address, got 'nowhere'" in problems
    assert f"{path}:6: frobnicate is not a known setting" in problems
    assert len(problems) == 4


def test_missing_cert_file_one_line(tmp_path: Path, pki: PKI) -> None:
    text = tls_config(pki, 5061).replace(f"tls_cert_file: {pki.cert}", "tls_cert_file: nowhere/server.crt")
    path = write(tmp_path, text)
    problems = errors_of(path)
    assert len(problems) == 1
    line = text.splitlines().index("  tls_cert_file: nowhere/server.crt") + 1
    assert problems[0].startswith(f"{path}:{line}: security.tls_cert_file file not found: {tmp_path}/nowhere/server.crt")


def test_bad_yaml_and_non_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "sip:\n  tls_port: [1, 2\n")
    [problem] = errors_of(path)
    assert problem.startswith(f"{path}:") and "invalid YAML" in problem
    path = write(tmp_path, "sip: 5\n")
    assert errors_of(path, check_files=False) == [f"{path}:1: sip must be a mapping of settings"]


def test_duplicate_key_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "sip:\n  tls_port: 5061\n  tls_port: 5062\n")
    assert errors_of(path, check_files=False) == [f"{path}:3: sip.tls_port is set twice"]


def test_cross_checks(tmp_path: Path) -> None:
    path = write(tmp_path, "security:\n  enforce_fips: true\napi:\n  bind: 0.0.0.0\n  ssl: {enabled: false}\n"
                 "media: {rtp_port_min: 20001, rtp_port_max: 20000}\n")
    problems = errors_of(path, check_files=False)
    assert f"{path}:2: security.enforce_fips needs security.fips_mode: true" in problems
    assert any(p.startswith(f"{path}:4: api.bind must be a loopback address") for p in problems)
    assert any("media.rtp_port_min must be below" in p for p in problems)


def test_missing_file_and_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "absent.yml")
    path = write(tmp_path, "sip: {realm: example}\n")
    monkeypatch.setenv("WARDEN_CONFIG", str(path))
    assert config.load(check_files=False).sip.realm == "example"


def test_reference_lists_every_key() -> None:
    ref = config.reference()
    for key in ("security.fips_mode", "api.ssl.cert_file", "sip.tls_port", "media.rtp_port_min", "logging.file"):
        assert f"`{key}`" in ref


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("WARDEN_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "warden", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def test_check_config_cli(tmp_path: Path, pki: PKI) -> None:
    good = write(tmp_path, tls_config(pki, 5061))
    result = run_cli("--config", str(good), "check-config")
    assert (result.returncode, result.stdout.strip()) == (0, "OK"), result.stderr

    bad = tmp_path / "bad.yml"
    bad.write_text("security:\n  fips_mode: yes please\n")
    result = run_cli("--config", str(bad), "check-config")
    assert result.returncode != 0
    assert result.stderr.strip() == f"{bad}:2: security.fips_mode must be true or false, got 'yes please'"
    assert "Traceback" not in result.stderr


def test_run_with_missing_cert_exits_with_one_line(tmp_path: Path, pki: PKI) -> None:
    text = tls_config(pki, 5061).replace(f"tls_key_file: {pki.key}", "tls_key_file: /nonexistent/server.key")
    path = write(tmp_path, text)
    result = run_cli("--config", str(path), "run")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "security.tls_key_file file not found: /nonexistent/server.key" in lines[0]
    assert lines[0].startswith(f"{path}:")


def test_readme_reference_is_current() -> None:
    assert config.reference() in (ROOT / "README.md").read_text(), "README's reference is stale: run tools/update_readme_reference.py"


def test_tls_listeners_resolve_paths_and_check_their_files(tmp_path: Path) -> None:
    path = write(tmp_path, """
base_dir: app
sip:
  tls_listeners:
    - {port: 5063, profile: legacy-phones}
    - {port: 5065, profile: modern, name: soft, cert_file: certs/soft.crt, key_file: certs/soft.key}
api: {enabled: false}
""")
    cfg = config.load(path, check_files=False)
    first, second = cfg.sip.tls_listeners
    assert (first.label, first.profile, first.cert_file) == ("sips-5063", "legacy-phones", "")
    assert second.label == "soft" and second.cert_file == str(tmp_path / "app" / "certs" / "soft.crt")
    problems = errors_of(path)
    assert any(p.startswith(f"{path}:6: sip.tls_listeners[1].cert_file file not found: "
                            f"{tmp_path / 'app' / 'certs' / 'soft.crt'}") for p in problems), problems


@pytest.mark.parametrize("listeners, message", [
    ("[{port: 5061, profile: modern}]", ":4: sip.tls_listeners[0].port 5061 is already sip.tls_port"),
    ("[{port: 5063, profile: modern}, {port: 5064, profile: modern, name: sips-5063}]",
     ":4: sip.tls_listeners[1].name 'sips-5063' is already the name of sip.tls_listeners[0]"),
    ("[{port: 5063, profile: modern, cert_file: a.crt}]", ":4: sip.tls_listeners[0].cert_file and key_file go together"),
    ("[{port: 5063, profile: modern, verify_client: required}]",
     ":4: sip.tls_listeners[0].verify_client needs client_ca_file"),
    ("[{port: 5063, profile: paranoid}]", ":4: sip.tls_listeners[0].profile must be one of modern, intermediate,"
     " legacy-phones, fips, got 'paranoid'"),
    ("{port: 5063}", ":4: sip.tls_listeners must be a list of mappings"),
    ("[{port: 5063, profile: modern, name: api}]", ":4: sip.tls_listeners[0].name 'api' is already the name of the admin API"),
])
def test_tls_listener_mistakes_are_named(tmp_path: Path, listeners: str, message: str) -> None:
    path = write(tmp_path, f"\nsip:\n  tls_port: 5061\n  tls_listeners: {listeners}\n")
    problems = errors_of(path, check_files=False)
    assert any(p.startswith(f"{path}{message}") for p in problems), problems
