"""Stand-in for `legion-ci serve --reuse-port`, used only while the server lacks that option.

The `process` target replaces a model by starting the new server on the same port beside the
old one, which needs SO_REUSEPORT on both listening sockets. `legion-ci serve --reuse-port`
(LEGION_SERVE_REUSE_PORT) is being added to the server; until it is there, the target runs
`python -m legion_ci.targets.reuseport_serve ARTIFACT [serve options]`, which is `legion-ci
serve` with what a replacement without failed requests needs (measured: without the last two,
about one replacement in seven reset a client's request):
- the socket sets SO_REUSEPORT;
- it is bound at start (a port clash still fails at once) but listened on only once a worker
  has loaded the model: a socket joins the port's group at listen(), so a server that is still
  loading, or cannot load, never receives a client's connection;
- on SIGTERM the worker shuts the listening socket down (shutdown(SHUT_RD) leaves the port's
  group at once, for every process holding the socket: with several workers the supervisor
  keeps its copy open until they have drained, and the kernel would otherwise keep queueing
  new connections on it, to be reset when it finally closes);
- on SIGTERM an idle connection is closed after a short grace instead of at once: a
  connection accepted just before the signal may have its first request on the way, and
  closing it unread would reset that request.
The same changes apply in the worker processes, which are started through this module too.
Delete this module once `serve --reuse-port` does the same (process.py then stops using it).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from typing import Any

from legion_ci.errors import InputError

# Long enough for a client that connected just before SIGTERM to send its first request
# even on a loaded machine (0.5 s lost one request in thousands under load).
DRAIN_IDLE_GRACE_S = 2.0
WORKER_FLAG = "--reuse-port-worker"


def _bind_reuse_port(host: str, port: int, *, reuse_port: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock  # not listening yet: the front end listens once the model is loaded


def _drain_with_grace(self: Any) -> None:
    def close_if_idle() -> None:
        if not self.busy and not self.in_body and self.transport is not None:
            self.transport.close()

    self.loop.call_later(DRAIN_IDLE_GRACE_S, close_if_idle)


def _patch() -> None:
    from legion_ci.server import app, native, process

    class Front(native.Front):
        """The front end, which leaves the port's group as soon as it starts draining."""

        listening: socket.socket | None = None
        _draining = False

        @property  # type: ignore[override]
        def draining(self) -> bool:
            return self._draining

        @draining.setter
        def draining(self, value: bool) -> None:
            if value and not self._draining and Front.listening is not None:
                with contextlib.suppress(OSError):  # another worker already did it
                    Front.listening.shutdown(socket.SHUT_RD)
            self._draining = value

    original_run_worker = process.run_worker

    def run_worker(settings: Any, sock: socket.socket) -> int:
        Front.listening = sock
        return original_run_worker(settings, sock)

    original_startup = app.ModelApp.startup

    async def startup_then_load(self: Any) -> None:
        await original_startup(self)
        await self._tasks[0]  # the model load: the front end listens only after it
        if self.load_error is not None:
            raise SystemExit(1)
        if Front.listening is not None:
            # Joining the port's group now: a server still loading (or failing to) never
            # receives a client's connection.
            Front.listening.listen(2048)

    def spawn(settings: Any, sock: socket.socket) -> subprocess.Popen:
        import os

        env = dict(os.environ)
        env[process.SETTINGS_ENV] = settings.to_env()
        env[process.FD_ENV] = str(sock.fileno())
        argv = [sys.executable, "-m", "legion_ci.targets.reuseport_serve", WORKER_FLAG]
        return subprocess.Popen(argv, env=env, pass_fds=(sock.fileno(),))

    native.Front = Front  # type: ignore[misc]
    process.run_worker = run_worker
    app.ModelApp.startup = startup_then_load  # type: ignore[method-assign]
    native.HttpProtocol.drain = _drain_with_grace  # type: ignore[method-assign]
    process.bind = _bind_reuse_port
    process._spawn = spawn


def main(argv: list[str]) -> None:
    _patch()
    if argv == [WORKER_FLAG]:
        from legion_ci.server import process

        sys.exit(process._worker_main())
    from legion_ci.cli import main as cli_main

    cli_main.main(["serve", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
