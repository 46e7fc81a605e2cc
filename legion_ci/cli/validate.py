"""`legion-ci validate [FILE]`."""

from __future__ import annotations

import click

from legion_ci.cli.options import pipeline_argument


@click.command()
@pipeline_argument
def validate(file: str) -> None:
    """Validate FILE (default: legion-ci.yaml) and report every error at once.

    Each error is printed as FILE:LINE:COL: field.path: message; exit code 2 when any.
    """
    from legion_ci.api import validate_pipeline

    pipeline = validate_pipeline(file)
    click.echo(
        f"{file}: valid: model {pipeline.model_name} {pipeline.model_version},"
        f" stages {', '.join(pipeline.stages)}"
    )
