"""Adaptive micro-batching: concurrent requests share one predict() call.

A model's fixed cost per call (building a DataFrame, walking the estimator's Python layers)
dwarfs its cost per row, so a server that calls predict() once per request stalls at a few
hundred requests per second. Here requests queue while a call is running and the next call
takes all of them, up to `max_rows` rows. An idle server adds no wait: a lone request is
predicted at once. Rows are split back per request in order, so each request gets exactly the
rows a call of its own would have returned (equal within floating-point rounding: a BLAS-backed
model may differ in the last bits between a 1-row and an N-row call; tree models are exact). If
a merged call fails, each of its requests is retried alone, so one bad request cannot fail its
neighbours.

A model whose output does not have one row per input row (an aggregate, a model that always
answers one row) cannot be split back: the first time that is seen, the batcher stops merging
for good, answers each request with the model's own output, and says so (`on_unbatched`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Rows = list[list[Any]]
PredictFn = Callable[[Rows], tuple[Rows, list[str]]]


class BatchShapeError(Exception):
    """predict() returned a different number of rows than it was given."""


class Batcher:
    def __init__(
        self,
        predict: PredictFn,
        *,
        max_rows: int,
        max_wait_s: float = 0.0,
        on_batch: Callable[[int, int, float], None] | None = None,
        on_unbatched: Callable[[str], None] | None = None,
    ):
        self._predict = predict
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._on_unbatched = on_unbatched
        self.merging = True  # False once the model's output was seen not to match its rows
        self._queue: deque[tuple[Rows, asyncio.Future]] = deque()
        self._queued_rows = 0
        self._running = False
        self._more = asyncio.Event()
        self._want = 0  # requests the lingering batch waits for
        self._last_requests = 0  # requests in the call that just finished (0: idle)
        self._last_seconds = 0.0
        # One thread: models are not promised to be thread-safe, and one call at a time is
        # what makes the queue grow into a batch. The event loop keeps parsing meanwhile.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._loop = asyncio.get_running_loop()

    def submit(self, rows: Rows) -> asyncio.Future:
        """Queue `rows`; the future resolves to (output rows, output columns)."""
        fut = self._loop.create_future()
        self._queue.append((rows, fut))
        self._queued_rows += len(rows)
        if not self._running:
            self._running = True
            # Start on the next loop turn, so requests parsed in this turn join the batch.
            self._loop.create_task(self._drain())
        elif self._queued_rows >= self.max_rows or (self._want and len(self._queue) >= self._want):
            self._more.set()
        return fut

    async def _drain(self) -> None:
        try:
            while self._queue:
                wait = self._linger()
                if wait > 0:
                    self._more.clear()
                    # Queued now: the clients answered before; the last call's clients come
                    # next. Waiting for both merges the two groups into one call instead of
                    # alternating between two half-size batches.
                    self._want = len(self._queue) + self._last_requests
                    try:
                        async with asyncio.timeout(wait):
                            await self._more.wait()
                    except TimeoutError:
                        pass
                    self._want = 0
                batch = self._take()
                self._last_requests = len(batch)
                await self._run(batch)
        finally:
            self._running = False
            self._last_requests = 0

    def _linger(self) -> float:
        """How long to let the next batch fill. Under load (the last call merged several
        requests) the clients it answered send their next requests within a fraction of a
        millisecond; waiting for them (at most max_wait) can beat predicting for a few and
        making the rest wait a whole call. An idle server (no call just finished) never waits."""
        if self.max_wait_s <= 0 or self._last_requests <= 1 or self._queued_rows >= self.max_rows:
            return 0.0
        return min(self.max_wait_s, self._last_seconds / 2)

    def _take(self) -> list[tuple[Rows, asyncio.Future]]:
        batch = [self._queue.popleft()]
        rows = len(batch[0][0])
        while self.merging and self._queue and rows + len(self._queue[0][0]) <= self.max_rows:
            item = self._queue.popleft()
            rows += len(item[0])
            batch.append(item)
        self._queued_rows -= rows
        return batch

    async def _call(self, rows: Rows, requests: int) -> tuple[Rows, list[str]]:
        out_rows, out_cols, seconds = await self._loop.run_in_executor(
            self._executor, self._timed, rows
        )
        self._last_seconds = seconds
        if self._on_batch is not None:
            self._on_batch(requests, len(rows), seconds)
        if len(out_rows) != len(rows):
            self._stop_merging(len(out_rows), len(rows))
            if requests > 1:
                raise BatchShapeError(
                    f"predict() returned {len(out_rows)} rows for {len(rows)} input rows"
                )
        return out_rows, out_cols

    def _stop_merging(self, got: int, rows: int) -> None:
        if not self.merging:
            return
        self.merging = False
        if self._on_unbatched is not None:
            self._on_unbatched(
                f"predict() returned {got} rows for {rows} input rows: the model's output is not"
                " one row per input row, so requests are no longer merged (each is answered with"
                " the model's own output)"
            )

    async def _run(self, batch: list[tuple[Rows, asyncio.Future]]) -> None:
        if len(batch) == 1:
            rows, fut = batch[0]
            try:
                _settle(fut, result=await self._call(rows, 1))
            except Exception as exc:
                _settle(fut, exc=exc)
            return
        rows = []
        for part, _ in batch:
            rows.extend(part)
        try:
            out_rows, out_cols = await self._call(rows, len(batch))
        except Exception:
            # Find the request that broke the merged call; the others still get answers.
            for part, fut in batch:
                try:
                    _settle(fut, result=await self._call(part, 1))
                except Exception as one_exc:
                    _settle(fut, exc=one_exc)
            return
        start = 0
        for part, fut in batch:
            end = start + len(part)
            _settle(fut, result=(out_rows[start:end], out_cols))
            start = end

    def _timed(self, rows: Rows) -> tuple[Rows, list[str], float]:
        began = time.perf_counter()
        out_rows, out_cols = self._predict(rows)
        return out_rows, out_cols, time.perf_counter() - began

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)


def _settle(fut: asyncio.Future, *, result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():  # the client went away and its handler was cancelled
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
