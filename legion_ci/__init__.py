"""legion-ci: the CI pipeline toolkit of the Legion ML platform."""

from __future__ import annotations

from typing import Any

from legion_ci.version import __version__

__all__ = ["__version__", "plan_pipeline", "run_pipeline", "validate_pipeline"]


def __getattr__(name: str) -> Any:
    # Keep `import legion_ci` (and so `legion-ci --help`) free of the heavier modules.
    if name in ("run_pipeline", "validate_pipeline", "plan_pipeline", "pipeline_schema"):
        from legion_ci import api

        return getattr(api, name)
    raise AttributeError(name)
