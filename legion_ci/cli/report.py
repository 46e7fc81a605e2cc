"""`legion-ci report pr-comment`: render what CI wrappers publish about a run."""

from __future__ import annotations

import click

from legion_ci.cli.options import pipeline_argument, workspace_of


@click.group()
def report() -> None:
    """Render a run's report for a CI front end (the Markdown summary is in the run folder)."""


@report.command("pr-comment")
@pipeline_argument
@click.option("--run-id", default="latest", show_default=True, help="The run to report.")
@click.option("--workspace", type=click.Path(file_okay=False), help="Run records folder.")
def pr_comment(file: str, run_id: str, workspace: str | None) -> None:
    """Print the pull request comment for a run: a hidden marker line naming the model, the
    metrics with their baseline deltas, and the trend of the gated metrics."""
    from legion_ci.records import load_record
    from legion_ci.reports.pr_comment import render_pr_comment

    record = load_record(workspace_of(file, workspace), run_id)
    click.echo(render_pr_comment(record), nl=False)


@report.command("workspace")
@pipeline_argument
def workspace(file: str) -> None:
    """Print the pipeline's run records folder (`.legion/` beside it, or its `workspace:`),
    without validating the rest of the file: CI wrappers cache and hand over what is in it."""
    click.echo(str(workspace_of(file, None)))
