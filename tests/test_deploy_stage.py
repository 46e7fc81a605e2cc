"""The deploy stage through the runner: train -> deploy with the `process` target, the URL
answering with the model's prediction, a re-run replacing it on the same URL, the CI outputs
carrying the URL, and `deployments` reading what is deployed."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
from conftest import FIXTURES, SH_PIPELINE, run_cli, write

DEPLOYED = SH_PIPELINE + "  deploy:\n    target: process\n"


@pytest.fixture
def deployed_project(tmp_path: Path):
    root = tmp_path / "project"
    shutil.copytree(FIXTURES / "sh-trainer", root / "integrations")
    (root / "src").mkdir()
    pipeline = write(root / "pipeline.yaml", DEPLOYED)
    try:
        yield pipeline
    finally:
        run_cli("deployments", "delete", "linear", "--file", str(pipeline), "--drain-timeout", "5")


def invoke(url: str, a: float, b: float) -> list:
    request = urllib.request.Request(
        url.rstrip("/") + "/api/model/invoke",
        data=json.dumps({"columns": ["a", "b"], "data": [[a, b]]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["prediction"]


def test_train_then_deploy_then_replace(deployed_project: Path, tmp_path: Path) -> None:
    pipeline = deployed_project
    gh_output = tmp_path / "gh-output"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(gh_output)}
    first = run_cli("run", str(pipeline), "-o", "json", env=env).assert_success()
    url = json.loads(first.out)["stages"]["deploy"]["outputs"]["url"]
    assert url.startswith("http://127.0.0.1:")
    assert invoke(url, 1, 2) == [[4]]  # y = 2a + b, the shell trainer's model
    assert "url<<" in gh_output.read_text() and url in gh_output.read_text()

    human = run_cli("stage", "deploy", str(pipeline)).assert_success()
    assert f"url: {url}" in human.out and "try it: curl" in human.out
    assert invoke(url, 3, 1) == [[7]]  # replaced, same URL

    listed = run_cli("deployments", "list", "--file", str(pipeline)).assert_success()
    assert "linear" in listed.out and "running" in listed.out
    plan = run_cli("run", str(pipeline), "--dry-run").assert_success().out
    assert "rendered:" in plan and "--host 127.0.0.1" in plan  # the server command line
