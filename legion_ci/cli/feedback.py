"""`legion-ci feedback export`: predictions joined with their feedback."""

from __future__ import annotations

import sys

import click

from legion_ci.server.config import ServeSettings


@click.group("feedback")
def feedback() -> None:
    """Work with the feedback a model server stored."""


@feedback.command("export")
@click.option(
    "--db",
    "db",
    default=ServeSettings("").feedback_db,
    show_default=True,
    type=click.Path(dir_okay=False),
    envvar="LEGION_FEEDBACK_DB",
    help="The server's --feedback-db file.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Output file ('-' for stdout).",
)
@click.option(
    "--include-unrated",
    is_flag=True,
    help="Also export logged predictions that have no feedback yet.",
)
def export(db: str, fmt: str, output: str, include_unrated: bool) -> None:
    """Each feedback with the request and response of the prediction it is about."""
    from legion_ci.server.feedback import export as run

    if output == "-":
        count = run(db, sys.stdout, fmt=fmt, include_unrated=include_unrated)
    else:
        with open(output, "w", encoding="utf-8", newline="") as out:
            count = run(db, out, fmt=fmt, include_unrated=include_unrated)
    click.echo(f"exported {count} record(s)", err=True)
