"""The `docker` deploy target for real: containers on the tests' own dockerd (127.0.0.1, host
network), running one image the docker-rest packager built and pushed to a real registry.

One image is built for the module (the tiny hand-written model, tens of seconds); every
deployment's container is removed when its test ends, on failure too.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, SH_PIPELINE, run_cli, write
from docker_support import (
    BASE_IMAGE,
    package_ctx,
    push_target,
    tiny_binary,
)

from legion_ci import deployment_state as state
from legion_ci.cli.deployments import deployments
from legion_ci.errors import StageError
from legion_ci.integrations.base import Connection, DeployContext
from legion_ci.integrations.clients import Clients
from legion_ci.packaging.docker_rest import DockerRestPackager
from legion_ci.processes import StageLog
from legion_ci.targets.arguments import resolve_arguments
from legion_ci.targets.docker import LABEL, DockerTarget

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("engine_env")]

READY_MARK = "; ready (pid "


@pytest.fixture(scope="module")
def client(engine):
    clients = Clients(engine.host)
    yield clients.docker()
    clients.close()


@pytest.fixture(scope="module")
def packed(engine, reg, client, tmp_path_factory):
    """The package stage's outputs for the tiny model: built, smoke-tested, pushed."""
    work = tmp_path_factory.mktemp("package")
    ctx = package_ctx(
        tiny_binary(work, "tiny"),
        work,
        targets=[push_target(reg.address, reg.user, reg.password)],
        arguments={"baseImage": BASE_IMAGE},
    )
    old = Clients(engine.host)
    ctx.clients = old
    try:
        outputs = DockerRestPackager().pack(ctx).outputs
    finally:
        old.close()
    assert outputs["digest"].startswith(f"{reg.address}/tiny@sha256:"), outputs
    return {"outputs": outputs, "artifact": ctx.artifact}


@pytest.fixture
def workspace(tmp_path: Path, client):
    """A workspace whose containers are all removed when the test ends, on failure too."""
    folder = tmp_path / "ws"
    folder.mkdir()
    yield folder
    for container in client.containers.list(all=True, filters={"label": f"{LABEL}/deployment"}):
        container.remove(force=True)


def context(
    workspace: Path,
    packed: dict,
    version: str,
    *,
    engine=None,
    connection: Connection | None = None,
    **arguments: object,
) -> DeployContext:
    scratch = workspace / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    return DeployContext(
        model_name="tiny",
        model_version=version,
        run_id=f"run-{version}",
        artifact=packed["artifact"],
        package_outputs=packed["outputs"],
        arguments=resolve_arguments("docker", {"name": "tiny", **arguments}),
        connection=connection,
        workspace=workspace,
        scratch_dir=scratch,
        log=StageLog(workspace / f"deploy-{version}.log"),
        clients=Clients(engine.host) if engine is not None else None,
    )


def invoke(url: str, value: float = 2.0) -> list:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        body = json.dumps({"columns": ["a"], "data": [[value]]})
        conn.request("POST", "/api/model/invoke", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        assert resp.status == 200, (resp.status, raw[:300])
        return json.loads(raw)["prediction"]
    finally:
        conn.close()


class Poller(threading.Thread):
    """Invokes continuously (a fresh connection per request) until stopped; counts answers
    and failures."""

    def __init__(self, url: str, seconds: float = 180.0):
        super().__init__(daemon=True)
        self.url, self.seconds = url, seconds
        self.stop = threading.Event()
        self.answered = 0
        self.failures: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                assert invoke(self.url, 3.0) == [[6.0]]
                self.answered += 1
            except Exception as exc:  # every kind of failure counts
                self.failures.append(f"{type(exc).__name__}: {exc}")


def _migrates_requests() -> bool:
    return Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip() == "1"


def test_deploy_by_digest_replace_and_a_failed_replacement_keeps_serving(
    engine, reg, client, packed, workspace
):
    outputs = packed["outputs"]
    # The engine lacks the image: the target pulls it by digest with the connection's login.
    client.images.remove(outputs["image_id"], force=True)
    connection = Connection(
        name="registry",
        type="docker",
        uri=reg.address,
        options={"username": reg.user, "password": reg.password},
    )
    first = (
        DockerTarget()
        .deploy(
            context(
                workspace,
                packed,
                "1.0",
                engine=engine,
                connection=connection,
                memory="256m",
                cpus=1,
            )
        )
        .outputs
    )
    url = first["url"]
    assert url.startswith("http://127.0.0.1:") and first["image"] == outputs["digest"]
    assert first["replaced"] is None
    assert invoke(url) == [[4.0]]

    container = client.containers.get(first["container_id"])
    host_config, config = container.attrs["HostConfig"], container.attrs["Config"]
    assert host_config["NetworkMode"] == "host" and host_config["ReadonlyRootfs"] is True
    assert "/tmp" in host_config["Tmpfs"]
    assert host_config["RestartPolicy"]["Name"] == "unless-stopped"
    assert host_config["Memory"] == 256 * 1024 * 1024 and host_config["NanoCpus"] == 10**9
    assert config["User"] == "10001:10001" and config["Image"] == outputs["digest"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["LEGION_SERVE_HOST"] == "127.0.0.1" and env["LEGION_SERVE_PORT"] == str(
        first["port"]
    )
    assert env["LEGION_SERVE_REUSE_PORT"] == "true"
    assert config["Labels"][f"{LABEL}/model-version"] == "1.0"
    assert config["Labels"][f"{LABEL}/run-id"] == "run-1.0"
    assert config["Labels"][f"{LABEL}/deployment"] == "tiny"
    recorded = state.load(workspace, "tiny")
    assert recorded is not None and recorded.target == "docker"
    assert recorded.details["container_id"] == container.id
    assert recorded.details["docker_host"] == engine.host
    assert reg.password not in (workspace / "deploy-1.0.log").read_text()
    assert reg.password not in json.dumps(recorded.to_dict())

    # An image that exits at once: LEGION_SERVE_WORKERS=0 is refused by the server.
    broken = client.containers.create(outputs["image_id"])
    broken.commit("legion-ci-test/broken", "1", changes=["ENV LEGION_SERVE_WORKERS=0"])
    broken.remove()

    poller = Poller(url)
    poller.start()
    try:
        wait = time.monotonic() + 30
        while poller.answered < 20 and time.monotonic() < wait:
            time.sleep(0.05)
        # A good replacement: same image, a new version label; the URL stays.
        second = DockerTarget().deploy(context(workspace, packed, "1.1")).outputs
        assert second["url"] == url and second["replaced"] == "1.0"
        assert second["container_id"] != first["container_id"]
        running = client.containers.list(filters={"label": f"{LABEL}/deployment=tiny"})
        assert [c.id for c in running] == [second["container_id"]]  # the old one is removed
        log = (workspace / "deploy-1.1.log").read_text()
        assert "beside the running 1.0" in log and "old container stopped and removed" in log

        # A bad replacement: the new container exits; it is removed, 1.1 keeps serving.
        with pytest.raises(StageError) as failed:
            DockerTarget().deploy(
                context(workspace, packed, "1.2", image="legion-ci-test/broken:1")
            )
        message = str(failed.value)
        assert message.startswith(
            "tiny: the new container (tiny 1.2) failed: it exited with code"
        ), message
        assert f"1.1 keeps serving on {url}" in message
        assert "workers must be between 1 and 256" in message  # its log tail
        # An image that exists nowhere: one line, nothing started.
        with pytest.raises(StageError) as missing:
            DockerTarget().deploy(
                context(
                    workspace,
                    packed,
                    "1.3",
                    connection=connection,
                    image=f"{reg.address}/tiny:no-such-tag",
                )
            )
        assert "\n" not in str(missing.value)
        assert str(missing.value).startswith(
            f"image {reg.address}/tiny:no-such-tag is not on the Docker engine and cannot be pulled"
        )
        answered_before = poller.answered
        wait = time.monotonic() + 30
        while poller.answered < answered_before + 20 and time.monotonic() < wait:
            time.sleep(0.05)
    finally:
        poller.stop.set()
        poller.join(timeout=60)

    running = client.containers.list(all=True, filters={"label": f"{LABEL}/deployment=tiny"})
    assert [c.id for c in running] == [second["container_id"]]  # no failed container left
    recorded = state.load(workspace, "tiny")
    assert recorded.model_version == "1.1" and recorded.previous["model_version"] == "1.0"
    assert invoke(url) == [[4.0]]
    print(f"\nfailed replacement: {message}\nmissing image: {missing.value}")
    print(f"polling client: {poller.answered} answered, {len(poller.failures)} failed")
    assert poller.answered > 40, poller.answered
    # Without net.ipv4.tcp_migrate_req (the host's namespace, which the containers share and a
    # test must not change) a connection queued on the old server in the instant it leaves
    # the port can be reset: one at most in a replacement, as measured for the process target.
    allowed = 0 if _migrates_requests() else 1
    assert len(poller.failures) <= allowed, poller.failures[:5]


def test_deployments_list_status_logs_delete_and_a_vanished_container(
    engine, client, packed, workspace
):
    out = DockerTarget().deploy(context(workspace, packed, "2.0", restartPolicy="no")).outputs
    assert client.containers.get(out["container_id"]).attrs["HostConfig"]["RestartPolicy"][
        "Name"
    ] in ("", "no")
    runner = CliRunner()
    ws = ["--workspace", str(workspace)]

    listed = runner.invoke(deployments, ["list", *ws, "--output", "json"])
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.output)
    assert entry["status"] == "running" and entry["target"] == "docker"
    assert entry["url"] == out["url"]

    status = runner.invoke(deployments, ["status", "tiny", *ws, "--output", "json"])
    assert status.exit_code == 0 and json.loads(status.output)["healthy"] is True, status.output

    logs = runner.invoke(deployments, ["logs", "tiny", *ws, "-n", "20"])
    assert logs.exit_code == 0 and READY_MARK in logs.output, logs.output

    # Stopped behind legion-ci's back: exited, not running; a redeploy removes it.
    client.containers.get(out["container_id"]).stop(timeout=10)
    status = runner.invoke(deployments, ["status", "tiny", *ws])
    assert status.exit_code == 1 and "tiny: exited (container legion-ci-tiny-" in status.output
    assert "(exit code 0)" in status.output, status.output
    second = DockerTarget().deploy(context(workspace, packed, "2.1")).outputs
    assert second["replaced"] is None and invoke(second["url"]) == [[4.0]]
    ids = [c.id for c in client.containers.list(all=True, filters={"label": f"{LABEL}/deployment"})]
    assert ids == [second["container_id"]]

    # Removed behind legion-ci's back: vanished, not running.
    client.containers.get(second["container_id"]).remove(force=True)
    listed = runner.invoke(deployments, ["list", *ws])
    assert "vanished" in listed.output and "running" not in listed.output, listed.output
    status = runner.invoke(deployments, ["status", "tiny", *ws])
    assert status.exit_code == 1 and "vanished (container legion-ci-tiny-" in status.output
    logs = runner.invoke(deployments, ["logs", "tiny", *ws])
    assert logs.exit_code != 0 and "no longer exists" in str(logs.exception)

    # A port another server listens on is refused (SO_REUSEPORT must not join its group).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(StageError, match=f"^port {busy} on 127.0.0.1 is in use"):
            DockerTarget().deploy(context(workspace, packed, "2.2", port=busy))
    assert client.containers.list(all=True, filters={"label": f"{LABEL}/deployment"}) == []

    # Not ready in time: removed, with the reason.
    with pytest.raises(StageError, match=r"failed: not ready within 0\.001 s \(GET http"):
        DockerTarget().deploy(context(workspace, packed, "2.2", readinessTimeout=0.001))
    assert client.containers.list(all=True, filters={"label": f"{LABEL}/deployment"}) == []

    # A redeploy over a vanished container starts afresh.
    again = DockerTarget().deploy(context(workspace, packed, "2.3")).outputs
    assert again["replaced"] is None and invoke(again["url"]) == [[4.0]]
    deleted = runner.invoke(deployments, ["delete", "tiny", *ws, "--drain-timeout", "10"])
    assert deleted.exit_code == 0 and "stopped and removed" in deleted.output, deleted.output
    assert client.containers.list(all=True, filters={"label": f"{LABEL}/deployment=tiny"}) == []
    assert runner.invoke(deployments, ["list", *ws]).output.strip() == "no deployments"


def test_a_package_stage_without_an_image_is_one_line(tmp_path: Path):
    ctx = DeployContext(
        model_name="tiny",
        model_version="1.0",
        run_id="run",
        artifact=None,
        package_outputs={"image": None, "reason": "no Docker engine at unix:///nowhere.sock"},
        arguments=resolve_arguments("docker", {}),
        connection=None,
        workspace=tmp_path,
        scratch_dir=tmp_path,
        log=StageLog(tmp_path / "deploy.log"),
    )
    with pytest.raises(StageError) as failed:
        DockerTarget().deploy(ctx)
    assert str(failed.value) == (
        "the package stage built no image (no Docker engine at unix:///nowhere.sock), so there is "
        "nothing for the docker target to run: package where a Docker engine answers"
    )
    assert not state.deployments_dir(tmp_path).exists()

    ctx.package_outputs = {"image": "tiny:1.0"}
    ctx.clients = Clients("unix:///nowhere/docker.sock")
    with pytest.raises(StageError, match=r"^no Docker engine at unix:///nowhere/docker\.sock: "):
        DockerTarget().deploy(ctx)


def test_a_name_deployed_by_another_target_is_refused(engine, packed, workspace):
    state.save(
        workspace,
        state.DeploymentState("tiny", "process", "tiny", "1.0", "run", "http://x", "now"),
    )
    with pytest.raises(StageError) as refused:
        DockerTarget().deploy(context(workspace, packed, "3.0"))
    assert str(refused.value) == (
        "deployment 'tiny' is a process deployment: delete it first "
        "(legion-ci deployments delete tiny) or choose another arguments.name"
    )


def test_render_is_the_equivalent_docker_run(tmp_path: Path):
    ctx = DeployContext(
        model_name="tiny",
        model_version="1.0",
        run_id="run",
        artifact=None,
        package_outputs={"image": "r:5000/tiny:1.0", "digest": "r:5000/tiny@sha256:" + "a" * 64},
        arguments=resolve_arguments("docker", {"port": 8080, "memory": "512m", "cpus": 0.5}),
        connection=None,
        workspace=tmp_path,
        scratch_dir=tmp_path,
        log=None,  # type: ignore[arg-type]
    )
    rendered = DockerTarget().render(ctx)
    assert rendered.startswith("docker run --detach --network host --read-only --tmpfs /tmp ")
    assert "--restart unless-stopped --memory 512m --cpus 0.5" in rendered
    assert "--env LEGION_SERVE_PORT=8080 --env LEGION_SERVE_REUSE_PORT=true" in rendered
    # The image's own command serves the model (`legion-ci serve /model`).
    assert rendered.endswith(f" r:5000/tiny@sha256:{'a' * 64}\n"), rendered


PIPELINE = (
    SH_PIPELINE
    + f"""\
  package:
    integration: docker-rest
    arguments: {{baseImage: "{BASE_IMAGE}"}}
  deploy:
    target: docker
    arguments: {{memory: 256m}}
"""
)


def test_train_package_deploy_through_the_runner(engine, client, packed, workspace, tmp_path):
    """`legion-ci run`: the shell trainer's binary, packaged (only the model layer is new: the
    dependency layers are the module image's), deployed from the package stage's outputs."""
    root = tmp_path / "project"
    shutil.copytree(FIXTURES / "sh-trainer", root / "integrations")
    (root / "src").mkdir()
    pipeline = write(root / "pipeline.yaml", PIPELINE)
    plan = run_cli("run", str(pipeline), "--dry-run").assert_success().out
    assert "docker run --detach --network host --read-only" in plan

    record = json.loads(run_cli("run", str(pipeline), "-o", "json").assert_success().out)
    package, deploy = record["stages"]["package"]["outputs"], record["stages"]["deploy"]["outputs"]
    assert deploy["target"] == "docker" and deploy["image"] == package["image"]
    assert invoke_linear(deploy["url"]) == [[4]]  # y = 2a + b
    container = client.containers.get(deploy["container_id"])
    assert container.image.id == package["image_id"]
    assert container.attrs["HostConfig"]["Memory"] == 256 * 1024 * 1024

    status = run_cli("deployments", "status", "linear", "--file", str(pipeline)).assert_success()
    assert "linear: running (container legion-ci-linear-" in status.out and "healthy" in status.out
    run_cli("deployments", "delete", "linear", "--file", str(pipeline)).assert_success()
    assert client.containers.list(all=True, filters={"label": f"{LABEL}/deployment=linear"}) == []


def invoke_linear(url: str) -> list:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        body = json.dumps({"columns": ["a", "b"], "data": [[1, 2]]})
        conn.request("POST", "/api/model/invoke", body, {"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read())["prediction"]
    finally:
        conn.close()
