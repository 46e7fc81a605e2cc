"""`legion-ci run [FILE]`."""

from __future__ import annotations

import click

from legion_ci.cli.options import builder_option, output_option, pipeline_argument


@click.command()
@pipeline_argument
@click.option("--dry-run", is_flag=True, help="Print the resolved plan; run nothing.")
@output_option
@click.option("--quiet", "-q", is_flag=True, help="Do not echo stage logs (they are still saved).")
@builder_option
def run(file: str, dry_run: bool, output: str, quiet: bool, builder: str | None) -> None:
    """Run every stage of FILE (default: legion-ci.yaml) in order: train, package, deploy."""
    from legion_ci.cli.execution import execute_command

    execute_command(
        file,
        stage=None,
        run_id=None,
        dry_run=dry_run,
        output=output,
        quiet=quiet,
        builder=builder,
    )
