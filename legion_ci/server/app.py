"""The model REST server's routes: Legion's, MLflow's scoring protocol, feedback, health and
metrics, written once for both HTTP front ends (the native one in native.py, the default, and
uvicorn through the ASGI interface here).

No web framework: the hot path (invoke) is header scan, JSON parse, a queue into the batcher and
one JSON dump. Routing is a dict lookup on (method, path).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from legion_ci.gppi.manifest import Manifest
from legion_ci.server import jsonio
from legion_ci.server.config import ServeSettings
from legion_ci.server.metrics import Metrics
from legion_ci.server.protocols import (
    REQUEST_ID_PATTERN,
    InputSchema,
    RequestError,
    answer_legion,
    answer_mlflow,
    bad,
    body_too_large,
    body_too_slow,
    check_json_content_type,
    decode_json,
    parse_legion,
    parse_mlflow,
)

log = logging.getLogger("legion_ci.server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Answer = tuple[int, bytes, bytes]

_JSON = b"application/json"
_GET = "GET"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN.encode())
_ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "ENDPOINT_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    500: "INTERNAL_ERROR",
    503: "NOT_READY",
}


_dumps = jsonio.dumps


class ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


class Request:
    __slots__ = (
        "body",
        "client_request_id",
        "content_length",
        "content_type",
        "headers",
        "id",
        "receive",
    )

    def __init__(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None = None,
        receive: Receive | None = None,
    ):
        self.headers = headers
        # The whole body when the front end read it already (native), else read via `receive`.
        self.body = body
        self.receive = receive
        self.content_type: bytes | None = None
        self.content_length: bytes | None = None
        # What the client sent (feedback needs one); `id` is that or a generated one.
        self.client_request_id: bytes | None = None
        self.id = ""


# What dispatch() answers: status, content type, body, request id, whether to close, and
# extra headers (rare: Allow on a 405), or None.
Response = tuple[int, bytes, bytes, bytes, bool, list[tuple[bytes, bytes]] | None]

# An exception message in an answer is cut to this length (the log has all of it).
_MAX_EXCEPTION_TEXT = 1000


class ModelFailed(Exception):
    """The model's own code raised while predicting: answered 500 with the exception's type
    and message (as Legion did), the traceback only in the server log."""

    def __init__(self, exc: BaseException):
        super().__init__(str(exc))
        self.exc = exc


# Generated request ids: 64 random bits per process, then a counter; 32 hex digits, unique
# across workers and restarts, without a syscall per request.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count()


def _new_id() -> bytes:
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFFFFFFFFFF:016x}".encode()


class ModelApp:
    """The routes of the server, shared by both HTTP front ends: `dispatch(method, path,
    headers, body)` answers (status, content type, body, request id, close). `__call__` makes it
    an ASGI app (uvicorn front end); legion_ci.server.native calls dispatch() directly.

    The model loads in the background at startup, so liveness answers at once and readiness
    turns true when the model is in memory."""

    def __init__(self, settings: ServeSettings, root: Path, manifest: Manifest):
        self.settings = settings
        self.root = root
        self.manifest = manifest
        self.model: Any = None
        self.schema: InputSchema | None = None
        self.batcher: Any = None
        self.store: Any = None
        self.load_error: str | None = None
        self.on_fatal: Callable[[], None] | None = None
        self.metrics = Metrics(manifest.model_name, manifest.model_version, settings.metrics_dir)
        self._ready: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._scrapes: asyncio.AbstractServer | None = None
        self._info_doc = b""
        self._json_cls: Any = None
        self._parent = os.getppid()
        # Headers on every response, besides content-type, content-length and the request id.
        self.static_headers = [
            (b"model-name", manifest.model_name.encode("utf-8")),
            (b"model-version", manifest.model_version.encode("utf-8")),
        ]
        self._version = (
            manifest.toolchain_version if manifest.toolchain_name == "mlflow" else ""
        ) or _legion_version()
        self._routes: dict[tuple[str, str], tuple[Callable[[Request], Awaitable[Answer]], str]] = {
            ("POST", "/api/model/invoke"): (self.invoke, "invoke"),
            ("POST", "/invocations"): (self.invocations, "invocations"),
            ("POST", "/api/model/feedback"): (self.feedback, "feedback"),
            ("GET", "/api/model/info"): (self.info, "info"),
            ("GET", "/healthcheck"): (self.readiness, "healthcheck"),
            ("GET", "/readyz"): (self.readiness, "readyz"),
            ("GET", "/livez"): (self.liveness, "livez"),
            ("GET", "/ping"): (self.ping, "ping"),
            ("GET", "/health"): (self.ping, "health"),
            ("GET", "/version"): (self.version, "version"),
            ("GET", "/metrics"): (self.prometheus, "metrics"),
        }
        self._methods: dict[str, list[str]] = {}
        for method, path in self._routes:
            self._methods.setdefault(path, []).append(method)

    # -- ASGI front end --------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            answer = await self.dispatch(
                scope["method"], scope["path"], scope["headers"], None, receive
            )
            if answer is None:
                return
            status, ctype, body, rid, close, extra = answer
            headers = self.response_headers(ctype, len(body), rid, close)
            if extra:
                headers.extend(extra)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    def response_headers(
        self, ctype: bytes, length: int, rid: bytes, close: bool
    ) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(length).encode()),
            *self.static_headers,
            (b"request-id", rid),
            (b"x-request-id", rid),
        ]
        if close:
            headers.append((b"connection", b"close"))
        return headers

    # -- the routes, for either front end -----------------------------------------------------
    def route_name(self, method: str, path: str) -> str:
        return self._routes.get((_GET if method == "HEAD" else method, path), (None, "other"))[1]

    async def dispatch(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None = None,
        receive: Receive | None = None,
        failure: RequestError | None = None,
    ) -> Response | None:
        """Answer one request. Either `body` is the whole request body or `receive` (ASGI)
        reads it. `failure`: the front end already knows the answer is this error (a body over
        the limit or too slow), but the request id, headers and metrics are still ours.
        Returns None when the client left before its body arrived (nobody to answer)."""
        began = time.perf_counter()
        req = Request(headers, body, receive)
        for key, value in headers:
            if key == b"content-type":
                req.content_type = value
            elif key == b"content-length":
                req.content_length = value
            elif key == b"request-id" or key == b"x-request-id":
                req.client_request_id = value
        rid = req.client_request_id
        close = False
        route = "other"
        extra: list[tuple[bytes, bytes]] | None = None
        try:
            # HEAD is GET without the body; the front ends leave the body out.
            key = (_GET if method == "HEAD" else method, path)
            handler, route = self._routes.get(key, (None, "other"))
            if failure is not None:
                raise failure
            if handler is None:
                # Wrong route or method first; a malformed Request-ID is not echoed.
                if rid is not None and _REQUEST_ID.fullmatch(rid) is None:
                    rid = None
                allowed = self._methods.get(path)
                if allowed:
                    extra = [(b"allow", ", ".join(allowed).encode())]
                    raise RequestError(
                        405, f"{method} is not allowed on {path}; use " + ", ".join(allowed)
                    )
                raise RequestError(404, f"no route {path}")
            if rid is not None and _REQUEST_ID.fullmatch(rid) is None:
                rid = None
                raise bad("Request-ID must be 1 to 200 letters, digits or ._:/+=@-")
            if rid is None:
                rid = _new_id()
            req.id = rid.decode()
            status, out, ctype = await handler(req)
        except ClientGone:
            # Nobody to answer; 499 (nginx's "client closed request") keeps it visible in metrics.
            self.metrics.observe_request(route, 499, time.perf_counter() - began)
            return None
        except RequestError as exc:
            rid = rid or _new_id()
            status, ctype, close = exc.status, _JSON, exc.close
            out = self._error(exc.status, exc.message, rid)
        except ModelFailed as failed:
            rid = rid or _new_id()
            exc = failed.exc
            # The traceback stays in the server log, found by the request id the client got.
            log.error("request %s on %s: the model raised", rid.decode(), path, exc_info=exc)
            kind = type(exc).__name__
            text = " ".join(str(exc).split())[:_MAX_EXCEPTION_TEXT]
            status, ctype = 500, _JSON
            out = self._error(
                500,
                f"Exception during prediction: {kind}: {text}"
                if text
                else f"Exception during prediction: {kind}",
                rid,
                exception={"type": kind, "message": text},
            )
        except Exception:
            rid = rid or _new_id()
            log.exception("request %s on %s failed", rid.decode(), path)
            status, ctype = 500, _JSON
            out = self._error(
                500,
                f"the server failed on this request; its log has the details under request id"
                f" {rid.decode()}",
                rid,
            )
        self.metrics.observe_request(route, status, time.perf_counter() - began)
        return status, ctype, out, rid, close, extra

    @staticmethod
    def _error(status: int, message: str, rid: bytes, **more: Any) -> bytes:
        return _dumps(
            {
                "error_code": _ERROR_CODES.get(status, "ERROR"),
                "message": message,
                "request_id": rid.decode(),
                **more,
            }
        )

    async def _body(self, req: Request) -> bytes:
        if req.body is not None:
            return req.body  # the native front end read it and enforced the limits already
        limit = self.settings.max_body_bytes
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
            async with asyncio.timeout(self.settings.body_timeout_s):
                while True:
                    message = await req.receive()  # type: ignore[misc]
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
            raise body_too_slow(self.settings.body_timeout_s) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- lifecycle -------------------------------------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        from legion_ci.server.feedback import FeedbackStore

        self._ready = asyncio.Event()
        # Nothing is opened for writing unless asked: the server may run in a read-only folder.
        if self.settings.log_requests:
            self.store = FeedbackStore(self.settings.feedback_db)
        self._scrapes = await self.metrics.answer_scrapes()
        self._load_task = asyncio.create_task(self._load())
        self._tasks.append(self._load_task)
        self._tasks.append(asyncio.create_task(self._housekeeping()))

    async def loaded(self) -> bool:
        """Wait for the model load that startup() began; True when the model loaded."""
        await self._load_task
        return self.load_error is None

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._scrapes is not None:
            self._scrapes.close()
            self.metrics.forget_socket()
        if self.batcher is not None:
            self.batcher.close()
        if self.store is not None:
            self.store.close()
        self.metrics.write_snapshot()

    async def _load(self) -> None:
        from legion_ci.errors import LegionError
        from legion_ci.gppi.loader import load_model
        from legion_ci.gppi.selfcheck import recorded_prediction, typed_outputs
        from legion_ci.server.batching import Batcher
        from legion_ci.server.openapi import build_openapi

        began = time.perf_counter()
        try:
            model = await asyncio.to_thread(load_model, self.root)
            schema = InputSchema(model.input_fields)
            # The response example is the prediction the train-time self-check recorded (or
            # info()'s declared output): the model is called only for clients' requests, so a
            # model with state never sees a call nobody made.
            example = recorded_prediction(model)
            outputs = typed_outputs(model, example)
            info_doc = _dumps(
                build_openapi(model, example, outputs=outputs, feedback=self.settings.log_requests)
            )
        except Exception as exc:
            if isinstance(exc, LegionError):
                self.load_error = str(exc)
            else:
                log.exception("loading the model failed")
                self.load_error = f"loading the model failed: {type(exc).__name__}: {exc}"
            log.error("%s", self.load_error)
            if self.on_fatal is not None:
                self.on_fatal()
            return
        columns = schema.columns
        if os.environ.get("LEGION_SERVE_GC", "tuned") == "tuned":
            # The model and the libraries are loaded for good: move them out of the garbage
            # collector's sight and collect less often, so full collections over hundreds of
            # thousands of long-lived objects stop showing up as tail latency.
            gc.collect()
            gc.freeze()
            gc.set_threshold(100_000, 20, 20)

        def predict(rows: list[list[Any]]) -> tuple[list[list[Any]], list[str]]:
            return model.predict(rows, columns)

        self.model, self.schema, self._info_doc = model, schema, info_doc
        self._json_cls = model.json_encoder if isinstance(model.json_encoder, type) else None
        self.batcher = Batcher(
            predict,
            max_rows=self.settings.max_batch_rows,
            max_wait_s=self.settings.max_batch_wait_ms / 1000.0,
            on_batch=self.metrics.observe_batch,
            on_unbatched=self._unbatched,
        )
        self.metrics.ready = True
        assert self._ready is not None
        self._ready.set()
        log.info(
            "model %s %s loaded in %.2f s; ready (pid %d)",
            model.name,
            model.version,
            time.perf_counter() - began,
            os.getpid(),
        )

    def _unbatched(self, reason: str) -> None:
        log.warning("%s", reason)
        self.metrics.unbatched = True

    async def _predict(self, rows: list[list[Any]]) -> tuple[list[list[Any]], list[str]]:
        try:
            return await self.batcher.submit(rows)
        except Exception as exc:
            raise ModelFailed(exc) from exc

    async def _housekeeping(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(1.0)
            try:
                self.metrics.write_snapshot()
                failing = False
            except OSError as exc:
                # Once, and go on: an exception here used to end the loop for good, and with
                # it the snapshots and the supervisor check.
                if not failing:
                    log.warning("metrics: cannot write the snapshot: %s", exc)
                failing = True
            # A worker whose supervisor died (kill -9) must not keep serving on its own.
            if self.settings.metrics_dir and os.getppid() != self._parent:
                log.warning("the supervisor is gone; shutting down")
                if self.on_fatal is not None:
                    self.on_fatal()
                return

    async def _wait_ready(self) -> None:
        if self.batcher is not None:
            return
        if self.load_error is not None:
            raise RequestError(503, "the model failed to load; see the server log")
        assert self._ready is not None
        try:
            async with asyncio.timeout(self.settings.load_wait_s):
                await self._ready.wait()
        except TimeoutError:
            raise RequestError(503, "the model is still loading; try again shortly") from None

    def _encode(self, obj: Any) -> bytes:
        return jsonio.dumps(obj, self._json_cls)

    # -- prediction routes -----------------------------------------------------------------------
    async def invoke(self, req: Request) -> Answer:
        check_json_content_type(req.content_type)
        body = await self._body(req)
        await self._wait_ready()
        rows = parse_legion(self.schema, body)  # type: ignore[arg-type]
        out_rows, out_cols = await self._predict(rows)
        answer = self._encode(answer_legion(out_rows, out_cols))
        if self.settings.log_requests:
            await self._log(req, "invoke", body, answer)
        return 200, answer, _JSON

    async def invocations(self, req: Request) -> Answer:
        body = await self._body(req)
        await self._wait_ready()
        rows = parse_mlflow(self.schema, body, req.content_type)  # type: ignore[arg-type]
        out_rows, out_cols = await self._predict(rows)
        answer = self._encode(answer_mlflow(out_rows, out_cols))
        if self.settings.log_requests:
            await self._log(req, "invocations", body, answer)
        return 200, answer, _JSON

    async def _log(self, req: Request, route: str, body: bytes, answer: bytes) -> None:
        await self.store.log_prediction(
            req.id,
            self.manifest.model_name,
            self.manifest.model_version,
            route,
            200,
            body.decode("utf-8", "replace"),
            answer.decode("utf-8"),
        )

    # -- feedback --------------------------------------------------------------------------------
    async def feedback(self, req: Request) -> Answer:
        if self.store is None:
            raise RequestError(
                404, "this server stores no feedback; start it with --log-requests to accept it"
            )
        if req.client_request_id is None:
            raise bad("feedback needs a Request-ID header naming the prediction it is about")
        for key, value in req.headers:
            if key in (b"model-name", b"model-version"):
                expected = (
                    self.manifest.model_name
                    if key == b"model-name"
                    else (self.manifest.model_version)
                )
                got = value.decode("utf-8", "replace")
                if got != expected:
                    raise bad(
                        f"{key.decode().title()} {got!r} does not match the served model"
                        f" ({self.manifest.model_name} {self.manifest.model_version})"
                    )
        check_json_content_type(req.content_type)
        body = await self._body(req)
        payload = decode_json(body)
        try:
            stored = json.dumps(payload, separators=(",", ":"))
            answer = _dumps({"registered": True, "request_id": req.id, "message": payload})
        except RecursionError:  # parsed (orjson nests deeper) but too deep to encode again
            raise bad(f"the request body is {jsonio.TooDeep()}") from None
        await self.store.add_feedback(
            req.id, self.manifest.model_name, self.manifest.model_version, stored
        )
        return 200, answer, _JSON

    # -- info, health, metrics -------------------------------------------------------------------
    async def info(self, req: Request) -> Answer:
        await self._wait_ready()
        return 200, self._info_doc, _JSON

    async def readiness(self, req: Request) -> Answer:
        if self.batcher is not None:
            return 200, b'{"status":true}', _JSON
        message = "the model failed to load" if self.load_error else "the model is loading"
        return 503, _dumps({"status": False, "message": message}), _JSON

    async def liveness(self, req: Request) -> Answer:
        return 200, b'{"status":true}', _JSON

    async def ping(self, req: Request) -> Answer:
        # MLflow's /ping answers "\n"; its clients only look at the status code.
        return (200 if self.batcher is not None else 503), b"\n", _JSON

    async def version(self, req: Request) -> Answer:
        return 200, self._version.encode(), _JSON

    async def prometheus(self, req: Request) -> Answer:
        # This worker's counters copied here, on the loop that changes them; the other
        # workers are asked in a thread.
        text = await asyncio.to_thread(self.metrics.render, self.metrics.snapshot())
        return 200, text.encode(), b"text/plain; version=0.0.4; charset=utf-8"


def _legion_version() -> str:
    try:
        from importlib.metadata import version

        return version("legion-ci")
    except Exception:
        return "0"
