"""Secrets a training script logged to MLflow, after its run.

Everything legion-ci writes passes the redactor, but a tag or param the script logged sits in
the tracking store as the script wrote it. In a sqlite store (the embedded
`.legion/mlflow.db`, a file legion-ci owns) a tag holding a secret is overwritten with its
redacted value and the file is compacted, so the old bytes do not linger in free pages. MLflow
params cannot be changed once logged: the stage log names them. A remote tracking server is
left as it is (it is not legion-ci's to rewrite); the stage log names what it keeps.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from legion_ci.processes import StageLog


def _sqlite_file(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or tracking_uri.endswith(":memory:"):
        return None
    return Path(tracking_uri[len(prefix) :])


def scrub_run(client: Any, tracking_uri: str, run_id: str, log: StageLog) -> None:
    """Overwrite the run's secret-holding tags in a sqlite store; name secret params (and,
    on a remote server, secret tags) in the stage log. Never raises: it runs after the
    training, whether that succeeded or not, and must not hide the training's own error."""
    try:
        data = client.get_run(run_id).data
    except Exception as exc:  # the training may have failed before its run was readable
        log.line(f"mlflow: run {run_id} not checked for logged secrets: {type(exc).__name__}")
        return
    redact = log.redact
    store = _sqlite_file(tracking_uri)
    overwritten = []
    for key, value in sorted(data.tags.items()):
        masked = redact(value)
        if masked == value:
            continue
        if store is None:
            log.line(
                f"mlflow: tag {key!r} of run {run_id} holds a secret; the tracking server keeps"
                " it as logged (legion-ci rewrites only its own sqlite store)"
            )
            continue
        try:
            client.set_tag(run_id, key, masked)
            overwritten.append(key)
        except Exception as exc:
            log.line(f"mlflow: tag {key!r} holds a secret and could not be overwritten: {exc}")
    for key, value in sorted(data.params.items()):
        if redact(value) != value:
            log.line(
                f"mlflow: param {key!r} of run {run_id} holds a secret; MLflow cannot change a"
                " logged param, so the tracking store keeps it (delete the run to remove it)"
            )
    if overwritten:
        log.line(
            f"mlflow: tags {', '.join(map(repr, overwritten))} held a secret: overwritten with"
            f" *** in {store}"
        )
        _compact(store, log)


def _compact(store: Path, log: StageLog) -> None:
    """VACUUM, so an overwritten value does not survive in the file's free space. A store
    another run is writing right now stays as it is (said in the log), never a failure."""
    try:
        connection = sqlite3.connect(store, timeout=10)
        try:
            connection.execute("VACUUM")
        finally:
            connection.close()
    except sqlite3.Error as exc:
        log.line(f"mlflow: {store} not compacted ({exc}): old tag values may remain in it")
