"""What stage validators share: asking an integration for its own problems, and placing them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from legion_ci.integrations.base import ValidatesStage
from legion_ci.integrations.registry import Registration

# Problems an integration finds in these stage fields are the pipeline file's own, so they are
# reported up front even by `run`; others (the training project) are left to the stage.
PIPELINE_FIELDS = ("hyperParameters", "arguments")


def integration_problems(
    registration: Registration, stage: Mapping[str, Any], folder: Path
) -> list[tuple[str, str]]:
    """The in-process integration's own `validate()` findings; none for out-of-process ones."""
    if registration.mode != "python":
        return []
    integration = registration.instantiate()
    if not isinstance(integration, ValidatesStage):
        return []
    return [(str(path), str(message)) for path, message in integration.validate(stage, folder)]


def split_field_path(field_path: str) -> list[str | int]:
    """'data[0].remotePath' -> ['data', 0, 'remotePath']."""
    parts: list[str | int] = []
    for part in field_path.replace("]", "").replace("[", ".").split("."):
        if part:
            parts.append(int(part) if part.isdigit() else part)
    return parts
