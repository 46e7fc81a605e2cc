"""The embedded MLflow tracking store (sqlite in the workspace), created atomically.

MLflow creates a sqlite store by running its schema migrations in place; a process killed
half-way leaves a store every later run fails on ("table _alembic_tmp_experiments already
exists"). So legion-ci makes the store itself, once, under a lock: migrated in a temporary
file beside it and renamed into place only when complete. A store is either absent or whole.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from legion_ci.errors import StageError
from legion_ci.processes import StageLog


def sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a `sqlite:///...` tracking URI, else None."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def ensure_store(db: Path, log: StageLog) -> None:
    if db.is_file() and db.stat().st_size > 0:
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / f".{db.name}.lock", "a+") as lock:
        # Two runs starting together in one workspace: one makes the store, the other waits.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if db.is_file() and db.stat().st_size > 0:
            return
        for stale in db.parent.glob(f".{db.name}.*.tmp"):
            stale.unlink(missing_ok=True)  # left by a process killed while making it
        tmp = db.parent / f".{db.name}.{os.getpid()}.tmp"
        started = time.monotonic()
        log.line(f"creating the embedded MLflow tracking store {db}")
        try:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            store = SqlAlchemyStore(f"sqlite:///{tmp}", (db.parent / "mlartifacts").as_uri())
            store.engine.dispose()
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, db)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise StageError(f"cannot create the MLflow tracking store {db}: {exc}") from None
        log.line(f"tracking store ready in {time.monotonic() - started:.1f}s")
