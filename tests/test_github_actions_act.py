"""The self-test workflow (.github/workflows/github-actions.yml) run for real by `act`: the
setup action installs legion-ci from the checkout, the run action trains the wine example,
and what a GitHub user reads is checked: outputs, job summary, reports artifact, the hand-over
of a run between jobs, and the annotation of a broken pipeline file. See tests/act_support.py
for what act replaces."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from act_support import ActRun, make_repo, run_act


@pytest.fixture(scope="module")
def act_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository, stand-ins, artifacts and logs of this module's act runs."""
    return tmp_path_factory.mktemp("act")


@pytest.fixture(scope="module")
def repo(act_work: Path) -> Path:
    return make_repo(act_work / "repo")


@pytest.fixture(scope="module")
def self_test(repo: Path, act_work: Path) -> ActRun:
    return run_act(repo, act_work, event="push")


def test_every_job_succeeds(self_test: ActRun) -> None:
    assert self_test.code == 0, self_test.log[-8000:]
    for job in ("pipeline", "next-stage"):
        assert any("🏁  Job succeeded" in e for e in self_test.entries(job)), job


def test_the_outputs_are_set(self_test: ActRun) -> None:
    outputs = self_test.outputs("pipeline")
    assert outputs["version"] == "0.1.0"
    assert outputs["status"] == "succeeded"
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", outputs["run-id"])
    # act removes the job's work tree when the job ends: the workflow's own check step
    # verified the binary against artifact-sha256 while it was there.
    assert any("self-test passed: run " in e for e in self_test.entries("pipeline"))
    assert Path(outputs["artifact"]).name == "wine-1.0.zip"
    assert re.fullmatch(r"[0-9a-f]{64}", outputs["artifact-sha256"])
    metrics = json.loads(outputs["metrics"])
    assert set(metrics) >= {"rmse", "r2", "mae"}
    assert Path(outputs["run-folder"]).name == outputs["run-id"]


def test_the_job_summary_holds_the_metrics_table_and_trend(self_test: ActRun) -> None:
    summary = self_test.summary("pipeline")
    outputs = self_test.outputs("pipeline")
    assert "## legion-ci: wine 1.0 — succeeded" in summary
    assert "| metric | value | baseline (baselines/wine-metrics.json) | delta |" in summary
    rmse = json.loads(outputs["metrics"])["rmse"]
    assert f"| rmse | {rmse:.6g} | 0.75 |" in summary
    assert "```mermaid\nxychart-beta" in summary
    assert f'x-axis ["{outputs["run-id"][-6:]}"]' in summary


def test_the_reports_artifact_is_uploaded(self_test: ActRun) -> None:
    run_id = self_test.outputs("pipeline")["run-id"]
    zips = {z.name: z for z in self_test.artifact_zips()}
    reports = zips[f"legion-ci-reports-{run_id}-all.zip"]
    with zipfile.ZipFile(reports) as archive:
        names = set(archive.namelist())
        assert {"record.json", "reports/summary.md", "reports/junit.xml", "logs/train.log"} <= names
        record = json.loads(archive.read("record.json"))
    assert record["id"] == run_id and record["status"] == "succeeded"


def test_the_run_records_are_kept_for_later_workflow_runs(self_test: ActRun) -> None:
    log = "\n".join(self_test.entries("pipeline"))
    assert "cache stand-in saved legion-ci-runs-Linux-" in log
    assert re.search(r"cache stand-in saved legion-ci-runs-Linux-\S+-pipeline-all: 1 files", log)


def test_a_later_job_takes_over_the_trained_run(self_test: ActRun) -> None:
    trained = self_test.outputs("pipeline")
    handed = self_test.artifact_zips()
    handed = [z for z in handed if z.name == f"legion-ci-run-{trained['run-id']}.zip"]
    assert handed, [z.name for z in self_test.artifact_zips()]
    with zipfile.ZipFile(handed[0]) as archive:
        assert "artifacts/wine-1.0.zip" in archive.namelist()
    log = "\n".join(self_test.entries("next-stage"))
    assert f"hand-over passed: run {trained['run-id']}" in log  # sha256 and self-check held


def test_a_broken_pipeline_fails_the_stage_job_with_an_annotation_at_its_line(
    repo: Path, act_work: Path, self_test: ActRun
) -> None:
    # After the successful run, so the environment it installed is reused.
    source = (repo / "pipelines" / "wine.yaml").read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    broken_line = lines.index("    entrypoint: main\n") + 1  # in stages.train
    lines[broken_line - 1] = "    entrypont: main\n"
    (repo / "pipelines" / "broken.yaml").write_text("".join(lines), encoding="utf-8")
    broken = run_act(
        repo,
        act_work,
        event="workflow_dispatch",
        job="pipeline",
        inputs={"pipeline-file": "pipelines/broken.yaml", "stage": "train"},
    )
    assert broken.code != 0, broken.log[-6000:]
    assert "🏁  Job failed" in broken.log
    assert "reusing the legion-ci environment in" in broken.log
    # The records the first workflow run saved came back before this one ran.
    assert re.search(
        r"cache stand-in restored legion-ci-runs-Linux-\S+-pipeline-all: 1 files", broken.log
    )
    assert "legion-ci: reproduce locally with" not in broken.log  # invalid input: exit 2
    assert (
        f"::error file=pipelines/broken.yaml,line={broken_line},col=5::"
        "stages.train.entrypont: unknown key 'entrypont' (did you mean 'entrypoint'?)"
    ) in broken.log
    assert "Check the outputs" not in broken.log.split("Run the example pipeline", 1)[1]
    assert broken.artifact_zips() == []  # nothing ran, so no run folder to upload
