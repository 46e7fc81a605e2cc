"""Secrets in the forms that slipped past redaction (issue 21): a multi-line `${file:}` secret
streamed line by line, a `${file:}` hyper-parameter nested twice in the echoed `bash -c` line,
a short secret that is also the model's name, and the embedded MLflow store that holds every
secret the training logged."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from conftest import copy_wine_project, run_cli


def test_embedded_store_is_owner_only_even_when_made_wider(tmp_path: Path) -> None:
    from legion_ci.runner.embedded_store import ensure_store
    from legion_ci.runner.process import StageLog

    pipeline = copy_wine_project(tmp_path)
    workspace = pipeline.parent / ".legion"
    workspace.mkdir(mode=0o755)
    os.chmod(workspace, 0o755)
    db = workspace / "mlflow.db"
    log = StageLog(tmp_path / "store.log")
    ensure_store(db, log)  # as an older legion-ci made it: following the umask
    log.close()
    os.chmod(db, 0o644)
    run_cli("stage", "train", str(pipeline), cwd=tmp_path).assert_success()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700
    for journal in workspace.glob("mlflow.db-*"):
        assert stat.S_IMODE(journal.stat().st_mode) & 0o077 == 0, journal
