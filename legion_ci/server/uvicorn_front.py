"""The uvicorn front end (`--http uvicorn`): the same routes through uvicorn's httptools
protocol, with connections accepted by legion_ci.server.accept and hostile framing answered as
the native front end answers it (the HTTP conformance suite runs on both)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
from typing import Any

from legion_ci.server.accept import Acceptor
from legion_ci.server.app import _JSON, ModelApp, _new_id
from legion_ci.server.asgi import AsgiApp, response_headers
from legion_ci.server.config import ServeSettings
from legion_ci.server.sockets import (
    MAX_HEAD_BYTES,
    leave_port,
    linger_close,
    listen_when_loaded,
)

log = logging.getLogger("legion_ci.server")


def run_uvicorn(app: ModelApp, settings: ServeSettings, sock: socket.socket) -> int:
    import uvicorn

    config = uvicorn.Config(
        AsgiApp(app),
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
    """uvicorn's httptools protocol made to answer hostile framing as the native front end does:

    - a limit on the time a request's line and headers may take: uvicorn restarts its
      keep-alive timer on every byte, so a client trickling header bytes (slowloris) would
      hold the connection forever, and one sending nothing too;
    - request line and headers over MAX_HEAD_BYTES: 431 (uvicorn has no limit);
    - an answer given before the body was read (413 for a declared 100 MB body): FIN, the
      rest read and dropped, close after LINGER_S. uvicorn closed at once with the body
      unread, which resets the connection and loses the answer.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
            # would be held until shutdown. It gets the header timeout, as in the native front end.
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
                for k, v in response_headers(app, _JSON, len(body), rid, True)
            )
            self.transport.write(head + b"\r\n" + body)
            app.metrics.observe_request("other", status, timeout if status == 408 else 0.0)

        def linger(self) -> None:
            """Answered before the request was read to its end: send FIN, drop what still
            arrives, close when the client does or after LINGER_S."""
            self._discarding = True
            if self.flow is not None:
                self.flow.resume_reading()
            linger_close(self.loop, self.transport)

    return HeaderTimedProtocol
