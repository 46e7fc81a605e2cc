"""Training that outgrows the CI agent: the train stage as a Kubernetes Job.

The Job runs `python -m legion_ci.cli.training_pod --pipeline P --upload s3://B/PREFIX` in
a toolchain image that holds legion-ci and the project (cli/training_pod.py: the train stage with
its data bindings, tracking, gates and self-check, then the binary and a result.json to
S3-compatible storage). This side creates the Job, follows its pod's log into the stage log,
waits for it to succeed or fail (or times out and deletes it), then downloads the binary and
checks its sha256 against result.json, so the pipeline's shape does not change when the work
moves. Credentials reach the pod only through a Secret (`secretKeyRef`), never in the Job.

Wired into the train stage: a pipeline whose train stage says `cluster: {connection:
<kubernetes connection>, image: ..., storage: <s3 connection>, credentialsSecret: ...}` runs
it through `runner/stages/train_cluster.py`, which calls `run_training_job`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legion_ci.errors import StageError
from legion_ci.integrations.base import Connection
from legion_ci.integrations.clients import KubernetesCluster
from legion_ci.targets.manifests import LABEL_PREFIX, label_value
from legion_ci.training.handoff import ENDPOINT_ENV, split_s3


@dataclass
class TrainingJob:
    name: str  # the Job's name (DNS-1123), e.g. wine-train-<run id>
    namespace: str
    image: str  # a toolchain image with legion-ci and the project in it
    pipeline: str  # the pipeline file's path inside the image
    upload: str  # s3://bucket/prefix for the result
    storage: Connection  # the s3 connection: endpoint (uri/endpoint option)
    credentials_secret: str  # Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    model_name: str
    model_version: str
    run_id: str
    resources: dict[str, Any]
    deadline_s: int = 6 * 3600
    run_as_user: int = 10001


def render_job(job: TrainingJob) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": label_value(job.model_name),
        "app.kubernetes.io/component": "training",
        "app.kubernetes.io/managed-by": "legion-ci",
        f"{LABEL_PREFIX}/model-version": label_value(job.model_version),
    }
    annotations = {f"{LABEL_PREFIX}/run-id": job.run_id}
    endpoint = job.storage.options.get("endpoint") or ""
    env = [{"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"}, {"name": "HOME", "value": "/tmp"}]
    if endpoint:
        env.append({"name": ENDPOINT_ENV, "value": str(endpoint)})
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.append(
            {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": job.credentials_secret, "key": key}},
            }
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job.name,
            "namespace": job.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": 0,  # a failed training is reported, not silently retried
            "activeDeadlineSeconds": job.deadline_s,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": job.run_as_user,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "train",
                            "image": job.image,
                            "command": [
                                "python",
                                "-m",
                                "legion_ci.cli.training_pod",
                                "--pipeline",
                                job.pipeline,
                                "--upload",
                                job.upload,
                            ],
                            "env": env,
                            "resources": job.resources,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def _job_state(obj: dict[str, Any]) -> str | None:
    status = obj.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            if cond["type"] == "Failed":
                return f"failed: {cond.get('reason', '')} {cond.get('message', '')}".strip()
            return "succeeded"
    if status.get("succeeded", 0) >= 1:
        return "succeeded"
    if status.get("failed", 0) >= 1:
        return "failed"
    return None


class _LogFollower:
    """Copies the Job's pod log into the stage log, the new part on each poll."""

    def __init__(self, cluster: KubernetesCluster, job: TrainingJob, log: Any):
        self.cluster, self.job, self.log = cluster, job, log
        self.seen = 0
        self.lines: list[str] = []

    def poll(self) -> None:
        pods = self.cluster.call(
            f"list the pods of Job {self.job.namespace}/{self.job.name}",
            self.cluster.core.list_namespaced_pod,
            self.job.namespace,
            label_selector=f"job-name={self.job.name}",
        )
        for pod in (pods or {}).get("items") or []:
            if (pod.get("metadata", {}).get("labels") or {}).get("job-name") != self.job.name:
                continue
            try:
                text = self.cluster.call(
                    "read the training log",
                    self.cluster.core.read_namespaced_pod_log,
                    pod["metadata"]["name"],
                    self.job.namespace,
                    text=True,
                )
            except StageError:
                return  # not started yet
            if isinstance(text, str) and len(text) > self.seen:
                for line in text[self.seen :].splitlines():
                    self.log.line(f"[pod] {line}")
                    self.lines.append(line)
                self.seen = len(text)
            return


def run_training_job(
    cluster: KubernetesCluster,
    job: TrainingJob,
    dest: Path,
    log: Any,
    *,
    timeout: float,
    poll_interval: float = 2.0,
) -> dict[str, Any]:
    """Create the Job, follow it, fetch its binary into `dest` (a folder); returns result.json
    with `artifact` (the local path) added. Raises StageError naming what failed."""
    manifest = render_job(job)
    cluster.call(
        f"create Job in namespace {job.namespace}",
        cluster.batch.create_namespaced_job,
        job.namespace,
        manifest,
    )
    log.line(f"train: Job {job.namespace}/{job.name} created (image {job.image})")
    follower = _LogFollower(cluster, job, log)
    began = time.monotonic()
    while True:
        obj = cluster.call(
            f"read Job {job.namespace}/{job.name}",
            cluster.batch.read_namespaced_job,
            job.name,
            job.namespace,
        )
        if obj is None:
            raise StageError(f"Job {job.namespace}/{job.name} disappeared while training")
        follower.poll()
        state = _job_state(obj)
        if state == "succeeded":
            break
        if state is not None:
            tail = "\n".join(f"    {line}" for line in follower.lines[-20:])
            raise StageError(
                f"training Job {job.namespace}/{job.name} {state}"
                + (f"; last lines of its log:\n{tail}" if tail else "")
            )
        if time.monotonic() - began > timeout:
            cluster.call(
                f"delete Job {job.namespace}/{job.name}",
                cluster.batch.delete_namespaced_job,
                job.name,
                job.namespace,
                propagation_policy="Background",
            )
            raise StageError(
                f"training Job {job.namespace}/{job.name} did not finish within {timeout:g} s;"
                " it was deleted"
            )
        time.sleep(poll_interval)
    log.line(f"train: Job finished in {time.monotonic() - began:.1f} s; fetching the binary")
    return fetch_result(job, dest)


def fetch_result(job: TrainingJob, dest: Path) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    from legion_ci.gppi.archive import sha256_file

    bucket, prefix = split_s3(job.upload)
    try:
        from legion_ci.integrations.clients import s3_client

        client = s3_client(job.storage)
        raw = client.get_object(Bucket=bucket, Key=f"{prefix}/result.json")["Body"].read()
        result = json.loads(raw)
        dest.mkdir(parents=True, exist_ok=True)
        local = dest / Path(result["artifact_key"]).name
        client.download_file(bucket, result["artifact_key"], str(local))
    except (BotoCoreError, ClientError, ValueError, KeyError) as exc:
        raise StageError(
            f"the training Job succeeded but its result cannot be read from {job.upload}: {exc}"
        ) from None
    digest = sha256_file(local)
    if digest != result.get("sha256"):
        local.unlink(missing_ok=True)
        raise StageError(
            f"{job.upload}/{local.name}: sha256 {digest} does not match the Job's "
            f"{result.get('sha256')}"
        )
    return {**result, "artifact": str(local)}
