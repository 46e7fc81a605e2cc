"""The Airflow operators on a real Apache Airflow (its own venv, sqlite metadata database):
the example DAG parsed by DagBag and run with `dag.test()`, each task running the real
legion-ci from .venv. Asserted: task states, XCom values, the run record on disk."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow_support import migrate, new_home, run_driver, start_driver
from conftest import SH_PIPELINE, copy_wine_project, run_cli, write
from procs import wait_for, wait_gone
from test_airflow_command import PACKAGED
from test_deploy_stage import invoke

from legion_ci.gppi.archive import sha256_file


@pytest.fixture(scope="session")
def airflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-template")
    migrate(home)
    return home


@pytest.fixture
def airflow_home(airflow_template: Path, tmp_path: Path) -> Path:
    return new_home(airflow_template, tmp_path / "airflow")


@pytest.fixture
def packaged(sh_project: Path) -> Path:
    """The shell trainer and packager, a gate on rmse: train -> package."""
    return write(sh_project / "pipeline.yaml", PACKAGED)


def record_of(run_id: str, workspace: Path) -> dict:
    return json.loads((workspace / "runs" / run_id / "record.json").read_text())


def test_example_dag_parses_and_follows_the_pipeline(airflow_home: Path, packaged: Path) -> None:
    seen = run_driver(airflow_home, "parse", env={"LEGION_CI_PIPELINE": str(packaged)}).seen
    assert seen["import_errors"] == {}
    dag = seen["dags"]["legion_ci_retrain"]
    assert dag["schedule"] == "@weekly"
    assert dag["tasks"]["train"] == {
        "type": "LegionTrainOperator",
        "upstream": [],
        "trigger_rule": "TriggerRule.ALL_SUCCESS",
        "stage": "train",
    }
    assert dag["tasks"]["package"]["type"] == "LegionPackageOperator"
    assert dag["tasks"]["package"]["upstream"] == ["train"]
    assert "deploy" not in dag["tasks"]  # the pipeline has no deploy stage
    # Without LEGION_CI_PIPELINE the DAG runs the repository's wine pipeline: train only.
    default = run_driver(airflow_home, "parse").seen
    assert default["import_errors"] == {}
    assert list(default["dags"]["legion_ci_retrain"]["tasks"]) == ["train"]


def test_wine_pipeline_trains_through_airflow(airflow_home: Path, tmp_path: Path) -> None:
    pipeline = copy_wine_project(tmp_path / "repo")
    outcome = run_driver(airflow_home, "test", env={"LEGION_CI_PIPELINE": str(pipeline)})
    assert outcome.seen["states"] == {"train": "success"}, outcome.log[-5000:]
    assert outcome.seen["dag_run_state"] == "success"
    run_id = outcome.xcom("train", "run_id")
    record = record_of(run_id, pipeline.parent / ".legion")
    train = record["stages"]["train"]
    assert record["status"] == "succeeded" and train["status"] == "succeeded"
    assert outcome.xcom("train", "status") == "succeeded"
    artifact = Path(outcome.xcom("train", "artifact"))
    assert artifact == Path(train["outputs"]["artifact"]) and artifact.name == "wine-1.0.zip"
    assert outcome.xcom("train", "artifact_sha256") == sha256_file(artifact)
    assert outcome.xcom("train", "metrics") == train["metrics"]
    assert set(train["metrics"]) >= {"rmse", "r2"}
    assert outcome.xcom("train", "return_value")["run_id"] == run_id
    # The stage log streamed into the task log, line by line.
    assert "self-check passed" in outcome.log
    assert "gate ok" in outcome.log


def test_package_continues_the_run_from_xcom(airflow_home: Path, packaged: Path) -> None:
    outcome = run_driver(airflow_home, "test", env={"LEGION_CI_PIPELINE": str(packaged)})
    assert outcome.seen["states"] == {"train": "success", "package": "success"}, outcome.log[-5000:]
    run_id = outcome.xcom("train", "run_id")
    assert outcome.xcom("package", "run_id") == run_id  # one legion-ci run, two tasks
    record = record_of(run_id, packaged.parent / ".legion")
    assert record["status"] == "succeeded"
    package = record["stages"]["package"]["outputs"]
    assert outcome.xcom("package", "image") == package["image"] == "127.0.0.1:5000/linear:1.0"
    assert outcome.xcom("package", "digest") == package["digest"]
    assert package["digest"].startswith("sha256:")
    assert outcome.xcom("train", "metrics") == {"rmse": 0.5, "r2": 0.9}
    assert f"stage package {packaged} --output json --run-id {run_id}" in outcome.log
    assert "sh-packager: packing" in outcome.log


def test_failing_gate_fails_train_and_skips_package(airflow_home: Path, packaged: Path) -> None:
    env = {"LEGION_CI_PIPELINE": str(packaged), "FAKE_TRAINER_RMSE": "0.9"}
    outcome = run_driver(airflow_home, "test", env=env)
    assert outcome.seen["states"] == {"train": "failed", "package": "upstream_failed"}
    assert outcome.seen["dag_run_state"] == "failed"
    # The task fails with the stage's one-line error; the failed run still hands its id on.
    assert "stage train failed: quality gate failed: rmse = 0.9 > max 0.8" in outcome.log
    run_id = outcome.xcom("train", "run_id")
    assert outcome.xcom("train", "status") == "failed"
    assert "package" not in outcome.seen["xcoms"]
    record = record_of(run_id, packaged.parent / ".legion")
    assert record["stages"]["train"]["status"] == "failed"
    assert record["stages"]["package"]["status"] == "pending"
    assert not list((packaged.parent / ".legion").rglob("*.zip"))


def test_killing_the_task_cancels_the_stage(airflow_home: Path, packaged: Path) -> None:
    pidfile = packaged.parent / "trainer.pid"
    env = {
        "LEGION_CI_PIPELINE": str(packaged),
        "FAKE_TRAINER_SLEEP": "600",
        "FAKE_TRAINER_PIDFILE": str(pidfile),
    }
    with start_driver(airflow_home, "test", env=env) as driver:
        wait_for(
            lambda: pidfile.is_file() and pidfile.read_text().strip() != "",
            240,
            "the trainer under Airflow",
            alive=driver.exited,
        )
        trainer = int(pidfile.read_text())
        # What Airflow's supervisor does to a task it kills: SIGTERM to the task process,
        # whose handler calls the operator's on_kill().
        os.kill(driver.pid, signal.SIGTERM)
        outcome = driver.finish()
    assert outcome.seen["states"] == {"train": "failed", "package": "upstream_failed"}, outcome.log[
        -5000:
    ]
    assert "stopping legion-ci" in outcome.log
    run_id = outcome.xcom("train", "run_id")
    record = record_of(run_id, packaged.parent / ".legion")
    assert record["stages"]["train"]["status"] == "cancelled"
    assert "stage train cancelled" in outcome.log
    wait_gone(trainer, 30, "the trainer")


CREDENTIALS_DAG = """
from datetime import datetime

from airflow.sdk import DAG

from legion_ci.airflow import LegionCIOperator

with DAG("legion_ci_credentials", schedule=None, start_date=datetime(2026, 1, 1)):
    LegionCIOperator(
        task_id="whole",
        pipeline={pipeline!r},
        connections={{"legion_tracker": {{"LEGION_TEST_TRACKING_PASSWORD": "password"}}}},
        env={{"FAKE_TRAINER_LEAK": "1"}},
    )
    LegionCIOperator(task_id="invalid", pipeline={invalid!r}, stage="train")
"""


def test_whole_run_with_credentials_from_a_connection(
    airflow_home: Path, packaged: Path, tmp_path: Path
) -> None:
    text = PACKAGED + textwrap.dedent(
        """
        connections:
          tracker:
            type: mlflow
            uri: http://127.0.0.1:1
            username: ci
            password: ${env:LEGION_TEST_TRACKING_PASSWORD}
        """
    )
    pipeline = write(packaged, text.replace("    gates:", "    tracking: tracker\n    gates:"))
    invalid = write(tmp_path / "invalid" / "pipeline.yaml", SH_PIPELINE)  # no registration
    dags = write(
        tmp_path / "dags" / "credentials.py",
        CREDENTIALS_DAG.format(pipeline=str(pipeline), invalid=str(invalid)),
    ).parent
    secret = "s3cr3t-from-airflow-41"
    conn = {"conn_type": "http", "login": "ci", "password": secret}
    env = {"AIRFLOW_CONN_LEGION_TRACKER": json.dumps(conn)}
    outcome = run_driver(airflow_home, "test", dags=dags, dag_id="legion_ci_credentials", env=env)
    assert outcome.seen["states"] == {"whole": "success", "invalid": "failed"}, outcome.log[-5000:]
    # `legion-ci run`: both stages in one task, every output in XCom.
    assert outcome.xcom("whole", "image") == "127.0.0.1:5000/linear:1.0"
    assert outcome.xcom("whole", "artifact").endswith("linear-1.0.zip")
    assert outcome.xcom("whole", "status") == "succeeded"
    # The password reached the trainer (which prints it, masked) and nothing else.
    assert "password=***" in outcome.log
    assert secret not in outcome.log
    assert secret not in json.dumps(outcome.seen)
    for path in (pipeline.parent / ".legion").rglob("*"):
        if path.is_file() and path.suffix in (".log", ".json", ".xml", ".md", ".html"):
            assert secret not in path.read_text(errors="replace"), path
    # Invalid input: the task fails with legion-ci's one-line validation error.
    # Invalid input (exit 2): the task fails with the located error of legion-ci's JSON
    # document (this whole line is in no stderr line: the operator read it from stdout).
    assert (
        f"legion-ci stage train exited with code 2: invalid-input: {invalid}: validation failed:"
        f" 2 errors: {invalid}:3:16: integrations[0]: no such registration file:"
        " integrations/registration.yaml"
    ) in outcome.log


@pytest.fixture
def deployed(sh_project: Path) -> Iterator[Path]:
    """train -> package -> deploy with the `process` target; its server stopped after."""
    pipeline = write(sh_project / "pipeline.yaml", PACKAGED + "  deploy:\n    target: process\n")
    try:
        yield pipeline
    finally:
        run_cli("deployments", "delete", "linear", "--file", str(pipeline), "--drain-timeout", "5")


def test_example_dag_deploys_and_hands_on_the_url(airflow_home: Path, deployed: Path) -> None:
    outcome = run_driver(airflow_home, "test", env={"LEGION_CI_PIPELINE": str(deployed)})
    assert outcome.seen["states"] == {
        "train": "success",
        "package": "success",
        "deploy": "success",
    }, outcome.log[-5000:]
    assert outcome.seen["dag_run_state"] == "success"
    run_id = outcome.xcom("train", "run_id")
    assert outcome.xcom("deploy", "run_id") == run_id  # deploy continued train's run
    record = record_of(run_id, deployed.parent / ".legion")
    assert record["status"] == "succeeded"
    url = outcome.xcom("deploy", "url")
    assert url == record["stages"]["deploy"]["outputs"]["url"]
    assert url.startswith("http://127.0.0.1:")
    returned = outcome.xcom("deploy", "return_value")  # legion-ci's result JSON
    assert returned["stages"]["deploy"]["outputs"]["url"] == url
    assert outcome.xcom("deploy", "status") == "succeeded"
    assert f"stage deploy {deployed} --output json --run-id {run_id}" in outcome.log
    assert invoke(url, 1, 2) == [[4]]  # y = 2a + b, the shell trainer's model
