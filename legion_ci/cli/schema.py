"""`legion-ci schema`."""

from __future__ import annotations

import json

import click

from legion_ci.cli.options import extra_integrations_option


@click.command()
@extra_integrations_option
def schema(extra: tuple[str, ...]) -> None:
    """Print the pipeline JSON Schema (draft 2020-12) for editors and other tools."""
    from pathlib import Path

    from legion_ci.api import pipeline_schema

    click.echo(json.dumps(pipeline_schema([Path(p) for p in extra]), indent=2))
