"""One configuration loader for every Warden component.

``load(path)`` reads a YAML file, merges it over the defaults in the schema
below, validates every value and returns frozen dataclasses. The schema is the
dataclasses themselves: each field carries its help text and a checker in its
metadata, so defaults, validation, ``check-config`` and the README's reference
come from one table.

Strategy: PyYAML's ``compose`` keeps each node's position, so every error can
name ``file:line: key.path``. We build Python values from the nodes ourselves
(rather than ``safe_load``) to keep that position, to refuse duplicate keys,
and to refuse unknown keys with a suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = [
    "AbuseConfig",
    "APIConfig",
    "APISSLConfig",
    "Config",
    "LoggingConfig",
    "MediaConfig",
    "SIPConfig",
    "SecurityConfig",
    "StoreConfig",
    "TLSListenerConfig",
    "TLS_PROFILES",
    "default_config_path",
    "load",
    "reference",
]

ENV_VAR = "WARDEN_CONFIG"
INSTALLED_CONFIG = Path("/etc/warden-pbx/config.yml")

Checker = Callable[[Any], Any]

TLS_PROFILES = ("modern", "intermediate", "legacy-phones", "fips")
"""The names of ``warden.tls.POLICIES`` (kept here so the loader imports no ssl)."""
VERIFY_CLIENT = ("none", "optional", "required")


class _Invalid(ValueError):
    """A checker's complaint; the loader adds file, line and key path."""


# --- value checkers -----------------------------------------------------------


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _Invalid(f"must be true or false, got {value!r}")


def _int(lo: int, hi: int) -> Checker:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be a whole number from {lo} to {hi}, got {value!r}")
        if not lo <= value <= hi:
            raise _Invalid(f"must be from {lo} to {hi}, got {value}")
        return value

    return check


def _float(lo: float, hi: float) -> Checker:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"must be a number from {lo} to {hi}, got {value!r}")
        if not lo <= value <= hi:
            raise _Invalid(f"must be from {lo} to {hi}, got {value}")
        return float(value)

    return check


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid(f"must be a string, got {value!r}")


def _choice(*options: str) -> Checker:
    def check(value: Any) -> str:
        if isinstance(value, str) and value.lower() in options:
            return value.lower()
        raise _Invalid(f"must be one of {', '.join(options)}, got {value!r}")

    return check


def _address(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be an IP address, got {value!r}")
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise _Invalid(f"must be an IP address, got {value!r}") from None


def _address_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _Invalid(f"must be a list of IP addresses, got {value!r}")
    return tuple(_address(v) for v in value)


def _networks(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if value is None:
        value = []
    if not isinstance(value, list):
        raise _Invalid(f"must be a list of networks (e.g. 192.168.1.0/24), got {value!r}")
    out = []
    for v in value:
        try:
            out.append(str(ipaddress.ip_network(str(v).strip("[]"), strict=False)))
        except ValueError:
            raise _Invalid(f"must list networks or addresses (e.g. 192.168.1.0/24, ::1), got {v!r}") from None
    return tuple(dict.fromkeys(out))


def _digest_algorithms(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _Invalid(f"must be a list of MD5 and/or SHA-256, got {value!r}")
    out = []
    for v in value:
        name = str(v).upper()
        if name not in ("MD5", "SHA-256"):
            raise _Invalid(f"must list only MD5 and SHA-256, got {v!r}")
        out.append(name)
    return tuple(dict.fromkeys(out))


def _numbers(value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise _Invalid(f"must be a list of numbers, got {value!r}")
    out = tuple(str(v) for v in value)
    bad = [v for v in out if not v.isdigit()]
    if bad:
        raise _Invalid(f"must be dialable numbers (digits), got {bad[0]!r}")
    return out


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"must be a file path, got {value!r}")
    return value


def _opt_path(value: Any) -> str:
    if value is None or value == "":
        return ""
    return _path(value)


def _inherit(check: Checker) -> Checker:
    """``check``, or empty meaning "as the main setting"."""

    def inherit(value: Any) -> Any:
        return "" if value is None or value == "" else check(value)

    return inherit


def _label(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 32 or not all(c.isalnum() or c in "-_." for c in value):
        raise _Invalid(f"must be 1-32 letters, digits, '-', '_' or '.', got {value!r}")
    return value


def _setting(default: Any, check: Checker, help: str, *, path: bool = False, required: bool = False) -> Any:
    """A schema entry: the default, its checker and the help text."""
    return field(default=default, metadata={"check": check, "help": help, "path": path, "required": required})


def _items(cls: type, help: str) -> Any:
    """A schema entry holding a list of mappings, each checked as ``cls``."""
    return field(default=(), metadata={"items": cls, "help": help})


# --- the schema ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TLSListenerConfig:
    """One more SIPS listener (an item of ``sip.tls_listeners``), e.g. a
    ``legacy-phones`` port beside the main one. Empty settings take the
    ``security`` ones."""

    port: int = _setting(0, _int(1, 65535), "SIPS port (required)", required=True)
    profile: str = _setting(
        "intermediate", _choice(*TLS_PROFILES), "TLS profile: modern, intermediate, legacy-phones or fips (required)",
        required=True,
    )
    name: str = _setting("", _inherit(_label), "label in logs and handshake counters (default: sips-PORT)")
    cert_file: str = _setting("", _opt_path, "certificate chain (default: security.tls_cert_file)", path=True)
    key_file: str = _setting("", _opt_path, "private key (default: security.tls_key_file)", path=True)
    ecdsa_cert_file: str = _setting(
        "", _opt_path, "second, ECDSA certificate chain (default: security's, unless cert_file is set)", path=True
    )
    ecdsa_key_file: str = _setting("", _opt_path, "its private key", path=True)
    verify_client: str = _setting(
        "", _inherit(_choice(*VERIFY_CLIENT)), "client certificates: none, optional or required"
        " (default: security.tls_verify_client)",
    )
    client_ca_file: str = _setting(
        "", _opt_path, "CA bundle client certificates must chain to (default: security.tls_client_ca_file)", path=True
    )

    @property
    def label(self) -> str:
        """The listener's name in logs, ``tls.stats`` and metrics."""
        return self.name or f"sips-{self.port}"


@dataclass(frozen=True, slots=True)
class SIPConfig:
    """SIP transports and identity."""

    listen: tuple[str, ...] = _setting(
        ("0.0.0.0", "::"), _address_list, "addresses the SIP listeners bind (IPv4 and IPv6)"
    )
    udp_port: int = _setting(5060, _int(0, 65535), "SIP over UDP port (0 turns UDP off)")
    tcp_port: int = _setting(5060, _int(0, 65535), "SIP over TCP port (0 turns TCP off)")
    tls_port: int = _setting(5061, _int(0, 65535), "SIPS (SIP over TLS) port (0 turns TLS off)")
    realm: str = _setting("warden", _str, "digest authentication realm")
    digest_algorithms: tuple[str, ...] = _setting(
        ("MD5",), _digest_algorithms,
        "digest challenges offered, in order; add SHA-256 only when every phone copes with a"
        " challenge it cannot answer (libre 1.1/baresip 1.0 fails the REGISTER)",
    )
    advertised_address: str = _setting(
        "", _str, "address put in Via/Contact/SDP (empty: the address a phone reached us on)"
    )
    tls_handshake_timeout: float = _setting(
        5.0, _float(0.5, 60), "seconds a TLS client gets to finish its handshake"
    )
    max_message_size: int = _setting(65535, _int(1024, 1048576), "largest SIP message accepted")
    tls_listeners: tuple[TLSListenerConfig, ...] = _items(
        TLSListenerConfig, "more SIPS listeners on sip.listen, each with its own port and TLS profile"
    )


@dataclass(frozen=True, slots=True)
class APISSLConfig:
    """TLS of the admin API (certificates default to security's)."""

    enabled: bool = _setting(True, _bool, "serve the API over HTTPS")
    cert_file: str = _setting("certs/server.crt", _path, "API certificate chain (PEM)", path=True)
    key_file: str = _setting("certs/server.key", _path, "API private key (PEM)", path=True)
    profile: str = _setting(
        "intermediate", _choice(*TLS_PROFILES), "TLS profile of the API: modern, intermediate, legacy-phones or fips"
    )


@dataclass(frozen=True, slots=True)
class APIConfig:
    """The HTTPS admin API served by gunicorn."""

    enabled: bool = _setting(True, _bool, "run the admin API (gunicorn) under 'warden-pbx run'")
    bind: str = _setting("0.0.0.0", _address, "address the API binds")
    port: int = _setting(9000, _int(1, 65535), "API port")
    workers: int = _setting(2, _int(1, 64), "gunicorn worker processes")
    metrics_without_token: tuple[str, ...] = _setting(
        ("127.0.0.0/8", "::1/128"), _networks,
        "client addresses (networks) that may read /metrics without a token; [] behind a local reverse proxy",
    )
    ssl: APISSLConfig = field(default_factory=APISSLConfig)


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """TLS policy shared by SIPS and the API."""

    enable_tls: bool = _setting(True, _bool, "run the SIPS listener")
    tls_cert_file: str = _setting(
        "certs/server.crt", _path, "server certificate chain, leaf first (PEM)", path=True
    )
    tls_key_file: str = _setting("certs/server.key", _path, "server private key (PEM)", path=True)
    tls_ca_file: str = _setting(
        "certs/ca.crt", _opt_path, "CA bundle that clients use to verify us", path=True
    )
    tls_profile: str = _setting(
        "intermediate", _choice(*TLS_PROFILES),
        "TLS profile of the main SIPS listener: modern (TLS 1.3 only), intermediate (TLS 1.2 ECDHE AEAD + 1.3),"
        " legacy-phones (adds CBC-SHA suites, still TLS 1.2+) or fips",
    )
    tls_ecdsa_cert_file: str = _setting(
        "", _opt_path, "optional second, ECDSA certificate chain, served to clients that support ECDSA", path=True
    )
    tls_ecdsa_key_file: str = _setting("", _opt_path, "private key of the ECDSA certificate", path=True)
    tls_verify_client: str = _setting(
        "none", _choice(*VERIFY_CLIENT), "ask phones for a client certificate: none, optional or required"
    )
    tls_client_ca_file: str = _setting(
        "", _opt_path, "CA bundle that client (phone) certificates must chain to", path=True
    )
    tls_client_cert_binds_extension: bool = _setting(
        False, _bool, "a phone with a client certificate may register only the extension named in it"
        " (CN or a sip: URI SAN)",
    )
    fips_mode: bool = _setting(
        False, _bool, "restrict TLS 1.2 and 1.3 to FIPS-approved algorithms; forces the fips profile everywhere"
    )
    enforce_fips: bool = _setting(
        False, _bool, "refuse to start when the FIPS policy cannot be fully enforced"
    )
    require_tls: bool = _setting(False, _bool, "refuse REGISTER over UDP/TCP (403)")


@dataclass(frozen=True, slots=True)
class AbuseConfig:
    """Brute-force bans and flood limits for SIP (see README, "Abuse resistance")."""

    trusted: tuple[str, ...] = _setting(
        ("127.0.0.0/8", "::1/128"), _networks,
        "networks never banned, rate limited or capped per source (an office NAT, a local proxy)",
    )
    auth_failures: int = _setting(
        10, _int(0, 10000), "wrong passwords or unknown users (digest answers) from one source (IPv4 address or IPv6 /64) that ban it (0: never ban)"
    )
    auth_window: float = _setting(60.0, _float(1, 86400), "seconds over which auth_failures are counted")
    ban_time: float = _setting(
        600.0, _float(1, 30 * 86400), "seconds a banned source gets no answer at all (bans end at a restart)"
    )
    requests_per_second: float = _setting(
        200.0, _float(0, 1e6), "SIP messages per second one source may send, sustained (0: no limit)"
    )
    request_burst: int = _setting(1000, _int(1, 10**6), "SIP messages one source may send at once")
    max_connections_per_source: int = _setting(
        100, _int(1, 10**6), "open SIP TCP/TLS connections per source"
    )
    max_connections: int = _setting(10000, _int(1, 10**6), "open SIP TCP/TLS connections in all")
    idle_timeout: float = _setting(
        120.0, _float(0, 86400),
        "seconds a SIP TCP/TLS connection may stay silent before any REGISTER or call succeeded on it (0: forever)",
    )
    max_headers: int = _setting(100, _int(10, 1000), "header fields in one SIP message (more: 400)")


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """RTP relay."""

    rtp_port_min: int = _setting(10000, _int(1024, 65534), "lowest RTP relay port (even)")
    rtp_port_max: int = _setting(20000, _int(1025, 65535), "highest RTP relay port")
    media_timeout: float = _setting(
        30.0, _float(1, 3600), "seconds without RTP before an answered call is hung up"
    )
    conference_rooms: tuple[str, ...] = _setting(
        ("8000",), _numbers, "numbers that dial a conference room (not extensions)"
    )


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The embedded SQLite store."""

    path: str = _setting("var/warden.db", _path, "SQLite database file", path=True)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Logging: a rotated file in development, stderr under systemd."""

    level: str = _setting("info", _choice("debug", "info", "warning", "error"), "log level")
    file: str = _setting(
        "logs/pbx.log", _opt_path, "log file (empty, or under systemd: stderr)", path=True
    )
    max_bytes: int = _setting(10 * 1024 * 1024, _int(4096, 1 << 31), "rotate the file at this size")
    backups: int = _setting(5, _int(0, 100), "rotated files kept")


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting of a Warden PBX, immutable once loaded."""

    base_dir: str = _setting(
        ".", _path, "folder relative paths resolve against, itself relative to this file's folder"
    )
    sip: SIPConfig = field(default_factory=SIPConfig)
    api: APIConfig = field(default_factory=APIConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    abuse: AbuseConfig = field(default_factory=AbuseConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = field(default="<defaults>", metadata={"internal": True})


# --- loading ------------------------------------------------------------------


def default_config_path() -> Path:
    """``$WARDEN_CONFIG``, else this checkout's ``conf/config.yml``, else /etc."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "conf" / "config.yml"
    if checkout.is_file():
        return checkout
    return INSTALLED_CONFIG  # installed: never a conf/ that happens to be in the current folder


def _is_section(f: dataclasses.Field[Any]) -> bool:
    return dataclasses.is_dataclass(f.default_factory) if f.default_factory is not dataclasses.MISSING else False  # type: ignore[arg-type]


def _settings(cls: type) -> Iterator[dataclasses.Field[Any]]:
    return (f for f in dataclasses.fields(cls) if not f.metadata.get("internal"))


class _Loader:
    """Builds one section from YAML nodes, collecting every problem."""

    def __init__(self, filename: str, yaml_loader: yaml.SafeLoader) -> None:
        self.filename = filename
        self.yaml = yaml_loader
        self.problems: list[str] = []
        self.lines: dict[str, int] = {}

    def problem(self, node: yaml.Node | None, key: str, message: str) -> None:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        self.problems.append(f"{self.filename}{line}: {key} {message}".replace("  ", " "))

    def value(self, node: yaml.Node) -> Any:
        """Plain Python value of a node (scalars and lists; mappings stay nodes)."""
        if isinstance(node, yaml.SequenceNode):
            return [self.value(n) for n in node.value]
        if isinstance(node, yaml.MappingNode):
            return node
        return self.yaml.construct_object(node, deep=True)

    def section(self, cls: type, node: yaml.Node | None, prefix: str) -> Any:
        known = {f.name: f for f in _settings(cls)}
        given: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        if node is not None:
            if not isinstance(node, yaml.MappingNode):
                self.problem(node, prefix.rstrip(".") or "(top level)", "must be a mapping of settings")
                return cls()
            for key_node, value_node in node.value:
                key = self.yaml.construct_object(key_node)
                path = f"{prefix}{key}"
                if not isinstance(key, str):
                    self.problem(key_node, path, "is not a valid setting name")
                elif key in given:
                    self.problem(key_node, path, "is set twice")
                elif key not in known:
                    hint = difflib.get_close_matches(key, list(known), n=1)
                    suggestion = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
                    self.problem(key_node, path, f"is not a known setting{suggestion}")
                else:
                    given[key] = (key_node, value_node)
        values: dict[str, Any] = {}
        for name, f in known.items():
            path = f"{prefix}{name}"
            if f.metadata.get("required") and name not in given and node is not None:
                self.problem(node, path, "is required")
            if "items" in f.metadata:
                if name in given:
                    self.lines[path] = given[name][0].start_mark.line + 1
                    values[name] = self.items(f.metadata["items"], given[name][1], path)
                continue
            if _is_section(f):
                sub = given.get(name, (None, None))[1]
                if sub is not None and isinstance(sub, yaml.ScalarNode) and sub.value in ("", "~", "null"):
                    sub = None
                values[name] = self.section(f.default_factory, sub, f"{path}.")  # type: ignore[arg-type]
                continue
            if name not in given:
                continue
            key_node, value_node = given[name]
            self.lines[path] = key_node.start_mark.line + 1
            raw = self.value(value_node)
            try:
                values[name] = f.metadata["check"](raw)
            except _Invalid as exc:
                self.problem(key_node, path, str(exc))
            except yaml.YAMLError as exc:
                self.problem(value_node, path, f"has an invalid value ({exc})")
        return cls(**values)

    def items(self, cls: type, node: yaml.Node, path: str) -> tuple[Any, ...]:
        """A list of mappings, each one a ``cls`` checked like a section."""
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, path, "must be a list of mappings (one '- port: ...' entry each)")
            return ()
        out = []
        for i, item in enumerate(node.value):
            if not isinstance(item, yaml.MappingNode):
                self.problem(item, f"{path}[{i}]", "must be a mapping of settings")
                continue
            self.lines[f"{path}[{i}]"] = item.start_mark.line + 1
            out.append(self.section(cls, item, f"{path}[{i}]."))
        return tuple(out)


def load(path: str | os.PathLike[str] | None = None, *, check_files: bool = True) -> Config:
    """Load, merge over defaults and validate a config file.

    Relative paths in the file resolve against ``base_dir``, which itself is
    relative to the file's folder. With ``check_files`` the certificate and key
    files that enabled features need must exist. Raises ConfigError whose
    lines each read ``file:line: key.path problem``.
    """
    cfg_path = Path(path) if path is not None else default_config_path()
    shown = str(path) if path is not None else str(cfg_path)
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{shown}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown}: cannot read config file ({exc})") from None
    yl = yaml.SafeLoader(text)
    try:
        root = yl.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{shown}{where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{shown}: invalid YAML: {exc}") from None
    finally:
        yl.dispose()
    loader = _Loader(shown, yl)
    cfg: Config = loader.section(Config, root, "")
    if loader.problems:
        raise ConfigError(loader.problems)
    cfg = _resolve_paths(cfg, cfg_path.resolve().parent)
    cfg = dataclasses.replace(cfg, source=str(cfg_path))
    problems = _cross_checks(cfg, shown, loader.lines, check_files)
    if problems:
        raise ConfigError(problems)
    return cfg


def defaults(base: str | os.PathLike[str] = ".") -> Config:
    """The default configuration with paths resolved against ``base``."""
    return _resolve_paths(Config(), Path(base).resolve())


def _resolve_paths(cfg: Config, folder: Path) -> Config:
    base = (folder / cfg.base_dir).resolve()

    def fix(obj: Any) -> Any:
        changes: dict[str, Any] = {}
        for f in _settings(type(obj)):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                changes[f.name] = fix(value)
            elif "items" in f.metadata:
                changes[f.name] = tuple(fix(v) for v in value)
            elif f.metadata.get("path") and value:
                changes[f.name] = str(base / value)
        return dataclasses.replace(obj, **changes)

    return dataclasses.replace(fix(cfg), base_dir=str(base))


def _cross_checks(cfg: Config, shown: str, lines: dict[str, int], check_files: bool) -> list[str]:
    """Rules that involve more than one value, or the file system."""
    problems: list[str] = []

    def at(key: str, message: str) -> None:
        line = lines.get(key)
        problems.append(f"{shown}{f':{line}' if line else ''}: {key} {message}")

    if cfg.security.enforce_fips and not cfg.security.fips_mode:
        at("security.enforce_fips", "needs security.fips_mode: true")
    _tls_checks(cfg, at, lines)
    if cfg.media.rtp_port_min >= cfg.media.rtp_port_max:
        at("media.rtp_port_min", f"must be below media.rtp_port_max ({cfg.media.rtp_port_max})")
    if cfg.media.rtp_port_min % 2:
        at("media.rtp_port_min", f"must be even (RTP on even ports, RTCP on odd), got {cfg.media.rtp_port_min}")
    if cfg.api.ssl.enabled is False and not _is_loopback(cfg.api.bind):
        at("api.bind", f"must be a loopback address when api.ssl.enabled is false, got {cfg.api.bind}")
    if check_files:
        needed: list[tuple[str, str]] = []
        if cfg.security.enable_tls and cfg.sip.tls_port:
            needed += [
                ("security.tls_cert_file", cfg.security.tls_cert_file),
                ("security.tls_key_file", cfg.security.tls_key_file),
            ]
        if cfg.security.enable_tls and (cfg.sip.tls_port or cfg.sip.tls_listeners):
            needed += [(f"security.{k}", getattr(cfg.security, k)) for k in (
                "tls_ecdsa_cert_file", "tls_ecdsa_key_file", "tls_client_ca_file") if getattr(cfg.security, k)]
            for i, lst in enumerate(cfg.sip.tls_listeners):
                for k in ("cert_file", "key_file", "ecdsa_cert_file", "ecdsa_key_file", "client_ca_file"):
                    if getattr(lst, k):
                        needed.append((f"sip.tls_listeners[{i}].{k}", getattr(lst, k)))
                if not lst.cert_file:
                    needed += [("security.tls_cert_file", cfg.security.tls_cert_file),
                               ("security.tls_key_file", cfg.security.tls_key_file)]
        if cfg.api.ssl.enabled:
            needed += [("api.ssl.cert_file", cfg.api.ssl.cert_file), ("api.ssl.key_file", cfg.api.ssl.key_file)]
        users: dict[str, list[str]] = {}
        for key, file in needed:
            users.setdefault(file, []).append(key)
        for file, keys in users.items():
            keys = list(dict.fromkeys(keys))
            also = f" (also {', '.join(keys[1:])})" if len(keys) > 1 else ""
            if not os.path.exists(file):
                hint = "run 'warden-pbx cert generate' for development certificates"
                at(keys[0], f"file not found: {file}{also}; {hint}")
            elif not os.access(file, os.R_OK):
                at(keys[0], f"file not readable: {file}{also}")
    return problems


def _tls_checks(cfg: Config, at: Callable[[str, str], None], lines: dict[str, int]) -> None:
    """Profiles under fips_mode, listener ports and names, mTLS and dual-certificate pairs."""
    sec, sip = cfg.security, cfg.sip
    profiles = [("security.tls_profile", sec.tls_profile), ("api.ssl.profile", cfg.api.ssl.profile)]
    profiles += [(f"sip.tls_listeners[{i}].profile", lst.profile) for i, lst in enumerate(sip.tls_listeners)]
    if sec.fips_mode:
        for key, profile in profiles:
            if key in lines and profile != "fips":
                fix = "set it to fips" if key.startswith("sip.") else "set it to fips or remove it"
                at(key, f"asks for the '{profile}' profile, but security.fips_mode forces 'fips' on every listener; {fix}")
    ports: dict[int, str] = {}
    if sip.tcp_port:
        ports[sip.tcp_port] = "sip.tcp_port"
    if sip.tls_port and sec.enable_tls:
        if sip.tls_port in ports:
            at("sip.tls_port", f"{sip.tls_port} is already sip.tcp_port")
        ports[sip.tls_port] = "sip.tls_port"
    names = {"sips": "the main SIPS listener (sip.tls_port)", "tcp": "the SIP TCP listener", "api": "the admin API",
             "udp": "the SIP UDP listener"}
    for i, lst in enumerate(sip.tls_listeners):
        key = f"sip.tls_listeners[{i}]"
        if lst.port in ports:
            at(f"{key}.port", f"{lst.port} is already {ports[lst.port]}")
        ports.setdefault(lst.port, f"{key}.port")
        if lst.label in names:
            at(f"{key}.name" if lst.name else key, f"'{lst.label}' is already the name of {names[lst.label]}")
        names.setdefault(lst.label, key)
        if bool(lst.ecdsa_cert_file) != bool(lst.ecdsa_key_file):
            at(f"{key}.ecdsa_cert_file", "and ecdsa_key_file go together: set both or neither")
        if bool(lst.cert_file) != bool(lst.key_file):
            at(f"{key}.cert_file", "and key_file go together: set both or neither")
        if (lst.verify_client or sec.tls_verify_client) != "none" and not (lst.client_ca_file or sec.tls_client_ca_file):
            at(f"{key}.verify_client", "needs client_ca_file (or security.tls_client_ca_file): the CA phone certificates chain to")
    if bool(sec.tls_ecdsa_cert_file) != bool(sec.tls_ecdsa_key_file):
        at("security.tls_ecdsa_cert_file", "and security.tls_ecdsa_key_file go together: set both or neither")
    verifying = [sec.tls_verify_client] + [lst.verify_client or sec.tls_verify_client for lst in sip.tls_listeners]
    if sec.tls_client_cert_binds_extension and all(v == "none" for v in verifying):
        at("security.tls_client_cert_binds_extension",
           "needs client certificates: set security.tls_verify_client (or a listener's verify_client) to optional or required")
    if sec.tls_verify_client != "none" and not sec.tls_client_ca_file:
        at("security.tls_verify_client", "needs security.tls_client_ca_file: the CA phone certificates chain to")


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def reference() -> str:
    """The settings table as Markdown, for the README and ``--help``."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]

    def walk(cls: type, prefix: str) -> None:
        for f in _settings(cls):
            if _is_section(f):
                walk(f.default_factory, f"{prefix}{f.name}.")  # type: ignore[arg-type]
                continue
            if "items" in f.metadata:
                rows.append(f"| `{prefix}{f.name}` | `[]` | {f.metadata['help']} |")
                walk(f.metadata["items"], f"{prefix}{f.name}[].")
                continue
            if f.metadata.get("required"):
                rows.append(f"| `{prefix}{f.name}` | (required) | {f.metadata['help']} |")
                continue
            default = f.default
            if isinstance(default, tuple):
                default = list(default)
            shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            rows.append(f"| `{prefix}{f.name}` | `{shown}` | {f.metadata['help']} |")

    walk(Config, "")
    return "\n".join(rows)
