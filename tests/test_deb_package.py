"""The Debian packaging agrees with the program it packages (fast, static checks).

The real proof is ``make test-deb`` (tools/deb_test.py): build the .deb,
install it in a booted Debian 12 container and use it. These checks catch
drift early and in a second: the packaged config against the config schema,
the systemd unit's promises (issue 6), the Depends against pyproject.toml,
the man page against the command line, the maintainer scripts' syntax.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from warden import __version__, config
from warden.cli import build_parser
from warden.control.location import control_path

HERE = Path(__file__).resolve().parent.parent


def _packaging_root() -> Path | None:
    """The checkout holding debian/ (``make test-debian`` runs from a copy under build/)."""
    for base in (HERE, *HERE.parents):
        if (base / "debian" / "control").is_file() and (base / "systemd").is_dir():
            return base
    return None


ROOT = _packaging_root()
if ROOT is None:
    pytest.skip("no debian/ packaging beside these tests", allow_module_level=True)
assert ROOT is not None
DEBIAN = ROOT / "debian"
UNIT = ROOT / "systemd" / "warden-pbx.service"
DEB_CONFIG = ROOT / "conf" / "config.deb.yml"


def unit_settings() -> dict[str, list[str]]:
    """``Key=value`` lines of the unit (a key may repeat, e.g. ExecReload)."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def control_field(name: str) -> str:
    text = (DEBIAN / "control").read_text()
    m = re.search(rf"^{name}:(.*(?:\n[ \t].*)*)", text, re.MULTILINE)
    assert m, f"debian/control has no {name}"
    return m.group(1)


# --- the packaged config ---------------------------------------------------------------------------


def test_packaged_config_is_valid_and_uses_the_debian_paths() -> None:
    cfg = config.load(DEB_CONFIG, check_files=False)
    assert cfg.base_dir == "/etc/warden-pbx"
    for path in (cfg.security.tls_cert_file, cfg.security.tls_key_file, cfg.security.tls_ca_file,
                 cfg.api.ssl.cert_file, cfg.api.ssl.key_file):
        assert path.startswith("/etc/warden-pbx/certs/"), path
    assert cfg.store.path == "/var/lib/warden-pbx/warden.db"
    assert str(control_path(cfg)) == "/var/lib/warden-pbx/warden.sock"  # in the unit's StateDirectory
    assert cfg.logging.file == "/var/log/warden-pbx/pbx.log"  # the unit's LogsDirectory, logrotate's glob
    assert cfg.security.enable_tls and cfg.api.ssl.enabled


def _keys(node: object, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return {prefix.rstrip(".")}
    return {k for key, value in node.items() for k in _keys(value, f"{prefix}{key}.")}


def test_packaged_config_sets_every_key_the_development_config_sets() -> None:
    import yaml

    dev = _keys(yaml.safe_load((ROOT / "conf" / "config.yml").read_text()))
    deb = _keys(yaml.safe_load(DEB_CONFIG.read_text()))
    assert dev - deb == set(), "conf/config.deb.yml lacks keys that conf/config.yml sets"


def test_packaged_ports_need_no_capability() -> None:
    """The unit grants no CAP_NET_BIND_SERVICE, so every packaged port is 1024 or above."""
    cfg = config.load(DEB_CONFIG, check_files=False)
    assert unit_settings()["CapabilityBoundingSet"] == [""]
    for port in (cfg.sip.udp_port, cfg.sip.tcp_port, cfg.sip.tls_port, cfg.api.port):
        assert port == 0 or port >= 1024, port


def test_install_rule_ships_the_packaged_config_as_etc_config() -> None:
    rules = (DEBIAN / "rules").read_text()
    assert "conf/config.deb.yml debian/warden-pbx/etc/warden-pbx/config.yml" in rules


# --- the systemd unit --------------------------------------------------------------------------------


def test_unit_keeps_the_promises_of_issue_6() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["Restart"] == ["on-failure"]
    assert s["User"] == ["warden"] and s["ExecStart"] == ["/usr/bin/warden-pbx run"]
    assert "WARDEN_CONFIG=/etc/warden-pbx/config.yml" in s["Environment"]
    assert s["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert s["StateDirectory"] == ["warden-pbx"] and s["LogsDirectory"] == ["warden-pbx"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "@system-service" in s["SystemCallFilter"]
    # gunicorn 20.1 workers call setuid() even when the uid does not change.
    assert not any("@privileged" in f or "@setuid" in f for f in s["SystemCallFilter"])


def test_debian_unit_is_the_systemd_folder_one() -> None:
    link = DEBIAN / "warden-pbx.service"
    assert link.is_symlink() and link.resolve() == UNIT.resolve()


def test_procps_provides_the_reload_kill() -> None:
    assert re.search(r"\bprocps\b", control_field("Depends"))


# --- package metadata --------------------------------------------------------------------------------


def test_depends_cover_the_python_dependencies() -> None:
    debian_name = {"pyyaml": "python3-yaml", "cryptography": "python3-cryptography",
                   "flask": "python3-flask", "gunicorn": "python3-gunicorn"}
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    depends = control_field("Depends")
    for dep in deps:
        name = re.split(r"[<>=!~ ;\[]", dep, maxsplit=1)[0].lower()
        assert name in debian_name, f"map {name} to its Debian package here and in debian/control"
        assert re.search(rf"\b{re.escape(debian_name[name])}\b", depends), debian_name[name]


def test_changelog_version_is_the_program_version() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    m = re.match(r"warden-pbx \(([^)-]+)(?:-[^)]+)?\) ", first)
    assert m and m.group(1) == __version__, first


def test_man_page_names_every_command() -> None:
    page = (DEBIAN / "warden-pbx.1").read_text().replace("\\-", "-")
    page = re.sub(r"\\f[BIRP]", "", page)

    def commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
        out = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out += commands(sub, f"{prefix}{name} ") or [f"{prefix}{name}"]
        return out

    found = commands(build_parser())
    assert len(found) > 10
    missing = [cmd for cmd in found if cmd not in page]
    assert not missing, f"debian/warden-pbx.1 does not document: {missing}"


# --- maintainer scripts and autopkgtest ------------------------------------------------------------


@pytest.mark.parametrize("name", ["warden-pbx.postinst", "warden-pbx.postrm", "tests/run-suite"])
def test_shell_scripts_parse(name: str) -> None:
    run = subprocess.run(["/bin/sh", "-n", str(DEBIAN / name)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("name", ["warden-pbx.postinst", "warden-pbx.postrm"])
def test_debhelper_token_once_and_alone(name: str) -> None:
    # debhelper substitutes the token even inside a comment.
    lines = (DEBIAN / name).read_text().splitlines()
    assert [line for line in lines if "#DEBHELPER#" in line] == ["#DEBHELPER#"]


def test_postinst_never_overwrites_certificates() -> None:
    text = (DEBIAN / "warden-pbx.postinst").read_text()
    assert "cert generate" in text and "--force" not in text


def test_autopkgtest_runs_the_suite_script() -> None:
    control = (DEBIAN / "tests" / "control").read_text()
    assert "debian/tests/run-suite hermetic" in control
    assert (DEBIAN / "tests" / "run-suite").stat().st_mode & 0o111


def test_deb_test_tool_compiles() -> None:
    path = ROOT / "tools" / "deb_test.py"
    compile(path.read_text(), str(path), "exec")  # a syntax error fails here, not in CI's last step
