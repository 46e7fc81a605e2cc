"""`legion-ci validate [FILE]`."""

from __future__ import annotations

import dataclasses
import json

import click

from legion_ci.cli.options import output_option, pipeline_argument


@click.command()
@pipeline_argument
@output_option
def validate(file: str, output: str) -> None:
    """Validate FILE (default: legion-ci.yaml) and report every error at once.

    Each error is printed as FILE:LINE:COL: field.path: message; exit code 2 when any.
    With -o json, stdout holds {"valid": ..., "errors": [{file, line, col, path, message}]}.
    """
    from legion_ci.api import validate_pipeline
    from legion_ci.errors import SpecError

    if output == "json":
        try:
            pipeline = validate_pipeline(file)
        except SpecError as exc:
            errors = [dataclasses.asdict(p) for p in exc.problems]
            click.echo(json.dumps({"valid": False, "file": file, "errors": errors}, indent=2))
            raise
        result = {"valid": True, "file": file, "model": pipeline.data["model"]}
        click.echo(json.dumps({**result, "stages": pipeline.stages}, indent=2))
        return
    pipeline = validate_pipeline(file)
    click.echo(
        f"{file}: valid: model {pipeline.model_name} {pipeline.model_version},"
        f" stages {', '.join(pipeline.stages)}"
    )
