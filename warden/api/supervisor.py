"""Run the admin API's gunicorn beside the PBX, and keep it running.

The PBX's ``Service`` owns an :class:`APISupervisor`::

    api = APISupervisor(cfg.source, cfg)
    api.start()      # gunicorn -c python:warden.api.gunicorn_conf warden.api.wsgi:app
    ...
    api.reload()     # SIGHUP: new certificate, graceful worker restart
    api.stop()       # SIGTERM, then SIGKILL after stop_timeout

gunicorn is a separate process (its master and workers), so an API crash
never touches calls; it talks to the PBX only over the control socket. If
gunicorn exits while not asked to, it is started again after a back-off that
doubles from 1 s to 30 s (reset once a run lasted a minute). gunicorn runs in
its own session, so a terminal's Ctrl-C reaches only the PBX, which then
stops it; and it asks the kernel for SIGTERM should the PBX die without
stopping it (``WARDEN_API_PARENT_PID``, see :mod:`warden.api.gunicorn_conf`),
so a ``kill -9`` of the PBX leaves no API holding the port.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["APISupervisor", "PARENT_ENV", "gunicorn_command"]

log = logging.getLogger("warden.api.supervisor")

#: Set in gunicorn's environment: the supervising process's pid.
PARENT_ENV = "WARDEN_API_PARENT_PID"
_MIN_BACKOFF = 1.0
_MAX_BACKOFF = 30.0
_STABLE_AFTER = 60.0


def gunicorn_command() -> list[str]:
    """The gunicorn command line (this interpreter, so the same packages)."""
    return [sys.executable, "-m", "gunicorn", "-c", "python:warden.api.gunicorn_conf", "warden.api.wsgi:app"]


class APISupervisor:
    """Starts, restarts and stops the API's gunicorn (one child process).

    ``config_path`` is handed to gunicorn as ``$WARDEN_CONFIG``; ``config``
    (the loaded :class:`warden.config.Config`) is only used for log lines.
    Thread-safe; ``start`` and ``stop`` may each be called once per cycle.
    """

    def __init__(
        self,
        config_path: str,
        config: Any,
        *,
        stop_timeout: float = 15.0,
        env: dict[str, str] | None = None,
        min_backoff: float = _MIN_BACKOFF,
        max_backoff: float = _MAX_BACKOFF,
    ) -> None:
        self.config_path = str(config_path)
        self.config = config
        self.stop_timeout = stop_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.restarts = 0
        self._extra_env = dict(env or {})
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._first_spawn = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    # -- public API -------------------------------------------------------------

    def start(self) -> None:
        """Start gunicorn (returns once the process is spawned; it binds shortly after)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the API supervisor is already started")
            self._stopping.clear()
            self._first_spawn.clear()
            # The spawning thread must live as long as the child: PR_SET_PDEATHSIG
            # fires when the thread that forked exits.
            self._thread = threading.Thread(target=self._run, name="api-supervisor", daemon=True)
            self._thread.start()
        self._first_spawn.wait(10.0)

    def alive(self) -> bool:
        """Whether gunicorn's master is running now."""
        with self._lock:
            proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The gunicorn master's pid, while it runs."""
        with self._lock:
            proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def reload(self) -> bool:
        """SIGHUP gunicorn: re-read the certificate, restart workers gracefully."""
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            return False
        log.info("admin API (pid %d) reloading", pid)
        return True

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM gunicorn, SIGKILL its process group after ``timeout`` s; no restart after."""
        wait = self.stop_timeout if timeout is None else timeout
        with self._lock:
            self._stopping.set()
            proc, thread = self._proc, self._thread
        if proc is not None and proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                log.warning("admin API (pid %d) did not stop within %g s; killing it", proc.pid, wait)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        if proc is not None:
            # the master is gone; a worker still winding down would keep the port:
            # end the whole session so "stopped" means nothing listens any more
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:
                    os.killpg(proc.pid, 0)  # raises once the last one is gone
                    time.sleep(0.02)
            except (ProcessLookupError, PermissionError):
                pass
        if thread is not None:
            thread.join(wait)
        with self._lock:
            self._thread = None
            self._proc = None
        log.info("admin API stopped")

    # -- the supervising thread ---------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self._extra_env}
        env["WARDEN_CONFIG"] = self.config_path
        env[PARENT_ENV] = str(os.getpid())
        # gunicorn sends its own READY=1; only the PBX may speak for the service
        env.pop("NOTIFY_SOCKET", None)
        # Import this very tree in gunicorn, installed or not.
        root = str(Path(__file__).resolve().parent.parent.parent)
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in paths:
            env["PYTHONPATH"] = os.pathsep.join([root, *paths])
        return env

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            try:
                proc = subprocess.Popen(
                    gunicorn_command(), env=self._env(), stdin=subprocess.DEVNULL, start_new_session=True,
                )
            except OSError as exc:
                log.error("cannot start the admin API: %s", exc)
                return None
            self._proc = proc
        api = getattr(self.config, "api", None)
        where = f" on {api.bind}:{api.port}" if api is not None else ""
        log.info("admin API (gunicorn, pid %d) starting%s", proc.pid, where)
        return proc

    def _run(self) -> None:
        delay = self.min_backoff
        while not self._stopping.is_set():
            started = time.monotonic()
            proc = self._spawn()
            self._first_spawn.set()
            if proc is not None:
                code = proc.wait()
                if self._stopping.is_set():
                    return
                ran = time.monotonic() - started
                if ran >= _STABLE_AFTER:
                    delay = self.min_backoff
                how = f"signal {-code}" if code < 0 else f"status {code}"
                log.error("admin API (pid %d) exited with %s after %.1f s; restarting in %g s",
                          proc.pid, how, ran, delay)
                # a master killed hard leaves its workers serving on the old socket
                # until they notice; end its whole session so the new master can bind
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            delay = min(delay * 2, self.max_backoff)
