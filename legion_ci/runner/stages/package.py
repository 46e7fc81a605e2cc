"""The package stage: hands the trained model binary to a packaging integration.

Out-of-process packagers follow Legion's contract, `<entrypoint> <artifact dir>
<packaging.json>`, and write `result.json` into the artifact dir; in-process ones implement
`pack(artifact_dir, packaging) -> dict`. Either way the result becomes the stage's outputs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from legion_ci.errors import StageError
from legion_ci.runner.process import StageLog, run_logged
from legion_ci.runner.records import RunRecord, StageRecord
from legion_ci.spec.pipeline import Pipeline


def _packaging_document(pipeline: Pipeline, record: RunRecord, artifact: Path) -> dict[str, Any]:
    stage = pipeline.stage("package")
    targets = stage.get("targets") or []
    connections = {}
    for target in targets:
        conn = pipeline.connections[target["connection"]]
        connections[conn.name] = {"type": conn.type, "uri": conn.uri, **conn.options}
    return {
        "id": record.id,
        "spec": {
            "integrationName": stage["integration"],
            "artifactName": artifact.name,
            "arguments": stage.get("arguments") or {},
            "targets": [{"name": t["name"], "connectionName": t["connection"]} for t in targets],
        },
        "model": dict(record.model),
        "connections": connections,
    }


def run_package(
    pipeline: Pipeline, record: RunRecord, stage_record: StageRecord, log: StageLog
) -> None:
    from legion_ci.gppi.archive import safe_extract, sha256_file

    train = record.stages["train"].outputs
    artifact = Path(train["artifact"])
    if not artifact.is_file():
        # The train stage may have run on another agent, with the workspace elsewhere.
        artifact = record.folder / "artifacts" / artifact.name
    if not artifact.is_file():
        raise StageError(f"the trained model binary of run {record.id} is gone: {artifact}")
    if sha256_file(artifact) != train.get("artifact_sha256"):
        raise StageError(f"{artifact}: checksum differs from the one train recorded")
    registration = pipeline.registration("package")
    scratch = record.folder / "work" / "package"
    shutil.rmtree(scratch, ignore_errors=True)
    artifact_dir = safe_extract(artifact, scratch / "artifact")
    document = _packaging_document(pipeline, record, artifact)
    try:
        if registration.mode == "python":
            result = registration.instantiate().pack(artifact_dir, document, log)
        else:
            # The document may hold resolved credentials: owner-only, removed right after.
            doc_path = scratch / "packaging.json"
            fd = os.open(doc_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle)
            try:
                run_logged(
                    [*registration.argv(), str(artifact_dir), str(doc_path)],
                    log,
                    cwd=scratch,
                    what=f"packager {registration.name!r}",
                )
            finally:
                doc_path.unlink(missing_ok=True)
            result_path = artifact_dir / "result.json"
            try:
                result = json.loads(result_path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise StageError(
                    f"packager {registration.name!r} wrote no result.json into the artifact dir"
                ) from None
            except ValueError as exc:
                raise StageError(
                    f"packager {registration.name!r}: bad result.json: {exc}"
                ) from None
        if not isinstance(result, dict):
            raise StageError(f"packager {registration.name!r}: result must be a JSON object")
        stage_record.outputs.update(result)
        log.line(f"packaged: {json.dumps(result)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
