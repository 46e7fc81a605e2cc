"""The GitLab CI template (gitlab/legion-ci.yml) run for real by gitlab-ci-local: the example
pipeline (gitlab/examples/.gitlab-ci.yml) validates, trains, packages and deploys the wine model
on the embedded defaults (sqlite MLflow store, the `process` target), a later job uses the
deployed model through the dotenv outputs, and a failing gate and an invalid pipeline fail their
job with legion-ci's one-line error in the job log. See tests/gitlab_support.py for what
gitlab-ci-local is and is not."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli
from gitlab_support import GitlabRun, commit, make_repo, run_gitlab_ci_local

TEMPLATE = REPO / "gitlab" / "legion-ci.yml"
STAGE_JOBS = ("legion-ci-train", "legion-ci-package", "legion-ci-deploy")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gitlab")


@pytest.fixture(scope="module")
def repo(work: Path) -> Path:
    return make_repo(work / "repo")


@pytest.fixture(scope="module")
def pipeline(repo: Path, work: Path) -> Iterator[GitlabRun]:
    try:
        yield run_gitlab_ci_local(repo, work / "home")
    finally:
        # The process target's model server outlives the deploy job, as on a shell runner.
        run_cli("deployments", "delete", "wine", "--file", str(repo / "pipelines/wine-full.yaml"))


def test_the_template_passes_gitlab_s_schema() -> None:
    subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.gitlab-ci",
            str(TEMPLATE),
            str(REPO / "gitlab" / "examples" / ".gitlab-ci.yml"),
        ],
        check=True,
    )


def test_every_job_passes(pipeline: GitlabRun) -> None:
    assert pipeline.code == 0, pipeline.log[-8000:]
    for job in ("legion-ci-validate", *STAGE_JOBS, "check-deployment", "legion-ci-report"):
        assert re.search(rf"PASS\s+{job}\b", pipeline.log), job


def test_a_later_job_uses_the_dotenv_outputs(pipeline: GitlabRun) -> None:
    dotenv = pipeline.artifacts("legion-ci-deploy") / ".gitlab-ci-reports" / "dotenv"
    values = dict(
        line.split("=", 1) for line in (dotenv / "legion-ci.env").read_text().splitlines()
    )
    record = json.loads(
        (
            pipeline.repo / "pipelines/.legion/runs" / values["LEGION_RUN_ID"] / "record.json"
        ).read_text()
    )
    assert record["status"] == "succeeded"
    assert values["LEGION_URL"] == record["stages"]["deploy"]["outputs"]["url"]
    assert (
        values["LEGION_ARTIFACT_SHA256"] == record["stages"]["train"]["outputs"]["artifact_sha256"]
    )
    check = pipeline.job_log("check-deployment")
    assert "healthcheck {'status': True}" in check  # the deployed model, through LEGION_URL
    assert f"run {values['LEGION_RUN_ID']} deployed at {values['LEGION_URL']}" in check
    # package and deploy continued train's run, by the id train's dotenv handed on
    for job in STAGE_JOBS[1:]:
        assert f"--run-id={values['LEGION_RUN_ID']}" not in pipeline.job_log(job)  # not echoed
        assert f"run {values['LEGION_RUN_ID']}: " in pipeline.job_log(job)


def test_reports_are_where_gitlab_collects_them(pipeline: GitlabRun) -> None:
    declared = yaml.safe_load(TEMPLATE.read_text())[".legion-ci-stage"]["artifacts"]
    for job in STAGE_JOBS:
        uploaded = pipeline.artifacts(job)
        junit = ET.parse(uploaded / declared["reports"]["junit"]).getroot()
        assert junit.iter("testcase"), job
        metrics = (uploaded / declared["reports"]["metrics"]).read_text().splitlines()
        assert re.fullmatch(r"train_rmse \d+\.\d+", next(m for m in metrics if "rmse" in m))
        # the run folder, handed to the next job and kept
        assert list(uploaded.glob("pipelines/.legion/runs/*/record.json")), job
    # the HTML summary of the last stage job, exposed by the last job of the pipeline
    report = yaml.safe_load(TEMPLATE.read_text())["legion-ci-report"]["artifacts"]
    assert report["expose_as"] and "*" not in "".join(report["paths"])  # GitLab: no globs
    page = (pipeline.artifacts("legion-ci-report") / report["paths"][0]).read_text()
    assert "<svg" in page and "deploy" in page and "<script" not in page
    # the stage log folds into one section per job (gitlab-ci-local prints a folded section
    # as "<name> took <ms>ms", as GitLab shows its duration)
    for job in STAGE_JOBS:
        section = job.replace("-", "_")
        assert re.search(rf"{job}\s+{section} took \d+ms", pipeline.log), job


def test_a_failing_gate_fails_its_job_with_the_one_line_error(
    repo: Path, work: Path, pipeline: GitlabRun
) -> None:
    strict = (repo / "pipelines/wine-full.yaml").read_text().replace("{max: 0.8}", "{max: 0.01}")
    (repo / "pipelines/wine-strict.yaml").write_text(strict)
    commit(repo, "a gate no model passes")
    failed = run_gitlab_ci_local(
        repo,
        work / "home",
        "legion-ci-train",
        variables={"LEGION_CI_PIPELINE": "pipelines/wine-strict.yaml"},
    )
    assert failed.code != 0
    assert re.search(r"FAIL\s+legion-ci-train", failed.log)
    log = failed.job_log("legion-ci-train")
    assert re.search(
        r"^legion-ci: error: quality gate failed: rmse = [\d.]+ > max 0\.01$", log, re.M
    )
    assert (
        "legion-ci: reproduce locally with: legion-ci stage train pipelines/wine-strict.yaml" in log
    )
    # reported also on failure (`when: always`)
    uploaded = failed.artifacts("legion-ci-train")
    junit = (uploaded / "legion-ci-reports/junit.xml").read_text()
    assert "quality gate failed" in junit
    assert (
        "LEGION_STATUS=failed" in (uploaded / ".gitlab-ci-reports/dotenv/legion-ci.env").read_text()
    )


def test_an_invalid_pipeline_fails_validate_with_the_located_error(
    repo: Path, work: Path, pipeline: GitlabRun
) -> None:
    source = (repo / "pipelines/wine-full.yaml").read_text().splitlines(keepends=True)
    line = source.index("    entrypoint: main\n") + 1
    source[line - 1] = "    entrypont: main\n"
    (repo / "pipelines/broken.yaml").write_text("".join(source))
    commit(repo, "a misspelt key")
    for job in ("legion-ci-validate", "legion-ci-train"):  # exit 2 in both, located
        failed = run_gitlab_ci_local(
            repo, work / "home", job, variables={"LEGION_CI_PIPELINE": "pipelines/broken.yaml"}
        )
        assert failed.code != 0
        assert re.search(rf"FAIL\s+{job}", failed.log)
        log = failed.job_log(job)
        assert (
            f"pipelines/broken.yaml:{line}:5: stages.train.entrypont: unknown key 'entrypont'"
        ) in log, log
        assert "reproduce locally" not in log  # invalid input: nothing to reproduce
