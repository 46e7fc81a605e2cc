"""The docker-rest packager on a real Docker engine and a real registry (both on 127.0.0.1,
started here and stopped by pid): build, smoke test, push, pull back by digest, layer cache,
and the failures that must stop a push."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from docker_support import (
    BASE_IMAGE,
    assert_refused_in_one_line,
    manifest_digest,
    package_ctx,
    push_target,
    registry_tags,
    tiny_binary,
    train_wine,
)
from procs import free_port, wait_for

from legion_ci.errors import StageError
from legion_ci.integrations.clients import Clients
from legion_ci.packaging.docker_rest import DockerRestPackager

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("engine_env")]


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    return train_wine(tmp_path_factory.mktemp("wine"))


ARGS = {"baseImage": BASE_IMAGE}


def _client(engine):
    return Clients(engine.host).docker()


def test_build_smoke_test_push_and_pull_back_by_digest(engine, reg, wine, tmp_path):
    ctx = package_ctx(
        wine.artifact,
        tmp_path,
        run_id=wine.run_id,
        git_commit=wine.git_commit,
        train_outputs=wine.outputs,
        targets=[push_target(reg.address, reg.user, reg.password)],
        arguments=ARGS,
    )
    out = DockerRestPackager().pack(ctx).outputs
    short = wine.run_id.rsplit("-", 1)[-1]
    assert out["image"] == f"{reg.address}/wine:1.0-{short}"
    assert re.fullmatch(rf"{re.escape(reg.address)}/wine@sha256:[0-9a-f]{{64}}", out["digest"])
    assert out["image_id"].startswith("sha256:") and out["size"] > out["size_above_base"] > 0
    assert json.loads((ctx.artifact_dir / "result.json").read_text())["image"] == out["image"]

    log = (tmp_path / "package.log").read_text()
    assert re.search(r"^Step 1/\d+ : FROM ", log, re.M)  # the build log, line by line
    assert "smoke test: ready after" in log and "verified:" in log
    assert reg.password not in log and reg.password not in json.dumps(out)
    secret = reg.password.encode()
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert leaked == []  # not in the context, the wheels, result.json or anything else written

    # The registry holds the manifest under that digest.
    tag = out["image"].rsplit(":", 1)[1]
    assert manifest_digest(reg.address, "wine", tag) == out["digest"].split("@")[1]

    # The readable build context: rebuildable by hand, model and wheels inside.
    context = Path(out["context"])
    dockerfile = (context / "Dockerfile").read_text()
    assert f"FROM {BASE_IMAGE}" in dockerfile and "--no-index" in dockerfile
    assert (context / "model" / "legion.project.yaml").is_file()
    assert any(context.glob("wheels/scikit_learn-*.whl"))
    requirements = (context / "requirements.txt").read_text()
    assert "scikit-learn==" in requirements and "mlflow" not in requirements

    # The image's metadata, then the image pulled back by digest and run read-only.
    client = _client(engine)
    client.images.remove(out["image"], force=True)
    image = client.images.pull(
        out["digest"], auth_config={"username": reg.user, "password": reg.password}
    )
    assert image.id == out["image_id"]
    config = image.attrs["Config"]
    assert config["User"] == "10001:10001"
    assert "5000/tcp" in config["ExposedPorts"]
    assert config["StopSignal"] == "SIGTERM"
    assert "urllib.request" in " ".join(config["Healthcheck"]["Test"])
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] == wine.git_commit
    assert labels["legion.run_id"] == wine.run_id
    assert labels["legion.mlflow_run_id"] == wine.outputs["mlflow_run_id"]
    assert labels["org.opencontainers.image.version"] == "1.0"

    port = free_port()
    container = client.containers.run(
        out["digest"],
        detach=True,
        network_mode="host",
        read_only=True,
        tmpfs={"/tmp": "rw"},
        environment={"LEGION_SERVE_HOST": "127.0.0.1", "LEGION_SERVE_PORT": str(port)},
    )
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(ready, 120, "the pulled image's server")
        # Only serving dependencies: no MLflow, no docker SDK, no wheels left behind.
        probe = container.exec_run(
            [
                "python",
                "-c",
                "import importlib.util as u, os; print(u.find_spec('mlflow'), "
                "u.find_spec('docker'), u.find_spec('sklearn') is not None, "
                "os.path.exists('/tmp/legion/wheels'))",
            ]
        )
        assert probe.output.decode().split() == ["None", "None", "True", "False"]
        # The packages' own test suites were left out (slim_venv); their helpers stay.
        suites = container.exec_run(
            [
                "python",
                "-c",
                "import numpy, os, sklearn, numpy.testing; "
                "print(*(os.path.isdir(os.path.join(os.path.dirname(m.__file__), 'tests')) "
                "for m in (numpy, sklearn)))",
            ]
        )
        assert suites.output.decode().split() == ["False", "False"], suites.output
        assert re.search(r"left out the packages' own test suites, [\d.]+ MB \(", log)
        # Everything loading the model imports is precompiled in the image (the venv at its
        # build, the entrypoint in the context): the image never writes bytecode, so a module
        # without a valid .pyc would be compiled again at every start.
        load = "from legion_ci.gppi.loader import load_model; load_model('/model')"
        loaded = container.exec_run(["python", "-v", "-c", load])
        assert loaded.exit_code == 0, loaded.output[-2000:]
        lines = loaded.output.decode().splitlines()
        from_source = [ln for ln in lines if re.match(r"# code object from [^']", ln)]
        assert from_source == [] and any("entrypoint.cpython-311.pyc'" in ln for ln in lines)
        # The HEALTHCHECK's own command passes against the running server.
        check = container.exec_run(config["Healthcheck"]["Test"][1:])
        assert check.exit_code == 0, check.output
        container.stop(timeout=30)  # SIGTERM: the server drains and exits 0
        assert container.wait(timeout=60)["StatusCode"] == 0
    finally:
        container.remove(force=True)


def test_new_model_with_same_dependencies_rebuilds_only_the_model_layer(engine, wine, tmp_path):
    first = (
        DockerRestPackager()
        .pack(package_ctx(wine.artifact, tmp_path / "a", run_id=wine.run_id, arguments=ARGS))
        .outputs
    )
    retrained = train_wine(tmp_path / "retrain", alpha=0.4)
    ctx = package_ctx(retrained.artifact, tmp_path / "b", run_id=retrained.run_id, arguments=ARGS)
    second = DockerRestPackager().pack(ctx).outputs
    assert second["image_id"] != first["image_id"]
    log = (tmp_path / "b" / "package.log").read_text()
    steps = re.split(r"^Step \d+/\d+ : ", log, flags=re.M)[1:]
    rebuilt = [
        s.splitlines()[0] for s in steps if "---> Using cache" not in s and not s.startswith("FROM")
    ]
    # Everything up to the model is cached; only the model and what follows it is new.
    assert rebuilt and rebuilt[0] == "COPY model /model", rebuilt
    assert all(not s.startswith(("RUN", "COPY wheels", "COPY --from")) for s in rebuilt)
    assert second["cached_steps"] == second["build_steps"] - len(rebuilt) - 2  # two FROMs
    # How long the cached rebuild takes is benchmarks/bench_package.py's to measure, not a test's.


def test_wrong_password_fails_in_one_line_and_pushes_nothing(engine, reg, tmp_path):
    artifact = tiny_binary(tmp_path, "badpass")
    ctx = package_ctx(
        artifact,
        tmp_path / "w",
        targets=[push_target(reg.address, reg.user, "not-the-password")],
        arguments=ARGS,
        secrets=("not-the-password",),
    )
    with pytest.raises(StageError) as info:
        DockerRestPackager().pack(ctx)
    assert_refused_in_one_line(info, reg, "badpass", "not-the-password")
    assert "Step 1/" not in (tmp_path / "w" / "package.log").read_text()  # failed before building


def test_unreachable_registry_fails_before_building(engine, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    ctx = package_ctx(
        tiny_binary(tmp_path, "noreg"),
        tmp_path / "w",
        targets=[push_target(address, "ci", "whatever-pw")],
        arguments=ARGS,
    )
    with pytest.raises(StageError, match=rf"registry {re.escape(address)} unreachable"):
        DockerRestPackager().pack(ctx)


def test_image_whose_server_does_not_answer_is_never_pushed(engine, reg, tmp_path):
    ctx = package_ctx(
        tiny_binary(tmp_path, "broken", broken=True),
        tmp_path / "w",
        targets=[push_target(reg.address, reg.user, reg.password)],
        arguments={**ARGS, "smokeTestTimeout": 60},
    )
    with pytest.raises(StageError, match=r"^smoke test: .*HTTP 500.*the image is not pushed$"):
        DockerRestPackager().pack(ctx)
    assert registry_tags(reg.address, "broken") == []
    client = _client(engine)
    assert not client.containers.list(all=True, filters={"label": "legion-ci.smoke-test"})


def test_missing_base_image_is_one_line_naming_the_fix(engine, tmp_path):
    ctx = package_ctx(
        tiny_binary(tmp_path, "nobase"),
        tmp_path / "w",
        arguments={"baseImage": "legion-ci-test/no-such-base:1"},
    )
    with pytest.raises(StageError, match=r"base image 'legion-ci-test/no-such-base:1' is not on"):
        DockerRestPackager().pack(ctx)


def test_unresolvable_requirement_names_it(engine, tmp_path):
    ctx = package_ctx(
        tiny_binary(tmp_path, "badreq", requirements="numpy==0.0.1\n"),
        tmp_path / "w",
        arguments=ARGS,
    )
    with pytest.raises(StageError, match=r"numpy==0.0.1") as info:
        DockerRestPackager().pack(ctx)
    assert "\n" not in str(info.value)


def test_clients_reports_a_missing_engine(tmp_path):
    host = f"unix://{tmp_path}/no.sock"
    with pytest.raises(StageError, match=re.escape(f"no Docker engine at {host}: start one")):
        Clients(host).docker()
    assert os.environ["DOCKER_HOST"] != host
