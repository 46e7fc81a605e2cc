"""The runner end to end through the real CLI, with out-of-process shell integrations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from conftest import LEGION_CI, SH_PIPELINE, run_cli, write
from procs import wait_gone

from legion_ci.gppi.archive import sha256_file

PACKAGED = (
    SH_PIPELINE.replace(
        "integrations: [integrations/registration.yaml]",
        "integrations: [integrations/registration.yaml, packagers/registration.yaml]",
    )
    + """
  package:
    integration: sh-packager
"""
)


def latest_record(project: Path) -> dict:
    workspace = project / ".legion"
    run_id = (workspace / "latest").read_text().strip()
    return json.loads((workspace / "runs" / run_id / "record.json").read_text())


def test_run_writes_record_artifact_and_reports(sh_pipeline: Path) -> None:
    project = sh_pipeline.parent
    outcome = run_cli("run", str(sh_pipeline)).assert_success()
    assert "sh-trainer: done" in outcome.err  # stage log echoed live
    record = latest_record(project)
    assert record["status"] == "succeeded"
    train = record["stages"]["train"]
    assert train["status"] == "succeeded"
    assert train["metrics"] == {"rmse": 0.5, "r2": 0.9}
    artifact = Path(train["outputs"]["artifact"])
    assert artifact.name == "linear-1.0.zip"
    assert sha256_file(artifact) == train["outputs"]["artifact_sha256"]
    with zipfile.ZipFile(artifact) as zf:
        assert "legion.project.yaml" in zf.namelist()
    assert train["outputs"]["input_columns"] == ["a", "b"]
    log = (project / ".legion" / "runs" / record["id"] / train["log"]).read_text()
    assert "self-check passed" in log
    reports = project / ".legion" / "reports"
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["id"] == record["id"]
    suite = ET.parse(reports / "junit.xml").getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["metric.rmse"] == "0.5"
    assert "| rmse | 0.5 |" in (reports / "summary.md").read_text()


def test_json_output_is_only_json(sh_pipeline: Path) -> None:
    outcome = run_cli("run", str(sh_pipeline), "--output", "json").assert_success()
    result = json.loads(outcome.out)
    assert result["status"] == "succeeded"
    assert result["stages"]["train"]["outputs"]["artifact"].endswith("linear-1.0.zip")


def test_stage_by_stage_chains_outputs(sh_project: Path) -> None:
    pipeline = write(sh_project / "pipeline.yaml", PACKAGED)
    early = run_cli("stage", "package", str(pipeline)).assert_failed(2)
    assert "no runs yet" in early.err
    run_cli("stage", "train", str(pipeline)).assert_success()
    first = latest_record(sh_project)
    assert first["status"] == "partial"
    assert first["stages"]["package"]["status"] == "pending"
    junit = ET.parse(sh_project / ".legion" / "reports" / "junit.xml").getroot()
    pending = next(case for case in junit.iter("testcase") if case.get("name") == "package")
    assert pending.find("skipped") is not None, "a stage not run yet must not read as passed"
    assert junit.get("skipped") == "1"
    outcome = run_cli("stage", "package", str(pipeline), "-o", "json").assert_success()
    result = json.loads(outcome.out)
    assert result["run_id"] == first["id"]
    package = latest_record(sh_project)["stages"]["package"]
    assert package["status"] == "succeeded"
    assert package["outputs"]["image"] == "127.0.0.1:5000/linear:1.0"
    assert package["outputs"]["digest"].startswith("sha256:")
    assert latest_record(sh_project)["status"] == "succeeded"
    assert not list(sh_project.rglob("packaging.json")), "credentials document left behind"


def test_later_stage_refuses_failed_earlier_stage(sh_project: Path) -> None:
    pipeline = write(sh_project / "pipeline.yaml", PACKAGED)
    run_cli("stage", "train", str(pipeline), env={"FAKE_TRAINER_FAIL": "3"}).assert_failed(1)
    outcome = run_cli("stage", "package", str(pipeline)).assert_failed(2)
    assert "stage package needs the outputs of train, which is failed" in outcome.err


def test_failed_training_reports_exit_code_and_log_tail(sh_pipeline: Path) -> None:
    outcome = run_cli("run", str(sh_pipeline), "-q", env={"FAKE_TRAINER_FAIL": "3"})
    outcome.assert_failed(1)
    assert "trainer 'sh-trainer' exited with code 3" in outcome.err
    assert "sh-trainer: log line 30" in outcome.err
    assert "sh-trainer: log line 5\n" not in outcome.err  # only the tail
    record = latest_record(sh_pipeline.parent)
    assert record["status"] == "failed"
    assert "exited with code 3" in record["stages"]["train"]["error"]
    assert not list((sh_pipeline.parent / ".legion").rglob("*.zip"))
    suite = ET.parse(sh_pipeline.parent / ".legion" / "reports" / "junit.xml").getroot()
    failure = suite.find("testcase/failure")
    assert failure is not None and "log line 30" in failure.text


def test_gate_failure(sh_project: Path) -> None:
    text = SH_PIPELINE + "    gates:\n      rmse: {max: 0.8}\n      r2: {min: 0.3}\n"
    pipeline = write(sh_project / "pipeline.yaml", text)
    outcome = run_cli("run", str(pipeline), "-q", env={"FAKE_TRAINER_RMSE": "0.91"})
    outcome.assert_failed(1)
    assert "quality gate failed: rmse = 0.91 > max 0.8" in outcome.err
    assert not list((sh_project / ".legion").rglob("*.zip"))
    gates = latest_record(sh_project)["stages"]["train"]["gates"]
    assert [g["ok"] for g in gates] == [False, True]


def test_gate_on_unlogged_metric(sh_project: Path) -> None:
    text = SH_PIPELINE + "    gates:\n      accuracy: {min: 0.9}\n"
    pipeline = write(sh_project / "pipeline.yaml", text)
    outcome = run_cli("run", str(pipeline), "-q").assert_failed(1)
    assert (
        "metric 'accuracy' named in a gate was never logged by the run; logged: r2, rmse"
        in outcome.err
    )


def test_baseline_file_gives_delta_column(sh_project: Path) -> None:
    write(sh_project / "baseline.json", '{"rmse": 0.75, "r2": 0.95}')
    text = SH_PIPELINE + "    baseline: baseline.json\n    gates:\n      rmse: {maxIncrease: 0}\n"
    pipeline = write(sh_project / "pipeline.yaml", text)
    run_cli("run", str(pipeline), "-q").assert_success()
    md = (sh_project / ".legion" / "reports" / "summary.md").read_text()
    assert "| metric | value | baseline (baseline.json) | delta |" in md
    assert "| rmse | 0.5 | 0.75 | -0.25 |" in md
    assert "| r2 | 0.9 | 0.95 | -0.05 |" in md


def test_baseline_from_previous_run(sh_project: Path) -> None:
    text = SH_PIPELINE + "    baseline: {run: latest}\n    gates:\n      rmse: {maxIncrease: 0.1}\n"
    pipeline = write(sh_project / "pipeline.yaml", text)
    # The first run has no baseline to compare with, so a relative gate cannot pass.
    first = run_cli("run", str(pipeline), "-q").assert_failed(1)
    assert "maxIncrease needs a baseline value" in first.err
    run_cli("run", str(pipeline), "-q", env={"FAKE_TRAINER_RMSE": "0.4"})
    # The failed first run is no baseline either; make a good one, then compare.
    run_cli("run", str(write(sh_project / "plain.yaml", SH_PIPELINE)), "-q").assert_success()
    outcome = run_cli("run", str(pipeline), "-q", env={"FAKE_TRAINER_RMSE": "0.7"})
    outcome.assert_failed(1)
    assert "rmse = 0.7, 0.2 over baseline 0.5 > maxIncrease 0.1" in outcome.err


def test_latest_baseline_is_the_same_models(sh_project: Path) -> None:
    """Two pipelines sharing a workspace: {run: latest} never picks the other model's run."""
    gated = (
        SH_PIPELINE + "    baseline: {run: latest}\n    gates:\n      rmse: {maxIncrease: 0.1}\n"
    )
    mine = write(sh_project / "mine.yaml", gated)
    other = write(sh_project / "other.yaml", SH_PIPELINE.replace("name: linear", "name: other"))
    run_cli("run", str(mine), "-q", env={"FAKE_TRAINER_RMSE": "0.3"})  # no baseline: fails
    run_cli("run", str(write(sh_project / "plain.yaml", SH_PIPELINE)), "-q").assert_success()
    # A newer run of another model with a far better rmse must not become the baseline.
    run_cli("run", str(other), "-q", env={"FAKE_TRAINER_RMSE": "0.01"}).assert_success()
    outcome = run_cli("run", str(mine), "-q", env={"FAKE_TRAINER_RMSE": "0.55"}).assert_success()
    record = latest_record(sh_project)
    assert record["model"]["name"] == "linear"
    baseline = record["stages"]["train"]["baseline"]
    assert baseline["metrics"]["rmse"] == 0.5, baseline
    listed = run_cli("runs", "list", str(mine), "-o", "json").assert_success()
    assert {r["model"]["name"] for r in json.loads(listed.out)} == {"linear"}
    both = run_cli("runs", "list", str(mine), "--all-models", "-o", "json").assert_success()
    assert {r["model"]["name"] for r in json.loads(both.out)} == {"linear", "other"}
    assert outcome.code == 0


def test_secrets_are_redacted_everywhere(sh_project: Path) -> None:
    text = (
        SH_PIPELINE
        + "    tracking: tracker\n"
        + """
connections:
  tracker:
    type: mlflow
    uri: http://127.0.0.1:1
    username: ci
    password: ${env:LEGION_TEST_TRACKING_PASSWORD}
"""
    )
    pipeline = write(sh_project / "pipeline.yaml", text)
    secret = "s3cr3t-value-42"
    env = {"LEGION_TEST_TRACKING_PASSWORD": secret, "FAKE_TRAINER_LEAK": "1"}
    outcome = run_cli("run", str(pipeline), env=env).assert_success()
    assert "password=***" in outcome.err
    dry = run_cli("run", str(pipeline), "--dry-run", env=env).assert_success()
    for path in (sh_project / ".legion").rglob("*"):
        if path.is_file() and path.suffix in (".log", ".json", ".xml", ".md", ".html"):
            assert secret not in path.read_text(errors="replace"), path
    assert secret not in outcome.out + outcome.err + dry.out + dry.err


def test_github_actions_outputs_and_summary(sh_pipeline: Path, tmp_path: Path) -> None:
    gh_output, gh_summary = tmp_path / "output", tmp_path / "summary"
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(gh_output),
        "GITHUB_STEP_SUMMARY": str(gh_summary),
    }
    run_cli("run", str(sh_pipeline), "-q", env=env).assert_success()
    text = gh_output.read_text()
    lines = text.splitlines()
    name, _, delimiter = lines[0].partition("<<")
    assert name == "run-id" and lines[2] == delimiter
    assert "artifact<<" in text and "linear-1.0.zip" in text
    metrics_block = text.split("metrics<<", 1)[1].splitlines()
    assert json.loads(metrics_block[1]) == {"r2": 0.9, "rmse": 0.5}
    assert "## legion-ci: linear 1.0 — succeeded" in gh_summary.read_text()
    failed = run_cli("run", str(sh_pipeline), "-q", env={**env, "FAKE_TRAINER_FAIL": "3"})
    failed.assert_failed(1)
    annotation = next(line for line in failed.err.splitlines() if line.startswith("::error"))
    assert annotation.startswith("::error title=legion-ci::trainer 'sh-trainer' exited with code 3")
    assert "%0A" in annotation  # the log tail stays inside one annotation


def test_ci_failure_prints_reproduce_command(sh_pipeline: Path) -> None:
    env = {"JENKINS_URL": "http://jenkins.invalid/", "FAKE_TRAINER_FAIL": "4"}
    outcome = run_cli("stage", "train", str(sh_pipeline), "-q", env=env).assert_failed(1)
    assert f"reproduce locally with: legion-ci stage train {sh_pipeline}" in outcome.err
    local = run_cli("stage", "train", str(sh_pipeline), "-q", env={"FAKE_TRAINER_FAIL": "4"})
    assert "reproduce locally" not in local.err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_cancels_stage_and_child(sh_pipeline: Path, tmp_path: Path, signum: int) -> None:
    pidfile = tmp_path / "trainer.pid"
    env = {**os.environ, "FAKE_TRAINER_SLEEP": "60", "FAKE_TRAINER_PIDFILE": str(pidfile)}
    proc = subprocess.Popen(
        [*LEGION_CI, "run", str(sh_pipeline), "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "trainer never started"
        time.sleep(0.05)
    trainer_pid = int(pidfile.read_text())
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    record = latest_record(sh_pipeline.parent)
    assert record["stages"]["train"]["status"] == "cancelled"
    assert record["status"] == "cancelled"
    # Gone means gone (and reaped): polled with a deadline that holds on a loaded machine.
    train_log = sh_pipeline.parent / ".legion" / "runs" / record["id"] / "logs" / "train.log"
    wait_gone(trainer_pid, 30, f"the trainer; its stage log:\n{train_log.read_text()}\n")


def test_dry_run_runs_nothing(sh_pipeline: Path) -> None:
    outcome = run_cli("run", str(sh_pipeline), "--dry-run").assert_success()
    assert "dry run of" in outcome.out and "sh-trainer" in outcome.out
    assert not (sh_pipeline.parent / ".legion").exists()
    plan = json.loads(run_cli("run", str(sh_pipeline), "--dry-run", "-o", "json").out)
    assert plan["stages"][0]["command"][0].endswith("trainer.sh")


def test_runs_list_and_show(sh_pipeline: Path) -> None:
    run_cli("run", str(sh_pipeline), "-q").assert_success()
    run_cli("run", str(sh_pipeline), "-q", env={"FAKE_TRAINER_FAIL": "2"}).assert_failed(1)
    listing = json.loads(run_cli("runs", "list", str(sh_pipeline), "-o", "json").out)
    assert [r["status"] for r in listing] == ["succeeded", "failed"]
    shown = run_cli("runs", "show", listing[0]["id"], "--file", str(sh_pipeline)).assert_success()
    assert "succeeded" in shown.out
    missing = run_cli("runs", "show", "nope", "--file", str(sh_pipeline)).assert_failed(2)
    assert "no run 'nope'" in missing.err


def test_unknown_stage_name(sh_pipeline: Path) -> None:
    outcome = run_cli("stage", "deploy", str(sh_pipeline)).assert_failed(2)
    assert "no stage 'deploy' in this pipeline; it has: train" in outcome.err


def test_later_stage_on_another_agent_with_the_workspace_moved(
    sh_project: Path, tmp_path: Path
) -> None:
    import shutil

    pipeline = write(sh_project / "pipeline.yaml", PACKAGED)
    run_cli("stage", "train", str(pipeline), "-q").assert_success()
    # The second agent gets the project (workspace included) at another path.
    moved = tmp_path / "agent-2" / "project"
    shutil.copytree(sh_project, moved)
    shutil.rmtree(sh_project)
    run_cli("stage", "package", str(moved / "pipeline.yaml"), "-q").assert_success()
    record = latest_record(moved)
    assert record["stages"]["package"]["status"] == "succeeded"
    assert record["workspace"] == str(moved / ".legion")
    assert (moved / ".legion" / "reports" / "junit.xml").is_file()


def test_training_output_cannot_issue_workflow_commands(sh_pipeline: Path) -> None:
    env = {"GITHUB_ACTIONS": "true", "FAKE_TRAINER_ECHO": "::add-mask::injected"}
    lines = run_cli("run", str(sh_pipeline), env=env).assert_success().err.splitlines()
    stop = next(i for i, line in enumerate(lines) if line.startswith("::stop-commands::"))
    token = lines[stop].split("::")[2]
    injected = lines.index("::add-mask::injected")
    resume = lines.index(f"::{token}::")
    assert stop < injected < resume
    assert len(token) == 32
