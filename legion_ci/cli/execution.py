"""What `run` and `stage` share: dry runs, echoing, the final summary, CI outputs."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from legion_ci.errors import Cancelled, StageError
from legion_ci.records import RunRecord


def _result_json(record: RunRecord) -> dict[str, Any]:
    from legion_ci import ci

    return {
        "run_id": record.id,
        "status": record.status,
        "record": str(record.record_path),
        "outputs": ci.outputs(record),
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
    builder: str | None = None,
) -> None:
    from legion_ci import ci
    from legion_ci.cli import state

    state.reproduce = ["legion-ci", "stage", stage, file] if stage else ["legion-ci", "run", file]
    if builder:
        state.reproduce += ["--builder", builder]
    state.json_output = output == "json"
    if dry_run:
        from legion_ci.api import plan_pipeline

        plan = plan_pipeline(file, stage=stage, builder=builder)
        if output == "json":
            click.echo(json.dumps(plan, indent=2))
            state.json_output = False  # the plan is the document
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
    host = ci.detect()
    title = f"legion-ci {stage}" if stage else "legion-ci run"
    record: RunRecord | None = None
    failure: BaseException | None = None
    try:
        with host.guard(echo, title):
            record = run_pipeline(file, stage=stage, run_id=run_id, echo=echo, builder=builder)
    except (StageError, Cancelled) as exc:
        failure = exc
        record = getattr(exc, "record", None)
    if record is not None:
        from legion_ci.reports import redacted

        record = redacted(record)
        host.write_summary(record)
        host.write_outputs(ci.outputs(record))
        if output == "json":
            # Printed by the CLI's top level, with the error when the run failed: one
            # document on every exit code.
            state.document = _result_json(record)
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
