"""buildah faults in the package stage, through the real CLI with no Docker engine anywhere:
buildah SIGKILLed mid-build (its process group, during the RUN step), the registry stopped
between the build and the push, a wrong password, podman missing, an ECR login that fails
(located at the pipeline's connection). Each: exit 1, a one-line
error in the record, nothing claimed built or pushed, no manifest in the registry, and no
auth file left in the temporary folder. Run alone with `-m faults`; each prints its figures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import LEGION_CI, Outcome, copy_wine_project, run_cli
from docker_support import (
    BASE_IMAGE,
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    RestartableRegistry,
    buildah_store_with_base,
    registry_tags,
    unmount_store,
)
from procs import wait_for
from test_ecr_login import ROLE, TOKEN, assert_no_token, moto  # noqa: F401 (moto: a fixture)

from legion_ci.packaging import buildah

pytestmark = pytest.mark.faults

RUN_STEP = re.compile(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: RUN ", re.M)  # "[1/2] STEP 5/5: RUN"


class Project:
    def __init__(self, pipeline: Path, env: dict[str, str], temp: Path) -> None:
        self.pipeline, self.env, self.temp = pipeline, env, temp
        self.run_id = ""

    @property
    def run_folder(self) -> Path:
        return self.pipeline.parent / ".legion" / "runs" / self.run_id

    def record(self) -> dict:
        return json.loads((self.run_folder / "record.json").read_text())

    def stage_log(self) -> str:
        try:
            return (self.run_folder / "logs" / "package.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def package(self, **env: str) -> Outcome:
        return run_cli(
            "stage",
            "package",
            str(self.pipeline),
            "-o",
            "json",
            env={**self.env, **env},
            timeout=900,
        )

    def start_package(self) -> subprocess.Popen:
        return subprocess.Popen(
            [*LEGION_CI, "stage", "package", str(self.pipeline), "-o", "json"],
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    found = buildah_store_with_base(tmp_path_factory.mktemp("buildah"))
    yield found
    unmount_store(found)


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    # Also accepting moto's ECR login, for the ECR push through the CLI (the last test).
    with RestartableRegistry(
        tmp_path_factory.mktemp("registry"), more_users={"AWS": TOKEN}
    ) as running:
        yield running


@pytest.fixture(scope="module")
def project(tmp_path_factory, store, reg) -> Project:
    """The wine-docker pipeline, builder buildah, DOCKER_HOST at a socket nothing answers."""
    root = tmp_path_factory.mktemp("wine")
    copy_wine_project(root, git=True)
    pipeline = root / "pipelines" / "wine-docker.yaml"
    text = pipeline.read_text(encoding="utf-8")
    text = text.replace("uri: 127.0.0.1:5000", f"uri: {reg.address}")
    text = text.replace(
        "baseImage: python:3.11-slim", f"baseImage: {BASE_IMAGE}\n      builder: buildah"
    )
    pipeline.write_text(text, encoding="utf-8")
    temp = tmp_path_factory.mktemp("tmp")
    env = {
        "DOCKER_HOST": f"unix://{root}/no-dockerd.sock",
        buildah.ROOT_ENV: str(store.root),
        "REGISTRY_USER": REGISTRY_USER,
        "REGISTRY_PASSWORD": REGISTRY_PASSWORD,
        "LEGION_CI_CACHE": str(tmp_path_factory.mktemp("legion-cache")),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TMPDIR": str(temp),
    }
    found = Project(pipeline, env, temp)
    trained = run_cli("stage", "train", str(pipeline), "-o", "json", env=env, timeout=600)
    trained.assert_success()
    found.run_id = json.loads(trained.out)["run_id"]
    return found


def assert_failed_cleanly(project: Project, outcome: Outcome, reg, *, mentions: str) -> str:
    """Exit 1, no traceback, one line; the record claims no image; the registry holds no
    manifest of it; no auth file is left."""
    outcome.assert_failed(1)
    assert "Traceback" not in outcome.err
    package = project.record()["stages"]["package"]
    assert package["status"] == "failed", package
    error = package["error"]
    assert error and "\n" not in error and mentions in error, error
    assert error in outcome.err
    assert not {"image_id", "digest", "pushed"} & set(package["outputs"]), package["outputs"]
    assert REGISTRY_PASSWORD not in outcome.err + json.dumps(package) + project.stage_log()
    assert not list(project.run_folder.rglob("result.json"))
    assert registry_tags(reg.address, "wine") == []
    assert [p.name for p in project.temp.iterdir() if p.name.startswith("legion-")] == []
    return error


def _bud_process(root: Path) -> int | None:
    """The pid of the `buildah bud` running on `root`'s storage."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"bud" in argv and any(str(root).encode() in arg for arg in argv):
            return int(entry.name)
    return None


def test_buildah_killed_during_the_build(store, reg, project) -> None:
    proc = project.start_package()
    try:
        wait_for(
            lambda: proc.poll() is not None or RUN_STEP.search(project.stage_log()) is not None,
            600,
            "a RUN step of the buildah build",
            interval=0.05,
        )
        assert proc.poll() is None, "the stage ended before its build ran a RUN step"
        pid = _bud_process(store.root)
        assert pid is not None
        os.killpg(os.getpgid(pid), signal.SIGKILL)  # run_logged gave it its own group
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    error = assert_failed_cleanly(
        project, Outcome(proc.returncode, out, err), reg, mentions="buildah bud"
    )
    assert "was killed (SIGKILL)" in error
    print(f"\nfaults: buildah bud (pid {pid}) SIGKILLed mid-build -> exit 1, {error!r}")


def test_registry_stopped_between_the_build_and_the_push(store, reg, project) -> None:
    proc = project.start_package()
    try:
        # The smoke test runs after the build and before the push: stop the registry then.
        wait_for(
            lambda: proc.poll() is not None or "smoke test: podman runs" in project.stage_log(),
            900,
            "the smoke test",
            interval=0.05,
        )
        assert proc.poll() is None, proc.communicate()
        reg.stop()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if reg.running is None:
            reg.start()
    error = assert_failed_cleanly(
        project, Outcome(proc.returncode, out, err), reg, mentions=f"push of {reg.address}/wine"
    )
    assert "connection refused" in error and "level=fatal" not in error
    print(f"\nfaults: registry stopped before the push -> exit 1, {error!r}")


def test_wrong_password_fails_before_the_build(store, reg, project) -> None:
    outcome = project.package(REGISTRY_PASSWORD="not-the-password")
    error = assert_failed_cleanly(project, outcome, reg, mentions="wrong username or password")
    assert "not-the-password" not in error and "buildah bud" not in project.stage_log()


def test_podman_missing_is_one_line(store, reg, project, tmp_path) -> None:
    # Every tool on PATH but podman.
    tools = tmp_path / "bin"
    tools.mkdir()
    for entry in Path("/usr/bin").iterdir():
        if entry.name != "podman":
            os.symlink(entry, tools / entry.name)
    rest = [p for p in os.environ["PATH"].split(os.pathsep) if p not in ("/usr/bin", "/bin")]
    path = os.pathsep.join([str(tools), *rest])
    outcome = project.package(PATH=path)
    assert_failed_cleanly(project, outcome, reg, mentions="'podman' is not installed")


def test_a_refused_ecr_login_is_one_line_located_in_the_pipeline(store, reg, project) -> None:
    from procs import free_port

    original = project.pipeline.read_text(encoding="utf-8")
    start, end = original.index("  registry:\n"), original.index("stages:")
    ecr = (
        "  registry:\n"
        "    type: ecr\n"
        f"    uri: {reg.address}\n"
        "    region: eu-west-1\n"
        f"    endpoint: http://127.0.0.1:{free_port()}\n"
        "    keyID: ${env:REGISTRY_USER}\n"
        "    keySecret: ${env:REGISTRY_PASSWORD}\n"
    )
    text = original[:start] + ecr + original[end:]
    project.pipeline.write_text(text, encoding="utf-8")
    try:
        outcome = project.package()
    finally:
        project.pipeline.write_text(original, encoding="utf-8")
    line = text[:start].count("\n") + 1
    error = assert_failed_cleanly(
        project, outcome, reg, mentions="ecr:GetAuthorizationToken in eu-west-1 failed"
    )
    assert error.startswith(f"{project.pipeline}:{line}:3: connections.registry: "), error
    assert "buildah bud" not in project.stage_log()


def test_an_ecr_push_through_the_cli_leaves_the_token_nowhere(
    store,
    reg,
    project,
    moto,  # noqa: F811 (the fixture imported above)
) -> None:
    original = project.pipeline.read_text(encoding="utf-8")
    start, end = original.index("  registry:\n"), original.index("stages:")
    ecr = (
        "  registry:\n"
        "    type: ecr\n"
        f"    uri: {reg.address}\n"
        "    region: eu-west-1\n"
        f"    endpoint: {moto.url}\n"
        "    keyID: ${env:ECR_KEY_ID}\n"
        "    keySecret: ${env:ECR_KEY_SECRET}\n"
        f"    role: {ROLE}\n"
    )
    project.pipeline.write_text(original[:start] + ecr + original[end:], encoding="utf-8")
    try:
        outcome = project.package(ECR_KEY_ID=moto.key_id, ECR_KEY_SECRET=moto.secret)
    finally:
        project.pipeline.write_text(original, encoding="utf-8")
    outcome.assert_success()
    out = project.record()["stages"]["package"]["outputs"]
    assert out["builder"] == "buildah"
    # The image's tag, and its SBOM and provenance beside it, pushed with the same ECR login.
    hexdigest = out["digest"].split("sha256:", 1)[1]
    assert sorted(registry_tags(reg.address, "wine")) == sorted(
        [out["image"].rsplit(":", 1)[1], f"sha256-{hexdigest}.att", f"sha256-{hexdigest}.sbom"]
    )
    assert "verified:" in project.stage_log()
    # The run's record, reports, logs and artifacts, the console, the temporary folder.
    assert_no_token(project.pipeline.parent.parent, outcome.out, outcome.err)
    assert_no_token(project.temp)
    assert [p.name for p in project.temp.iterdir() if p.name.startswith("legion-")] == []
    assert moto.secret not in outcome.out + outcome.err + project.stage_log()
