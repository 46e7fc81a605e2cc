"""End to end on a fresh agent workspace: the library installs legion-ci for real (pip, from a
copy of this checkout) into a virtual environment, trains the wine example through
`legionPipeline`, publishes, and a second step in the same workspace reuses the install."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from jenkins_support import REPO, Scenario, run_builds

JENKINSFILE = """
@Library('legion-ci') _
// --no-compile: pip skips byte-compiling MLflow and its dependencies (most of the install time).
Map install = [legionCiCommand: '', legionCi: '%(source)s', pipOptions: ['--no-compile']]
Map result = legionPipeline(install + [pipeline: 'pipelines/wine.yaml', archiveModel: true])
Map plan = node {
    legionValidate(install + [pipeline: 'pipelines/wine.yaml'])
}
return [result: result, plan: plan]
"""

SKIP = shutil.ignore_patterns(".legion", "mlruns", "__pycache__", "*.egg-info", "build")


@pytest.mark.slow
def test_fresh_agent_installs_legion_ci_once_and_trains_wine(tmp_path: Path) -> None:
    source = tmp_path / "legion-ci-source"  # what `pip install legion-ci==...` would fetch
    for part in ("legion_ci", "toolchains"):
        shutil.copytree(REPO / part, source / part, ignore=SKIP)
    for part in ("setup.py", "pyproject.toml"):
        shutil.copy(REPO / part, source / part)
    project = tmp_path / "repo"
    shutil.copytree(REPO / "pipelines", project / "pipelines", ignore=SKIP)
    shutil.copytree(REPO / "examples" / "wine", project / "examples" / "wine", ignore=SKIP)

    scenario = Scenario("wine", JENKINSFILE % {"source": source}, project)
    build = run_builds([scenario], tmp_path / "runs", timeout=900)["wine"]
    assert build.result == "SUCCESS", f"{build.error}\n{build.trace}\n{build.log[-4000:]}"

    installs = [e for e in build.steps("sh") if e["label"] == "install legion-ci"]
    assert [e["exitCode"] for e in installs] == [0, 0]
    venv = build.root / "agents" / "any" / "workspace" / ".legion-ci" / "venv"
    assert f"legion-ci: installing {source} into {venv}" in installs[0]["output"]
    assert f"legion-ci: reusing {venv} ({source})" in installs[1]["output"]
    assert (venv / "bin" / "legion-ci").is_file()

    result = build.returned["result"]
    assert result["status"] == "succeeded"
    assert result["metrics"]["rmse"] <= 0.8 and result["metrics"]["r2"] >= 0.3  # the gates
    assert build.description == "wine 1.0: succeeded"
    (junit,) = build.steps("junit")
    assert [(c["name"], c["status"]) for c in junit["cases"]] == [("train", "passed")]
    archived = {p.name for p in build.archived()}
    assert {"wine-1.0.zip", "record.json", "train.log", "junit.xml"} <= archived
    assert build.returned["plan"]["stages"] == ["train"]
    assert build.returned["plan"]["model"] == {"name": "wine", "version": "1.0"}
