"""The listening socket and how a connection answered early ends, for both HTTP front ends.

The listening socket is bound once, by the first process, and handed to every worker (fd
inheritance), so the kernel spreads connections over the workers and a port clash is reported
before anything loads.

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
import socket
from typing import TYPE_CHECKING, Any

from legion_ci.errors import InputError

if TYPE_CHECKING:
    from legion_ci.server.app import ModelApp

BACKLOG = 2048
LINGER_S = 2.0  # after an early answer (413), read and drop what the client still sends
MAX_HEAD_BYTES = 64 * 1024  # request line and headers together; more gets 431


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


def linger_close(loop: asyncio.AbstractEventLoop, transport: Any) -> None:
    """Close a connection answered before its request was read to the end: closing with unread
    data would reset it and could lose the answer. Send FIN, then close when the client does
    or after LINGER_S (the caller drops what still arrives)."""
    try:
        transport.write_eof()
    except (OSError, RuntimeError, NotImplementedError):
        transport.close()
        return
    loop.call_later(LINGER_S, transport.close)
