"""The Jenkins shared library, run in real Groovy 2.4 (no Jenkins controller can run here):
the example Jenkinsfiles and a few scripted ones run against pipelines with the shell trainer
and packager, `sh` running the real legion-ci. One JVM runs a batch of builds (the deploy
ones, whose servers are stopped after, a batch of their own)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SH_PIPELINE, run_cli
from jenkins_support import (
    DEPLOY_PIPELINE,
    EXAMPLES,
    PIPELINE,
    REGISTRY_SECRET,
    SECRET,
    SECRET_PIPELINE,
    Build,
    Scenario,
    library_scripts,
    make_project,
    run_builds,
)
from test_deploy_stage import invoke

CREDENTIALS = {
    "mlflow-password": SECRET,
    "registry": {"username": "ci", "password": REGISTRY_SECRET},
}

SCRIPTED = """
@Library('legion-ci') _
List credentials = [[id: 'mlflow-password', variable: 'MLFLOW_PASSWORD'],
    [id: 'registry', usernameVariable: 'REGISTRY_USER', passwordVariable: 'REGISTRY_PASSWORD']]
Map trained = node('gpu') {
    checkout scm
    return legionTrain(credentials: credentials)
}
Map packaged = node('docker') {
    checkout scm
    return legionPackage(credentials: credentials)
}
Map outcome = [trained: trained, packaged: packaged]
try {
    node('docker') {
        legionDeploy(credentials: credentials, runId: packaged.runId)
    }
} catch (deployFailed) {
    outcome.deployError = deployFailed.message
}
return outcome
"""

BAD_CONFIGS = {
    "unknown-key": "legionTrain(pipline: 'legion-ci.yaml')",
    "wrong-type": "legionPipeline(credentials: 'mlflow-password')",
    "bad-credential": (
        "legionPackage(credentials: [[id: 'registry', variable: 'A', fileVariable: 'B']])"
    ),
}

# A folder name a shell would execute if it ever parsed an argument.
ODD_DIR = "odd $(touch pwned) 'q' `touch pwned2` dir"
ODD_JENKINSFILE = (
    "node { checkout scm; return legionValidate(pipeline: '"
    + ODD_DIR.replace("'", "\\'")
    + "/legion-ci.yaml') }"
)

# The shell trainer, then docker-rest: with `builder: docker` and no engine the package stage
# fails at once naming the builder it was given, which proves the value arrived.
DOCKER_REST_PIPELINE = SH_PIPELINE + "  package:\n    integration: docker-rest\n"
NO_ENGINE = {"DOCKER_HOST": "unix:///nowhere/docker.sock"}
BUILDER_ERROR = (
    "package: arguments.builder docker: no Docker engine at unix:///nowhere/docker.sock: "
    "start one or set DOCKER_HOST"
)
BUILDER_PACKAGE = """
Map trained = node { checkout scm; return legionTrain() }
node { checkout scm; legionPackage(builder: 'docker', runId: trained.runId) }
"""

INVALID_PIPELINE = PIPELINE.replace("toolchain: sh-trainer", "toolchain: sh-trainr")


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Build]:
    base = tmp_path_factory.mktemp("jenkins")
    plain = make_project(base / "plain", PIPELINE % {"rmse_max": 0.8})
    gated = make_project(base / "gated", PIPELINE % {"rmse_max": 0.1})
    secret = make_project(base / "secret", SECRET_PIPELINE)
    invalid = make_project(base / "invalid", INVALID_PIPELINE % {"rmse_max": 0.8})
    docker_rest = make_project(base / "docker-rest", DOCKER_REST_PIPELINE)
    odd = base / "odd"
    make_project(odd / ODD_DIR, PIPELINE % {"rmse_max": 0.8})
    one_liner = (EXAMPLES / "one-liner" / "Jenkinsfile").read_text()
    declarative = (EXAMPLES / "declarative" / "Jenkinsfile").read_text()
    leak = {"FAKE_TRAINER_LEAK": "1"}
    # The job `legion-ci jenkins render` makes for the plain project, its script run as is.
    rendered = run_cli(
        "jenkins",
        "render",
        str(plain / "legion-ci.yaml"),
        "--root",
        str(plain),
        "--git-url",
        "https://git.example/models.git",
        "--git-credentials",
        "git-ro",
    ).assert_success()
    job_script = ET.fromstring(rendered.out.split("-->", 1)[1]).findtext("definition/script")
    scenarios = [
        Scenario("one-liner", one_liner, plain),
        Scenario("generated-job", job_script, plain),
        Scenario("gate-fails", one_liner, gated),
        Scenario("declarative", declarative, secret, CREDENTIALS, leak),
        Scenario("declarative-fails", declarative, secret, CREDENTIALS, {"FAKE_TRAINER_FAIL": "3"}),
        Scenario("scripted", SCRIPTED, secret, CREDENTIALS, leak),
        Scenario("odd-path", ODD_JENKINSFILE, odd),
        Scenario("invalid", "node { checkout scm; legionValidate() }", invalid),
        *(Scenario(name, call, plain) for name, call in BAD_CONFIGS.items()),
        Scenario(
            "builder-pipeline", "legionPipeline(builder: 'docker')", docker_rest, env=NO_ENGINE
        ),
        Scenario("builder-package", BUILDER_PACKAGE, docker_rest, env=NO_ENGINE),
    ]
    return run_builds(scenarios, base / "runs")


def assert_ok(build: Build) -> None:
    assert build.result == "SUCCESS", f"{build.error}\n{build.trace}\n{build.log[-3000:]}"


def test_one_liner_runs_each_stage_and_publishes(builds: dict[str, Build]) -> None:
    build = builds["one-liner"]
    assert_ok(build)
    assert build.stage_status() == {"train": "succeeded", "package": "succeeded"}
    assert [e["label"] for e in build.steps("node")] == ["any"]
    assert build.steps("checkout")
    result = build.returned
    assert result["status"] == "succeeded"
    assert result["metrics"] == {"rmse": 0.5, "r2": 0.9}
    assert result["artifact"].endswith(f"/runs/{result['runId']}/artifacts/linear-1.0.zip")
    assert result["image"] == "127.0.0.1:5000/linear:1.0"
    assert result["digest"].startswith("sha256:")
    assert build.description == "linear 1.0: succeeded | image 127.0.0.1:5000/linear:1.0"
    # The package stage continued the train stage's run, named by id.
    commands = [e["message"] for e in build.steps("echo") if e["message"].startswith("legion-ci ")]
    assert commands == [
        "legion-ci run legion-ci.yaml --dry-run --output json",
        "legion-ci stage train legion-ci.yaml --output json",
        f"legion-ci stage package legion-ci.yaml --run-id {result['runId']} --output json",
    ]
    # Published once, after the stages.
    (junit,) = build.steps("junit")
    assert build.events.index(junit) > max(
        i for i, e in enumerate(build.events) if e["step"] == "stage"
    )
    assert [(c["name"], c["status"]) for c in junit["cases"]] == [
        ("train", "passed"),
        ("package", "passed"),
    ]
    run = f".legion/runs/{result['runId']}"
    (archive,) = build.steps("archiveArtifacts")
    assert set(archive["files"]) >= {
        f"{run}/record.json",
        f"{run}/logs/train.log",
        f"{run}/logs/package.log",
        f"{run}/reports/junit.xml",
        f"{run}/reports/summary.md",
        f"{run}/reports/summary.html",  # the page with the charts, for Jenkins' artifact view
    }
    assert not [f for f in archive["files"] if f.endswith(".zip")]  # archiveModel: false
    record = json.loads((build.root / "archive" / run / "record.json").read_text())
    assert record["stages"]["package"]["outputs"]["image"] == result["image"]
    # The stage log reaches the console although --output json does not stream it.
    assert "sh-trainer: done" in build.log
    assert not [e for e in build.steps("sh") if e["label"] == "install legion-ci"]


def test_job_rendered_by_legion_ci_runs_the_pipeline(builds: dict[str, Build]) -> None:
    build = builds["generated-job"]
    assert_ok(build)
    (git,) = build.steps("git")
    assert (git["url"], git["branch"], git["credentialsId"]) == (
        "https://git.example/models.git",
        "main",
        "git-ro",
    )
    assert build.stage_status() == {"train": "succeeded", "package": "succeeded"}
    assert build.returned["image"] == "127.0.0.1:5000/linear:1.0"
    assert len(build.steps("junit")) == 1


def test_sh_scripts_are_fixed_text(builds: dict[str, Build]) -> None:
    """Arguments reach the shell as environment variables, never spliced into a script."""
    scripts = library_scripts()
    ran = [e for b in builds.values() for e in b.steps("sh")]
    assert len(ran) > 10
    for event in ran:
        assert event["script"] in scripts, event["script"]


def test_arguments_reach_legion_ci_verbatim(builds: dict[str, Build]) -> None:
    build = builds["odd-path"]
    assert_ok(build)
    assert build.returned["pipeline"].endswith(f"/{ODD_DIR}/legion-ci.yaml")
    assert build.returned["stages"] == ["train", "package"]
    assert not list(build.root.rglob("pwned*"))


@pytest.mark.parametrize("scenario", ["builder-pipeline", "builder-package"])
def test_builder_reaches_the_package_stage_as_an_option(
    builds: dict[str, Build], scenario: str
) -> None:
    build = builds[scenario]
    assert build.result == "FAILURE" and build.error == BUILDER_ERROR, build.log[-3000:]
    assert build.stage_status().get("package", "failed") == "failed"
    # Two arguments of the package stage's command line only; train runs without it.
    package = (
        r"legion-ci stage package legion-ci\.yaml( --run-id \S+)? --builder docker --output json"
    )
    assert re.search(package, build.log), build.log
    assert "legion-ci stage train legion-ci.yaml --output json" in build.log


def test_failing_gate_publishes_then_fails_with_its_one_line_error(
    builds: dict[str, Build],
) -> None:
    build = builds["gate-fails"]
    assert build.result == "FAILURE"
    assert build.error == "train: quality gate failed: rmse = 0.5 > max 0.1"
    assert build.stage_status() == {"train": "failed"}  # package never started
    (error,) = build.steps("error")
    (junit,) = build.steps("junit")
    assert build.events.index(junit) > build.events.index(error)  # published in `finally`
    assert junit["cases"][0] == {
        "name": "train",
        "status": "failed",
        "message": "quality gate failed: rmse = 0.5 > max 0.1",
    }
    archived = {p.name for p in build.archived()}
    assert {"record.json", "train.log", "junit.xml", "summary.json"} <= archived
    assert build.description == "linear 1.0: failed"
    assert "legion-ci: reproduce locally with: legion-ci stage train legion-ci.yaml" in build.log


def test_declarative_example_across_agents_with_credentials(builds: dict[str, Build]) -> None:
    build = builds["declarative"]
    assert_ok(build)
    assert build.stage_status() == {
        "Validate": "succeeded",
        "Train": "succeeded",
        "Package": "succeeded",
        "Deploy": "skipped",  # the pipeline has no deploy stage: `when` said so from the plan
    }
    stash, restash = build.steps("stash")  # train's for package, package's for deploy
    (unstash,) = build.steps("unstash")
    assert stash["stage"] == "Train" and stash["name"] == "legion-run"
    assert restash["stage"] == "Package" and restash["name"] == "legion-run"
    assert unstash["stage"] == "Package" and unstash["workspace"].endswith(
        "agents/docker/workspace"
    )
    (record_file,) = [f for f in stash["files"] if f.endswith("record.json")]
    run_id = record_file.split("/")[2]
    assert record_file == f".legion/runs/{run_id}/record.json"
    assert ".legion/latest" in stash["files"]
    # The docker agent continued the gpu agent's run: its record holds both stages.
    docker = build.root / "agents" / "docker" / "workspace" / ".legion" / "runs" / run_id
    record = json.loads((docker / "record.json").read_text())
    assert {n: s["status"] for n, s in record["stages"].items()} == {
        "train": "succeeded",
        "package": "succeeded",
    }
    assert not (
        build.root
        / "agents"
        / "gpu"
        / "workspace"
        / ".legion"
        / "runs"
        / run_id
        / ("logs/package.log")
    ).exists()
    assert [len(j["cases"]) for j in build.steps("junit")] == [2, 2]  # train's, then package's
    assert {tuple(e["ids"]) for e in build.steps("withCredentials")} == {
        ("mlflow-password", "registry")
    }
    assert build.description == "linear 1.0: succeeded | image 127.0.0.1:5000/linear:1.0"


def test_declarative_failed_training_stops_the_pipeline_after_publishing(
    builds: dict[str, Build],
) -> None:
    build = builds["declarative-fails"]
    assert build.result == "FAILURE"
    # The stage's error holds the trainer's log tail too; the build carries its first line.
    assert build.error.startswith("train: trainer 'sh-trainer' exited with code 3; last lines")
    assert "\n" not in build.error
    assert build.stage_status() == {"Validate": "succeeded", "Train": "failed"}
    (junit,) = build.steps("junit")
    assert junit["cases"][0]["status"] == "failed"
    assert (
        "sh-trainer: log line 30"
        in (build.root / "harness" / "published" / "junit")
        .rglob("junit.xml")
        .__next__()
        .read_text()
    )
    assert not build.steps("stash")  # a failed run is not handed to the next agent
    assert "legion-ci: linear 1.0: failed" in build.log  # the example's post { failure }


@pytest.mark.parametrize("build_id", ["declarative", "scripted"])
def test_secrets_never_leave_withcredentials(builds: dict[str, Build], build_id: str) -> None:
    build = builds[build_id]
    assert_ok(build)
    # The trainer printed the password it was given (FAKE_TRAINER_LEAK): so it had the real
    # secret from withCredentials, and legion-ci masked it before anything recorded it.
    assert "sh-trainer: password=***" in build.log
    for secret in (SECRET, REGISTRY_SECRET):
        assert secret not in build.everything()
        for path in build.root.rglob("*"):
            if path.is_file() and "venv" not in path.parts:
                assert secret.encode() not in path.read_bytes(), path


def test_scripted_steps_return_chainable_maps(builds: dict[str, Build]) -> None:
    build = builds["scripted"]
    assert_ok(build)
    trained, packaged = build.returned["trained"], build.returned["packaged"]
    assert trained["status"] == "partial" and trained["stage"] == "train"
    assert trained["metrics"] == {"rmse": 0.5, "r2": 0.9}
    assert "image" not in trained
    # legionPackage had no runId: it continued the run it unstashed (the workspace's latest).
    assert packaged["runId"] == trained["runId"]
    assert packaged["status"] == "succeeded" and packaged["image"] == "127.0.0.1:5000/linear:1.0"
    assert build.returned["deployError"] == (
        "deploy: legion-ci.yaml: no stage 'deploy' in this pipeline; it has: train, package"
    )


def test_invalid_pipeline_fails_validation_with_the_located_error(
    builds: dict[str, Build],
) -> None:
    build = builds["invalid"]
    assert build.result == "FAILURE"
    assert build.error.startswith(
        "legion-ci validate: legion-ci.yaml: validation failed: 1 error: legion-ci.yaml:"
    )
    assert "stages.train.toolchain" in build.error and "sh-trainer" in build.error
    assert not build.steps("junit") and not build.steps("archiveArtifacts")


@pytest.mark.parametrize(
    ("build_id", "message"),
    [
        (
            "unknown-key",
            "legionTrain: unknown key pipline; known keys: archiveModel, credentials,"
            " description, legionCi, legionCiCommand, pipOptions, pipeline, publish, python,"
            " stash, venv",
        ),
        ("wrong-type", "legionPipeline: credentials must be a list, not string"),
        (
            "bad-credential",
            "legionPackage: credentials entry 'registry' needs exactly [id, variable],"
            " [id, usernameVariable, passwordVariable] or [id, fileVariable];"
            " got fileVariable, id, variable",
        ),
    ],
)
def test_bad_configuration_is_refused_before_anything_runs(
    builds: dict[str, Build], build_id: str, message: str
) -> None:
    build = builds[build_id]
    assert build.result == "FAILURE"
    assert build.error == message
    assert not build.steps("sh") and not build.steps("node")


def test_every_step_has_a_help_page() -> None:
    from jenkins_support import LIBRARY

    for var in (LIBRARY / "vars").glob("*.groovy"):
        help_page = var.with_suffix(".txt")
        assert help_page.is_file(), help_page
        keys = _default_keys(var)
        text = help_page.read_text()
        for key in keys:
            assert f"{key}:" in text or f"<code>{key}</code>" in text, (help_page.name, key)


def _default_keys(var: Path) -> list[str]:
    """The keys a step's defaults map names (its own and the shared ones it lists)."""
    keys = []
    for line in var.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("// pipeline,") or stripped.startswith("// publish,"):
            keys += [k.strip() for k in stripped[2:].split(",") if k.strip()]
        elif stripped.endswith(",") and ":" in stripped and not stripped.startswith("//"):
            keys.append(stripped.split(":", 1)[0])
    return keys


# ---- deploy success: train -> deploy with the `process` target, the URL answering ----------

# Stage by stage across agents: the deploy agent gets the run (trained binary included) only
# from the stash, because the training agent wipes its workspace.
DEPLOY_STAGES = """
@Library('legion-ci') _
Map trained = node('gpu') {
    checkout scm
    Map result = legionTrain()
    deleteDir()
    return result
}
Map deployed = node('deploy') {
    checkout scm
    return legionDeploy(runId: trained.runId)
}
return [trained: trained, deployed: deployed]
"""


@pytest.fixture(scope="module")
def deploy_builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Build]]:
    base = tmp_path_factory.mktemp("jenkins-deploy")
    project = make_project(base / "project", DEPLOY_PIPELINE)
    one_liner = (EXAMPLES / "one-liner" / "Jenkinsfile").read_text()
    runs = base / "runs"
    try:
        yield run_builds(
            [
                Scenario("deploy-pipeline", one_liner, project),
                Scenario("deploy-stages", DEPLOY_STAGES, project),
            ],
            runs,
        )
    finally:
        # The servers outlive the builds (as on a Jenkins agent): stop them by their state.
        for agent in ("deploy-pipeline/agents/any", "deploy-stages/agents/deploy"):
            pipeline = runs / agent / "workspace" / "legion-ci.yaml"
            if pipeline.is_file():
                run_cli(
                    "deployments",
                    "delete",
                    "linear",
                    "--file",
                    str(pipeline),
                    "--drain-timeout",
                    "5",
                )


def test_pipeline_deploys_and_returns_the_url(deploy_builds: dict[str, Build]) -> None:
    build = deploy_builds["deploy-pipeline"]
    assert_ok(build)
    assert build.stage_status() == {"train": "succeeded", "deploy": "succeeded"}
    result = build.returned
    url = result["url"]
    assert url.startswith("http://127.0.0.1:")
    assert result["status"] == "succeeded" and result["outputs"]["url"] == url
    assert build.description == f"linear 1.0: succeeded | url {url}"
    (junit,) = build.steps("junit")
    assert [(c["name"], c["status"]) for c in junit["cases"]] == [
        ("train", "passed"),
        ("deploy", "passed"),
    ]
    run = f".legion/runs/{result['runId']}"
    (archive,) = build.steps("archiveArtifacts")
    assert {f"{run}/record.json", f"{run}/logs/deploy.log", f"{run}/reports/junit.xml"} <= set(
        archive["files"]
    )
    record = json.loads((build.root / "archive" / run / "record.json").read_text())
    assert record["stages"]["deploy"]["outputs"]["url"] == url
    assert invoke(url, 1, 2) == [[4]]  # y = 2a + b, the shell trainer's model


def test_deploy_step_continues_a_run_from_another_agent(deploy_builds: dict[str, Build]) -> None:
    build = deploy_builds["deploy-stages"]
    assert_ok(build)
    trained, deployed = build.returned["trained"], build.returned["deployed"]
    assert trained["status"] == "partial" and "url" not in trained
    assert deployed["runId"] == trained["runId"]
    assert deployed["stage"] == "deploy" and deployed["status"] == "succeeded"
    url = deployed["url"]
    assert url.startswith("http://127.0.0.1:")
    assert url != deploy_builds["deploy-pipeline"].returned["url"]  # another agent's server
    (deleted,) = build.steps("deleteDir")
    assert deleted["deleted"] and deleted["workspace"].endswith("agents/gpu/workspace")
    (unstash,) = build.steps("unstash")
    assert unstash["workspace"].endswith("agents/deploy/workspace")
    commands = [e["message"] for e in build.steps("echo") if e["message"].startswith("legion-ci ")]
    assert commands[-1] == (
        f"legion-ci stage deploy legion-ci.yaml --run-id {trained['runId']} --output json"
    )
    assert build.description == f"linear 1.0: succeeded | url {url}"
    assert [[c["name"] for c in j["cases"]] for j in build.steps("junit")][-1] == [
        "train",
        "deploy",
    ]
    assert len(build.steps("archiveArtifacts")) == 2  # train's, then deploy's
    assert invoke(url, 3, 1) == [[7]]
