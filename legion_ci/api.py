"""The importable API under the CLI: every verb is a thin call into one of these."""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: keep `import legion_ci.api` light
    from legion_ci.records import RunRecord
    from legion_ci.spec.pipeline import Pipeline


def validate_pipeline(path: Path | str, *, strict_project: bool = True) -> Pipeline:
    """Load and validate a pipeline; raises SpecError listing every problem.

    strict_project=False leaves problems in the training project itself (no MLproject, an
    unknown entry point) to the train stage, so a run records them as a failed stage.
    """
    from legion_ci.spec.validate import load_pipeline

    return load_pipeline(path, strict_project=strict_project)


def run_pipeline(
    path: Path | str,
    *,
    stage: str | None = None,
    run_id: str | None = None,
    echo: IO[str] | None = None,
    builder: str | None = None,
) -> RunRecord:
    """Run all stages of a pipeline (or one `stage`, continuing `run_id` or the latest run).

    Raises StageError (exit 1) when a stage fails and Cancelled (exit 130) when interrupted;
    the run record and reports are written in every case. `builder` overrides the package
    stage's `arguments.builder` (auto, docker, buildah).
    """
    from legion_ci.runner.engine import execute
    from legion_ci.spec.validate import load_pipeline

    pipeline = load_pipeline(path, strict_project=False, stage=stage)
    if builder:
        from legion_ci.spec.overrides import set_builder

        set_builder(pipeline, builder)
    return execute(pipeline, only=stage, run_id=run_id, echo=echo)


def plan_pipeline(
    path: Path | str, *, stage: str | None = None, builder: str | None = None
) -> dict[str, Any]:
    """The resolved plan of a run, secrets redacted, without running anything."""
    from legion_ci.runner.engine import plan

    pipeline = validate_pipeline(path)
    if builder:
        from legion_ci.spec.overrides import set_builder

        set_builder(pipeline, builder)
    return plan(pipeline, stage)


def pipeline_schema(extra_registrations: list[Path] | None = None) -> dict[str, Any]:
    from legion_ci.integrations.registry import load_registry
    from legion_ci.spec.schema import build_schema

    return build_schema(load_registry(extra_registrations or []))
