"""Legion's out-of-process contract, as adapters that satisfy the in-process Protocols.

A registration with `command:` is loaded as one of these, so the runner calls `train(ctx)`,
`pack(ctx)` or `deploy(ctx)` the same way whatever the integration is written in.

- trainer: `<command> --verbose --mt <training.json> --target <output dir>`, run in the project
  folder; writes the GPPI binary into the output dir; may report metrics and tags as
  `{"metrics": {...}, "tags": {...}}` into `$LEGION_CI_METRICS_FILE`.
- packager: `<command> <artifact dir> <packaging.json>`; writes `result.json` into the
  artifact dir (`{"image": "<registry>/<name>:<tag>"}` for docker images).
- deploy target: `<command> <deployment.json> <output dir>`; writes `result.json` (`{"url":
  ...}`) into the output dir.
The documents may hold resolved credentials: they are created owner-only and deleted as soon
as the command exits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from legion_ci.errors import StageError
from legion_ci.integrations.base import (
    Connection,
    DeployContext,
    DeployResult,
    PackageContext,
    PackageResult,
    TrainContext,
    TrainResult,
)
from legion_ci.processes import run_logged


@contextmanager
def secret_document(path: Path, document: dict[str, Any]) -> Iterator[Path]:
    """Write `document` owner-only for the duration of the block, then delete it."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def read_result(folder: Path, what: str) -> dict[str, Any]:
    """The `result.json` an out-of-process integration wrote into `folder`: a regular file
    inside it (not a symlink to elsewhere), holding a JSON object."""
    path = folder / "result.json"
    if path.is_symlink():
        raise StageError(f"{what}: result.json is a symbolic link; write a regular file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StageError(f"{what} wrote no result.json into {folder}") from None
    except OSError as exc:
        raise StageError(f"{what}: result.json cannot be read: {exc.strerror}") from None
    if len(raw) > 1024 * 1024:
        raise StageError(f"{what}: result.json is over 1 MiB")
    try:
        result = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StageError(f"{what}: bad result.json: {exc}") from None
    if not isinstance(result, dict):
        raise StageError(f"{what}: result.json must hold a JSON object")
    return result


def _connection_document(conn: Connection) -> dict[str, Any]:
    return {"type": conn.type, "uri": conn.uri, **conn.options}


class _CommandAdapter:
    """An out-of-process integration: its registered name and its command (an argument
    list, paths already resolved by its registration)."""

    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.argv = argv


class ExternalTrainer(_CommandAdapter):
    def train(self, ctx: TrainContext) -> TrainResult:
        what = f"trainer {self.name!r}"
        training = {
            "id": ctx.run_id,
            "spec": {
                "model": {"name": ctx.model_name, "version": ctx.model_version},
                "toolchain": ctx.toolchain or self.name,
                "entrypoint": ctx.entrypoint,
                "workDir": str(ctx.project_dir),
                "hyperParameters": ctx.hyper_parameters,
                "arguments": ctx.arguments,
                "data": [dict(binding) for binding in ctx.data],
            },
            "tracking_uri": ctx.tracking_uri,
            "tags": ctx.tags,
        }
        metrics_file = ctx.scratch_dir / "metrics.json"
        env = {
            **ctx.env,
            "MLFLOW_TRACKING_URI": ctx.tracking_uri,
            "LEGION_CI_METRICS_FILE": str(metrics_file),
            "LEGION_CI_RUN_ID": ctx.run_id,
        }
        with secret_document(ctx.scratch_dir / "training.json", training) as mt:
            argv = [*self.argv, "--verbose", "--mt", str(mt)]
            run_logged(
                [*argv, "--target", str(ctx.output_dir)],
                ctx.log,
                cwd=ctx.project_dir,
                env=env,
                what=what,
            )
        result = TrainResult()
        if metrics_file.is_file():
            try:
                reported = json.loads(metrics_file.read_text(encoding="utf-8"))
                result.metrics = {k: float(v) for k, v in (reported.get("metrics") or {}).items()}
                result.tags = {k: str(v) for k, v in (reported.get("tags") or {}).items()}
            except (ValueError, TypeError, AttributeError) as exc:
                raise StageError(
                    f"{what}: {metrics_file.name} is not"
                    f" {{'metrics': {{name: number}}, 'tags': {{...}}}}: {exc}"
                ) from None
        return result


class ExternalPackager(_CommandAdapter):
    def pack(self, ctx: PackageContext) -> PackageResult:
        what = f"packager {self.name!r}"
        document = {
            "id": ctx.run_id,
            "spec": {
                "integrationName": ctx.integration or self.name,
                "artifactName": ctx.artifact.name,
                "arguments": ctx.arguments,
                "targets": [
                    {"name": t.name, "connectionName": t.connection.name} for t in ctx.targets
                ],
            },
            "model": {"name": ctx.model_name, "version": ctx.model_version},
            "connections": {
                t.connection.name: _connection_document(t.connection) for t in ctx.targets
            },
        }
        (ctx.artifact_dir / "result.json").unlink(missing_ok=True)
        with secret_document(ctx.scratch_dir / "packaging.json", document) as doc_path:
            run_logged(
                [*self.argv, str(ctx.artifact_dir), str(doc_path)],
                ctx.log,
                cwd=ctx.scratch_dir,
                what=what,
            )
        return PackageResult(outputs=read_result(ctx.artifact_dir, what))


class ExternalDeployer(_CommandAdapter):
    def deploy(self, ctx: DeployContext) -> DeployResult:
        what = f"deploy target {self.name!r}"
        document = {
            "id": ctx.run_id,
            "spec": {
                "target": ctx.integration or self.name,
                "arguments": ctx.arguments,
                "artifact": str(ctx.artifact) if ctx.artifact else None,
                "package": dict(ctx.package_outputs),
            },
            "model": {"name": ctx.model_name, "version": ctx.model_version},
            "connection": _connection_document(ctx.connection) if ctx.connection else None,
        }
        out = ctx.scratch_dir / "out"
        out.mkdir(parents=True, exist_ok=True)
        with secret_document(ctx.scratch_dir / "deployment.json", document) as doc_path:
            run_logged(
                [*self.argv, str(doc_path), str(out)],
                ctx.log,
                cwd=ctx.scratch_dir,
                what=what,
            )
        return DeployResult(outputs=read_result(out, what))


ADAPTERS = {
    "ToolchainIntegration": ExternalTrainer,
    "PackagingIntegration": ExternalPackager,
    "DeployTarget": ExternalDeployer,
}
