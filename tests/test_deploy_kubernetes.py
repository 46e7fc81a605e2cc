"""The `kubernetes` deploy target, checked the two ways this machine allows (no API server can
be installed here):
- every rendered manifest is validated against the real Kubernetes 1.33 schemas
  (kubernetes-validate, strict: unknown fields fail);
- the client logic (create, server-side apply, rollout wait, rollback, error messages) runs
  against the kmock emulator on 127.0.0.1, with `Controller` moving the Deployments' status the
  way the deployment controller would. Real scheduling, pulling and probing are not exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from legion_ci import deployment_state as state
from legion_ci.errors import StageError
from legion_ci.integrations.base import Connection, DeployContext
from legion_ci.processes import StageLog
from legion_ci.redact import Redactor
from legion_ci.targets import manifests
from legion_ci.targets.arguments import resolve_arguments
from legion_ci.targets.kubernetes import KubernetesTarget
from tests.k8s_support import ROOT, Controller, kmock_python, write_kubeconfig
from tests.procs import free_port, http_ok, service

TOKEN = "emulator-token-0123456789"
DIGESTS = {v: "sha256:" + (v.replace(".", "") * 64)[:64] for v in ("1.0", "2.0")}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory):
    """kmock on 127.0.0.1 with namespace `ml`, and `locked` where RBAC forbids everything."""
    folder = tmp_path_factory.mktemp("kmock")
    port = free_port()
    argv = [kmock_python(), str(ROOT / "tests" / "k8s_support.py"), "--port", str(port)]
    argv += ["--namespace", "ml", "--forbid", "locked"]
    with service(
        argv,
        folder / "kmock.log",
        ready=http_ok(f"http://127.0.0.1:{port}/version"),
        timeout=60,
        name="kmock",
    ):
        yield write_kubeconfig(folder / "kubeconfig", port, token=TOKEN), port


@pytest.fixture
def controller(emulator):
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(emulator[0]), client_configuration=configuration)
    thread = Controller(client.ApiClient(configuration))
    thread.start()
    yield thread
    thread.stop.set()
    thread.join(30)
    assert thread.errors == [], thread.errors[:5]


def context(
    workspace: Path,
    kubeconfig: Path,
    version: str,
    *,
    kube_context: str = "emulator",
    **arguments: object,
) -> DeployContext:
    workspace.mkdir(parents=True, exist_ok=True)
    return DeployContext(
        model_name="wine",
        model_version=version,
        run_id=f"run-{version}",
        artifact=None,
        package_outputs={
            "image": f"127.0.0.1:5000/wine:{version}",
            "digest": DIGESTS.get(version, DIGESTS["1.0"]),
        },
        arguments=resolve_arguments("kubernetes", arguments),
        connection=Connection(
            "cluster",
            "kubernetes",
            options={
                "kubeconfig": str(kubeconfig),
                "context": kube_context,
                "namespace": "ml",
            },
        ),
        workspace=workspace,
        scratch_dir=workspace,
        log=StageLog(workspace / f"deploy-{version}.log", Redactor([TOKEN])),
    )


def target() -> KubernetesTarget:
    deployer = KubernetesTarget()
    deployer.poll_interval = 0.1
    return deployer


def read(kubeconfig: Path, kind: str, name: str, namespace: str = "ml") -> dict:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    api = client.ApiClient(configuration)
    fn = {
        "Deployment": client.AppsV1Api(api).read_namespaced_deployment,
        "Service": client.CoreV1Api(api).read_namespaced_service,
    }[kind]
    return json.loads(fn(name, namespace, _preload_content=False).data)


def test_rendered_manifests_pass_the_kubernetes_1_33_schemas(tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        tmp_path / "unused",
        "1.0",
        autoscaling={"maxReplicas": 5, "cpuUtilization": 60},
        disruptionBudget={"minAvailable": 1},
        imagePullSecrets=["registry-pull"],
    )
    text = target().render(ctx)
    objects = list(yaml.safe_load_all(text))
    kinds = [o["kind"] for o in objects]
    assert kinds == ["Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.33", strict=True)

    deployment = objects[1]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "127.0.0.1:5000/wine@" + DIGESTS["1.0"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["imagePullSecrets"] == [{"name": "registry-pull"}]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["legion-ci.epam.com/model-version"] == "1.0"
    assert deployment["metadata"]["annotations"]["legion-ci.epam.com/run-id"] == "run-1.0"
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert TOKEN not in text


def test_a_manifest_kubernetes_would_refuse_is_caught_by_the_schema(tmp_path: Path) -> None:
    """The validation is not a formality: a wrong type in a rendered object fails it."""
    objects = manifests.render(
        name="wine",
        namespace="ml",
        model_name="wine",
        model_version="1.0",
        run_id="r",
        image="x@sha256:" + "a" * 64,
        arguments=resolve_arguments("kubernetes", {}),
    )
    objects[1]["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(objects[1], "1.33", strict=True)


def test_image_reference() -> None:
    digest = "sha256:" + "b" * 64
    ref = manifests.image_reference
    assert ref({"image": "reg:5000/ns/m:1.0", "digest": digest}, {}) == f"reg:5000/ns/m@{digest}"
    assert ref({"image": "reg:5000/m", "digest": digest}, {}) == f"reg:5000/m@{digest}"
    assert ref({"image": "m:1"}, {}) == "m:1"
    assert ref({"image": "m:1", "digest": digest}, {"image": "other:2"}) == "other:2"
    # docker-rest reports its digest as a whole reference: used as it is, not prefixed again
    full = f"127.0.0.1:5000/wine@{digest}"
    assert ref({"image": "127.0.0.1:5000/wine:1.0-abc", "digest": full}, {}) == full
    with pytest.raises(StageError, match="run the package stage first"):
        ref({}, {})


def test_deploy_update_and_roll_back_on_the_emulator(tmp_path: Path, emulator, controller) -> None:
    kubeconfig, _port = emulator
    ws = tmp_path / "ws"
    deployer = target()

    first = deployer.deploy(context(ws, kubeconfig, "1.0", name="wine-a")).outputs
    assert first["url"] == "http://wine-a.ml.svc.cluster.local:80"
    service_obj = read(kubeconfig, "Service", "wine-a")
    assert service_obj["spec"]["selector"]["app.kubernetes.io/name"] == "wine-a"
    dep = read(kubeconfig, "Deployment", "wine-a")
    assert dep["metadata"]["generation"] == 1 and dep["status"]["observedGeneration"] == 1

    second = deployer.deploy(context(ws, kubeconfig, "2.0", name="wine-a")).outputs
    dep = read(kubeconfig, "Deployment", "wine-a")
    assert dep["metadata"]["generation"] == 2
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == second["image"]
    assert second["image"].endswith(DIGESTS["2.0"])

    for broken, reason in (
        ("pull-fails", "image pull failed for 127.0.0.1:5000/wine:pull-fails (ErrImagePull)"),
        ("never-ready", "rollout exceeded its progress deadline"),
    ):
        bad = context(ws, kubeconfig, "3.0", name="wine-a", image=f"127.0.0.1:5000/wine:{broken}")
        with pytest.raises(StageError) as failed:
            deployer.deploy(bad)
        message = str(failed.value)
        assert reason in message, message[:3000]
        assert "rolled back to the previous pod template (2.0), which is rolled out again" in (
            message
        )
        dep = read(kubeconfig, "Deployment", "wine-a")
        template = dep["spec"]["template"]
        assert template["spec"]["containers"][0]["image"] == second["image"]
        assert (
            reason
            in template["metadata"]["annotations"][manifests.LABEL_PREFIX + "/rolled-back-because"]
        )
    assert "event wine-a-" in message or "event" not in message  # events listed when found
    record = state.load(ws, "wine-a")
    assert record is not None and record.model_version == "2.0" and record.target == "kubernetes"
    assert record.previous == {"model_version": "1.0", "run_id": "run-1.0", "url": first["url"]}
    assert TOKEN not in (ws / "deploy-3.0.log").read_text()


def test_a_failed_first_deployment_says_there_is_nothing_to_roll_back_to(
    tmp_path: Path, emulator, controller
) -> None:
    kubeconfig, _port = emulator
    bad = context(
        tmp_path, kubeconfig, "1.0", name="wine-b", image="127.0.0.1:5000/wine:pull-fails"
    )
    with pytest.raises(StageError) as failed:
        target().deploy(bad)
    message = str(failed.value)
    assert "image pull failed" in message and "nothing to roll back to" in message
    assert "event wine-b-" in message and "not found" in message, message
    assert "is waiting to start" in message, message  # the pod's log, or why there is none
    assert state.load(tmp_path, "wine-b") is None


@pytest.mark.parametrize(
    ("kube_context", "namespace", "expected"),
    [
        ("nope", "ml", "has no context 'nope'; known: emulator, nowhere"),
        ("nowhere", "ml", "cannot reach the Kubernetes API at http://127.0.0.1:"),
        ("emulator", "absent", "namespace 'absent' does not exist on http://127.0.0.1:"),
        ("emulator", "locked", "forbidden by the cluster's RBAC (read Service locked/wine)"),
    ],
)
def test_cluster_errors_are_one_line(
    tmp_path: Path, emulator, kube_context: str, namespace: str, expected: str
) -> None:
    kubeconfig, _port = emulator
    ctx = context(tmp_path, kubeconfig, "1.0", kube_context=kube_context, namespace=namespace)
    with pytest.raises(StageError) as failed:
        target().deploy(ctx)
    message = str(failed.value)
    assert expected in message, message
    assert "\n" not in message and TOKEN not in message


def test_arguments_the_runner_left_unfilled_get_the_registered_defaults(tmp_path: Path) -> None:
    ctx = context(tmp_path, tmp_path / "unused", "1.0")
    ctx.arguments = {"replicas": 3}  # as given in a pipeline, no defaults filled
    deployment = list(yaml.safe_load_all(target().render(ctx)))[1]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["progressDeadlineSeconds"] == 300
    kubernetes_validate.validate(deployment, "1.33", strict=True)


def test_the_wine_k8s_example_dry_run_prints_manifests_kubernetes_accepts(tmp_path: Path) -> None:
    """pipelines/wine-k8s.yaml (kubeconfig + context, the docker-rest image by digest): it
    validates, and the manifests its `run --dry-run` prints pass the 1.33 schemas."""
    from conftest import copy_wine_project, run_cli

    pipeline = copy_wine_project(tmp_path).parent / "wine-k8s.yaml"
    env = {"MLFLOW_DISABLE_TELEMETRY": "true"}
    run_cli("validate", str(pipeline), env=env).assert_success()
    outcome = run_cli("run", str(pipeline), "--dry-run", "--output", "json", env=env)
    plan = json.loads(outcome.assert_success().out)
    deploy = next(stage for stage in plan["stages"] if stage["stage"] == "deploy")
    assert deploy["connection"] == "cluster"
    objects = list(yaml.safe_load_all(deploy["rendered"]))
    assert [o["kind"] for o in objects] == ["Service", "Deployment"]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.33", strict=True)
    container = objects[1]["spec"]["template"]["spec"]["containers"][0]
    assert "@sha256:" in container["image"]
    assert objects[1]["metadata"]["namespace"] == "ml"
    # The plain dry-run prints the same manifests for a person to read.
    text = run_cli("run", str(pipeline), "--dry-run", env=env).assert_success().out
    assert "kind: Deployment" in text and container["image"] in text
