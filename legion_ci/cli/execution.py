"""What `run` and `stage` share: dry runs, echoing, the final summary, CI outputs."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from legion_ci.errors import Cancelled, StageError
from legion_ci.records import RunRecord
from legion_ci.stage_types import BY_NAME


def _outputs_for_ci(record: RunRecord) -> dict[str, Any]:
    outputs: dict[str, Any] = {
        "run-id": record.id,
        "status": record.status,
        "summary": str(record.folder / "reports" / "summary.json"),
        "junit": str(record.folder / "reports" / "junit.xml"),
    }
    for name, stage in record.stages.items():
        for key, ci_name in BY_NAME[name].ci_outputs.items():
            value = stage.outputs.get(key)
            if value is not None:
                outputs[ci_name] = value
    train = record.stages.get("train")
    if train is not None:
        outputs["metrics"] = json.dumps(train.metrics, sort_keys=True)
    return outputs


def _result_json(record: RunRecord) -> dict[str, Any]:
    return {
        "run_id": record.id,
        "status": record.status,
        "record": str(record.record_path),
        "stages": {
            name: {
                "status": stage.status,
                "outputs": stage.outputs,
                "metrics": stage.metrics,
                "error": stage.error,
            }
            for name, stage in record.stages.items()
        },
    }


def _print_summary(record: RunRecord) -> None:
    """The results, on stdout (progress and stage logs go to stderr)."""
    for name, stage in record.stages.items():
        duration = f" in {stage.duration_s:.1f}s" if stage.duration_s is not None else ""
        click.echo(f"{name}: {stage.status}{duration}")
        for metric, value in sorted(stage.metrics.items()):
            click.echo(f"  {metric} = {value:.6g}")
        for key in (
            "artifact",
            "artifact_sha256",
            "artifact_latest",
            "image",
            "digest",
            "context",
            "reason",
            "url",
        ):
            if stage.outputs.get(key):
                click.echo(f"  {key}: {stage.outputs[key]}")
        if name == "deploy" and stage.outputs.get("url") and stage.status == "succeeded":
            click.echo(f"  try it: {_curl_line(record, stage.outputs['url'])}")
    click.echo(f"run {record.id}: {record.status} ({record.record_path})")
    click.echo(f"reports: {record.folder / 'reports'} (latest also in {record.workspace}/reports)")


def _curl_line(record: RunRecord, url: str) -> str:
    import shlex

    train = record.stages.get("train")
    columns = (train.outputs.get("input_columns") if train else None) or []
    example = (train.outputs.get("example_row") if train else None) or [0] * len(columns)
    body = json.dumps({"columns": columns, "data": [example]})
    return shlex.join(
        [
            "curl",
            "-s",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            url.rstrip("/") + "/api/model/invoke",
        ]
    )


def execute_command(
    file: str,
    *,
    stage: str | None,
    run_id: str | None,
    dry_run: bool,
    output: str,
    quiet: bool,
) -> None:
    from legion_ci.cli import state
    from legion_ci.reports.github import append_step_summary, in_github_actions, write_outputs

    state.reproduce = ["legion-ci", "stage", stage, file] if stage else ["legion-ci", "run", file]
    if dry_run:
        from legion_ci.api import plan_pipeline

        plan = plan_pipeline(file, stage=stage)
        if output == "json":
            click.echo(json.dumps(plan, indent=2))
        else:
            click.echo(f"dry run of {plan['pipeline']} (nothing is executed)")
            click.echo(
                f"model {plan['model']['name']} {plan['model']['version']},"
                f" workspace {plan['workspace']}"
            )
            for entry in plan["stages"]:
                click.echo(
                    f"- {entry['stage']}: {entry['integration']} ({entry['mode']},"
                    f" {entry['source']})"
                )
                for key, value in entry.items():
                    if key == "rendered" and isinstance(value, str):
                        click.echo("    rendered:")
                        click.echo(
                            "".join(f"      {line}\n" for line in value.splitlines()), nl=False
                        )
                    elif key not in ("stage", "integration", "mode", "source") and value:
                        click.echo(f"    {key}: {json.dumps(value)}")
        return

    from legion_ci.api import run_pipeline

    # Stage logs go to stderr in both output modes: stdout holds only the JSON, and wrappers
    # (the Airflow operators) stream stderr into their own logs.
    echo = None if quiet else sys.stderr
    record: RunRecord | None = None
    failure: BaseException | None = None
    resume = None
    if echo is not None and in_github_actions():
        # Training output is echoed live; a line of it that looks like a workflow command
        # (::add-mask::, ::set-env::, ::error::) must not be obeyed by the Actions runner.
        import secrets

        resume = secrets.token_hex(16)
        echo.write(f"::stop-commands::{resume}\n")
        echo.flush()
    try:
        record = run_pipeline(file, stage=stage, run_id=run_id, echo=echo)
    except (StageError, Cancelled) as exc:
        failure = exc
        record = getattr(exc, "record", None)
    finally:
        if resume is not None and echo is not None:
            echo.write(f"::{resume}::\n")
            echo.flush()
    if record is not None:
        from legion_ci.reports import redacted

        record = redacted(record)
        if in_github_actions():
            from legion_ci.reports.markdown import render_markdown

            append_step_summary(render_markdown(record))
            write_outputs(_outputs_for_ci(record))
        if output == "json":
            click.echo(json.dumps(_result_json(record), indent=2))
        else:
            _print_summary(record)
    if failure is not None:
        if echo is not None and isinstance(failure, StageError) and "\n" in str(failure):
            # The stage's log was just echoed live: do not print its tail a second time.
            log = (
                next(
                    (
                        record.folder / s.log
                        for s in record.stages.values()
                        if s.status == "failed" and s.log
                    ),
                    None,
                )
                if record is not None
                else None
            )
            first = str(failure).splitlines()[0]
            shortened = StageError(f"{first} (full log: {log})" if log else first)
            shortened.record = record  # type: ignore[attr-defined]
            raise shortened from None
        raise failure
