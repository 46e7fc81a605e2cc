"""The native front end's connection: an asyncio.Protocol parsing with httptools and calling
ModelApp.dispatch() with the whole request body.

Per connection: keep-alive (an HTTP/1.0 client that asks for it is told `Connection:
keep-alive`); pipelined requests are answered one at a time, in order, and while the transport
asks to pause writing no further answer is written (nor read); HEAD answers carry no body;
bodies with Content-Length or chunked; a declared or received body over the limit gets 413 and
the connection closes; request line and headers not complete within the header timeout
(slowloris) get 408, a body not complete within the body timeout too, and a connection that
sends nothing at all is closed after the header timeout; `100 Continue` is sent
only once every earlier pipelined answer is out; an idle connection closes after the
keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any
from urllib.parse import unquote

import httptools

from legion_ci.server.app import Response
from legion_ci.server.native_front import Front
from legion_ci.server.protocols import RequestError, bad, body_too_large, body_too_slow
from legion_ci.server.sockets import MAX_HEAD_BYTES, linger_close

MAX_PIPELINED = 32  # parsed requests waiting on one connection before reading pauses
_METHODS: dict[bytes, str] = {}

# One parsed request: method, path, headers, body, failure (answer this error), keep-alive,
# HTTP/1.0 (a kept-alive 1.0 connection must be told so).
Item = tuple[str, str, list[tuple[bytes, bytes]], bytes, RequestError | None, bool, bool]


def _origin_form(url: bytes) -> bytes:
    """The path of an absolute-form request target (`GET http://host/path`): RFC 9112 3.2.2
    says a server MUST accept it, and uvicorn (httptools.parse_url) routes it by its path, so
    both front ends answer alike. The authority is ignored, as the Host header is."""
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return url  # `*` or garbage: no route
    ends = [i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0]
    path = rest[min(ends) :] if ends else b""
    return path if path[:1] == b"/" else b"/" + path


class HttpProtocol(asyncio.Protocol):
    __slots__ = (
        "app",
        "body",
        "body_size",
        "body_timer",
        "busy",
        "continue_due",
        "discarding",
        "front",
        "head_bytes",
        "head_deadline",
        "headers",
        "in_body",
        "in_head",
        "last_active",
        "loop",
        "parser",
        "paused",
        "pending",
        "request_began",
        "transport",
        "url",
        "used",
        "writable",
        "write_paused",
    )

    def __init__(self, front: Front):
        self.front = front
        self.app = front.app
        self.loop = front.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.in_body = False
        self.body_timer: asyncio.TimerHandle | None = None
        self.request_began = 0.0
        self.pending: deque[Item] = deque()
        self.busy = False  # a request of this connection is being answered
        self.discarding = False  # answered early and closing: what arrives is dropped
        self.paused = False
        self.write_paused = False
        self.writable: asyncio.Event | None = None  # set again when writing may resume
        self.last_active = 0.0
        self.in_head = False  # between a request's first byte and the end of its headers
        self.head_deadline = 0.0
        self.continue_due = False  # a 100 Continue waits for earlier answers to go out
        self.used = False  # a request has begun on this connection

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.last_active = self.loop.time()
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        if self.writable is not None:
            self.writable.set()  # a _serve waiting to write must see that the client left
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        if self.in_body and not self.discarding:
            # The client left in the middle of sending its body: nobody to answer.
            method, path = self._method_path()
            self.app.metrics.observe_request(
                self.app.route_name(method, path), 499, time.perf_counter() - self.request_began
            )
        self.in_body = False
        self.pending.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            return
        self.last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(bad("protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if not self.discarding:
                self._fail(bad(f"malformed HTTP request: {exc}"))
        if self.in_body and self.body_timer is None and not self.discarding:
            self.body_timer = self.loop.call_later(
                self.front.settings.body_timeout_s, self._body_timeout
            )

    def eof_received(self) -> bool | None:
        # The client is done sending: answer what is queued, then close (False closes at once
        # when nothing is in flight).
        if self.busy:
            self.discarding = True
            return True
        return False

    def pause_writing(self) -> None:
        # The client reads slower than we answer: stop reading its requests, and _serve
        # writes no further answer until the transport's buffer drains.
        self.write_paused = True
        if self.writable is None:
            self.writable = asyncio.Event()
        self.writable.clear()
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.writable is not None:
            self.writable.set()
        if not self.paused and self.transport is not None:
            self.transport.resume_reading()

    def sweep(self, now: float) -> None:
        """Once a second: close a connection idle past the keep-alive timeout, and answer 408
        to one whose request line and headers take longer than the header timeout."""
        if self.transport is None:
            return
        if self.in_head and not self.discarding and now > self.head_deadline:
            self._fail(
                RequestError(
                    408,
                    "the request line and headers did not arrive within"
                    f" {self.front.settings.header_timeout_s:g} s",
                    close=True,
                )
            )
        elif (
            not self.busy
            and not self.in_body
            and not self.in_head
            and now - self.last_active > self.idle_limit()
        ):
            self.transport.close()

    def idle_limit(self) -> float:
        settings = self.front.settings
        # A connection that has sent nothing yet gets the header timeout, not the keep-alive
        # time: 4,096 silent connections held 30 s each kept good clients waiting. (Draining,
        # only such connections are still open.)
        if not self.used or self.front.draining:
            return min(settings.keep_alive_s, settings.header_timeout_s)
        return settings.keep_alive_s

    def drain(self) -> None:
        """SIGTERM: an idle kept-alive connection closes now; one with a request under way
        closes after its answer (which says `connection: close`). One whose first request
        has not arrived yet is left to the sweep (the header timeout): it was just accepted,
        its client is sending, and closing it unread would reset that request."""
        if self.transport is None or self.busy or self.in_body or self.in_head:
            return
        if self.used:
            self.transport.close()

    def _send_continue(self) -> None:
        self.continue_due = False
        if self.transport is not None and self.in_body and not self.discarding:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.discarding:
            return
        self.used = True
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.body = []
        self.body_size = 0
        self.request_began = time.perf_counter()
        self.in_head = True
        self.head_deadline = self.loop.time() + self.front.settings.header_timeout_s

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self._count_head(len(name) + len(value))

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES and not self.discarding:
            self._fail(
                RequestError(431, f"the request line and headers are over {MAX_HEAD_BYTES} bytes")
            )

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.discarding:
            return
        self.in_body = True
        limit = self.front.settings.max_body_bytes
        expect = False
        for key, value in self.headers:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the parser rejects it
                if declared > limit:
                    self._fail(body_too_large(limit, declared))
                    return
            elif key == b"expect" and value.lower() == b"100-continue":
                expect = True
        if expect and self.transport is not None:
            # An interim answer must not overtake the final answers of earlier pipelined
            # requests: it goes out once they are written.
            if self.busy:
                self.continue_due = True
            else:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.discarding:
            return
        self.body_size += len(body)
        limit = self.front.settings.max_body_bytes
        if self.body_size > limit:
            self._fail(body_too_large(limit))
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.discarding:
            return
        self.in_body = False
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        method, path = self._method_path()
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        keep_alive = self.parser.should_keep_alive() and not self.front.draining
        http10 = self.parser.get_http_version() == "1.0"
        self.continue_due = False
        self._enqueue((method, path, self.headers, body, None, keep_alive, http10))

    # -- requests ----------------------------------------------------------------------------
    def _method_path(self) -> tuple[str, str]:
        raw = self.parser.get_method()
        method = _METHODS.get(raw)
        if method is None:
            method = raw.decode("latin-1")
            if len(_METHODS) < 64:
                _METHODS[raw] = method
        url = self.url
        if url[:1] != b"/":
            url = _origin_form(url)
        q = url.find(b"?")
        if q >= 0:
            url = url[:q]
        path = url.decode("latin-1")
        if "%" in path:
            path = unquote(path, encoding="latin-1")
        return method, path

    def _fail(self, exc: RequestError) -> None:
        """Answer `exc` for the request being parsed, then close: the rest of the stream is
        not parsed (the body was not read, so the next request's start is unknown)."""
        try:
            method, path = self._method_path()
        except Exception:
            method, path = "GET", "/"
        exc.close = True
        self.discarding = True
        self.in_body = False
        self.in_head = False
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        self._enqueue((method, path, self.headers, b"", exc, False, False))

    def _body_timeout(self) -> None:
        self.body_timer = None
        if self.in_body and not self.discarding:
            self._fail(body_too_slow(self.front.settings.body_timeout_s))

    def _enqueue(self, item: Item) -> None:
        if self.busy:
            self.pending.append(item)
            if len(self.pending) >= MAX_PIPELINED and not self.paused:
                self.paused = True
                if self.transport is not None:
                    self.transport.pause_reading()
            return
        self.busy = True
        self.loop.create_task(self._serve(item))

    async def _serve(self, item: Item) -> None:
        front = self.front
        app = self.app
        while True:
            method, path, headers, body, failure, keep_alive, http10 = item
            if self.write_paused and self.writable is not None:
                await self.writable.wait()  # the client is not reading its answers
            try:
                answer: Response | None = await app.dispatch(
                    method, path, headers, body, None, failure
                )
            except BaseException:
                self.busy = False
                if self.transport is not None:
                    self.transport.close()
                raise
            transport = self.transport
            if transport is None:  # the client left; its answer goes nowhere
                self.busy = False
                return
            assert answer is not None  # the body is complete: dispatch always answers
            status, ctype, out, rid, close, extra = answer
            close = close or not keep_alive or front.draining
            head = front.head(status, ctype, len(out), rid, close, extra, http10)
            # A HEAD answer has the GET answer's headers (its length too) and no body.
            transport.write(head if method == "HEAD" else head + out)
            self.last_active = self.loop.time()
            if close:
                self.busy = False
                self._close_after_answer(failure is not None)
                return
            if not self.pending:
                self.busy = False
                if self.discarding:  # the client sent EOF
                    transport.close()
                elif self.continue_due:
                    self._send_continue()
                return
            item = self.pending.popleft()
            if self.paused and len(self.pending) < MAX_PIPELINED // 2:
                self.paused = False
                if not self.write_paused:
                    transport.resume_reading()

    def _close_after_answer(self, early: bool) -> None:
        transport = self.transport
        self.discarding = True
        self.pending.clear()
        if not early:
            transport.close()
            return
        # Answered before the body was read: what still arrives is dropped (discarding).
        if self.paused or self.write_paused:
            transport.resume_reading()
        linger_close(self.loop, transport)
