"""``warden-pbx``: the command line of Warden PBX.

Every command finds its config from ``--config``, else ``$WARDEN_CONFIG``,
else ``conf/config.yml`` in a checkout, else ``/etc/warden-pbx/config.yml``.
User errors print one line per problem and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from . import __version__, certtool, config
from .errors import ConfigError, WardenError

__all__ = ["main"]

log = logging.getLogger("warden.cli")


def _load(args: argparse.Namespace, *, check_files: bool = True) -> config.Config:
    return config.load(args.config, check_files=check_files)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the PBX in the foreground until SIGTERM/SIGINT."""
    from . import logs
    from .service import Service

    cfg = _load(args)
    targets = logs.setup(cfg.logging)
    log.info("Warden PBX %s starting with %s (logging to %s)", __version__, cfg.source, ", ".join(targets))
    try:
        Service(cfg).run_forever()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the config (and the files it names); print OK or the errors."""
    if args.reference:
        print(config.reference())
        return 0
    cfg = _load(args)
    if cfg.security.enable_tls or cfg.api.ssl.enabled:
        from .tls import TLSManager

        TLSManager.from_config(cfg.security)
    print("OK")
    return 0


def cmd_tls_show(args: argparse.Namespace) -> int:
    """Print the TLS policy in force, as the listeners would apply it."""
    from .tls import TLSManager

    cfg = _load(args)
    print(json.dumps(TLSManager.from_config(cfg.security).report(), indent=2))
    return 0


def cmd_version(_args: argparse.Namespace) -> int:
    print(f"warden-pbx {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warden-pbx", description="Warden PBX: a TLS-first VoIP PBX.")
    parser.add_argument("--config", "-c", metavar="PATH", help="config file (default: $WARDEN_CONFIG, conf/config.yml, /etc/warden-pbx/config.yml)")
    parser.add_argument("--version", action="version", version=f"warden-pbx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    add("run", cmd_run, "run the PBX in the foreground (SIGTERM/SIGINT stop, SIGHUP reloads certificates)")
    p = add("check-config", cmd_check_config, "validate the configuration and the files it names")
    p.add_argument("--reference", action="store_true", help="print every setting with its default and meaning")
    add("version", cmd_version, "print the version")

    tls = sub.add_parser("tls", help="TLS policy tools").add_subparsers(dest="tls_command", metavar="ACTION")
    tls.required = True
    p = tls.add_parser("show", help="print the TLS policy in force (versions, ciphers, certificate)")
    p.set_defaults(func=cmd_tls_show)

    cert = sub.add_parser("cert", help="certificate tools").add_subparsers(dest="cert_command", metavar="ACTION")
    cert.required = True
    p = cert.add_parser("generate", help="create a local CA and a server certificate signed by it")
    certtool.add_arguments(p)
    p.set_defaults(func=certtool.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:  # already "file:line: key problem", one per line
        print(exc, file=sys.stderr)
        return 2
    except WardenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
