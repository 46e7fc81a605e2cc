"""`legion-ci runs list|show`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from legion_ci.cli.options import (
    default_pipeline,
    model_of,
    output_option,
    pipeline_argument,
    workspace_of,
)


@click.group()
def runs() -> None:
    """Read run records from the workspace (default: .legion/ beside the pipeline)."""


@runs.command("list")
@pipeline_argument
@click.option("--workspace", type=click.Path(file_okay=False), help="Run records folder.")
@click.option("--all-models", is_flag=True, help="Also list other models' runs in the workspace.")
@output_option
def list_runs(file: str, workspace: str | None, all_models: bool, output: str) -> None:
    """List the pipeline's model's runs, oldest first."""
    from legion_ci.records import list_records

    records = list_records(workspace_of(file, workspace))
    if not all_models:
        name = model_of(file)
        if name is not None:
            records = [r for r in records if r.model.get("name") == name]
    if output == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "status": r.status,
                        "started": r.started,
                        "model": r.model,
                        "stages": {n: s.status for n, s in r.stages.items()},
                    }
                    for r in records
                ],
                indent=2,
            )
        )
        return
    for r in records:
        stages = " ".join(f"{n}={s.status}" for n, s in r.stages.items())
        click.echo(f"{r.id}  {r.status:<10} {r.model['name']} {r.model['version']}  {stages}")


@runs.command("show")
@click.argument("args", nargs=-1, metavar="[FILE] [RUN_ID]")
@click.option("--file", "file_option", hidden=True, help="Pipeline file (same as FILE).")
@click.option("--workspace", type=click.Path(file_okay=False), help="Run records folder.")
@output_option
def show_run(
    args: tuple[str, ...], file_option: str | None, workspace: str | None, output: str
) -> None:
    """Show one run record of FILE's workspace (default: the latest run).

    FILE defaults to legion-ci.yaml or $LEGION_CI_PIPELINE, like `runs list`.
    """
    from legion_ci.records import load_record
    from legion_ci.reports.markdown import render_markdown

    if len(args) > 2:
        raise click.UsageError("runs show takes at most FILE and RUN_ID")
    file, run_id = file_option, "latest"
    for arg in args:
        if arg.endswith((".yaml", ".yml")) or Path(arg).is_file():
            file = arg
        else:
            run_id = arg
    record = load_record(workspace_of(file or default_pipeline(), workspace), run_id)
    if output == "json":
        click.echo(json.dumps(record.to_dict(), indent=2))
    else:
        click.echo(render_markdown(record), nl=False)
