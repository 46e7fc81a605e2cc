"""The ASGI adapter: ModelApp's routes as an ASGI application, for the uvicorn front end
(uvicorn_front.py). The native front end calls ModelApp.dispatch() with the whole body and
needs none of this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from legion_ci.server.app import ClientGone, ModelApp, Request
from legion_ci.server.protocols import bad, body_too_large, body_too_slow

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def response_headers(
    app: ModelApp, ctype: bytes, length: int, rid: bytes, close: bool
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", ctype),
        (b"content-length", str(length).encode()),
        *app.static_headers,
        (b"request-id", rid),
        (b"x-request-id", rid),
    ]
    if close:
        headers.append((b"connection", b"close"))
    return headers


class AsgiApp:
    """`app` as an ASGI application: http requests through dispatch(), the body read from
    `receive` with the server's size and time limits; lifespan starts and stops the model."""

    def __init__(self, app: ModelApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app
        if scope["type"] == "http":

            async def read_body(req: Request) -> bytes:
                return await self._body(req, receive)

            answer = await app.dispatch(
                scope["method"], scope["path"], scope["headers"], None, read_body
            )
            if answer is None:
                return
            status, ctype, body, rid, close, extra = answer
            headers = response_headers(app, ctype, len(body), rid, close)
            if extra:
                headers.extend(extra)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _body(self, req: Request, receive: Receive) -> bytes:
        settings = self.app.settings
        limit = settings.max_body_bytes
        if req.content_length is not None:
            try:
                declared = int(req.content_length)
            except ValueError:
                raise bad("Content-Length is not a number") from None
            if declared > limit:
                raise body_too_large(limit, declared)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(settings.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise body_too_large(limit)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise body_too_slow(settings.body_timeout_s) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.app.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.app.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
