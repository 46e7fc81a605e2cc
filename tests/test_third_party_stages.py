"""Third-party packagers and deploy targets, in-process (an entry point) and out-of-process
(POSIX shell, Legion's contract), run end to end through train -> package -> deploy; what
they hand back is checked against the stage's declared outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, SH_PIPELINE, run_cli, write

PLUGIN = """
from legion_ci.errors import StageError
from legion_ci.integrations.base import DeployResult, PackageResult


class PyPackager:
    kind = "PackagingIntegration"
    name = "py-packager"
    description = "An in-process plugin packager."
    arguments = {"type": "object", "additionalProperties": False,
                 "properties": {"tag": {"type": "string", "default": "latest"},
                                "mode": {"enum": ["good", "noimage", "boom"], "default": "good"}}}

    def validate(self, stage, folder):
        targets = stage.get("targets") or []
        if any(t["name"] != "docker-push" for t in targets):
            return [("targets", "py-packager only knows docker-push targets")]
        return []

    def pack(self, ctx):
        manifest = (ctx.artifact_dir / "legion.project.yaml").read_text()
        ctx.log.line(f"py-packager: {len(manifest.splitlines())} manifest lines")
        if ctx.arguments["mode"] == "boom":
            raise StageError("py-packager: registry said no")
        if ctx.arguments["mode"] == "noimage":
            return PackageResult(outputs={"where": "nowhere"})
        registry = ctx.targets[0].connection.uri if ctx.targets else "local"
        image = f"{registry}/{ctx.model_name}:{ctx.arguments['tag']}"
        assert ctx.clients is not None
        return PackageResult(outputs={"image": image, "train_run": ctx.train_outputs["artifact"]})


class PyDeployer:
    kind = "DeployTarget"
    name = "py-deployer"
    description = "An in-process plugin deploy target."
    arguments = {"type": "object", "properties": {"port": {"type": "integer", "default": 9}}}

    def deploy(self, ctx):
        image = ctx.package_outputs["image"]
        ctx.log.line(f"py-deployer: {image} from {ctx.artifact.name}")
        return DeployResult(outputs={"url": f"http://127.0.0.1:{ctx.arguments['port']}/m",
                                     "image": image})
"""


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "project"
    shutil.copytree(FIXTURES / "sh-trainer", root / "integrations")
    shutil.copytree(FIXTURES / "sh-packager", root / "packagers")
    shutil.copytree(FIXTURES / "sh-deployer", root / "deployers")
    (root / "src").mkdir()
    site = tmp_path / "site"
    write(site / "legion_stage_plugin.py", PLUGIN)
    dist = site / "legion_stage_plugin-0.1.dist-info"
    write(dist / "METADATA", "Metadata-Version: 2.1\nName: legion-stage-plugin\nVersion: 0.1\n")
    write(
        dist / "entry_points.txt",
        "[legion_ci.integrations]\n"
        "py-packager = legion_stage_plugin:PyPackager\n"
        "py-deployer = legion_stage_plugin:PyDeployer\n",
    )
    return root, {"PYTHONPATH": str(site)}


def pipeline(root: Path, package: str, deploy: str) -> Path:
    text = SH_PIPELINE.replace(
        "integrations: [integrations/registration.yaml]",
        "integrations: [integrations/registration.yaml, packagers/registration.yaml,"
        " deployers/registration.yaml]",
    ).replace(
        "stages:\n", "connections:\n  registry: {type: docker, uri: 127.0.0.1:5000}\nstages:\n"
    )
    return write(root / "pipeline.yaml", text + package + deploy)


SH_PACKAGE = "  package:\n    integration: sh-packager\n"
PY_PACKAGE = (
    "  package:\n    integration: py-packager\n    arguments: {tag: '7'}\n"
    "    targets: [{name: docker-push, connection: registry}]\n"
)
SH_DEPLOY = "  deploy:\n    target: sh-deployer\n"
PY_DEPLOY = "  deploy:\n    target: py-deployer\n"


def test_out_of_process_packager_and_deployer(project: tuple[Path, dict]) -> None:
    root, env = project
    path = pipeline(root, SH_PACKAGE, SH_DEPLOY)
    github_output = root / "github-output.txt"
    outcome = run_cli(
        "run",
        str(path),
        "-o",
        "json",
        env={**env, "GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(github_output)},
    ).assert_success()
    stages = json.loads(outcome.out)["stages"]
    assert stages["package"]["outputs"]["image"] == "127.0.0.1:5000/linear:1.0"
    assert stages["deploy"]["outputs"] == {"url": "http://127.0.0.1:8080/linear"}
    published = github_output.read_text()
    assert "http://127.0.0.1:8080/linear" in published and "url<<" in published
    assert "image<<" in published
    assert not list(root.rglob("deployment.json")), "deployment document left behind"


def test_in_process_packager_and_deployer(project: tuple[Path, dict]) -> None:
    root, env = project
    path = pipeline(root, PY_PACKAGE, PY_DEPLOY)
    outcome = run_cli("run", str(path), "-o", "json", env=env).assert_success()
    stages = json.loads(outcome.out)["stages"]
    assert stages["package"]["outputs"]["image"] == "127.0.0.1:5000/linear:7"
    assert stages["package"]["outputs"]["train_run"].endswith("linear-1.0.zip")
    # the deploy target's argument default was filled from its schema at load
    assert stages["deploy"]["outputs"]["url"] == "http://127.0.0.1:9/m"
    plan = json.loads(run_cli("run", str(path), "--dry-run", "-o", "json", env=env).out)
    package_plan = next(s for s in plan["stages"] if s["stage"] == "package")
    assert package_plan["arguments"] == {"tag": "7", "mode": "good"}


def test_integration_validate_hook_for_packagers(project: tuple[Path, dict]) -> None:
    root, env = project
    path = pipeline(root, PY_PACKAGE.replace("docker-push", "scp"), PY_DEPLOY)
    outcome = run_cli("validate", str(path), env=env).assert_failed(2)
    assert "stages.package.targets: py-packager only knows docker-push targets" in outcome.err


@pytest.mark.parametrize(
    ("package", "deploy", "env_extra", "message"),
    [
        (
            PY_PACKAGE.replace("tag: '7'", "mode: noimage"),
            PY_DEPLOY,
            {},
            "packaging integration 'py-packager' handed back bad outputs: outputs: 'image' is"
            " a required property",
        ),
        (
            SH_PACKAGE,
            SH_DEPLOY,
            {"FAKE_DEPLOYER_RESULT": "nourl"},
            "deploy target 'sh-deployer' handed back bad outputs",
        ),
        (
            SH_PACKAGE,
            SH_DEPLOY,
            {"FAKE_DEPLOYER_RESULT": "symlink"},
            "deploy target 'sh-deployer': result.json is a symbolic link",
        ),
        (
            PY_PACKAGE.replace("tag: '7'", "mode: boom"),
            PY_DEPLOY,
            {},
            "py-packager: registry said no",
        ),
    ],
    ids=["no-image", "no-url", "symlink-result", "packager-error"],
)
def test_bad_results_fail_the_stage(
    project: tuple[Path, dict], package: str, deploy: str, env_extra: dict, message: str
) -> None:
    root, env = project
    path = pipeline(root, package, deploy)
    outcome = run_cli("run", str(path), "-q", env={**env, **env_extra}).assert_failed(1)
    assert message in outcome.err
    run_id = (root / ".legion" / "latest").read_text().strip()
    record = json.loads((root / ".legion" / "runs" / run_id / "record.json").read_text())
    failed = [name for name, s in record["stages"].items() if s["status"] == "failed"]
    assert len(failed) == 1 and message in record["stages"][failed[0]]["error"]
    assert record["status"] == "failed"
