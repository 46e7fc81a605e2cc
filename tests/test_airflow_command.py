"""The Airflow operators' Airflow-free half (legion_ci.airflow.command, .stages), fed with
what the real legion-ci prints; runs in .venv, where Airflow is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SH_PIPELINE, run_cli, write
from procs import wait_for, wait_gone

from legion_ci.airflow import command
from legion_ci.airflow.stages import pipeline_stages

LEGION_CI = str(Path(sys.executable).parent / "legion-ci")
# The shell trainer and packager, a gate on rmse: train -> package (test_airflow.py's too).
PACKAGED = (
    SH_PIPELINE.replace(
        "integrations: [integrations/registration.yaml]",
        "integrations: [integrations/registration.yaml, packagers/registration.yaml]",
    )
    + """
    gates:
      rmse: {max: 0.8}
  package:
    integration: sh-packager
"""
)


def test_importing_legion_ci_and_the_helpers_imports_no_airflow() -> None:
    code = (
        "import sys, legion_ci, legion_ci.cli.main, legion_ci.airflow,"
        " legion_ci.airflow.command, legion_ci.airflow.stages;"
        " print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.strip() == "[]"


def test_argv_is_a_list_with_json_output() -> None:
    assert command.build_argv("legion-ci", "p.yaml") == [
        "legion-ci",
        "run",
        "p.yaml",
        "--output",
        "json",
    ]
    assert command.build_argv("/x/legion-ci", "p.yaml", "package", "20261126-1") == [
        "/x/legion-ci",
        "stage",
        "package",
        "p.yaml",
        "--output",
        "json",
        "--run-id",
        "20261126-1",
    ]
    with pytest.raises(command.LegionCIError, match="needs a stage"):
        command.build_argv("legion-ci", "p.yaml", None, "20261126-1")


def test_executable_explicit_then_env_then_beside_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(command.EXECUTABLE_ENV, "/from/env/legion-ci")
    assert command.find_executable("/explicit/legion-ci") == "/explicit/legion-ci"
    assert command.find_executable() == "/from/env/legion-ci"
    monkeypatch.delenv(command.EXECUTABLE_ENV)
    assert command.find_executable() == LEGION_CI  # .venv/bin/legion-ci, beside pytest's python


def test_child_environment_drops_airflow_settings_and_secrets() -> None:
    base = {
        "PATH": "/usr/bin",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://u:pw@db/airflow",
        "AIRFLOW_CONN_TRACKER": '{"password": "pw"}',
        "AIRFLOW_VAR_TOKEN": "t",
        "AIRFLOW_HOME": "/opt/airflow",
    }
    env = command.child_environment(base, {"A": "1"}, None, {"A": "2", "SECRET": "s"})
    assert env == {"PATH": "/usr/bin", "AIRFLOW_HOME": "/opt/airflow", "A": "2", "SECRET": "s"}
    with pytest.raises(command.LegionCIError, match="PORT: value must be a string"):
        command.child_environment({}, {"PORT": 5000})  # type: ignore[dict-item]


def test_json_on_stdout_stage_log_on_stderr_and_xcom_values(sh_project: Path) -> None:
    pipeline = write(sh_project / "pipeline.yaml", PACKAGED)
    outcome = run_cli("run", str(pipeline), "--output", "json").assert_success()
    assert "sh-trainer: done" in outcome.err  # echoed even with --output json
    result = command.parse_result(outcome.out)
    assert result is not None and result["status"] == "succeeded"
    values = command.xcom_values(result)
    record = json.loads(Path(result["record"]).read_text())
    assert values["run_id"] == record["id"]
    assert values["artifact"] == record["stages"]["train"]["outputs"]["artifact"]
    assert values["image"] == "127.0.0.1:5000/linear:1.0"
    assert values["digest"] == record["stages"]["package"]["outputs"]["digest"]
    assert values["metrics"] == {"rmse": 0.5, "r2": 0.9}


def test_failure_messages_are_one_line(sh_project: Path, tmp_path: Path) -> None:
    pipeline = write(sh_project / "pipeline.yaml", PACKAGED)
    gate = run_cli("stage", "train", str(pipeline), "-o", "json", env={"FAKE_TRAINER_RMSE": "0.9"})
    gate.assert_failed(1)
    result = command.parse_result(gate.out)
    message = command.failure_message(1, result, gate.err.splitlines(), "legion-ci stage train")
    assert message == (
        f"legion-ci run {result['run_id']}: stage train failed:"
        " quality gate failed: rmse = 0.9 > max 0.8"
    )
    # Invalid input (exit 2): the message comes from the JSON document's error, located,
    # with no stderr to read at all.
    invalid = write(tmp_path / "invalid.yaml", SH_PIPELINE)
    bad = run_cli("stage", "train", str(invalid), "-o", "json").assert_failed(2)
    document = command.parse_result(bad.out)
    assert document is not None and document["run_id"] is None
    assert document["error"]["kind"] == "invalid-input"
    located = [
        (p["file"], p["line"], p["column"], p["field"]) for p in document["error"]["problems"]
    ]
    assert located == [
        (str(invalid), 3, 16, "integrations[0]"),
        (str(invalid), 9, 16, "stages.train.toolchain"),
    ]
    message = command.failure_message(2, document, [], "legion-ci stage train")
    assert "\n" not in message
    assert message.startswith(
        f"legion-ci stage train exited with code 2: invalid-input: {invalid}:"
        f" validation failed: 2 errors: {invalid}:3:16: integrations[0]: no such registration file"
    )
    missing = run_cli("stage", "package", str(pipeline), "--run-id", "nope", "-o", "json")
    missing.assert_failed(2)
    message = command.failure_message(2, command.parse_result(missing.out), [], "x")
    assert message.startswith("x exited with code 2: invalid-input: ")
    assert "nope" in message


def test_a_legion_ci_that_cannot_start_its_python_says_why(tmp_path: Path) -> None:
    # What a worker gets from `pip install --no-deps legion-ci` beside Airflow when it runs
    # that env's legion-ci script: a traceback; the task fails with its last line.
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).parent.parent)}
    argv = [str(venv / "bin" / "python"), "-m", "legion_ci.cli.main", "run", "x.yaml"]
    lines: list[str] = []
    process = command.LegionProcess(argv, env=env, on_line=lines.append)
    code, out = process.wait()
    assert code == 1 and command.parse_result(out) is None
    assert command.failure_message(code, None, lines, "legion-ci run") == (
        "legion-ci run exited with code 1: ModuleNotFoundError: No module named 'click'"
    )
    with pytest.raises(command.LegionCIError, match="cannot start '/nonexistent/legion-ci'"):
        command.LegionProcess(["/nonexistent/legion-ci"], env=env)


def test_stop_cancels_the_stage_and_its_trainer(sh_project: Path) -> None:
    pipeline = write(sh_project / "pipeline.yaml", PACKAGED)
    pidfile = sh_project / "trainer.pid"
    env = {**os.environ, "FAKE_TRAINER_SLEEP": "600", "FAKE_TRAINER_PIDFILE": str(pidfile)}
    lines: list[str] = []
    process = command.LegionProcess(
        command.build_argv(LEGION_CI, str(pipeline), "train"), env=env, on_line=lines.append
    )
    try:
        wait_for(lambda: pidfile.is_file() and pidfile.read_text().strip() != "", 60, "trainer")
        trainer = int(pidfile.read_text())
        process.stop(grace=30)
    finally:
        process.stop(grace=0)
    code, out = process.wait()
    assert code == 130  # legion-ci handled the SIGTERM (a SIGKILL would read -9)
    result = command.parse_result(out)
    assert result is not None and result["stages"]["train"]["status"] == "cancelled"
    assert result["error"]["kind"] == "interrupted"  # the document on exit 130 too
    assert any("sh-trainer: sleeping 600s" in line for line in lines)  # streamed live
    wait_gone(trainer, 30, "the trainer")
    assert command.failure_message(code, result, lines, "x").startswith(
        f"legion-ci run {result['run_id']}: stage train cancelled: "
    )


def test_pipeline_stages_in_run_order(tmp_path: Path) -> None:
    pipeline = write(
        tmp_path / "p.yaml",
        "stages:\n  package: {integration: x}\n  train: {toolchain: y}\n",
    )
    assert pipeline_stages(pipeline) == ["train", "package"]
    with pytest.raises(ValueError, match="declares no stages"):
        pipeline_stages(write(tmp_path / "empty.yaml", "model: {name: x}\n"))
    with pytest.raises(ValueError, match="cannot read the pipeline"):
        pipeline_stages(tmp_path / "missing.yaml")
