"""What the native front end's connections share: the app, the precomputed response header
bytes, the live connections (for drain and the idle sweep) and the Date header."""

from __future__ import annotations

import asyncio
from email.utils import formatdate
from typing import Any, Protocol

from legion_ci.server.app import ModelApp

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    415: b"Unsupported Media Type",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_METHODS: dict[bytes, str] = {}


class Connection(Protocol):
    """What Front and the server loop need of a connection (native_http.HttpProtocol)."""

    transport: Any

    def sweep(self, now: float) -> None: ...

    def drain(self) -> None: ...


class Front:
    """What the connections share: the app, the precomputed header bytes, the live
    connections (for drain and the idle sweep) and the Date header, refreshed every second."""

    def __init__(self, app: ModelApp, loop: asyncio.AbstractEventLoop):
        self.app = app
        self.loop = loop
        self.settings = app.settings
        self.static = b"".join(k + b": " + v + b"\r\n" for k, v in app.static_headers)
        self.connections: set[Connection] = set()
        self.draining = False
        self.date = b""
        self._tick()

    def _tick(self) -> None:
        self.date = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"
        now = self.loop.time()
        for conn in list(self.connections):
            conn.sweep(now)
        self.loop.call_later(1.0, self._tick)

    def head(
        self,
        status: int,
        ctype: bytes,
        length: int,
        rid: bytes,
        close: bool,
        extra: list[tuple[bytes, bytes]] | None = None,
        http10: bool = False,
    ) -> bytes:
        if close:
            end = b"\r\nconnection: close\r\n\r\n"
        elif http10:
            end = b"\r\nconnection: keep-alive\r\n\r\n"
        else:
            end = b"\r\n\r\n"
        more = b"".join(k + b": " + v + b"\r\n" for k, v in extra) if extra else b""
        return b"".join(
            (
                b"HTTP/1.1 %d %s\r\ncontent-type: " % (status, _REASONS.get(status, b"Error")),
                ctype,
                b"\r\ncontent-length: %d\r\n" % length,
                self.date,
                self.static,
                more,
                b"request-id: ",
                rid,
                b"\r\nx-request-id: ",
                rid,
                end,
            )
        )
