"""The model REST server's routes: Legion's, MLflow's scoring protocol, feedback, health and
metrics, written once for both HTTP front ends (the native one in native.py, the default, and
uvicorn through the ASGI adapter in asgi.py). The model's loading and lifecycle are model.py's.

No web framework: the hot path (invoke) is header scan, JSON parse, a queue into the batcher and
one JSON dump. Routing is a dict lookup on (method, path).
"""

from __future__ import annotations

import asyncio
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
from legion_ci.server.model import ModelFailed, ServedModel
from legion_ci.server.protocols import (
    REQUEST_ID_PATTERN,
    RequestError,
    answer_legion,
    answer_mlflow,
    bad,
    check_json_content_type,
    decode_json,
    parse_legion,
    parse_mlflow,
)

log = logging.getLogger("legion_ci.server")

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
    """One request as the routes see it: headers, and the body or how to read it."""

    __slots__ = (
        "body",
        "client_request_id",
        "content_length",
        "content_type",
        "headers",
        "id",
        "read_body",
    )

    def __init__(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None = None,
        read_body: BodyReader | None = None,
    ):
        self.headers = headers
        # The whole body when the front end read it already (native), else read by
        # `read_body` (the ASGI adapter's, with the size and time limits).
        self.body = body
        self.read_body = read_body
        self.content_type: bytes | None = None
        self.content_length: bytes | None = None
        # What the client sent (feedback needs one); `id` is that or a generated one.
        self.client_request_id: bytes | None = None
        self.id = ""


# What dispatch() answers: status, content type, body, request id, whether to close, and
# extra headers (rare: Allow on a 405), or None.
Response = tuple[int, bytes, bytes, bytes, bool, list[tuple[bytes, bytes]] | None]

# How a front end that has not read the body yet (ASGI) reads it for a route.
BodyReader = Callable[[Request], Awaitable[bytes]]

# An exception message in an answer is cut to this length (the log has all of it).
_MAX_EXCEPTION_TEXT = 1000


# Generated request ids: 64 random bits per process, then a counter; 32 hex digits, unique
# across workers and restarts, without a syscall per request.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count()


def _new_id() -> bytes:
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFFFFFFFFFF:016x}".encode()


class ModelApp(ServedModel):
    """The routes of the server, shared by both HTTP front ends: `dispatch(method, path,
    headers, body)` answers (status, content type, body, request id, close).
    legion_ci.server.native calls dispatch() directly; asgi.AsgiApp adapts it for uvicorn.
    The model's loading and lifecycle come from ServedModel."""

    def __init__(self, settings: ServeSettings, root: Path, manifest: Manifest):
        super().__init__(settings, root, manifest)
        # Headers on every response, besides content-type, content-length and the request id.
        self.static_headers = [
            (b"model-name", manifest.model_name.encode("utf-8")),
            (b"model-version", manifest.model_version.encode("utf-8")),
        ]
        # /version: the version of the toolchain that made the binary, as its manifest says
        # (MLflow's for an MLflow model, as `mlflow models serve` answers), whatever name the
        # toolchain is registered under; legion-ci's when the manifest names none.
        self._version = manifest.toolchain_version or _legion_version()
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

    # -- the routes, for either front end -----------------------------------------------------
    def route_name(self, method: str, path: str) -> str:
        return self._routes.get((_GET if method == "HEAD" else method, path), (None, "other"))[1]

    async def dispatch(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None = None,
        read_body: BodyReader | None = None,
        failure: RequestError | None = None,
    ) -> Response | None:
        """Answer one request. Either `body` is the whole request body or `read_body` (ASGI)
        reads it. `failure`: the front end already knows the answer is this error (a body over
        the limit or too slow), but the request id, headers and metrics are still ours.
        Returns None when the client left before its body arrived (nobody to answer)."""
        began = time.perf_counter()
        req = Request(headers, body, read_body)
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
        assert req.read_body is not None
        return await req.read_body(req)

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
