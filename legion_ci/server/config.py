"""Server settings: every knob declared once, with its default, its help, and its
`LEGION_SERVE_<NAME>` environment variable. The CLI options and `serve --help` are derived from
this one declaration; the image and manifest renderers write their own LEGION_SERVE_* values
(`serve_env_vars()` lists them all, but nothing calls it yet)."""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from legion_ci.errors import InputError

# Workers get their settings through this variable, so a worker process needs no CLI parsing.
SETTINGS_ENV = "LEGION_SERVE_SETTINGS"
ENV_PREFIX = "LEGION_SERVE_"
HTTP_FRONTS = ("native", "uvicorn")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_FEEDBACK_DB = ".legion/feedback.sqlite3"


def _setting(default: Any, help: str, **extra: Any) -> Any:
    """A user-facing setting: a CLI option and a LEGION_SERVE_<NAME> variable."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class ServeSettings:
    artifact: str = field(
        metadata={"help": "The trained model binary to serve (a GPPI .zip or folder)."}
    )
    host: str = _setting("127.0.0.1", "Address to bind; 0.0.0.0 only inside a container.")
    port: int = _setting(5000, "Port to bind (0 picks a free one and logs it).")
    # Workers of one server share one socket; this lets a second *server* bind the same port
    # beside a running one (a zero-downtime replacement), the kernel spreading connections.
    reuse_port: bool = _setting(
        False, "Set SO_REUSEPORT, so another server can listen on the same port beside this one."
    )
    # Worker processes. One saturates a core with batching; add one per extra core.
    workers: int = _setting(1, "Worker processes sharing the port.")
    # Rows merged into one predict() call at most. Large, because a model's fixed cost per
    # call dominates and a request bigger than this still goes alone rather than being split.
    max_batch_rows: int = _setting(4096, "Most rows merged into one predict() call.")
    # Requests that arrive while the model is busy join the next call anyway (adaptive
    # batching), and an idle server never waits. Under load, a call may wait up to this long
    # (and at most half the last call's time) for the clients it just answered to send their
    # next requests, so all clients share one call instead of alternating in two half-size
    # batches. Measured with the native front end (rf, 1 row): 64 conns 5,000 -> 7,600-12,400
    # req/s, 16 conns 2,600 -> 4,100; 0 turns it off.
    max_batch_wait_ms: float = _setting(
        2.0, "Extra wait for a batch to fill; 0 never delays an idle server."
    )
    max_body_bytes: int = _setting(16 * 1024 * 1024, "Larger request bodies get 413.")
    # A client must deliver its whole body within this time (slow-body clients hold a slot).
    body_timeout_s: float = _setting(30.0, "A body not received within this time gets 408.")
    # The request line and headers together: a client trickling header bytes (slowloris)
    # must not hold a connection forever.
    header_timeout_s: float = _setting(
        10.0, "Request line and headers not received within this time: 408 and close."
    )
    keep_alive_s: float = _setting(30.0, "An idle kept-alive connection closes after this.")
    # Each connection costs a file descriptor and a little memory; past this many a worker
    # stops accepting until some close (the kernel's backlog holds the rest). Both front ends.
    max_connections: int = _setting(
        4096, "Open connections per worker at most; more wait in the listen backlog."
    )
    # SIGTERM waits this long for in-flight requests before closing connections.
    drain_timeout_s: float = _setting(
        30.0, "On SIGTERM, how long in-flight requests may take to finish."
    )
    # A request that arrives while the model is still loading waits this long for it.
    load_wait_s: float = _setting(120.0, "A request during model loading waits this long (503).")
    log_requests: bool = _setting(
        False,
        "Store each prediction's request and response, and accept feedback, in --feedback-db."
        " Without it nothing is written.",
    )
    feedback_db: str = _setting(
        DEFAULT_FEEDBACK_DB,
        "sqlite file for logged predictions and feedback (with --log-requests only).",
        aliases=("LEGION_FEEDBACK_DB",),
        path=True,
    )
    log_level: str = _setting("info", "Server log level.", choices=LOG_LEVELS)
    # HTTP front end: "native" (asyncio.Protocol + httptools on uvloop, no ASGI layer; about
    # twice the requests/s at 1 row) or "uvicorn" (the same routes as an ASGI app).
    http: str = _setting(
        "native",
        "HTTP front end: native (httptools on uvloop) or uvicorn (ASGI).",
        choices=HTTP_FRONTS,
    )
    # Set by the supervisor when several workers share the port, so /metrics adds them up.
    metrics_dir: str | None = field(default=None, metadata={"internal": True})

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
        if self.max_connections < 1:
            problems.append(f"max connections must be at least 1, got {self.max_connections}")
        if self.http not in HTTP_FRONTS:
            problems.append(f"http must be one of {', '.join(HTTP_FRONTS)}, got {self.http!r}")
        for name in (
            "body_timeout_s",
            "header_timeout_s",
            "keep_alive_s",
            "drain_timeout_s",
            "load_wait_s",
        ):
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


@dataclass(frozen=True)
class Setting:
    """One user-facing setting as the CLI and the renderers see it."""

    name: str  # the dataclass field
    env: str  # LEGION_SERVE_<NAME>
    default: Any  # None: required (the artifact)
    type: type
    help: str
    choices: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()
    path: bool = False

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def settings() -> list[Setting]:
    """Every user-facing serve setting, in declaration order."""
    out = []
    for f in fields(ServeSettings):
        if f.metadata.get("internal"):
            continue
        type_name = str(f.type).split("|")[0].strip()
        out.append(
            Setting(
                name=f.name,
                env=ENV_PREFIX + f.name.upper(),
                default=None if f.default is MISSING else f.default,
                type=_TYPES.get(type_name, str),
                help=f.metadata["help"],
                choices=f.metadata.get("choices"),
                aliases=tuple(f.metadata.get("aliases", ())),
                path=bool(f.metadata.get("path")),
            )
        )
    return out


def serve_env_vars() -> list[tuple[str, str, str]]:
    """(environment variable, default as the variable would spell it, help) for each setting:
    what a Dockerfile or a Kubernetes manifest may set for `legion-ci serve`. The artifact's
    default is "" (it has none)."""
    return [(s.env, env_value(s.default), s.help) for s in settings()]


def env_value(value: Any) -> str:
    """A setting's value as its environment variable spells it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
