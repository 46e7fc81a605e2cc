"""Docker faults in the package stage, through the real CLI on a real dockerd and registry:
dockerd SIGKILLed mid-build, the registry stopped before a push and SIGKILLed during one.
Each fails the stage in one line (exit 1), leaves the run record saying so with nothing
claimed as built or pushed, and a re-run after the restart succeeds with a proven digest.
Run alone with `-m faults`; each prints its figures."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LEGION_CI, Outcome, copy_wine_project, run_cli
from docker_support import (
    BASE_IMAGE,
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    RestartableDockerd,
    RestartableRegistry,
    import_base_image,
    manifest_digest,
)
from procs import wait_for

pytestmark = pytest.mark.faults

RUN_STEP = re.compile(r"^Step \d+/\d+ : RUN ", re.M)


@dataclass
class Project:
    pipeline: Path
    run_id: str
    env: dict[str, str]

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

    def package(self) -> Outcome:
        return run_cli(
            "stage", "package", str(self.pipeline), "-o", "json", env=self.env, timeout=900
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
def engine():
    # A short root: dockerd's socket path must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="lcf-", dir="/tmp"))
    with RestartableDockerd(root) as daemon:
        import_base_image(daemon.host)
        yield daemon
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    with RestartableRegistry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def project(tmp_path_factory, engine, reg) -> Project:
    """The wine-docker pipeline pointed at the test registry and base image, trained once."""
    root = tmp_path_factory.mktemp("wine")
    copy_wine_project(root, git=True)
    pipeline = root / "pipelines" / "wine-docker.yaml"
    text = pipeline.read_text(encoding="utf-8")
    text = text.replace("uri: 127.0.0.1:5000", f"uri: {reg.address}")
    text = text.replace("baseImage: python:3.11-slim", f"baseImage: {BASE_IMAGE}")
    pipeline.write_text(text, encoding="utf-8")
    env = {
        "DOCKER_HOST": engine.host,
        "REGISTRY_USER": REGISTRY_USER,
        "REGISTRY_PASSWORD": REGISTRY_PASSWORD,
        # One wheelhouse cache for the module (the suite isolates LEGION_CI_CACHE per test).
        "LEGION_CI_CACHE": str(tmp_path_factory.mktemp("legion-cache")),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    trained = run_cli("stage", "train", str(pipeline), "-o", "json", env=env, timeout=600)
    trained.assert_success()
    return Project(pipeline, json.loads(trained.out)["run_id"], env)


def assert_failed_cleanly(project: Project, outcome: Outcome, *, mentions: str) -> str:
    """Exit 1, no traceback, a one-line error; the record says failed, claims no image."""
    outcome.assert_failed(1)
    record = project.record()
    package = record["stages"]["package"]
    assert package["status"] == "failed", package
    assert record["status"] == "failed"
    error = package["error"]
    assert error and "\n" not in error and mentions in error, error
    assert error in outcome.err
    assert not {"image_id", "digest", "pushed"} & set(package["outputs"]), package["outputs"]
    assert REGISTRY_PASSWORD not in outcome.err + json.dumps(record) + project.stage_log()
    # Nothing half-written: every JSON the run left parses; no result.json claims an image.
    for path in project.run_folder.rglob("*.json"):
        json.loads(path.read_text())
    assert not list(project.run_folder.rglob("result.json"))
    assert not list(project.run_folder.rglob("*.tmp"))
    return error


def assert_rerun_succeeds(project: Project, reg: RestartableRegistry) -> dict:
    """The re-run of the package stage succeeds and the registry serves the digest it records."""
    started = time.monotonic()
    outcome = project.package().assert_success()
    took = time.monotonic() - started
    assert json.loads(outcome.out)["run_id"] == project.run_id
    record = project.record()
    assert record["status"] == "succeeded"
    out = record["stages"]["package"]["outputs"]
    assert record["stages"]["package"]["error"] is None
    repository, digest = out["digest"].split("@")
    assert repository == f"{reg.address}/wine" and re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    tag = out["image"].rsplit(":", 1)[1]
    assert manifest_digest(reg.address, "wine", tag) == digest
    assert f"verified: {out['digest']} pulls back as {out['image_id']}" in project.stage_log()
    return {"digest": digest, "took": took}


def test_dockerd_killed_during_the_build(engine, reg, project, figures) -> None:
    proc = project.start_package()
    try:
        wait_for(
            lambda: proc.poll() is not None or RUN_STEP.search(project.stage_log()) is not None,
            600,
            "a RUN step of the image build",
            interval=0.05,
        )
        assert proc.poll() is None, "the stage ended before its build ran a RUN step"
        killed = engine.kill()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    error = assert_failed_cleanly(project, Outcome(proc.returncode, out, err), mentions="docker")
    engine.stop()
    engine.start()  # a new dockerd on the same data root and socket
    rerun = assert_rerun_succeeds(project, reg)
    figures.add("faults injected")
    figures.add("faults survived")
    print(
        f"\nfaults: dockerd (pid {killed}) SIGKILLed mid-build -> exit 1, {error!r}; "
        f"restarted, re-run pushed {rerun['digest'][:19]} in {rerun['took']:.0f} s"
    )


def test_registry_stopped_before_the_push(engine, reg, project, figures) -> None:
    reg.stop()
    try:
        outcome = project.package()
        error = assert_failed_cleanly(project, outcome, mentions=f"registry {reg.address}")
        assert "Step 1/" not in project.stage_log()  # failed before building anything
    finally:
        reg.start()
    rerun = assert_rerun_succeeds(project, reg)
    figures.add("faults injected")
    figures.add("faults survived")
    print(
        f"\nfaults: registry stopped before the push -> exit 1, {error!r}; "
        f"restarted, re-run pushed {rerun['digest'][:19]} in {rerun['took']:.0f} s"
    )


def test_registry_killed_during_the_push(engine, reg, project, figures) -> None:
    # An empty registry, so that the push has layers to upload.
    reg.stop()
    shutil.rmtree(reg.storage, ignore_errors=True)
    reg.start()
    uploads = reg.storage / "docker" / "registry" / "v2" / "repositories" / "wine" / "_uploads"
    proc = project.start_package()
    try:
        wait_for(
            lambda: proc.poll() is not None or any(uploads.glob("*/data")),
            600,
            "a layer upload in the registry",
            interval=0.01,
        )
        assert proc.poll() is None, "the stage ended before any upload was seen"
        assert "$ docker push" in project.stage_log()
        reg.kill()
        killed_at = time.monotonic()
        out, err = proc.communicate(timeout=600)
        failed_after = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if reg.running is None:
            reg.start()
    error = assert_failed_cleanly(
        project, Outcome(proc.returncode, out, err), mentions=f"push of {reg.address}/wine:"
    )
    rerun = assert_rerun_succeeds(project, reg)
    figures.add("faults injected")
    figures.add("faults survived")
    print(
        f"\nfaults: registry SIGKILLed mid-push -> exit 1 after {failed_after:.0f} s, {error!r}; "
        f"restarted, re-run pushed {rerun['digest'][:19]} in {rerun['took']:.0f} s"
    )
