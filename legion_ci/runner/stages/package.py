"""The package stage: hands the trained model binary to a packaging integration.

The integration satisfies the Packager Protocol (in-process, or Legion's out-of-process
contract through its adapter); what it hands back becomes the stage's outputs once checked
against the stage's declared outputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from legion_ci.errors import StageError
from legion_ci.fs import inside
from legion_ci.integrations.base import PackageContext, PackageTarget
from legion_ci.processes import StageLog
from legion_ci.records import RunRecord, StageRecord
from legion_ci.spec.pipeline import Pipeline


def trained_artifact(record: RunRecord) -> Path:
    """The run's trained model binary, checksum verified against what train recorded."""
    from legion_ci.gppi.archive import sha256_file

    train = record.stages["train"].outputs
    artifact = Path(train["artifact"])
    if not artifact.is_file():
        # The train stage may have run on another agent, with the workspace elsewhere.
        artifact = inside(record.folder / "artifacts", artifact.name)
    if not artifact.is_file():
        raise StageError(f"the trained model binary of run {record.id} is gone: {artifact}")
    if sha256_file(artifact) != train.get("artifact_sha256"):
        raise StageError(f"{artifact}: checksum differs from the one train recorded")
    return artifact


def run_package(
    pipeline: Pipeline, record: RunRecord, stage_record: StageRecord, log: StageLog
) -> None:
    from legion_ci.gppi.archive import safe_extract

    artifact = trained_artifact(record)
    stage = pipeline.stage("package")
    registration = pipeline.registration("package")
    scratch = record.folder / "work" / "package"
    shutil.rmtree(scratch, ignore_errors=True)
    artifact_dir = safe_extract(artifact, scratch / "artifact")
    ctx = PackageContext(
        model_name=pipeline.model_name,
        model_version=pipeline.model_version,
        run_id=record.id,
        git_commit=record.git_commit,
        artifact=artifact,
        artifact_dir=artifact_dir,
        arguments=dict(stage.get("arguments") or {}),
        targets=[
            PackageTarget(name=t["name"], connection=pipeline.connections[t["connection"]])
            for t in stage.get("targets") or []
        ],
        output_dir=record.folder / "artifacts",
        scratch_dir=scratch,
        train_outputs=dict(record.stages["train"].outputs),
        log=log,
        clients=pipeline.clients(),
        integration=registration.name,
        pipeline_file=pipeline.path,
    )
    try:
        result = registration.load().pack(ctx)
        stage_record.outputs.update(result.outputs)
        log.line(f"packaged: {json.dumps(result.outputs)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def plan_package(pipeline: Pipeline, stage: dict[str, Any]) -> dict[str, Any]:
    return {
        "targets": [
            {"name": t["name"], "connection": t["connection"]} for t in stage.get("targets") or []
        ]
    }
