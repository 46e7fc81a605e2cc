"""A third-party deploy target takes part in `legion-ci deployments` with no change to the CLI:
it saves its state under its registered name, and `status`, `logs` and `delete` find it again
through the registry (here: a YAML registration listed by the pipeline, and an entry point)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SH_PIPELINE, run_cli, write

TARGET = """
from pathlib import Path

from legion_ci.integrations.base import DeployResult
from legion_ci import deployment_state as state


class MarkerTarget:
    '''"Deploys" by writing a marker file; running while the marker is there.'''

    def deploy(self, ctx):
        marker = ctx.workspace / "marker-running"
        marker.write_text(ctx.model_version)
        log = ctx.workspace / "marker.log"
        log.write_text("".join(f"marker line {i}\\n" for i in range(1, 6)))
        url = "http://127.0.0.1:9/marker"
        details = {"marker": str(marker), "log": str(log)}
        state.save(ctx.workspace, state.DeploymentState.deployed(
            ctx, name="marked", target=ctx.integration, url=url, details=details, old=None))
        return DeployResult(outputs={"url": url})

    def status(self, record):
        if Path(record.details["marker"]).exists():
            return "running", "the marker is there"
        return "gone", "the marker was removed behind our back"

    def logs(self, record, lines):
        text = Path(record.details["log"]).read_text()
        return "".join(text.splitlines(keepends=True)[-lines:])

    def delete(self, record, *, workspace, drain_timeout):
        Path(record.details["marker"]).unlink()
        return f"marker removed (drain {drain_timeout:g} s)"


class DeployOnly:
    '''Has only deploy(): the CLI says it cannot show logs or delete.'''

    def deploy(self, ctx):
        return MarkerTarget().deploy(ctx)
"""

REGISTRATION = """
apiVersion: legion-ci/v1
kind: DeployTarget
name: {name}
description: A test target.
python: marker_target:{cls}
"""


@pytest.fixture
def project(sh_project: Path) -> tuple[Path, dict[str, str]]:
    site = sh_project.parent / "site"
    write(site / "marker_target.py", TARGET)
    write(
        sh_project / "targets" / "marker.yaml",
        REGISTRATION.format(name="marker", cls="MarkerTarget"),
    )
    write(sh_project / "targets" / "bare.yaml", REGISTRATION.format(name="bare", cls="DeployOnly"))
    return sh_project, {"PYTHONPATH": str(site)}


def _pipeline(root: Path, target: str) -> Path:
    text = SH_PIPELINE.replace(
        "integrations: [integrations/registration.yaml]",
        f"integrations: [integrations/registration.yaml, targets/{target}.yaml]",
    )
    return write(root / "pipeline.yaml", text + f"  deploy:\n    target: {target}\n")


def test_a_registered_target_gets_status_logs_and_delete(project):
    root, env = project
    path = _pipeline(root, "marker")
    run_cli("run", str(path), env=env).assert_success()

    status = run_cli("deployments", "status", "marked", "--file", str(path), "-o", "json", env=env)
    data = json.loads(status.assert_success().out)
    assert data["target"] == "marker"
    assert data["status_detail"].startswith("the marker is there")

    listed = run_cli("deployments", "list", "--file", str(path), env=env).assert_success()
    assert "marker" in listed.out and "running" in listed.out

    logs = run_cli("deployments", "logs", "marked", "-n", "2", "--file", str(path), env=env)
    assert logs.assert_success().out.splitlines() == ["marker line 4", "marker line 5"]

    marker = root / ".legion" / "marker-running"
    marker.unlink()
    gone = run_cli("deployments", "status", "marked", "--file", str(path), env=env)
    assert gone.code == 1 and "gone (the marker was removed behind our back)" in gone.out

    marker.write_text("1.0")
    deleted = run_cli(
        "deployments", "delete", "marked", "--file", str(path), "--drain-timeout", "3", env=env
    ).assert_success()
    assert "marker removed (drain 3 s); deployment removed" in deleted.out
    assert not marker.exists()
    after = run_cli("deployments", "list", "--file", str(path), env=env).assert_success()
    assert "no deployments" in after.out


def test_a_target_without_the_optional_methods_says_so(project):
    root, env = project
    path = _pipeline(root, "bare")
    run_cli("run", str(path), env=env).assert_success()
    status = run_cli("deployments", "status", "marked", "--file", str(path), env=env)
    assert status.assert_success().out.startswith("marked: recorded (")
    logs = run_cli("deployments", "logs", "marked", "--file", str(path), env=env)
    assert logs.code == 2 and "the 'bare' target shows no logs" in logs.err
    delete = run_cli("deployments", "delete", "marked", "--file", str(path), env=env)
    assert delete.code == 2 and "cannot delete a 'bare' deployment" in delete.err
    assert len(delete.err.strip().splitlines()) == 1, delete.err


def test_a_target_no_longer_registered_is_recorded_not_crashed(project):
    root, env = project
    path = _pipeline(root, "marker")
    run_cli("run", str(path), env=env).assert_success()
    # The registration leaves the pipeline: the state still names the target.
    write(root / "pipeline.yaml", SH_PIPELINE)
    status = run_cli("deployments", "status", "marked", "--file", str(path), env=env)
    assert "target 'marker' is not registered here" in status.assert_success().out
    delete = run_cli("deployments", "delete", "marked", "--file", str(path), env=env)
    assert delete.code == 2 and "no 'marker' target is registered here" in delete.err
