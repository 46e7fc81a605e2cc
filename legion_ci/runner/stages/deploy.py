"""The deploy stage: hands the packed model (or the trained binary) to a deploy target.

The target satisfies the Deployer Protocol; it waits for readiness and smoke-tests before it
returns, and leaves the previous version serving when the new one fails.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from typing import Any

from legion_ci.integrations.base import DeployContext
from legion_ci.processes import StageLog
from legion_ci.records import SUCCEEDED, RunRecord, StageRecord
from legion_ci.spec.pipeline import Pipeline


def run_deploy(
    pipeline: Pipeline, record: RunRecord, stage_record: StageRecord, log: StageLog
) -> None:
    from legion_ci.runner.stages.package import trained_artifact

    stage = pipeline.stage("deploy")
    registration = pipeline.registration("deploy")
    train = record.stages.get("train")
    artifact = trained_artifact(record) if train and train.status == SUCCEEDED else None
    package = record.stages.get("package")
    package_outputs = dict(package.outputs) if package and package.status == SUCCEEDED else {}
    example = None
    if artifact is not None and train is not None:
        # The train stage's self-check read the binary's info(): no target needs to again.
        columns, row = train.outputs.get("input_columns"), train.outputs.get("example_row")
        if isinstance(columns, list) and isinstance(row, list):
            example = {"columns": list(columns), "data": [list(row)]}
    scratch = record.folder / "work" / "deploy"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    connection = pipeline.connections.get(stage["connection"]) if "connection" in stage else None
    ctx = DeployContext(
        model_name=pipeline.model_name,
        model_version=pipeline.model_version,
        run_id=record.id,
        artifact=artifact,
        package_outputs=package_outputs,
        arguments=dict(stage.get("arguments") or {}),
        connection=connection,
        workspace=pipeline.workspace,
        scratch_dir=scratch,
        log=log,
        clients=pipeline.clients(),
        integration=registration.name,
        stage_spec=stage,
        example=example,
        image=packaged_image(package_outputs),
    )
    try:
        result = registration.load().deploy(ctx)
        stage_record.outputs.update(result.outputs)
        log.line(f"deployed: {json.dumps(result.outputs)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def packaged_image(outputs: Mapping[str, Any]) -> str | None:
    """The package stage's image by digest when it pushed it (a `repository@sha256:...`
    reference, or a bare digest joined to the image's repository), else its tag."""
    image, digest = outputs.get("image"), outputs.get("digest")
    if not image:
        return None
    if not digest:
        return str(image)
    if "@" in str(digest):
        return str(digest)
    repository = str(image).split("@", 1)[0]
    slash, colon = repository.rfind("/"), repository.rfind(":")
    return f"{repository[:colon] if colon > slash else repository}@{digest}"


def plan_deploy(pipeline: Pipeline, stage: dict[str, Any]) -> dict[str, Any]:
    """The connection, and what the target would apply when it can say without running
    anything (`render(ctx)`: the server command line, the Kubernetes manifests)."""
    from pathlib import Path

    from legion_ci.errors import LegionError

    plan: dict[str, Any] = {"connection": stage.get("connection")}
    target = pipeline.registration("deploy").load()
    render = getattr(target, "render", None)
    if callable(render):
        ctx = DeployContext(
            model_name=pipeline.model_name,
            model_version=pipeline.model_version,
            run_id="<run id>",
            artifact=None,
            package_outputs={},
            arguments=dict(stage.get("arguments") or {}),
            connection=pipeline.connections.get(stage["connection"])
            if "connection" in stage
            else None,
            workspace=pipeline.workspace,
            scratch_dir=Path(pipeline.workspace) / "work" / "deploy",
            log=None,  # type: ignore[arg-type]
            clients=None,
            integration=pipeline.integration_name("deploy"),
            stage_spec=stage,
        )
        try:
            plan["rendered"] = render(ctx)
        except LegionError as exc:
            plan["rendered"] = f"(cannot be rendered before the earlier stages run: {exc})"
    return plan
