"""The `docker` deploy target against podman's Docker-compatible API (`podman system service`)
with no dockerd anywhere: buildah builds the model image into a containers storage, podman's
API serves that storage on a socket of the test's own, DOCKER_HOST points there only, and the
target deploys, proves, replaces and deletes the container as it does on dockerd."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from docker_support import (
    BASE_IMAGE,
    buildah_store_with_base,
    package_ctx,
    podman_service,
    push_target,
    tiny_binary,
    train_wine,
    unmount_store,
)

from legion_ci import deployment_state as state
from legion_ci.cli.deployments import deployments
from legion_ci.integrations.base import Connection, DeployContext
from legion_ci.integrations.clients import Clients
from legion_ci.packaging import buildah
from legion_ci.packaging.docker_rest import DockerRestPackager
from legion_ci.processes import StageLog
from legion_ci.targets.arguments import resolve_arguments
from legion_ci.targets.docker import LABEL, DockerTarget

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[buildah.Storage]:
    found = buildah_store_with_base(tmp_path_factory.mktemp("buildah"))
    yield found
    unmount_store(found)


@pytest.fixture(scope="module")
def packed(store, wheel_cache, tmp_path_factory) -> dict:
    """The tiny model's image, built by buildah (builder: buildah, no push: the image stays
    in the storage podman's API serves) and smoke-tested by podman."""
    work = tmp_path_factory.mktemp("package")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(buildah.ROOT_ENV, str(store.root))
        patch.setenv("LEGION_CI_CACHE", str(wheel_cache))
        patch.setenv("DOCKER_HOST", f"unix://{work}/no-dockerd.sock")
        ctx = package_ctx(
            tiny_binary(work, "tinypod"),
            work,
            arguments={"baseImage": BASE_IMAGE, "builder": "buildah"},
        )
        outputs = DockerRestPackager().pack(ctx).outputs
    assert outputs["builder"] == "buildah", outputs
    return {"outputs": outputs, "artifact": ctx.artifact}


@pytest.fixture(scope="module")
def podman_host(store) -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="lcp-", dir="/tmp"))  # a socket path under 108 bytes
    with podman_service(store.options, root) as host:
        yield host
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def only_podman(podman_host, monkeypatch) -> str:
    """DOCKER_HOST names podman's socket and nothing else; what answers there is podman."""
    import docker

    monkeypatch.setenv("DOCKER_HOST", podman_host)
    for key in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        monkeypatch.delenv(key, raising=False)
    client = docker.from_env()
    try:
        version = client.version()
    finally:
        client.close()
    components = {c["Name"] for c in version.get("Components", [])}
    assert "Podman Engine" in components, version
    # The default socket answers nothing either: no dockerd on this machine for this test.
    with pytest.raises(docker.errors.DockerException):
        docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=5).ping()
    return podman_host


def context(
    workspace: Path,
    packed: dict,
    version: str,
    *,
    clients: Clients | None = None,
    **arguments: object,
) -> DeployContext:
    scratch = workspace / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    return DeployContext(
        model_name="tinypod",
        model_version=version,
        run_id=f"run-{version}",
        artifact=packed["artifact"],
        package_outputs=packed["outputs"],
        arguments=resolve_arguments("docker", {"name": "tinypod", **arguments}),
        connection=None,
        workspace=workspace,
        scratch_dir=scratch,
        log=StageLog(workspace / f"deploy-{version}.log"),
        clients=clients,
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


def test_deploy_replace_and_delete_on_podmans_docker_api(only_podman, packed, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    client = Clients().docker()
    try:
        first = DockerTarget().deploy(context(workspace, packed, "1.0", memory="256m")).outputs
        url = first["url"]
        assert url.startswith("http://127.0.0.1:") and first["replaced"] is None
        assert invoke(url) == [[4.0]]

        container = client.containers.get(first["container_id"])
        host_config, config = container.attrs["HostConfig"], container.attrs["Config"]
        assert host_config["NetworkMode"] == "host" and host_config["ReadonlyRootfs"] is True
        assert "/tmp" in host_config["Tmpfs"] and host_config["Memory"] == 256 * 1024 * 1024
        assert host_config["RestartPolicy"]["Name"] == "unless-stopped"
        assert config["User"] == "10001:10001"
        # The very image buildah built, from the storage the service shares: nothing pulled.
        assert container.image.id == packed["outputs"]["image_id"]
        assert "pulling" not in (workspace / "deploy-1.0.log").read_text()
        assert config["Labels"][f"{LABEL}/model-version"] == "1.0"
        assert config["Labels"][f"{LABEL}/deployment"] == "tinypod"
        recorded = state.load(workspace, "tinypod")
        assert recorded is not None and recorded.details["docker_host"] == only_podman

        # Replacement: the new container beside the old on the same port, then the old goes.
        second = DockerTarget().deploy(context(workspace, packed, "1.1")).outputs
        assert second["url"] == url and second["replaced"] == "1.0"
        assert second["container_id"] != first["container_id"]
        running = client.containers.list(filters={"label": f"{LABEL}/deployment=tinypod"})
        assert [c.id for c in running] == [second["container_id"]]
        assert invoke(url, 3.0) == [[6.0]]
        log = (workspace / "deploy-1.1.log").read_text()
        assert "beside the running 1.0" in log and "old container stopped and removed" in log

        runner = CliRunner()
        ws = ["--workspace", str(workspace)]
        status = runner.invoke(deployments, ["status", "tinypod", *ws, "--output", "json"])
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["healthy"] is True
        deleted = runner.invoke(deployments, ["delete", "tinypod", *ws, "--drain-timeout", "10"])
        assert deleted.exit_code == 0 and "stopped and removed" in deleted.output, deleted.output
        assert client.containers.list(all=True, filters={"label": f"{LABEL}/deployment"}) == []
    finally:
        for leftover in client.containers.list(all=True, filters={"label": f"{LABEL}/deployment"}):
            leftover.remove(force=True)
        client.close()


def test_a_docker_connections_host_names_podmans_socket(podman_host, packed, tmp_path, monkeypatch):
    """DOCKER_HOST names nothing that answers; the pipeline's docker connection's `host` is
    podman's socket, and the deployment (and `legion-ci deployments`) use it. Without the
    run's binary the smoke test's example comes from a container of the image on podman."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-dockerd.sock")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    connection = Connection(name="podman", type="docker", uri=None, options={"host": podman_host})
    clients = Clients.for_connections([connection])
    client = clients.docker()
    try:
        deploy = context(workspace, packed, "2.0", clients=clients)
        deploy.artifact = None  # no binary in this run: the example row is read in the image
        out = DockerTarget().deploy(deploy).outputs
        assert invoke(out["url"], 5.0) == [[10.0]]
        assert state.load(workspace, "tinypod").details["docker_host"] == podman_host
        runner = CliRunner()
        ws = ["--workspace", str(workspace)]
        deleted = runner.invoke(deployments, ["delete", "tinypod", *ws, "--drain-timeout", "10"])
        assert deleted.exit_code == 0 and "stopped and removed" in deleted.output, deleted.output
        assert client.containers.list(all=True, filters={"label": f"{LABEL}/deployment"}) == []
    finally:
        for leftover in client.containers.list(all=True, filters={"label": f"{LABEL}/deployment"}):
            leftover.remove(force=True)
        clients.close()


def test_a_pushed_image_is_pulled_by_digest_through_podmans_api(
    store, wheel_cache, reg, tmp_path, monkeypatch
):
    """A deploy machine with podman only and an empty storage: the package stage pushed the
    image to the registry (htpasswd); the target pulls it by digest through podman's API with
    the registry connection's login, and serves it."""
    monkeypatch.setenv(buildah.ROOT_ENV, str(store.root))
    monkeypatch.setenv("LEGION_CI_CACHE", str(wheel_cache))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-dockerd.sock")
    work = tmp_path / "package"
    ctx = package_ctx(
        tiny_binary(work, "tinypod"),
        work,
        targets=[push_target(reg.address, reg.user, reg.password)],
        arguments={"baseImage": BASE_IMAGE, "builder": "buildah", "smokeTest": False},
    )
    pushed = {"outputs": DockerRestPackager().pack(ctx).outputs, "artifact": ctx.artifact}
    digest = pushed["outputs"]["digest"]
    assert digest.startswith(f"{reg.address}/tinypod@sha256:"), pushed["outputs"]

    # A storage of its own (nothing in it), and the local plain-HTTP registry listed insecure,
    # as a deploy machine's /etc/containers/registries.conf would.
    root = Path(tempfile.mkdtemp(prefix="lcq-", dir="/tmp"))
    conf = root / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{reg.address}"\ninsecure = true\n')
    options = [
        *("--root", str(root / "storage"), "--runroot", str(root / "run")),
        *("--storage-driver", store.driver),
    ]
    workspace = tmp_path / "ws"
    workspace.mkdir()
    connection = Connection(
        name="registry",
        type="docker",
        uri=reg.address,
        options={"username": reg.user, "password": reg.password},
    )
    try:
        with podman_service(
            options, root / "svc", {"CONTAINERS_REGISTRIES_CONF": str(conf)}
        ) as host:
            monkeypatch.setenv("DOCKER_HOST", host)
            clients = Clients()
            client = clients.docker()
            try:
                assert client.images.list() == []
                deploy = context(workspace, pushed, "3.0")
                deploy.connection = connection
                out = DockerTarget().deploy(deploy).outputs
                assert out["image"] == digest and invoke(out["url"], 1.5) == [[3.0]]
                log = (workspace / "deploy-3.0.log").read_text()
                assert f"pulling {digest}" in log and reg.password not in log
                assert (
                    client.containers.get(out["container_id"]).image.id
                    == (pushed["outputs"]["image_id"])
                )
                runner = CliRunner()
                ws = ["--workspace", str(workspace)]
                deleted = runner.invoke(deployments, ["delete", "tinypod", *ws])
                assert deleted.exit_code == 0, deleted.output
            finally:
                clients.close()
    finally:
        subprocess.run(["umount", str(root / "storage" / "overlay")], capture_output=True)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_the_wine_model_built_with_buildah_serves_on_podman(
    store, wheel_cache, only_podman, tmp_path, monkeypatch
):
    """The README's wine model (MLflow, scikit-learn): trained, built with buildah into the
    storage podman's API serves, deployed through that API, and its example row predicted."""
    wine = train_wine(tmp_path / "wine")
    monkeypatch.setenv(buildah.ROOT_ENV, str(store.root))
    monkeypatch.setenv("LEGION_CI_CACHE", str(wheel_cache))
    ctx = package_ctx(
        wine.artifact,
        tmp_path / "package",
        run_id=wine.run_id,
        git_commit=wine.git_commit,
        train_outputs=wine.outputs,
        arguments={"baseImage": BASE_IMAGE, "builder": "buildah"},
    )
    outputs = DockerRestPackager().pack(ctx).outputs
    assert outputs["builder"] == "buildah"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    deploy = DeployContext(
        model_name="wine",
        model_version="1.0",
        run_id=wine.run_id,
        artifact=ctx.artifact,
        package_outputs=outputs,
        arguments=resolve_arguments("docker", {}),
        connection=None,
        workspace=workspace,
        scratch_dir=workspace,
        log=StageLog(workspace / "deploy.log"),
    )
    out = DockerTarget().deploy(deploy).outputs
    host, port = out["url"].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        body = {"columns": wine.outputs["input_columns"], "data": [wine.outputs["example_row"]]}
        conn.request(
            "POST", "/api/model/invoke", json.dumps(body), {"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, raw[:300]
    served = json.loads(raw)["prediction"]
    # The same number the trainer's self-check got from the binary on the same row.
    (train_log,) = (tmp_path / "wine").rglob("train.log")
    found = re.search(
        r"self-check passed: .* prediction (\S+) on the example row", train_log.read_text()
    )
    assert found is not None
    expected = json.loads(found.group(1))
    assert _flat(served) == pytest.approx(_flat(expected), rel=1e-9), (served, expected)
    deleted = CliRunner().invoke(deployments, ["delete", "wine", "--workspace", str(workspace)])
    assert deleted.exit_code == 0, deleted.output


def _flat(value: object) -> list:
    return [y for x in value for y in _flat(x)] if isinstance(value, list) else [value]
