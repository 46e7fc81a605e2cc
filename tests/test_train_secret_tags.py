"""A secret the training script logs as an MLflow tag does not stay raw in the embedded
tracking store: the tag is overwritten with *** (and the file compacted); a secret param,
which MLflow cannot change, is named in the stage log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow_support import PYFUNC_MLPROJECT, PYFUNC_TRAIN, make_ctx, write_project

from legion_ci.integrations.mlflow_trainer import MlflowTrainer

TAG_SECRET = "tag-s3cret-7f3a9c"
PARAM_SECRET = "param-s3cret-2b8e4d"
LEAKY_TRAIN = PYFUNC_TRAIN.replace(
    '    mlflow.set_tag("trained_by", "pyfunc-test")\n',
    '    mlflow.set_tag("trained_by", "pyfunc-test")\n'
    '    mlflow.set_tag("leaked", "token=" + os.environ["LEAKED_TAG"])\n'
    '    mlflow.log_param("leaked_param", os.environ["LEAKED_PARAM"])\n',
)


def test_a_secret_tag_is_overwritten_in_the_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LEAKY_TRAIN != PYFUNC_TRAIN
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = write_project(
        tmp_path / "project", {"MLproject": PYFUNC_MLPROJECT, "train.py": LEAKY_TRAIN}
    )
    ctx = make_ctx(
        tmp_path,
        project,
        env={"LEAKED_TAG": TAG_SECRET, "LEAKED_PARAM": PARAM_SECRET},
        secrets=(TAG_SECRET, PARAM_SECRET),
    )
    result = MlflowTrainer().train(ctx)
    ctx.log.close()
    assert result.tags["leaked"] == "token=***"

    store = tmp_path / "mlflow.db"
    with sqlite3.connect(store) as db:
        tags = dict(db.execute("SELECT key, value FROM tags").fetchall())
        params = dict(db.execute("SELECT key, value FROM params").fetchall())
    assert tags["leaked"] == "token=***"
    assert tags["trained_by"] == "pyfunc-test"  # tags without a secret are left alone
    # Nor in the file's free pages: the old value is gone from the bytes.
    assert TAG_SECRET.encode() not in store.read_bytes()
    # MLflow params cannot be changed: still there, and the stage log says which one.
    assert params["leaked_param"] == PARAM_SECRET
    log = (tmp_path / "stage" / "train.log").read_text()
    assert "param 'leaked_param'" in log and "cannot change a logged param" in log
    assert "tags 'leaked' held a secret: overwritten with *** in" in log
    assert TAG_SECRET not in log and PARAM_SECRET not in log
