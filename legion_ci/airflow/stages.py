"""Which stages a pipeline declares, read when a DAG file is parsed (cheap: no validation)."""

from __future__ import annotations

from pathlib import Path

# legion_ci.spec.pipeline.STAGE_ORDER; that module would pull the integration registry in.
STAGE_ORDER = ("train", "package", "deploy")


def pipeline_stages(path: str | Path) -> list[str]:
    """The stages of the pipeline at `path`, in run order. A DAG file builds one task per
    stage from this, so that it follows the pipeline as stages are added to it."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the pipeline: {exc}") from None
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict) or not stages:
        raise ValueError(f"{path}: the pipeline declares no stages")
    return [name for name in STAGE_ORDER if name in stages]
