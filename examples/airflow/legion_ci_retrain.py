"""Retrain weekly with legion-ci; package and deploy only when the quality gates pass.

The train task runs `legion-ci stage train`: training, the self-check and the gates against
the pipeline's baseline. A failing gate makes legion-ci exit 1, so the train task fails and
package and deploy (trigger rule all_success) end up `upstream_failed`: nothing is shipped.
Package and deploy continue the same legion-ci run, whose id they pull from the train
task's XCom. One task per stage the pipeline declares, in legion-ci's order.

Settings (environment of the scheduler and workers):
  LEGION_CI_PIPELINE     the pipeline file (default: this repository's pipelines/wine.yaml)
  LEGION_CI_EXECUTABLE   the legion-ci to run, e.g. /opt/legion-ci/.venv/bin/legion-ci
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from legion_ci.airflow import (
    LegionDeployOperator,
    LegionPackageOperator,
    LegionTrainOperator,
    pipeline_stages,
    run_id_of,
)

PIPELINE = os.environ.get("LEGION_CI_PIPELINE") or str(
    Path(__file__).resolve().parents[2] / "pipelines" / "wine.yaml"
)
STAGES = pipeline_stages(PIPELINE)

with DAG(
    dag_id="legion_ci_retrain",
    description="Weekly retraining through legion-ci: train and gate, then package and deploy",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0, "execution_timeout": timedelta(hours=2)},
    tags=["legion-ci", "ml"],
):
    train = LegionTrainOperator(task_id="train", pipeline=PIPELINE)
    last = train
    if "package" in STAGES:
        package = LegionPackageOperator(
            task_id="package", pipeline=PIPELINE, run_id=run_id_of("train")
        )
        last = last >> package
    if "deploy" in STAGES:
        deploy = LegionDeployOperator(
            task_id="deploy", pipeline=PIPELINE, run_id=run_id_of("train")
        )
        last = last >> deploy
