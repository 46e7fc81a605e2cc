"""What a trainer needs is declared by its class, not guessed from its registered name.

The built-in MLflow trainer registered under another name (from a registration file the
pipeline lists) still gets its sqlite tracking store made and its self-check warmed. Before,
the train stage tested `registration.name == "mlflow"`, so a renamed registration got
neither."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import copy_wine_project, write

from legion_ci.errors import StageError
from legion_ci.integrations.mlflow_trainer import MlflowTrainer
from legion_ci.runner.stages import train


@pytest.fixture
def renamed_mlflow(tmp_path: Path) -> Path:
    """The wine pipeline with the built-in MLflow class registered as `house-mlflow`."""
    pipeline = copy_wine_project(tmp_path)
    write(
        pipeline.parent / "house-mlflow.yaml",
        """
        apiVersion: legion-ci/v1
        kind: ToolchainIntegration
        name: house-mlflow
        python: legion_ci.integrations.mlflow_trainer:MlflowTrainer
        arguments: {type: object}
        """,
    )
    text = pipeline.read_text()
    text = text.replace("kind: Pipeline\n", "kind: Pipeline\nintegrations: [house-mlflow.yaml]\n")
    text = text.replace("toolchain: mlflow\n", "toolchain: house-mlflow\n")
    text = text.replace("    arguments:\n      envManager: local\n", "")
    pipeline.write_text(text)
    return pipeline


def test_a_renamed_mlflow_registration_gets_its_store_and_a_warm_self_check(
    renamed_mlflow: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from legion_ci.api import run_pipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the sqlite default, please
    seen: dict[str, Any] = {"stores": [], "warm": []}
    original = train.SelfCheck.__init__

    def self_check(self: train.SelfCheck, warm: bool) -> None:
        seen["warm"].append(warm)
        original(self, warm=False)  # the record is the point; no interpreter needed

    def stop(self: MlflowTrainer, ctx: Any) -> Any:
        seen["toolchain"] = ctx.toolchain
        raise StageError("stop here: what was prepared before training is the point")

    monkeypatch.setattr(train.SelfCheck, "__init__", self_check)
    monkeypatch.setattr(train, "ensure_store", lambda path, log: seen["stores"].append(path))
    monkeypatch.setattr(MlflowTrainer, "train", stop)
    with pytest.raises(StageError):
        run_pipeline(renamed_mlflow, stage="train")
    assert seen["toolchain"] == "house-mlflow"
    assert seen["warm"] == [True]
    assert len(seen["stores"]) == 1
    assert str(seen["stores"][0]).endswith("mlflow.db")
