"""The `kubernetes` deploy target: apply the rendered objects, wait for the rollout, roll back.

Connection (a `kubernetes` connection of the pipeline): `kubeconfig` + `context`, or `uri` +
`token` (+ `caFile`), or nothing inside a pod (in-cluster config). Namespace: the stage's
`arguments.namespace`, else the connection's `namespace`, else `default`.

Apply: each object is read first; a missing one is created, an existing one is updated by
server-side apply (field manager `legion-ci`, what `kubectl apply --server-side` does). The
Deployment's pod template before the update is kept as the rollback point.

Rollout, with `kubectl rollout status`'s logic: done when `status.observedGeneration >=
metadata.generation`, `updatedReplicas == spec.replicas`, `replicas == updatedReplicas` (no old
replicas left) and `availableReplicas == updatedReplicas`; failed when the `Progressing`
condition says `ProgressDeadlineExceeded`, when a new pod cannot pull its image, or when the
timeout passes. On failure the Deployment goes back to the previous pod template (a new rollout
to it, as `kubectl rollout undo` does) and the stage fails with the pods' events and log tails.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from legion_ci import deployment_state as state
from legion_ci.errors import InputError, StageError
from legion_ci.integrations.base import DeployContext, DeployResult
from legion_ci.integrations.clients import KubernetesCluster
from legion_ci.targets import manifests
from legion_ci.targets.arguments import with_defaults

TARGET = "kubernetes"
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
POD_FAILURES = ("CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError")
ROLLBACK_ANNOTATION = f"{manifests.LABEL_PREFIX}/rolled-back-because"


def _rolled_out(dep: dict[str, Any]) -> tuple[bool, str]:
    """kubectl rollout status's verdict: (done, what it is waiting for); raises on failure."""
    meta, spec, status = dep.get("metadata", {}), dep.get("spec", {}), dep.get("status") or {}
    # Conditions describe the generation the controller last saw: judge them only once it has
    # seen this one (a rollback's first poll still shows the failed rollout's condition).
    if status.get("observedGeneration", 0) < meta.get("generation", 1):
        return False, "waiting for the deployment spec update to be observed"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            raise StageError(f"rollout exceeded its progress deadline: {cond.get('message', '')}")
    want = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    if updated < want:
        return False, f"{updated} of {want} new replicas updated"
    if status.get("replicas", 0) > updated:
        return False, f"{status.get('replicas', 0) - updated} old replicas pending termination"
    available = status.get("availableReplicas", 0)
    if available < updated:
        return False, f"{available} of {updated} updated replicas available"
    return True, f"{available} replicas available"


class KubernetesTarget:
    """Deploys the packaged image as a Deployment + Service (see the module docstring)."""

    poll_interval = 1.0

    # `legion-ci deployments`: the state says what was applied; the cluster itself needs the
    # connection's credentials, so these read the record and say what to run instead.
    def status(self, record: state.DeploymentState) -> tuple[str, str]:
        return "recorded", "the state as of the last deploy (not checked against the cluster)"

    def logs(self, record: state.DeploymentState, lines: int) -> str:
        namespace = record.details.get("namespace", "default")
        raise InputError(
            f"{record.name}: a kubernetes deployment keeps no local log; try: "
            f"kubectl logs -n {namespace} deploy/{record.name} --tail {lines}"
        )

    def delete(
        self, record: state.DeploymentState, *, workspace: Path, drain_timeout: float
    ) -> str:
        return delete_deployment(record)

    def render(self, ctx: DeployContext) -> str:
        """The YAML `--dry-run` prints (no cluster needed)."""
        return manifests.render_yaml(self._objects(ctx))

    def _namespace(self, ctx: DeployContext) -> str:
        options = ctx.connection.options if ctx.connection else {}
        return str(ctx.arguments.get("namespace") or options.get("namespace") or "default")

    def _objects(self, ctx: DeployContext) -> list[dict[str, Any]]:
        ctx.arguments = with_defaults(TARGET, ctx.arguments)
        return manifests.render(
            name=state.check_name(ctx.arguments.get("name") or ctx.model_name),
            namespace=self._namespace(ctx),
            model_name=ctx.model_name,
            model_version=ctx.model_version,
            run_id=ctx.run_id,
            image=(
                ctx.image
                if ctx.image and not ctx.arguments.get("image")
                else manifests.image_reference(dict(ctx.package_outputs), ctx.arguments)
            ),
            arguments=ctx.arguments,
        )

    def deploy(self, ctx: DeployContext) -> DeployResult:
        objects = self._objects(ctx)
        name, namespace = objects[0]["metadata"]["name"], objects[0]["metadata"]["namespace"]
        with state.locked(ctx.workspace, name):
            cluster = KubernetesCluster(ctx.connection)
            ctx.log.line(f"deploy: {name} to namespace {namespace} on {cluster.host}")
            previous = self._apply(cluster, objects, ctx)
            deployment = objects[1]
            image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
            try:
                took = self._wait(
                    cluster, name, namespace, float(ctx.arguments["rolloutTimeout"]), ctx
                )
            except StageError as exc:
                raise StageError(self._fail(cluster, ctx, deployment, previous, exc)) from None
            ctx.log.line(f"deploy: rolled out in {took:.1f} s")
            port = objects[0]["spec"]["ports"][0]["port"]
            url = f"http://{name}.{namespace}.svc.cluster.local:{port}"
            old = state.load(ctx.workspace, name)
            state.save(
                ctx.workspace,
                state.DeploymentState.deployed(
                    ctx,
                    name=name,
                    target=TARGET,
                    url=url,
                    details={"namespace": namespace, "image": image, "api": cluster.host},
                    old=old,
                ),
            )
            return DeployResult(
                outputs={
                    "url": url,
                    "name": name,
                    "namespace": namespace,
                    "image": image,
                    "target": TARGET,
                    "rollout_seconds": round(took, 3),
                }
            )

    def _apply(
        self, cluster: KubernetesCluster, objects: list[dict[str, Any]], ctx: DeployContext
    ) -> dict[str, Any] | None:
        """Create or server-side-apply every object; return the Deployment's previous pod
        template (None on a first deployment)."""
        previous = None
        for obj in objects:
            kind, name, ns = obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"]
            read, create, patch = self._verbs(cluster, kind)
            current = cluster.call(f"read {kind} {ns}/{name}", read, name, ns)
            if kind == "Deployment" and current is not None:
                template = current["spec"]["template"]
                annotations = template.get("metadata", {}).get("annotations") or {}
                previous = {
                    "template": template,
                    "version": annotations.get(f"{manifests.LABEL_PREFIX}/model-version", "?"),
                }
            if current is None:
                cluster.call(
                    f"create {kind} in namespace {ns}", create, ns, obj, field_manager="legion-ci"
                )
                ctx.log.line(f"deploy: created {kind} {ns}/{name}")
            else:
                cluster.call(
                    f"update {kind} {ns}/{name}",
                    patch,
                    name,
                    ns,
                    obj,
                    field_manager="legion-ci",
                    force=True,
                    _content_type="application/apply-patch+yaml",
                )
                ctx.log.line(f"deploy: applied {kind} {ns}/{name}")
        return previous

    @staticmethod
    def _verbs(cluster: KubernetesCluster, kind: str) -> tuple[Callable[..., Any], ...]:
        api, suffix = {
            "Service": (cluster.core, "service"),
            "Deployment": (cluster.apps, "deployment"),
            "HorizontalPodAutoscaler": (cluster.autoscaling, "horizontal_pod_autoscaler"),
            "PodDisruptionBudget": (cluster.policy, "pod_disruption_budget"),
        }[kind]
        return tuple(
            getattr(api, f"{verb}_namespaced_{suffix}") for verb in ("read", "create", "patch")
        )

    def _wait(
        self,
        cluster: KubernetesCluster,
        name: str,
        namespace: str,
        timeout: float,
        ctx: DeployContext,
    ) -> float:
        began = time.monotonic()
        last = ""
        while True:
            dep = cluster.call(
                f"read Deployment {namespace}/{name}",
                cluster.apps.read_namespaced_deployment,
                name,
                namespace,
            )
            if dep is None:
                raise StageError(f"Deployment {namespace}/{name} disappeared during the rollout")
            done, waiting = _rolled_out(dep)
            if done:
                return time.monotonic() - began
            self._check_pods(cluster, dep, namespace)
            if waiting != last:
                ctx.log.line(f"deploy: {waiting}")
                last = waiting
            if time.monotonic() - began > timeout:
                raise StageError(f"not rolled out within {timeout:g} s ({waiting})")
            time.sleep(self.poll_interval)

    @staticmethod
    def _pods(
        cluster: KubernetesCluster, dep: dict[str, Any], namespace: str
    ) -> list[dict[str, Any]]:
        labels = dep["spec"]["selector"]["matchLabels"]
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        listed = cluster.call(
            f"list Pods in namespace {namespace}",
            cluster.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        )
        # Filtered here too: the selector is the contract, whatever the server did with it.
        return [
            pod
            for pod in (listed or {}).get("items") or []
            if labels.items() <= (pod.get("metadata", {}).get("labels") or {}).items()
        ]

    def _check_pods(self, cluster: KubernetesCluster, dep: dict[str, Any], namespace: str) -> None:
        """Fail at once on what no amount of waiting fixes (an image that cannot be pulled)."""
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        for pod in self._pods(cluster, dep, namespace):
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                if status.get("image") not in (None, image):
                    continue
                waiting = (status.get("state") or {}).get("waiting") or {}
                reason = waiting.get("reason", "")
                if reason in PULL_FAILURES:
                    raise StageError(
                        f"image pull failed for {image} ({reason}): {waiting.get('message', '')}"
                        "; check the image reference and the imagePullSecrets"
                    )
                if reason in POD_FAILURES:
                    pod_name = pod["metadata"]["name"]
                    raise StageError(f"pod {pod_name} is in {reason}: {waiting.get('message', '')}")

    def _fail(
        self,
        cluster: KubernetesCluster,
        ctx: DeployContext,
        deployment: dict[str, Any],
        previous: dict[str, Any] | None,
        exc: StageError,
    ) -> str:
        """Roll back (when there is something to go back to) and say what went wrong."""
        name, namespace = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        evidence = self._evidence(cluster, name, namespace)
        if previous is None:
            outcome = (
                f"nothing was deployed before, so nothing to roll back to (remove it with: "
                f"kubectl delete deployment,service -n {namespace} {name})"
            )
        else:
            # The previous template exactly as it was, so the Deployment controller finds its
            # ReplicaSet and scales it back up (`kubectl rollout undo`); the reason goes on the
            # Deployment, since a pod template changed in any way would start a third
            # ReplicaSet and replace every healthy pod.
            template = copy.deepcopy(previous["template"])
            meta = copy.deepcopy(deployment["metadata"])
            meta.setdefault("annotations", {})[ROLLBACK_ANNOTATION] = str(exc)[:200]
            try:
                cluster.call(
                    f"roll back Deployment {namespace}/{name}",
                    cluster.apps.patch_namespaced_deployment,
                    name,
                    namespace,
                    # The whole object: server-side apply drops the fields this manager set
                    # before and leaves out now (replicas, selector, strategy...).
                    {
                        **deployment,
                        "metadata": meta,
                        "spec": {**deployment["spec"], "template": template},
                    },
                    field_manager="legion-ci",
                    force=True,
                    _content_type="application/apply-patch+yaml",
                )
                outcome = f"rolled back to the previous pod template ({previous['version']})"
                ctx.log.line(f"deploy: {outcome}")
                try:
                    self._wait(
                        cluster, name, namespace, float(ctx.arguments["rolloutTimeout"]), ctx
                    )
                    outcome += ", which is rolled out again"
                except StageError as again:
                    outcome += f", whose rollout has not finished: {again}"
            except StageError as failed:
                outcome = f"the rollback failed too: {failed}"
        return f"{name}: rollout of {image} in {namespace} failed: {exc}; {outcome}" + (
            f"\n{evidence}" if evidence else ""
        )

    def _evidence(self, cluster: KubernetesCluster, name: str, namespace: str) -> str:
        """The pods' recent warning events and log tails (best effort: each may be missing)."""
        lines: list[str] = []
        try:
            events = cluster.call(
                f"list Events in namespace {namespace}",
                cluster.core.list_namespaced_event,
                namespace,
            )
            for event in (events or {}).get("items") or []:
                involved = event.get("involvedObject", {}).get("name", "")
                if involved == name or involved.startswith(f"{name}-"):
                    lines.append(
                        f"    event {involved}: {event.get('reason', '')}: "
                        f"{event.get('message', '')}"
                    )
            dep = cluster.call(
                f"read Deployment {namespace}/{name}",
                cluster.apps.read_namespaced_deployment,
                name,
                namespace,
            )
            for pod in self._pods(cluster, dep, namespace) if dep else []:
                pod_name = pod["metadata"]["name"]
                try:
                    log = cluster.call(
                        f"read the log of Pod {namespace}/{pod_name}",
                        cluster.core.read_namespaced_pod_log,
                        pod_name,
                        namespace,
                        tail_lines=10,
                        text=True,
                    )
                except StageError as exc:  # e.g. 400: the container never started
                    log = f"(no log: {exc})"
                if isinstance(log, str) and log.strip():
                    lines.append(f"    log of {pod_name}:")
                    lines.extend(f"      {line}" for line in log.splitlines()[-10:])
        except (StageError, ValueError):
            pass  # evidence is a courtesy: the failure itself is already known
        return ("  events and logs:\n" + "\n".join(lines[-40:])) if lines else ""


def delete_deployment(record: state.DeploymentState) -> str:
    """`legion-ci deployments delete` for a Kubernetes deployment: needs a connection, so it
    tells what to run instead of guessing the credentials."""
    namespace = record.details.get("namespace", "default")
    return (
        f"forgotten locally; delete the cluster objects with: kubectl delete "
        f"deployment,service,hpa,pdb -n {namespace} -l app.kubernetes.io/instance={record.name}"
    )
