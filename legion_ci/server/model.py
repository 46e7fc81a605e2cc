"""The served model's life in a worker: loading it in the background at startup (so liveness
answers at once and readiness turns true when the model is in memory), the batcher in front of
its predict call, the metrics snapshots and the supervisor check, and shutdown. The routes
(app.py) are built on this.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from legion_ci.gppi.manifest import Manifest
from legion_ci.server import jsonio
from legion_ci.server.config import ServeSettings
from legion_ci.server.metrics import Metrics
from legion_ci.server.protocols import InputSchema, RequestError

log = logging.getLogger("legion_ci.server")

_dumps = jsonio.dumps


class ModelFailed(Exception):
    """The model's own code raised while predicting: answered 500 with the exception's type
    and message (as Legion did), the traceback only in the server log."""

    def __init__(self, exc: BaseException):
        super().__init__(str(exc))
        self.exc = exc


class ServedModel:
    """The model of one worker and its lifecycle: startup() begins loading it, loaded() waits
    for that, shutdown() stops the batcher, the feedback store and the metrics."""

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
        tuned_gc = os.environ.get("LEGION_SERVE_GC", "tuned") == "tuned"
        if tuned_gc:
            # Loading (the model's libraries imported, the model unpickled) makes hundreds of
            # thousands of objects that live for good; the collector scanning them over and
            # over as they appear cost about a tenth of the load's CPU time (rf). One
            # collection once it is done (below) finds the little garbage there is.
            gc.disable()
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
        finally:
            if tuned_gc:
                gc.enable()
        columns = schema.columns
        if tuned_gc:
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
