"""``warden-pbx``: the command line of Warden PBX.

Every command finds its config from ``--config``, else ``$WARDEN_CONFIG``,
else ``conf/config.yml`` in a checkout, else ``/etc/warden-pbx/config.yml``.
User errors print one line per problem and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import __version__, certtool, config
from .errors import ConfigError, ExtensionExists, NoSuchExtension, WardenError
from .tables import aligned

if TYPE_CHECKING:
    from .store import Store

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
        if cfg.security.enable_tls:
            for listener in cfg.sip.tls_listeners:
                TLSManager.for_listener(cfg, listener)
        if cfg.api.enabled and cfg.api.ssl.enabled:
            TLSManager.for_api(cfg)
    print("OK")
    return 0


def cmd_tls_show(args: argparse.Namespace) -> int:
    """Print the TLS policy in force, as the listeners would apply it."""
    from .tls import TLSManager

    cfg = _load(args)
    report = TLSManager.from_config(cfg.security).report()
    if cfg.sip.tls_listeners:
        report["listeners"] = {item.label: TLSManager.for_listener(cfg, item).report() for item in cfg.sip.tls_listeners}
    print(json.dumps(report, indent=2))
    return 0


def cmd_tls_report(args: argparse.Namespace) -> int:
    """Print what the running PBX's clients negotiate (listeners) and hold (registered phones)."""
    from . import tls_report
    from .control import ControlClient, ControlUnavailable
    from .control.location import control_path

    cfg = _load(args, check_files=False)
    try:
        with ControlClient(control_path(cfg), timeout=10.0) as client:
            stats = client.call("tls.stats")
            registrations = client.call("registrations.list")
    except ControlUnavailable as exc:
        print(f"error: cannot get the TLS report: {exc}; is 'warden-pbx run' running with this config?",
              file=sys.stderr)
        return 1
    report = tls_report.build(stats if isinstance(stats, dict) else {},
                              registrations if isinstance(registrations, list) else [])
    print(json.dumps(report, indent=2) if args.json else tls_report.render(report))
    return 0


def cmd_cert_check(args: argparse.Namespace) -> int:
    """Exit 0/1/2 (OK/WARNING/CRITICAL) on the configured certificates' expiry."""
    from .errors import CertificateError
    from .tls import expiry_level, inspect_certificate

    cfg = _load(args, check_files=False)
    pairs = {(cfg.security.tls_cert_file, cfg.security.tls_key_file)}
    if cfg.api.ssl.enabled:
        pairs.add((cfg.api.ssl.cert_file, cfg.api.ssl.key_file))
    worst = 0
    for cert_file, key_file in sorted(pairs):
        try:
            info, _chain = inspect_certificate(cert_file, key_file)
            level, line = expiry_level(info)
        except CertificateError as exc:
            level, line = 2, f"CRITICAL: {exc}"
        print(f"{line} [{cert_file}]")
        worst = max(worst, level)
    return worst


# --- ext: extensions ------------------------------------------------------------
# These need no certificates, only the config's store.path and sip.realm.


def _open_store(args: argparse.Namespace) -> tuple[config.Config, Store]:
    from .store import Store

    cfg = _load(args, check_files=False)
    return cfg, Store(cfg.store.path)


def _prompt_password(number: str) -> str:
    """Ask twice without echo; refuse a mismatch."""
    try:
        first = getpass.getpass(f"New password for extension {number}: ")
        second = getpass.getpass("Repeat the password: ")
    except EOFError:
        print(file=sys.stderr)  # end the prompt's line
        raise WardenError("no password given (use --password, or run from a terminal)") from None
    if first != second:
        raise WardenError("the passwords do not match; nothing changed")
    return first


def cmd_ext_add(args: argparse.Namespace) -> int:
    """Create an extension."""
    from .store.extensions import check_display_name, check_number

    check_number(args.number)  # refuse bad input before prompting
    check_display_name(args.name)
    cfg, store = _open_store(args)
    with store:
        if store.get_extension(args.number) is not None:  # say so before prompting
            raise ExtensionExists(f"extension {args.number} already exists")
        password = args.password if args.password is not None else _prompt_password(args.number)
        ext = store.add_extension(
            args.number, password, realm=cfg.sip.realm, display_name=args.name, enabled=not args.disabled
        )
    name = f" ({ext.display_name})" if ext.display_name else ""
    state = "enabled" if ext.enabled else "disabled"
    print(f"added extension {ext.number}{name}, {state}, realm {ext.realm}")
    return 0


def cmd_ext_list(args: argparse.Namespace) -> int:
    """List extensions with their registered contact counts."""
    _cfg, store = _open_store(args)
    with store:
        exts = store.list_extensions()
        counts = store.binding_counts(now=time.time())
    if args.json:
        print(json.dumps([{**e.to_dict(), "contacts": counts.get(e.number, 0)} for e in exts], indent=2))
        return 0
    if not exts:
        print("no extensions")
        return 0
    rows = [(e.number, e.display_name or "-", "yes" if e.enabled else "no", str(counts.get(e.number, 0)))
            for e in exts]
    print("\n".join(aligned(("NUMBER", "NAME", "ENABLED", "CONTACTS"), rows)))
    return 0


def cmd_ext_passwd(args: argparse.Namespace) -> int:
    """Set an extension's password (prompted twice unless --password)."""
    cfg, store = _open_store(args)
    with store:
        if store.get_extension(args.number) is None:
            raise NoSuchExtension(f"no extension {args.number}")
        password = args.password if args.password is not None else _prompt_password(args.number)
        store.set_password(args.number, password, realm=cfg.sip.realm)
    print(f"password of extension {args.number} changed")
    return 0


def cmd_ext_del(args: argparse.Namespace) -> int:
    """Delete an extension and its registrations."""
    _cfg, store = _open_store(args)
    with store:
        removed = store.delete_extension(args.number)
    also = f" and its {removed} registration{'s' if removed != 1 else ''}" if removed else ""
    print(f"deleted extension {args.number}{also}")
    return 0


def cmd_ext_enable(args: argparse.Namespace) -> int:
    """Enable or disable an extension (``args.enable``)."""
    _cfg, store = _open_store(args)
    with store:
        ext = store.update_extension(args.number, enabled=args.enable)
    print(f"extension {ext.number} {'enabled' if ext.enabled else 'disabled'}")
    return 0


def _add_ext_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ext = sub.add_parser(
        "ext", help="manage extensions (the numbers phones register as)",
        description="Manage extensions. Only HA1 digests of passwords are stored.",
    ).add_subparsers(dest="ext_command", metavar="ACTION")
    ext.required = True
    pw_help = "the SIP password (at least 8 characters; visible to local users in ps: omit it to be prompted)"

    p = ext.add_parser("add", help="create an extension")
    p.add_argument("number", metavar="NUMBER", help="extension number (digits, or letters . _ -; 1-32)")
    p.add_argument("--password", "-p", metavar="PASSWORD", help=pw_help)
    p.add_argument("--name", "-n", metavar="NAME", default="", help="display name")
    p.add_argument("--disabled", action="store_true", help="create it disabled (cannot register)")
    p.set_defaults(func=cmd_ext_add)

    p = ext.add_parser("list", help="list extensions and their registered contacts")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_ext_list)

    p = ext.add_parser("passwd", help="change an extension's password")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--password", "-p", metavar="PASSWORD", help=pw_help)
    p.set_defaults(func=cmd_ext_passwd)

    p = ext.add_parser("del", help="delete an extension and its registrations")
    p.add_argument("number", metavar="NUMBER")
    p.set_defaults(func=cmd_ext_del)

    for name, enable in (("enable", True), ("disable", False)):
        p = ext.add_parser(name, help=f"{name} an extension")
        p.add_argument("number", metavar="NUMBER")
        p.set_defaults(func=cmd_ext_enable, enable=enable)


# --- api: admin API tokens ------------------------------------------------------


def cmd_api_token_create(args: argparse.Namespace) -> int:
    """Create an API token; print it once, alone on the last line."""
    _cfg, store = _open_store(args)
    with store:
        token, secret = store.create_token(args.name, args.role)
    print(f"created API token {token.name!r} (id {token.id}, role {token.role}); "
          "it is shown only now, store it safely:", file=sys.stderr if args.quiet else sys.stdout)
    print(secret)
    return 0


def cmd_api_token_list(args: argparse.Namespace) -> int:
    """List API tokens (never their secrets)."""
    _cfg, store = _open_store(args)
    with store:
        tokens = store.list_tokens(include_revoked=args.all)
    if args.json:
        print(json.dumps([t.to_dict() for t in tokens], indent=2))
        return 0
    if not tokens:
        print("no API tokens")
        return 0

    def when(ts: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts is not None else "-"

    rows = [("ID", "NAME", "ROLE", "CREATED", "LAST USED", "STATE")] + [
        (str(t.id), t.name, t.role, when(t.created_at), when(t.last_used_at), "revoked" if t.revoked else "active")
        for t in tokens
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[5])
    return 0


def cmd_api_token_revoke(args: argparse.Namespace) -> int:
    """Revoke an API token by name or id."""
    _cfg, store = _open_store(args)
    with store:
        token = store.revoke_token(args.token)
    print(f"revoked API token {token.name!r} (id {token.id})")
    return 0


def _add_api_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = sub.add_parser("api", help="admin API tools").add_subparsers(dest="api_command", metavar="ACTION")
    api.required = True
    token = api.add_parser(
        "token", help="manage admin API bearer tokens",
        description="Manage admin API bearer tokens. Only SHA-256 hashes of tokens are stored.",
    ).add_subparsers(dest="token_command", metavar="ACTION")
    token.required = True

    p = token.add_parser("create", help="create a token and print it once (alone on the last line)")
    p.add_argument("--name", "-n", required=True, metavar="NAME",
                   help="what to call it (a letter, then letters, digits, . _ -; unique among active tokens)")
    p.add_argument("--role", "-r", required=True, choices=("admin", "viewer"),
                   help="admin: read and write; viewer: read only")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the token (the note goes to stderr)")
    p.set_defaults(func=cmd_api_token_create)

    p = token.add_parser("list", help="list tokens (never their secrets)")
    p.add_argument("--all", "-a", action="store_true", help="include revoked tokens")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_api_token_list)

    p = token.add_parser("revoke", help="revoke a token by name or id")
    p.add_argument("token", metavar="NAME_OR_ID")
    p.set_defaults(func=cmd_api_token_revoke)


# --- ban: addresses the running PBX banned --------------------------------------


def _control(args: argparse.Namespace, op: str, **op_args: object) -> object:
    """The running PBX's answer to control op ``op`` (WardenError when it does not answer)."""
    from .control import ControlClient, ControlError, ControlUnavailable
    from .control.location import control_path

    cfg = _load(args, check_files=False)
    path = control_path(cfg)
    try:
        return ControlClient(path, timeout=5.0).call(op, **op_args)
    except ControlUnavailable as exc:
        raise WardenError(f"the PBX is not running or not answering on {path} ({exc})") from None
    except ControlError as exc:
        raise WardenError(str(exc)) from None


def cmd_ban_list(args: argparse.Namespace) -> int:
    """List the addresses the running PBX has banned."""
    bans = _control(args, "bans.list")
    assert isinstance(bans, list)
    if args.json:
        print(json.dumps(bans, indent=2))
        return 0
    if not bans:
        print("no bans")
        return 0
    rows = [(str(b.get("address")), f"{b.get('expires_in')} s", str(b.get("dropped")), str(b.get("reason")))
            for b in bans]
    print("\n".join(aligned(("ADDRESS", "EXPIRES IN", "DROPPED", "REASON"), rows)))
    return 0


def cmd_ban_lift(args: argparse.Namespace) -> int:
    """Lift the ban of one address."""
    result = _control(args, "bans.lift", address=args.address)
    address = result.get("address") if isinstance(result, dict) else args.address
    print(f"lifted the ban of {address}")
    return 0


def _add_ban_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ban = sub.add_parser(
        "ban", help="addresses banned for failed SIP authentication (asks the running PBX)",
        description="Addresses the running PBX banned after too many failed SIP authentications "
                    "(see the abuse settings). Bans end at a restart.",
    ).add_subparsers(dest="ban_command", metavar="ACTION")
    ban.required = True
    p = ban.add_parser("list", help="list banned addresses")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_ban_list)
    p = ban.add_parser("lift", help="lift the ban of an address (it may talk SIP again at once)")
    p.add_argument("address", metavar="ADDRESS",
                   help="a banned IPv4 address or IPv6 /64 (2001:db8:1:2::/64), or an address in one")
    p.set_defaults(func=cmd_ban_lift)


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the running PBX to re-read its config and certificates, as SIGHUP does.

    Exit 0 when the new settings are in force, 1 when the PBX refused them (it
    keeps the running ones and says why), 2 when no PBX answers.
    """
    result = _control(args, "reload")
    if not isinstance(result, dict) or not result.get("reloaded"):
        error = result.get("error") if isinstance(result, dict) else result
        print(f"reload refused, the running settings stay: {error}", file=sys.stderr)
        return 1
    print("reloaded: new connections get the new TLS settings; open connections and calls go on")
    for key in result.get("restart_needed") or []:
        print(f"  {key} changed: takes effect at the next restart")
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
    add("reload", cmd_reload, "ask the running PBX to re-read its config and certificates (as SIGHUP does)")
    add("version", cmd_version, "print the version")

    tls = sub.add_parser("tls", help="TLS policy tools").add_subparsers(dest="tls_command", metavar="ACTION")
    tls.required = True
    p = tls.add_parser("show", help="print the TLS policy in force (versions, ciphers, certificate)")
    p.set_defaults(func=cmd_tls_show)
    p = tls.add_parser("report", help="from the running PBX: negotiated versions and ciphers per listener, "
                       "failures, deprecated-protocol attempts, and registered phones by User-Agent")
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.set_defaults(func=cmd_tls_report)

    cert = sub.add_parser("cert", help="certificate tools").add_subparsers(dest="cert_command", metavar="ACTION")
    cert.required = True
    p = cert.add_parser("generate", help="create a local CA and a server certificate signed by it")
    certtool.add_arguments(p)
    p.set_defaults(func=certtool.run)
    p = cert.add_parser("client", help="create a phone's client certificate (mutual TLS) signed by the local CA")
    certtool.add_client_arguments(p)
    p.set_defaults(func=certtool.run_client)
    p = cert.add_parser("check", help="expiry of the configured certificates: exit 0 OK, 1 under 30 days, 2 under 7 "
                        "days, expired or unusable (a monitoring check)")
    p.set_defaults(func=cmd_cert_check)

    _add_ext_commands(sub)
    _add_api_commands(sub)
    _add_ban_commands(sub)
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
