"""`--builder` on `legion-ci run` / `legion-ci stage`, and the GitHub run action's `builder`
input reaching it: the real CLI on the shell trainer and docker-rest, with no Docker engine, so
`builder: docker` fails the package stage at once naming the builder it was given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SH_PIPELINE, run_cli, write

DOCKER_REST = SH_PIPELINE + "  package:\n    integration: docker-rest\n"
RUN_SH = REPO / "github-actions" / "run" / "run.sh"


@pytest.fixture
def project(sh_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-dockerd.sock")
    return write(sh_project / "pipeline.yaml", DOCKER_REST)


def _package_arguments(plan: dict) -> dict:
    (package,) = [s for s in plan["stages"] if s["stage"] == "package"]
    return package["arguments"]


def test_the_plan_shows_the_builder_given(project: Path) -> None:
    plan = json.loads(run_cli("run", str(project), "--dry-run", "-o", "json").assert_success().out)
    assert _package_arguments(plan)["builder"] == "auto"  # the file's default
    given = run_cli("run", str(project), "--dry-run", "-o", "json", "--builder", "buildah")
    assert _package_arguments(json.loads(given.assert_success().out))["builder"] == "buildah"


def test_run_and_stage_pass_it_to_the_package_stage(project: Path, tmp_path: Path) -> None:
    failed = run_cli("run", str(project), "--builder", "docker").assert_failed(1)
    message = f"arguments.builder docker: no Docker engine at unix://{tmp_path}/no-dockerd.sock"
    assert message in failed.err
    again = run_cli("stage", "package", str(project), "--builder", "docker").assert_failed(1)
    assert message in again.err


def test_an_unknown_builder_or_a_package_stage_without_one_is_refused(
    sh_project: Path, project: Path
) -> None:
    bad = run_cli("run", str(project), "--builder", "podman").assert_failed(2)
    assert "'podman' is not one of 'auto', 'docker', 'buildah'" in bad.err
    no_package = write(sh_project / "train-only.yaml", SH_PIPELINE)
    refused = run_cli("run", str(no_package), "--builder", "buildah").assert_failed(2)
    assert refused.err.strip().splitlines() == [
        f"legion-ci: error: --builder buildah: {no_package} has no package stage"
    ], refused.err


def _run_action(project: Path, **inputs: str) -> subprocess.CompletedProcess[str]:
    """github-actions/run/run.sh as the composite action calls it: inputs as environment."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PIPELINE_FILE": project.name,
        "STAGE": "",
        "RUN_ID": "",
        **inputs,
    }
    env.pop("GITHUB_ACTIONS", None)
    return subprocess.run(
        ["bash", str(RUN_SH)], cwd=project.parent, env=env, capture_output=True, text=True
    )


def test_the_github_run_action_passes_its_builder_input(project: Path, tmp_path: Path) -> None:
    done = _run_action(project, BUILDER="docker")
    assert done.returncode == 1, done.stderr
    record = json.loads(done.stdout)
    assert record["stages"]["package"]["status"] == "failed"
    assert record["stages"]["package"]["error"].startswith("arguments.builder docker: no Docker")
    # A stage job too, continuing the run that trained.
    staged = _run_action(project, BUILDER="docker", STAGE="package", RUN_ID=record["run_id"])
    assert staged.returncode == 1 and "arguments.builder docker" in staged.stdout
    # An input is an option's value, never an option or a shell word.
    odd = _run_action(project, BUILDER="--help; touch pwned")
    assert odd.returncode == 2 and "is not one of" in odd.stderr
    assert not (project.parent / "pwned").exists()
    # Empty (the input's default) or unset: no option, the file's builder.
    for inputs in ({"BUILDER": ""}, {}):
        trained = _run_action(project, STAGE="train", **inputs)
        assert trained.returncode == 0, trained.stderr
    newline = _run_action(project, BUILDER="docker\nx")
    assert (
        newline.returncode == 2 and "the BUILDER input holds a control character" in newline.stdout
    )
