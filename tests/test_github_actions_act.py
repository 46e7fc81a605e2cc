"""The self-test workflow (.github/workflows/github-actions.yml) run for real by `act`: the
setup action installs legion-ci from the checkout, the run action trains the wine example,
and what a GitHub user reads is checked: outputs, job summary, reports artifact, and the
annotation of a broken pipeline file. See tests/act_support.py for what act replaces."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from act_support import ActRun, make_repo, run_act

BROKEN_LINE = 13  # `entrypoint:` in pipelines/wine.yaml, misspelt below


@pytest.fixture(scope="module")
def act_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """act's action and tool cache, shared so the second run reuses the environment the first
    run installed (as on a self-hosted runner)."""
    return tmp_path_factory.mktemp("act")


@pytest.fixture(scope="module")
def repo(act_work: Path) -> Path:
    return make_repo(act_work / "repo")


@pytest.fixture(scope="module")
def self_test(repo: Path, act_work: Path) -> ActRun:
    return run_act(repo, act_work, event="push")


def test_the_job_succeeds_with_its_outputs_set(self_test: ActRun) -> None:
    assert self_test.code == 0, self_test.log[-6000:]
    assert "🏁  Job succeeded" in self_test.log
    assert "self-test passed: run " in self_test.log  # the workflow's own checks ran
    outputs = self_test.outputs()
    assert outputs["version"] == "0.1.0"
    assert outputs["status"] == "succeeded"
    assert outputs["run-id"]
    # act removes the job's work tree when the job ends: the workflow's own check step
    # verified the binary against artifact-sha256 while it was there.
    assert Path(outputs["artifact"]).name == "wine-1.0.zip"
    assert re.fullmatch(r"[0-9a-f]{64}", outputs["artifact-sha256"])
    metrics = json.loads(outputs["metrics"])
    assert set(metrics) >= {"rmse", "r2", "mae"}
    assert Path(outputs["run-folder"]).name == outputs["run-id"]


def test_the_job_summary_holds_the_metrics_table_and_trend(self_test: ActRun) -> None:
    summary = self_test.summary()
    outputs = self_test.outputs()
    assert "## legion-ci: wine 1.0 — succeeded" in summary
    assert "| metric | value | baseline (baselines/wine-metrics.json) | delta |" in summary
    rmse = json.loads(outputs["metrics"])["rmse"]
    assert f"| rmse | {rmse:.6g} | 0.75 |" in summary
    assert "```mermaid\nxychart-beta" in summary
    assert f'x-axis ["{outputs["run-id"][-6:]}"]' in summary


def test_the_reports_artifact_is_uploaded(self_test: ActRun) -> None:
    run_id = self_test.outputs()["run-id"]
    zips = self_test.artifact_zips()
    assert [z.name for z in zips] == [f"legion-ci-reports-{run_id}-all.zip"]
    with zipfile.ZipFile(zips[0]) as archive:
        names = set(archive.namelist())
        assert {"record.json", "reports/summary.md", "reports/junit.xml", "logs/train.log"} <= names
        record = json.loads(archive.read("record.json"))
    assert record["id"] == run_id and record["status"] == "succeeded"


def test_a_broken_pipeline_fails_the_job_with_an_annotation_at_its_line(
    repo: Path, act_work: Path, self_test: ActRun
) -> None:
    # After the successful run, so the environment it installed is reused.
    source = (repo / "pipelines" / "wine.yaml").read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    assert lines[BROKEN_LINE - 1] == "    entrypoint: main\n"
    lines[BROKEN_LINE - 1] = "    entrypont: main\n"
    (repo / "pipelines" / "broken.yaml").write_text("".join(lines), encoding="utf-8")
    broken = run_act(
        repo,
        act_work,
        event="workflow_dispatch",
        inputs={"pipeline-file": "pipelines/broken.yaml"},
    )
    assert broken.code != 0, broken.log[-6000:]
    assert "🏁  Job failed" in broken.log
    assert broken.outputs()["cache-hit"] == "true"  # the environment was reused
    assert (
        f"::error file=pipelines/broken.yaml,line={BROKEN_LINE},col=5::"
        "stages.train.entrypont: unknown key 'entrypont' (did you mean 'entrypoint'?)"
    ) in broken.log
    assert "Check the outputs" not in broken.log.split("Run the example pipeline", 1)[1]
    assert broken.artifact_zips() == []  # nothing ran, so no run folder to upload
