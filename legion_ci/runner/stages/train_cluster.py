"""The train stage as a Kubernetes Job (`train: {cluster: ...}`): the work moves to the
cluster, the stage's outputs stay the same (the binary in the run's artifacts, its sha256,
metrics, tags), so package and deploy do not know where training ran."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from legion_ci.errors import StageError
from legion_ci.gppi.archive import sha256_file
from legion_ci.processes import StageLog
from legion_ci.records import RunRecord, StageRecord
from legion_ci.spec.pipeline import Pipeline


def train_on_cluster(
    pipeline: Pipeline,
    record: RunRecord,
    stage_record: StageRecord,
    log: StageLog,
    artifact: Path,
) -> None:
    """Train as a Kubernetes Job and put its binary at `artifact` (the train stage's path)."""
    from legion_ci.integrations.clients import KubernetesCluster
    from legion_ci.training.job import TrainingJob, run_training_job

    spec = pipeline.stage("train")["cluster"]
    connection = pipeline.connections[spec["connection"]]
    storage = pipeline.connections[spec["storage"]]
    namespace = spec.get("namespace") or connection.options.get("namespace") or "default"
    inside = spec.get("pipeline") or os.path.relpath(pipeline.path, Path.cwd())
    name = re.sub(r"[^a-z0-9-]", "-", f"{pipeline.model_name}-train-{record.id}".lower())[:63]
    job = TrainingJob(
        name=name.strip("-"),
        namespace=str(namespace),
        image=spec["image"],
        pipeline=inside,
        upload=f"{storage.uri.rstrip('/')}/legion-ci/{record.id}",
        storage=storage,
        credentials_secret=spec["credentialsSecret"],
        model_name=pipeline.model_name,
        model_version=pipeline.model_version,
        run_id=record.id,
        resources=dict(spec.get("resources") or {}),
        deadline_s=int(spec["timeout"]),
    )
    scratch = record.folder / "work" / "train"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        result = run_training_job(
            KubernetesCluster(connection), job, scratch, log, timeout=float(spec["timeout"])
        )
        fetched = Path(result["artifact"])
        artifact.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched, artifact)
        digest = sha256_file(artifact)
        if digest != result.get("sha256"):
            raise StageError(f"{artifact}: sha256 differs from the one the training Job reported")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stage_record.metrics = {k: float(v) for k, v in (result.get("metrics") or {}).items()}
    stage_record.tags = {k: str(v) for k, v in (result.get("tags") or {}).items()}
    outputs = dict(result.get("outputs") or {})
    outputs.update(
        {
            "artifact": str(artifact),
            "artifact_sha256": digest,
            "artifact_bytes": artifact.stat().st_size,
            "trained_on": f"kubernetes Job {job.namespace}/{job.name}",
        }
    )
    outputs.pop("artifact_latest", None)
    stage_record.outputs.update(outputs)
    log.line(f"trained model binary (from the cluster): {artifact} (sha256 {digest})")
