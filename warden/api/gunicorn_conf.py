"""gunicorn settings for the admin API: ``gunicorn -c python:warden.api.gunicorn_conf warden.api.wsgi:app``.

Everything comes from the Warden config file (``$WARDEN_CONFIG``, else the
usual search): ``api.bind``/``api.port``, ``api.workers``, ``api.ssl``,
``security.fips_mode`` and ``logging.level``.

TLS: the context is ``TLSManager.for_api(cfg).server_context()``, the same
policy as SIPS, built once in the gunicorn master (a bad certificate stops
gunicorn at start with the reason). On gunicorn 21+ the ``ssl_context``
server hook hands it to gunicorn; on 20.1 (Debian 12), which lacks the hook,
the workers' ``ssl.wrap_socket`` is redirected to it
(:func:`warden.api._gunicorn.install_gunicorn20_tls`). gunicorn switches TLS
on only when ``certfile``/``keyfile`` are set, so they are (to the API's
files); the ciphers and versions gunicorn would derive from them are never
used. ``kill -HUP`` of the master re-reads the certificate (``on_reload``)
and restarts the workers gracefully. ``api.ssl.enabled: false`` serves plain
HTTP, which the config loader allows only on a loopback address.

Slow clients (slowloris): ``gthread`` workers with 4 threads each; every
connection must finish its TLS handshake and send a whole request within
``REQUEST_TIMEOUT`` (5 s) of being accepted or of our last response, else
it is closed (:mod:`warden.api._sockets`); keep-alive connections wait for
their next request in the worker's poller, not in a thread, for at most
``keepalive`` (2 s). Request lines are capped at 8190 bytes (414), headers at 50
fields of 8190 bytes, bodies at 64 KiB (the app's 413); gunicorn's own error
answers are problem objects too (:mod:`warden.api._gunicorn`). ``timeout`` (30 s)
restarts a worker whose main loop hangs; ``graceful_timeout`` (10 s) bounds
a stop.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import sys
from typing import Any

from warden import config as _config
from warden.errors import WardenError

from ._gunicorn import install_gunicorn20_tls, install_problem_errors
from ._handshakes import report_now, start_reporter
from ._sockets import guard_context, guard_listeners


def _die_with_parent() -> None:
    """Under :class:`warden.api.supervisor.APISupervisor`: SIGTERM us when the PBX dies.

    Linux ``PR_SET_PDEATHSIG``, set in the gunicorn master; if the PBX is
    already gone (the race before the call), stop now.
    """
    parent = os.environ.get("WARDEN_API_PARENT_PID", "")
    if not parent.isdigit():
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):
        sys.exit("warden-pbx api: the PBX that started us is gone")


_die_with_parent()

try:
    _cfg = _config.load(check_files=False)
    _tls = None
    if _cfg.api.ssl.enabled:
        from warden.tls import TLSManager

        _tls = TLSManager.for_api(_cfg)
except WardenError as _exc:  # one clear line instead of gunicorn's "Failed to read config file" traceback
    sys.exit(f"warden-pbx api: {_exc}")

_host = _cfg.api.bind
bind = [f"[{_host}]:{_cfg.api.port}" if ":" in _host else f"{_host}:{_cfg.api.port}"]
workers = _cfg.api.workers
worker_class = "gthread"
threads = 4
worker_connections = 1000
timeout = 30
graceful_timeout = 10
keepalive = 2
limit_request_line = 8190
limit_request_fields = 50
limit_request_field_size = 8190
proc_name = "warden-pbx-api"
errorlog = "-"
accesslog = "-"
loglevel = _cfg.logging.level
# gunicorn 25.1+ opens a control socket under $HOME by default; the PBX supervises us instead.
control_socket_disable = True

if _tls is not None:
    certfile = _cfg.api.ssl.cert_file
    keyfile = _cfg.api.ssl.key_file
    do_handshake_on_connect = False  # the handshake runs under the connection's deadline


def _context() -> ssl.SSLContext:
    assert _tls is not None
    return guard_context(_tls.server_context())


def ssl_context(conf: Any, default_ssl_context_factory: Any) -> ssl.SSLContext:
    """gunicorn 21+ server hook: the TLSManager's context, never gunicorn's default."""
    return _context()


def _route_warden_logs(gunicorn_log: Any) -> None:
    """Send ``warden.*`` records to gunicorn's error log (stderr)."""
    target = logging.getLogger("warden")
    target.handlers = list(gunicorn_log.error_log.handlers)
    target.setLevel(_cfg.logging.level.upper())
    target.propagate = False


def on_starting(server: Any) -> None:
    _route_warden_logs(server.log)
    if _tls is not None:
        server.log.info("%s", _tls.describe())
    else:
        server.log.info("TLS is off (api.ssl.enabled: false): plain HTTP on loopback only")


def on_reload(server: Any) -> None:
    """SIGHUP: re-read the config's API certificate and profile before new workers
    start (a bad file or config keeps the current ones)."""
    global _tls
    if _tls is not None:
        try:
            from warden.tls import TLSManager

            cfg = _config.load(check_files=False)
            _tls = TLSManager.for_api(cfg) if cfg.api.ssl.enabled else _tls
            server.log.info("%s", _tls.describe())
        except WardenError as exc:
            server.log.error("API TLS reload rejected, keeping the current certificate and profile: %s",
                             str(exc).replace("\n", "; "))


def post_worker_init(worker: Any) -> None:
    """In each worker, before it serves: logs, slow-client guard, and TLS on gunicorn 20.1."""
    _route_warden_logs(worker.log)
    install_problem_errors()
    guard_listeners(worker.sockets)
    if _tls is not None:
        from .pbx import control_path

        start_reporter(control_path(_cfg))  # handshake counters into the PBX's tls.stats
    if _tls is not None:
        patched = install_gunicorn20_tls(_context)
        if patched:
            worker.log.debug("gunicorn without the ssl_context hook: TLS via %s", ", ".join(patched))


def worker_exit(server: Any, worker: Any) -> None:
    """A leaving worker reports its last handshake counts (the PBX keeps every worker's)."""
    if _tls is not None:
        from .pbx import control_path

        report_now(control_path(_cfg))
