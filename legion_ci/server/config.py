"""Server settings: every knob declared once, with its default and why it has that default."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from legion_ci.errors import InputError

# Workers get their settings through this variable, so a worker process needs no CLI parsing.
SETTINGS_ENV = "LEGION_SERVE_SETTINGS"
HTTP_FRONTS = ("native", "uvicorn")


@dataclass(frozen=True)
class ServeSettings:
    artifact: str
    host: str = "127.0.0.1"
    port: int = 5000
    # Worker processes. One saturates a core with batching; add one per extra core.
    workers: int = 1
    # Rows merged into one predict() call at most. Large, because a model's fixed cost per
    # call dominates and a request bigger than this still goes alone rather than being split.
    max_batch_rows: int = 4096
    # Requests that arrive while the model is busy join the next call anyway (adaptive
    # batching), and an idle server never waits. Under load, a call may wait up to this long
    # (and at most half the last call's time) for the clients it just answered to send their
    # next requests, so all clients share one call instead of alternating in two half-size
    # batches. Measured with the native front end (rf, 1 row): 64 conns 5,000 -> 7,600-12,400
    # req/s, 16 conns 2,600 -> 4,100; 0 turns it off.
    max_batch_wait_ms: float = 2.0
    max_body_bytes: int = 16 * 1024 * 1024
    # A client must deliver its whole body within this time (slow-body clients hold a slot).
    body_timeout_s: float = 30.0
    # SIGTERM waits this long for in-flight requests before closing connections.
    drain_timeout_s: float = 30.0
    # A request that arrives while the model is still loading waits this long for it.
    load_wait_s: float = 120.0
    log_requests: bool = False
    feedback_db: str = ".legion/feedback.sqlite3"
    # Set by the supervisor when several workers share the port, so /metrics adds them up.
    metrics_dir: str | None = None
    log_level: str = "info"
    # HTTP front end: "native" (asyncio.Protocol + httptools on uvloop, no ASGI layer; about
    # twice the requests/s at 1 row) or "uvicorn" (the same routes as an ASGI app).
    http: str = "native"

    def check(self) -> ServeSettings:
        problems = []
        if not 1 <= self.workers <= 256:
            problems.append(f"workers must be between 1 and 256, got {self.workers}")
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be between 0 and 65535, got {self.port}")
        if self.max_batch_rows < 1:
            problems.append(f"max batch rows must be at least 1, got {self.max_batch_rows}")
        if self.max_batch_wait_ms < 0:
            problems.append(f"max batch wait must not be negative, got {self.max_batch_wait_ms}")
        if self.max_body_bytes < 1:
            problems.append(f"max body bytes must be at least 1, got {self.max_body_bytes}")
        if self.http not in HTTP_FRONTS:
            problems.append(f"http must be one of {', '.join(HTTP_FRONTS)}, got {self.http!r}")
        for name in ("body_timeout_s", "drain_timeout_s", "load_wait_s"):
            if getattr(self, name) <= 0:
                problems.append(f"{name.replace('_', ' ')} must be positive")
        if problems:
            raise InputError("serve: " + "; ".join(problems))
        return self

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServeSettings:
        raw = (environ if environ is not None else os.environ).get(SETTINGS_ENV)
        if not raw:
            raise InputError(f"{SETTINGS_ENV} is not set: workers are started by `legion-ci serve`")
        data: dict[str, Any] = json.loads(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
