"""Options and helpers shared by several verbs."""

from __future__ import annotations

import os
from pathlib import Path

import click

DEFAULT_PIPELINE = "legion-ci.yaml"


def default_pipeline() -> str:
    """$LEGION_CI_PIPELINE, else legion-ci.yaml in the current folder, which must exist."""
    if os.environ.get("LEGION_CI_PIPELINE"):
        return os.environ["LEGION_CI_PIPELINE"]
    if not Path(DEFAULT_PIPELINE).is_file():
        from legion_ci.errors import InputError

        raise InputError(
            f"no {DEFAULT_PIPELINE} in {Path.cwd()}: pass FILE or set LEGION_CI_PIPELINE"
        )
    return DEFAULT_PIPELINE


def pipeline_argument(func):  # type: ignore[no-untyped-def]
    return click.argument(
        "file",
        required=False,
        default=None,
        callback=lambda _ctx, _param, value: value or default_pipeline(),
        type=click.Path(dir_okay=False, path_type=str),
        metavar="[FILE]",
    )(func)


output_option = click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for scripts (stdout holds only the JSON).",
)


def workspace_of(file: str, workspace: str | None) -> Path:
    """The run records folder without validating the whole pipeline (for read-only verbs)."""
    if workspace:
        return Path(workspace).resolve()
    from legion_ci.yaml_loader import load_located

    located = load_located(file)
    folder = ".legion"
    if isinstance(located.data, dict) and isinstance(located.data.get("workspace"), str):
        folder = located.data["workspace"]
    return (Path(file).resolve().parent / folder).resolve()


def model_of(file: str) -> str | None:
    """The pipeline's model name, without validating the whole pipeline."""
    from legion_ci.yaml_loader import load_located

    data = load_located(file).data
    model = data.get("model") if isinstance(data, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    return name if isinstance(name, str) else None


extra_integrations_option = click.option(
    "--integrations",
    "extra",
    multiple=True,
    type=click.Path(exists=True),
    help="Also load these integration registration files or folders.",
)


builder_option = click.option(
    "--builder",
    type=click.Choice(["auto", "docker", "buildah"]),
    default=None,
    help="Override the package stage's arguments.builder (docker-rest): auto, docker, buildah.",
)
