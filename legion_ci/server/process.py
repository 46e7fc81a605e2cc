"""Processes: bind the port, run one worker in-process or supervise several.

The listening socket is bound once, by the first process, and handed to every worker (fd
inheritance), so the kernel spreads connections over the workers and a port clash is reported
before anything loads. Workers are fresh interpreters (not forks of a process that imported
numpy and its thread pools); each loads the model itself, in parallel. A worker serves HTTP
with the native front end (native.py) or, with `--http uvicorn`, uvicorn; the routes are the same.

SIGTERM: every worker stops accepting, finishes its in-flight requests (up to the drain
timeout) and exits 0; the supervisor forwards SIGTERM, waits, and exits 0.

`--reuse-port` (zero-downtime replacement: a new server starts on the port of a running one):
the socket sets SO_REUSEPORT and is bound at start (a port clash with a server that does not
share still fails at once) but listened on only once a worker has loaded the model, because a
socket joins the port's group at listen(): a server still loading, or failing to load, never
receives a connection. At SIGTERM the listening socket is shut down (shutdown(SHUT_RD) leaves
the group at once for every process holding it; with net.ipv4.tcp_migrate_req=1 the kernel
hands the connections queued on it to the new server instead of resetting them).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from typing import TYPE_CHECKING, Any

from legion_ci.errors import InputError
from legion_ci.server.config import SETTINGS_ENV, ServeSettings

if TYPE_CHECKING:
    from legion_ci.server.app import ModelApp

log = logging.getLogger("legion_ci.server")

FD_ENV = "LEGION_SERVE_FD"
BACKLOG = 2048


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # Both servers must set it (same user): the old one keeps serving while the new one
        # loads, and the kernel spreads new connections over both until the old one drains.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if not reuse_port:
        sock.listen(BACKLOG)  # with reuse_port: once the model is loaded (listen_when_loaded)
    sock.set_inheritable(True)
    return sock


async def listen_when_loaded(app: ModelApp, sock: socket.socket) -> bool:
    """With --reuse-port, join the port's group once the model is loaded; False when it failed
    to load. Without it the socket already listens: requests during loading wait (503 after
    the load wait), as a health probe expects."""
    if not app.settings.reuse_port:
        return True
    if not await app.loaded():
        return False
    sock.listen(BACKLOG)  # any worker's call makes the shared socket listen: harmless twice
    return True


def leave_port(app: ModelApp, sock: socket.socket) -> None:
    """At SIGTERM with --reuse-port: no new connection may queue on this socket while the
    server drains (with several workers the supervisor keeps its copy open until they exit,
    and the kernel would go on queueing connections there, to reset them at close)."""
    if app.settings.reuse_port:
        with contextlib.suppress(OSError):  # another worker already did it
            sock.shutdown(socket.SHUT_RD)


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
    return _run_uvicorn(app, settings, sock)


def _run_uvicorn(app: ModelApp, settings: ServeSettings, sock: socket.socket) -> int:
    import uvicorn

    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=_uvicorn_protocol(app),
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(max(1, settings.drain_timeout_s)),
        timeout_keep_alive=max(1, int(settings.keep_alive_s)),
    )
    server = _accepting_server(uvicorn, config, app, sock)

    def fatal() -> None:
        server.should_exit = True

    app.on_fatal = fatal
    # uvicorn re-raises the signal it caught once it has drained; a Python handler here turns
    # that into a normal return, so a drained SIGTERM exits 0 instead of "killed by signal".
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    server.run(sockets=[sock])
    if app.load_error is not None or not server.started:
        return 1
    log.info("drained and stopped (pid %d)", os.getpid())
    return 0


def _accepting_server(uvicorn: Any, config: Any, app: ModelApp, sock: socket.socket) -> Any:
    """uvicorn's Server with connections accepted by legion_ci.server.accept, as the native
    front end does: the connection cap, and running out of file descriptors logged and
    recovered from (uvloop's own server drops every new client then)."""
    import functools

    from legion_ci.server.accept import Acceptor

    class AcceptingServer(uvicorn.Server):
        acceptor: Acceptor | None = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            # No sockets: uvicorn starts the app (lifespan) and its state but no loop server.
            await super().startup(sockets=[])
            if not await listen_when_loaded(app, sock):
                self.should_exit = True
                return
            factory = functools.partial(
                self.config.http_protocol_class,
                config=self.config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
            )
            self.acceptor = Acceptor(
                asyncio.get_running_loop(),
                sock,
                factory,
                self.server_state.connections,
                app.settings.max_connections,
            )
            self.acceptor.start()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if self.acceptor is not None:
                self.acceptor.stop()
                leave_port(app, sock)
                # Accepted just before the signal: let them become connections that uvicorn's
                # shutdown then drains, instead of being reset at exit.
                while self.acceptor.connecting:
                    await asyncio.sleep(0.01)
            await super().shutdown(sockets)

    return AcceptingServer(config)


def _uvicorn_protocol(app: ModelApp) -> type:
    """uvicorn's httptools protocol made to answer hostile framing as native.py does:

    - a limit on the time a request's line and headers may take: uvicorn restarts its
      keep-alive timer on every byte, so a client trickling header bytes (slowloris) would
      hold the connection forever, and one sending nothing too;
    - request line and headers over native.MAX_HEAD_BYTES: 431 (uvicorn has no limit);
    - an answer given before the body was read (413 for a declared 100 MB body): FIN, the
      rest read and dropped, close after native.LINGER_S. uvicorn closed at once with the body
      unread, which resets the connection and loses the answer.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from legion_ci.server.app import _JSON, _new_id
    from legion_ci.server.native import LINGER_S, MAX_HEAD_BYTES

    timeout = app.settings.header_timeout_s

    class Refused(Exception):
        """Stops the parser once the request has been answered early."""

    class LingeringClose:
        """The request cycle's view of the transport: its close() lingers while the request
        body is still arriving."""

        __slots__ = ("_proto", "_transport")

        def __init__(self, proto: HeaderTimedProtocol, transport: Any):
            self._proto = proto
            self._transport = transport

        def write(self, data: bytes) -> None:
            self._transport.write(data)

        def is_closing(self) -> bool:
            return self._transport.is_closing()

        def close(self) -> None:
            cycle = self._proto.cycle
            if cycle is not None and cycle.more_body and not self._transport.is_closing():
                self._proto.linger()
            else:
                self._transport.close()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._transport, name)

    class HeaderTimedProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0
        _discarding = False

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # uvicorn arms no timer before the first request: a connection that sends nothing
            # would be held until shutdown. It gets the header timeout, as in native.py.
            self._head_timer = self.loop.call_later(timeout, self._silent_timeout)

        def _silent_timeout(self) -> None:
            self._head_timer = None
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._discarding:
                return  # answered and closing: what still arrives is dropped unparsed
            super().data_received(data)

        def send_400_response(self, msg: str) -> None:
            if not self._discarding:  # else the parser stopped on Refused: answered already
                super().send_400_response(msg)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._stop_head_timer()
            self._head_timer = self.loop.call_later(timeout, self._head_timeout)

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            self._count_head(len(url))

        def on_header(self, name: bytes, value: bytes) -> None:
            super().on_header(name, value)
            self._count_head(len(name) + len(value))

        def _count_head(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > MAX_HEAD_BYTES:
                self._stop_head_timer()
                self._answer(431, f"the request line and headers are over {MAX_HEAD_BYTES} bytes")
                self.linger()
                raise Refused

        def on_headers_complete(self) -> None:
            self._stop_head_timer()
            super().on_headers_complete()
            if self.cycle is not None and not isinstance(self.cycle.transport, LingeringClose):
                self.cycle.transport = LingeringClose(self, self.transport)

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.transport is None or self.transport.is_closing():
                return
            self._answer(408, f"the request line and headers did not arrive within {timeout:g} s")
            self.transport.close()

        def _answer(self, status: int, message: str) -> None:
            rid = _new_id()
            body = app._error(status, message, rid)
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            head = b"HTTP/1.1 %d %s\r\n" % (status, reason) + b"".join(
                k + b": " + v + b"\r\n"
                for k, v in app.response_headers(_JSON, len(body), rid, True)
            )
            self.transport.write(head + b"\r\n" + body)
            app.metrics.observe_request("other", status, timeout if status == 408 else 0.0)

        def linger(self) -> None:
            """Answered before the request was read to its end: send FIN, drop what still
            arrives, close when the client does or after LINGER_S."""
            transport = self.transport
            self._discarding = True
            if self.flow is not None:
                self.flow.resume_reading()
            try:
                transport.write_eof()
            except (OSError, RuntimeError, NotImplementedError):
                transport.close()
                return
            self.loop.call_later(LINGER_S, transport.close)

    return HeaderTimedProtocol


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
