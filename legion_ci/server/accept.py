"""Accepting connections, for both HTTP front ends, instead of the event loop's own server.

Two things loop.create_server does not do: a cap on open connections (past it, accepting
pauses and the kernel's listen backlog holds new clients), and running out of file descriptors
handled in the open: libuv (uvloop) then accepts and drops every new client without a word.
Here accepting pauses, the log says so once, the listening socket stays, and accepting resumes
(and the log says so) when descriptors are free again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Sized

log = logging.getLogger("legion_ci.server")

RETRY_S = 0.5  # out of file descriptors: try accepting again after this
CAP_CHECK_S = 0.05  # at the connection cap: look again after this
PER_TURN = 64  # connections accepted per readiness event, so requests are not starved
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_CLIENT_GAVE_UP = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM)


class Acceptor:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        connections: Sized,
        limit: int,
    ):
        self.loop = loop
        self.sock = sock
        self.factory = protocol_factory
        self.connections = connections  # the front end's live connections
        self.limit = limit
        self.reading = False
        self.stopped = False
        self.retry: asyncio.TimerHandle | None = None
        self.out_of_fds_since = 0.0
        self.connecting = 0  # accepted, not yet among `connections`
        sock.setblocking(False)

    def start(self) -> None:
        if not self.reading and not self.stopped:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self.reading = True

    def stop(self) -> None:
        self.stopped = True
        self._pause()
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None

    def _pause(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False

    def _open(self) -> int:
        return len(self.connections) + self.connecting

    def _later(self, delay: float) -> None:
        self._pause()
        if self.retry is None and not self.stopped:
            self.retry = self.loop.call_later(delay, self._resume)

    def _resume(self) -> None:
        self.retry = None
        if self._open() >= self.limit:
            self._later(CAP_CHECK_S)
        else:
            self.start()

    def _accept(self) -> None:
        for _ in range(PER_TURN):
            if self._open() >= self.limit:
                self._later(CAP_CHECK_S)
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._out_of_resources(exc)
                    return
                if exc.errno in _CLIENT_GAVE_UP:
                    continue
                raise
            if self.out_of_fds_since:
                log.warning(
                    "accepting connections again after %.1f s without file descriptors",
                    self.loop.time() - self.out_of_fds_since,
                )
                self.out_of_fds_since = 0.0
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connecting += 1
            self.loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError:
            conn.close()
        finally:
            self.connecting -= 1

    def _out_of_resources(self, exc: OSError) -> None:
        if not self.out_of_fds_since:
            self.out_of_fds_since = self.loop.time()
            log.error(
                "cannot accept connections: %s (%d open); new clients wait in the listen"
                " backlog, retrying every %.1f s",
                exc.strerror or exc,
                len(self.connections),
                RETRY_S,
            )
        self._later(RETRY_S)
