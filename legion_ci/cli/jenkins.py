"""`legion-ci jenkins render|sync`: one Jenkins pipeline job per pipeline file."""

from __future__ import annotations

from pathlib import Path

import click

from legion_ci.version import __version__


def job_options(func):  # type: ignore[no-untyped-def]
    """The options that shape the rendered jobs, shared by render and sync."""
    for decorator in reversed(
        [
            click.argument(
                "files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
            ),
            click.option(
                "--git-url",
                default="",
                help="The repository the jobs check out; default: the origin remote of --root.",
            ),
            click.option(
                "--branch",
                default="",
                help="Branch to build; default: the current branch of --root, else main.",
            ),
            click.option(
                "--git-credentials", default="", help="Jenkins credentials id for the checkout."
            ),
            click.option(
                "--library",
                default=f"legion-ci@{__version__}",
                show_default=True,
                help="The shared library (name@version) the jobs load.",
            ),
            click.option("--label", default="", help="Agent label the jobs run on (any if empty)."),
            click.option(
                "--trigger",
                type=click.Choice(["poll", "github", "none"]),
                default="poll",
                show_default=True,
                help="SCM polling (also serves the Git plugin's notifyCommit webhook),"
                " the GitHub push webhook, or none.",
            ),
            click.option(
                "--poll-spec", default="H/5 * * * *", show_default=True, help="Polling schedule."
            ),
            click.option("--prefix", default="", help="Prefix of every job name (model name)."),
            click.option(
                "--root",
                default=".",
                show_default=True,
                type=click.Path(file_okay=False, path_type=Path),
                help="The repository root the pipeline paths are relative to.",
            ),
        ]
    ):
        func = decorator(func)
    return func


def _render(files: tuple[Path, ...], **options: object) -> list:
    from legion_ci.jenkins.jobs import JobOptions, render_jobs

    return render_jobs(list(files), JobOptions(**options))  # type: ignore[arg-type]


@click.group()
def jenkins() -> None:
    """Jenkins pipeline jobs that run legionPipeline on each pipeline file."""


@jenkins.command()
@job_options
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write <dir>/<job>/config.xml instead of printing.",
)
def render(files: tuple[Path, ...], output_dir: Path | None, **options: object) -> None:
    """Print (offline) the job configuration XML for each pipeline FILE."""
    jobs = _render(files, **options)
    for job in jobs:
        if output_dir is not None:
            target = output_dir / job.name / "config.xml"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(job.xml, encoding="utf-8")
            click.echo(f"{job.name}: {target}", err=True)
        else:
            # One XML document per job; a comment before the root names it.
            body = job.xml.split("?>", 1)[1].lstrip() if job.xml.startswith("<?xml") else job.xml
            click.echo(f"<!-- job {job.name} from {job.pipeline} -->\n{body}")


@jenkins.command()
@job_options
@click.option("--url", required=True, help="The Jenkins controller, e.g. https://jenkins.example/")
def sync(files: tuple[Path, ...], url: str, **options: object) -> None:
    """Create or update one job per pipeline FILE on the controller at --url.

    Credentials come from JENKINS_USER and JENKINS_API_TOKEN (an API token, not a password).
    """
    from legion_ci.jenkins.sync import sync_jobs

    for result in sync_jobs(_render(files, **options), url):
        click.echo(f"{result.action} {result.name}")
