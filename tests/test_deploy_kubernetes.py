"""The `kubernetes` deploy target against a real control plane (tests/kube_support.py: the
kube-apiserver, controller-manager, scheduler and etcd of Kubernetes v1.37.2, built from
Kubernetes' own Go modules), with the tests' node agent (tests/kube_node.py) in the kubelet's
place. Apply and re-apply, the rollout wait on the real Deployment controller's status, a
rollout past its progress deadline, the rollback to the previous ReplicaSet, the real API
server's validation, RBAC 403, missing namespace, and pod logs through `pods/log`. The
rendered manifests are also checked against the 1.33 schemas (kubernetes-validate) without a
cluster, for `--dry-run`.
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
from tests.kube_support import api_client, kubeconfig, limited_token

DIGESTS = {v: "sha256:" + (v.replace(".", "") * 64)[:64] for v in ("1.0", "2.0")}


def context(
    workspace: Path,
    kubeconfig: Path,
    version: str,
    *,
    kube_context: str = "admin",
    secrets: tuple[str, ...] = (),
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
        log=StageLog(workspace / f"deploy-{version}.log", Redactor(list(secrets))),
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


@pytest.fixture(scope="module")
def cluster(kube, tmp_path_factory: pytest.TempPathFactory):
    """The module's control plane, and a kubeconfig with three contexts: `admin`,
    `limited` (a ServiceAccount token from the TokenRequest API, allowed only to read
    Services and Deployments in `ml`) and `nowhere` (a port nothing listens on); yields
    (kubeconfig, limited token)."""
    plane, _agent = kube
    rules = [
        {"apiGroups": ["", "apps"], "resources": ["services", "deployments"], "verbs": ["get"]}
    ]
    token = limited_token(plane.api_client(), "ml", "ci-limited", rules)
    admin = {
        "client-certificate": str(plane.pki.folder / "admin.crt"),
        "client-key": str(plane.pki.folder / "admin.key"),
    }
    path = tmp_path_factory.mktemp("kubeconfig") / "kubeconfig"
    yield (
        kubeconfig(path, plane.server, plane.pki.ca, {"admin": admin, "limited": {"token": token}}),
        token,
    )


def replica_sets(kubeconfig_path: Path, name: str) -> dict[str, dict]:
    """The Deployment's ReplicaSets by name (what `kubectl rollout history` reads)."""
    from kubernetes import client

    listed = client.AppsV1Api(api_client(kubeconfig_path)).list_namespaced_replica_set(
        "ml", label_selector=f"app.kubernetes.io/instance={name}", _preload_content=False
    )
    return {rs["metadata"]["name"]: rs for rs in json.loads(listed.data)["items"]}


def test_the_cluster_is_the_real_kubernetes_release(cluster) -> None:
    """The API server the tests deploy to is Kubernetes' own, at the pinned release."""
    from kubernetes import client

    kubeconfig_path, _token = cluster
    info = client.VersionApi(api_client(kubeconfig_path)).get_code()
    assert info.git_version == "v1.37.2" and (info.major, info.minor) == ("1", "37")


def test_deploy_update_and_roll_back_on_a_real_control_plane(tmp_path: Path, cluster) -> None:
    kubeconfig_path, token = cluster
    ws = tmp_path / "ws"
    deployer = target()

    first = deployer.deploy(
        context(
            ws,
            kubeconfig_path,
            "1.0",
            name="wine-a",
            replicas=2,
            autoscaling={"maxReplicas": 4, "cpuUtilization": 60},
            disruptionBudget={"minAvailable": 1},
        )
    ).outputs
    assert first["url"] == "http://wine-a.ml.svc.cluster.local:80"
    service_obj = read(kubeconfig_path, "Service", "wine-a")
    assert service_obj["spec"]["selector"]["app.kubernetes.io/name"] == "wine-a"
    assert service_obj["spec"]["clusterIP"].startswith("10.96.0.")  # the API server's defaulting
    dep = read(kubeconfig_path, "Deployment", "wine-a")
    assert dep["metadata"]["generation"] == 1 and dep["status"]["observedGeneration"] == 1
    assert dep["status"]["availableReplicas"] == 2 and dep["status"]["readyReplicas"] == 2
    reasons = {c["type"]: c["reason"] for c in dep["status"]["conditions"]}
    assert reasons["Progressing"] in ("NewReplicaSetAvailable", "ReplicaSetUpdated")
    [first_rs] = replica_sets(kubeconfig_path, "wine-a")

    second = deployer.deploy(context(ws, kubeconfig_path, "2.0", name="wine-a", replicas=2)).outputs
    dep = read(kubeconfig_path, "Deployment", "wine-a")
    assert dep["metadata"]["generation"] == 2
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == second["image"]
    assert second["image"].endswith(DIGESTS["2.0"])
    sets = replica_sets(kubeconfig_path, "wine-a")
    assert sets[first_rs]["spec"]["replicas"] == 0 and len(sets) == 2
    [second_rs] = [n for n, rs in sets.items() if rs["spec"]["replicas"] == 2]

    for broken, reason in (
        ("pull-fails", "image pull failed for 127.0.0.1:5000/wine:pull-fails (ErrImagePull)"),
        ("never-ready", "rollout exceeded its progress deadline"),
    ):
        bad = context(
            ws,
            kubeconfig_path,
            "3.0",
            name="wine-a",
            replicas=2,
            # The real controller's clock: this long without progress is a failed rollout.
            progressDeadlineSeconds=4 if broken == "never-ready" else 300,
            image=f"127.0.0.1:5000/wine:{broken}",
        )
        with pytest.raises(StageError) as failed:
            deployer.deploy(bad)
        message = str(failed.value)
        assert reason in message, message[:3000]
        assert "rolled back to the previous pod template (2.0), which is rolled out again" in (
            message
        ), message[:3000]
        dep = read(kubeconfig_path, "Deployment", "wine-a")
        template = dep["spec"]["template"]
        assert template["spec"]["containers"][0]["image"] == second["image"]
        assert (
            reason
            in dep["metadata"]["annotations"][manifests.LABEL_PREFIX + "/rolled-back-because"]
        )
        # Back to the previous ReplicaSet itself (its pods kept serving), not a new copy of it.
        sets = replica_sets(kubeconfig_path, "wine-a")
        live = {n: rs["spec"]["replicas"] for n, rs in sets.items() if rs["spec"]["replicas"]}
        assert live == {second_rs: 2}, live
    assert "event wine-a-" in message or "event" not in message  # events listed when found
    record = state.load(ws, "wine-a")
    assert record is not None and record.model_version == "2.0" and record.target == "kubernetes"
    assert record.previous == {"model_version": "1.0", "run_id": "run-1.0", "url": first["url"]}
    assert token not in (ws / "deploy-3.0.log").read_text()


def test_hpa_and_pdb_pass_the_real_api_servers_validation(cluster) -> None:
    from kubernetes import client

    kubeconfig_path, _token = cluster
    api = api_client(kubeconfig_path)
    hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("wine-a", "ml")
    assert hpa.spec.max_replicas == 4 and hpa.spec.min_replicas == 2
    pdb = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("wine-a", "ml")
    assert pdb.spec.min_available == 1


def test_a_failed_first_deployment_says_there_is_nothing_to_roll_back_to(
    tmp_path: Path, cluster
) -> None:
    kubeconfig_path, _token = cluster
    bad = context(
        tmp_path, kubeconfig_path, "1.0", name="wine-b", image="127.0.0.1:5000/wine:pull-fails"
    )
    with pytest.raises(StageError) as failed:
        target().deploy(bad)
    message = str(failed.value)
    assert "image pull failed" in message and "nothing to roll back to" in message
    assert "event wine-b-" in message and "not found" in message, message
    # The pod's log through the API server's pods/log, from the node agent: why there is none.
    assert "is waiting to start" in message, message
    assert state.load(tmp_path, "wine-b") is None


@pytest.mark.parametrize(
    ("kube_context", "namespace", "expected"),
    [
        ("nope", "ml", "has no context 'nope'; known: admin, limited, nowhere"),
        ("nowhere", "ml", "cannot reach the Kubernetes API at https://127.0.0.1:"),
        ("admin", "absent", "namespace 'absent' does not exist on https://127.0.0.1:"),
        (
            "limited",
            "ml",
            "forbidden by the cluster's RBAC (create Service in namespace ml): services is "
            'forbidden: User "system:serviceaccount:ml:ci-limited" cannot create resource '
            '"services" in API group "" in the namespace "ml"',
        ),
    ],
)
def test_cluster_errors_are_one_line(
    tmp_path: Path, cluster, kube_context: str, namespace: str, expected: str
) -> None:
    kubeconfig_path, token = cluster
    ctx = context(
        tmp_path,
        kubeconfig_path,
        "1.0",
        kube_context=kube_context,
        namespace=namespace,
        secrets=(token,),
    )
    with pytest.raises(StageError) as failed:
        target().deploy(ctx)
    message = str(failed.value)
    assert expected in message, message
    assert "\n" not in message and token not in message


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
