"""What the command line may override in a loaded pipeline: the package stage's `builder`.

The CI wrappers (the Jenkins library, the GitHub Actions) take `builder` as an input, so an
agent chooses how to build (its Docker engine, or buildah where it has none) without a copy
of the pipeline file. The value goes through the same arguments the file would set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from legion_ci.errors import InputError

if TYPE_CHECKING:
    from legion_ci.spec.pipeline import Pipeline

BUILDERS = ("auto", "docker", "buildah")


def set_builder(pipeline: Pipeline, builder: str) -> None:
    """Set the package stage's `arguments.builder`; InputError when that stage takes none."""
    if builder not in BUILDERS:
        raise InputError(f"--builder {builder!r}: choose one of {', '.join(BUILDERS)}")
    spec = (pipeline.data.get("stages") or {}).get("package")
    if not isinstance(spec, dict):
        raise InputError(f"--builder {builder}: {pipeline.display} has no package stage")
    integration = str(spec["integration"])
    registration = pipeline.registry.for_stage_named("package", integration)
    if "builder" not in ((registration.arguments or {}).get("properties") or {}):
        raise InputError(
            f"--builder {builder}: the package stage's integration {integration!r} takes no "
            "builder (docker-rest does)"
        )
    spec["arguments"] = {**(spec.get("arguments") or {}), "builder": builder}
