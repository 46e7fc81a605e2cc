"""What `run` and `stage` share: dry runs, echoing, the final summary, CI outputs."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from legion_ci.errors import Cancelled, StageError
from legion_ci.runner.records import RunRecord


def _outputs_for_ci(record: RunRecord) -> dict[str, Any]:
    outputs: dict[str, Any] = {
        "run-id": record.id,
        "status": record.status,
        "summary": str(record.folder / "reports" / "summary.json"),
        "junit": str(record.folder / "reports" / "junit.xml"),
    }
    train = record.stages.get("train")
    if train is not None:
        if "artifact" in train.outputs:
            outputs["artifact"] = train.outputs["artifact"]
            outputs["artifact-sha256"] = train.outputs.get("artifact_sha256", "")
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
    for name, stage in record.stages.items():
        duration = f" in {stage.duration_s:.1f}s" if stage.duration_s is not None else ""
        click.echo(f"{name}: {stage.status}{duration}", err=True)
        for metric, value in sorted(stage.metrics.items()):
            click.echo(f"  {metric} = {value:.6g}", err=True)
        for key in ("artifact", "artifact_sha256", "image", "url"):
            if key in stage.outputs:
                click.echo(f"  {key}: {stage.outputs[key]}", err=True)
    click.echo(f"run {record.id}: {record.status} ({record.record_path})", err=True)


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
                    if key not in ("stage", "integration", "mode", "source") and value:
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
        if in_github_actions():
            from legion_ci.reports.markdown import render_markdown

            append_step_summary(render_markdown(record))
            write_outputs(_outputs_for_ci(record))
        if output == "json":
            click.echo(json.dumps(_result_json(record), indent=2))
        else:
            _print_summary(record)
    if failure is not None:
        raise failure
