"""The default HTTP/1.1 front end: asyncio on uvloop, one native_http.HttpProtocol per
connection calling ModelApp.dispatch() with the whole request body. The ASGI layer (scope
dicts, receive/send messages, a task and several awaits per request) costs more than the
model's share of a 1-row request; this keeps only what the routes need.

Connections are accepted by legion_ci.server.accept (a connection cap, and running out of
file descriptors handled in the open).

SIGTERM/SIGINT: stop accepting, close idle connections, let in-flight requests finish (up to
the drain timeout), then close what is left and return 0.
"""

from __future__ import annotations

import asyncio
import signal
import socket

from legion_ci.server.accept import Acceptor
from legion_ci.server.app import ModelApp
from legion_ci.server.native_front import Front
from legion_ci.server.native_http import HttpProtocol
from legion_ci.server.sockets import leave_port, listen_when_loaded


async def serve_native(app: ModelApp, sock: socket.socket) -> int:
    """Serve on `sock` until SIGTERM/SIGINT (or app.on_fatal); returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app.on_fatal = stop.set
    await app.startup()
    if not await listen_when_loaded(app, sock):
        await app.shutdown()
        return 1
    front = Front(app, loop)
    acceptor = Acceptor(
        loop, sock, lambda: HttpProtocol(front), front.connections, app.settings.max_connections
    )
    acceptor.start()
    try:
        await stop.wait()
    finally:
        front.draining = True
        acceptor.stop()
        leave_port(app, sock)
        for conn in list(front.connections):
            conn.drain()
        deadline = loop.time() + app.settings.drain_timeout_s
        # `connecting`: accepted just before the signal and not yet among the connections;
        # stopping without waiting for them answered their request after the model was
        # unloaded (500) or reset it.
        while (front.connections or acceptor.connecting) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(front.connections):
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)
        await app.shutdown()
    return 1 if app.load_error is not None else 0


def run_native(app: ModelApp, sock: socket.socket) -> int:
    import uvloop

    return uvloop.run(serve_native(app, sock))
