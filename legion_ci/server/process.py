"""Processes: bind the port, run one worker in-process or supervise several.

Workers are fresh interpreters (not forks of a process that imported numpy and its thread
pools), handed the listening socket bound here (legion_ci.server.sockets); each loads the model
itself, in parallel. A worker serves HTTP with the native front end (native.py) or, with
`--http uvicorn`, uvicorn (uvicorn_front.py); the routes are the same.

SIGTERM: every worker stops accepting, finishes its in-flight requests (up to the drain
timeout) and exits 0; the supervisor forwards SIGTERM, waits, and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from legion_ci.server.config import SETTINGS_ENV, ServeSettings
from legion_ci.server.sockets import bind

if TYPE_CHECKING:
    pass

log = logging.getLogger("legion_ci.server")

FD_ENV = "LEGION_SERVE_FD"


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve(settings: ServeSettings) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    from legion_ci.gppi.archive import open_artifact
    from legion_ci.gppi.manifest import read_manifest

    settings.check()
    setup_logging(settings.log_level)
    # Resolve (unzip) once here, so workers never race on the extraction cache.
    root = open_artifact(Path(settings.artifact)).resolve()
    manifest = read_manifest(root)
    settings = replace(settings, artifact=str(root))
    sock = bind(settings.host, settings.port, reuse_port=settings.reuse_port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "serving %s %s on http://%s:%d with %d worker(s)",
        manifest.model_name,
        manifest.model_version,
        shown,
        port,
        settings.workers,
    )
    if settings.workers == 1:
        return run_worker(settings, sock)
    return _supervise(settings, sock)


def run_worker(settings: ServeSettings, sock: socket.socket) -> int:
    from legion_ci.gppi.manifest import read_manifest
    from legion_ci.server.app import ModelApp

    root = Path(settings.artifact)
    app = ModelApp(settings, root, read_manifest(root))
    if settings.http == "native":
        from legion_ci.server.native import run_native

        code = run_native(app, sock)
        if code == 0:
            log.info("drained and stopped (pid %d)", os.getpid())
        return code
    from legion_ci.server.uvicorn_front import run_uvicorn

    return run_uvicorn(app, settings, sock)


def _spawn(settings: ServeSettings, sock: socket.socket) -> subprocess.Popen:
    env = dict(os.environ)
    env[SETTINGS_ENV] = settings.to_env()
    env[FD_ENV] = str(sock.fileno())
    return subprocess.Popen(
        [sys.executable, "-m", "legion_ci.server.process"], env=env, pass_fds=(sock.fileno(),)
    )


def _supervise(settings: ServeSettings, sock: socket.socket) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="legion-serve-metrics-")
    settings = replace(settings, metrics_dir=metrics_dir)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        # Ctrl-C already reached the workers (same process group); a second SIGINT would
        # make uvicorn skip the drain. SIGTERM is sent to the supervisor alone: pass it on.
        if signum == signal.SIGTERM:
            for proc in workers:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    workers: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        workers.extend(_spawn(settings, sock) for _ in range(settings.workers))
        started = time.monotonic()
        while not stopping:
            time.sleep(0.2)
            for i, proc in enumerate(workers):
                rc = proc.poll()
                if rc is None or stopping:
                    continue
                if rc == 1 and time.monotonic() - started < settings.load_wait_s:
                    # A worker that fails at start (bad model) would fail again: stop all.
                    log.error("worker %d exited with %d while starting; stopping", proc.pid, rc)
                    stopping, code = True, 1
                    break
                log.warning("worker %d exited with %s; starting a new one", proc.pid, rc)
                # Its last snapshot must not be added to /metrics beside its replacement's.
                Path(metrics_dir, f"worker-{proc.pid}.json").unlink(missing_ok=True)
                Path(metrics_dir, f"worker-{proc.pid}.sock").unlink(missing_ok=True)
                workers[i] = _spawn(settings, sock)
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + settings.drain_timeout_s + 10
        for proc in workers:
            try:
                rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            if rc not in (0, -signal.SIGTERM, -signal.SIGINT) and code == 0:
                code = 1 if rc == 1 else 3
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        sock.close()
        for path in Path(metrics_dir).glob("*"):
            path.unlink(missing_ok=True)
        os.rmdir(metrics_dir)
    return code


def _worker_main() -> int:
    settings = ServeSettings.from_env()
    setup_logging(settings.log_level)
    sock = socket.socket(fileno=int(os.environ[FD_ENV]))
    return run_worker(settings, sock)


if __name__ == "__main__":
    sys.exit(_worker_main())
