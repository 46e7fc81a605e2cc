"""Legion's Feedback aggregator: a durable local store of feedback and logged predictions.

sqlite in WAL mode with synchronous=FULL: a commit is on disk (fsync'd) before the server
answers, so killing the server after an answer loses nothing. Writes go through one thread
per process that commits whatever has queued up in one transaction (group commit): durable
without paying one fsync per request under load. Several workers share the file; sqlite's
locking serialises their commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from legion_ci.errors import InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    created_at REAL NOT NULL,
    route TEXT NOT NULL,
    status INTEGER NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_request_id ON predictions(request_id);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    created_at REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_request_id ON feedback(request_id);
"""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def open_db(path: Path | str, wait_s: float = 30.0) -> sqlite3.Connection:
    path = Path(path)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(path)
            try:
                conn.executescript(SCHEMA)
            except BaseException:
                conn.close()
                raise
            return conn
        except sqlite3.OperationalError as exc:
            # Workers starting together race to switch a new file to WAL; sqlite answers
            # that race with an immediate "database is locked", without its busy handler.
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise InputError(f"{path}: cannot open the feedback store: {exc}") from None
            time.sleep(0.05)
        except (OSError, sqlite3.Error) as exc:
            raise InputError(f"{path}: cannot open the feedback store: {exc}") from None


class FeedbackStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._conn = open_db(self.path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._writer, name="feedback-writer", daemon=True)
        self._thread.start()

    def _put(self, table: str, row: tuple[Any, ...]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((table, row, loop, fut))
        return fut

    def add_feedback(
        self, request_id: str, model_name: str, model_version: str, payload: str
    ) -> asyncio.Future:
        return self._put("feedback", (request_id, model_name, model_version, time.time(), payload))

    def log_prediction(
        self,
        request_id: str,
        model_name: str,
        model_version: str,
        route: str,
        status: int,
        request: str,
        response: str,
    ) -> asyncio.Future:
        row = (request_id, model_name, model_version, time.time(), route, status, request, response)
        return self._put("predictions", row)

    def _writer(self) -> None:
        while True:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is None for item in items)
            items = [i for i in items if i is not None]
            if items:
                self._commit(items)
            if stop:
                return

    def _commit(self, items: list[tuple[str, tuple, Any, asyncio.Future]]) -> None:
        error: Exception | None = None
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for table, row, _, _ in items:
                if table == "feedback":
                    self._conn.execute(
                        "INSERT INTO feedback(request_id, model_name, model_version, created_at,"
                        " payload) VALUES (?, ?, ?, ?, ?)",
                        row,
                    )
                else:
                    self._conn.execute(
                        "INSERT INTO predictions(request_id, model_name, model_version,"
                        " created_at, route, status, request, response)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            error = exc
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
        for _, _, loop, fut in items:
            # RuntimeError: the loop is closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, fut, error)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._conn.close()


def _resolve(fut: asyncio.Future, error: Exception | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(None)


# -- export -------------------------------------------------------------------------------------
EXPORT_FIELDS = (
    "request_id",
    "model_name",
    "model_version",
    "feedback_at",
    "feedback",
    "predicted_at",
    "route",
    "status",
    "request",
    "response",
)


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # a logged request that was not JSON (CSV) stays text


def iter_joined(path: Path | str, *, include_unrated: bool = False) -> Iterator[dict[str, Any]]:
    """Each feedback joined with the prediction of the same request id (if it was logged).

    `include_unrated` adds the logged predictions that have no feedback yet.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no feedback store there (start the server with --feedback-db)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise InputError(f"{path}: cannot open the feedback store: {exc}") from None
    query = """
        SELECT f.request_id, f.model_name, f.model_version, f.created_at, f.payload,
               p.created_at, p.route, p.status, p.request, p.response
        FROM feedback f LEFT JOIN predictions p ON p.request_id = f.request_id
    """
    if include_unrated:
        query += """
        UNION ALL
        SELECT p.request_id, p.model_name, p.model_version, NULL, NULL,
               p.created_at, p.route, p.status, p.request, p.response
        FROM predictions p
        WHERE NOT EXISTS (SELECT 1 FROM feedback f WHERE f.request_id = p.request_id)
        """
    query += " ORDER BY 6, 4"
    try:
        for row in conn.execute(query):
            rec = dict(zip(EXPORT_FIELDS, row, strict=True))
            for key in ("feedback", "request", "response"):
                rec[key] = _loads(rec[key])
            for key in ("feedback_at", "predicted_at"):
                if rec[key] is not None:
                    rec[key] = _iso(rec[key])
            yield rec
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: not a feedback store: {exc}") from None
    finally:
        conn.close()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def export(
    path: Path | str, out: TextIO, *, fmt: str = "jsonl", include_unrated: bool = False
) -> int:
    """Write the joined records as JSON lines or CSV (nested values JSON-encoded); returns count."""
    count = 0
    if fmt == "jsonl":
        for rec in iter_joined(path, include_unrated=include_unrated):
            out.write(json.dumps(rec) + "\n")
            count += 1
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        for rec in iter_joined(path, include_unrated=include_unrated):
            writer.writerow(
                {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in rec.items()}
            )
            count += 1
    else:
        raise InputError(f"unknown export format {fmt!r}; use jsonl or csv")
    return count
