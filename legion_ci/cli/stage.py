"""`legion-ci stage NAME [FILE]`."""

from __future__ import annotations

import click

from legion_ci.cli.options import builder_option, output_option, pipeline_argument
from legion_ci.stage_types import STAGE_ORDER


@click.command()
@click.argument("name", type=click.Choice(STAGE_ORDER))
@pipeline_argument
@click.option("--run-id", help="Continue this run instead of the latest (later stages only).")
@click.option("--dry-run", is_flag=True, help="Print the resolved plan; run nothing.")
@output_option
@click.option("--quiet", "-q", is_flag=True, help="Do not echo stage logs (they are still saved).")
@builder_option
def stage(
    name: str,
    file: str,
    run_id: str | None,
    dry_run: bool,
    output: str,
    quiet: bool,
    builder: str | None,
) -> None:
    """Run one stage NAME of FILE.

    The first stage starts a new run; a later stage continues the latest run (or --run-id)
    and takes the earlier stages' outputs from its record. This is how CI wrappers run a
    pipeline stage by stage, possibly on different agents sharing the workspace.
    """
    from legion_ci.cli.execution import execute_command

    execute_command(
        file,
        stage=name,
        run_id=run_id,
        dry_run=dry_run,
        output=output,
        quiet=quiet,
        builder=builder,
    )
