"""`legion-ci deployments list|status|logs|delete`: what the deploy stage left running.

Reads the state store (<workspace>/deployments/) and asks the target that saved each
deployment, found through the registry by its recorded name, for its status, logs and delete
(the optional ReportsStatus, ShowsLogs and Deletes of legion_ci.integrations.base): a process
deployment counts as running only while its recorded pid is alive with its recorded start
time, a docker one only while the engine says its container runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from legion_ci.cli.options import output_option, workspace_of

workspace_option = click.option(
    "--workspace", type=click.Path(file_okay=False), help="Workspace folder (default: .legion/)."
)
file_option = click.option(
    "--file",
    "file",
    default="legion-ci.yaml",
    show_default=True,
    envvar="LEGION_CI_PIPELINE",
    help="Pipeline file whose workspace to read.",
)


def _workspace(file: str, workspace: str | None) -> Path:
    return workspace_of(file, workspace)


def _target(record: Any, file: str) -> Any:
    """The deploy target that saved `record`, found through the registry by its recorded name
    (built-ins, entry points, $LEGION_CI_INTEGRATIONS and the pipeline's own registrations),
    or None when no such target is registered here."""
    from legion_ci.errors import LegionError
    from legion_ci.integrations.registry import load_registry

    registry = load_registry(_pipeline_registrations(file))
    try:
        return registry.for_stage_named("deploy", record.target).load()
    except LegionError:
        return None


def _pipeline_registrations(file: str) -> list[Path]:
    """The registration files a pipeline lists under `integrations:`, relative to it; none
    when the file is missing or unreadable (the state alone still names the target)."""
    from legion_ci.errors import LegionError
    from legion_ci.yaml_loader import load_located

    path = Path(file)
    if not path.is_file():
        return []
    try:
        data = load_located(path).data
    except (LegionError, OSError):
        return []
    listed = data.get("integrations") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        return []
    return [path.parent / item for item in listed if isinstance(item, str)]


def _status(record: Any, target: Any) -> tuple[str, str]:
    """(status, detail) of one deployment, from its target when it can tell."""
    from legion_ci.integrations.base import ReportsStatus

    if isinstance(target, ReportsStatus):
        return target.status(record)
    if target is None:
        return "recorded", f"target {record.target!r} is not registered here; not checked"
    return "recorded", "the state as of the last deploy (not checked)"


def _health(url: str, detail: str) -> tuple[bool, str]:
    """Whether the server answers GET /healthcheck right now."""
    from legion_ci.targets.smoke import request

    try:
        code = request(url, "GET", "/healthcheck", timeout=2)[0]
    except OSError as exc:
        return False, f"{detail}; not answering /healthcheck: {exc}"
    if code != 200:
        return False, f"{detail}; /healthcheck answers {code}"
    return True, f"{detail}; healthy"


def _as_dict(record: Any, target: Any) -> dict[str, Any]:
    status, detail = _status(record, target)
    return {**record.to_dict(), "status": status, "status_detail": detail}


@click.group()
def deployments() -> None:
    """What the deploy stage deployed (state under <workspace>/deployments/)."""


@deployments.command("list")
@file_option
@workspace_option
@output_option
def list_command(file: str, workspace: str | None, output: str) -> None:
    """List deployments with their live status."""
    from legion_ci.deployment_state import list_states

    records = list_states(_workspace(file, workspace))
    if output == "json":
        click.echo(json.dumps([_as_dict(r, _target(r, file)) for r in records], indent=2))
        return
    if not records:
        click.echo("no deployments")
        return
    for r in records:
        status, _ = _status(r, _target(r, file))
        click.echo(
            f"{r.name:<20} {r.target:<11} {status:<9} {r.model_name} {r.model_version:<8} {r.url}"
        )


@deployments.command("status")
@click.argument("name")
@file_option
@workspace_option
@output_option
def status_command(name: str, file: str, workspace: str | None, output: str) -> None:
    """Show one deployment; exit 1 unless it is running."""
    from legion_ci.deployment_state import require

    record = require(_workspace(file, workspace), name)
    data = _as_dict(record, _target(record, file))
    if data["status"] == "running":
        data["healthy"], data["status_detail"] = _health(record.url, data["status_detail"])
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"{record.name}: {data['status']} ({data['status_detail']})")
        click.echo(f"  target:   {record.target}")
        click.echo(f"  model:    {record.model_name} {record.model_version} (run {record.run_id})")
        click.echo(f"  url:      {record.url}")
        click.echo(f"  deployed: {record.deployed_at}")
        for key in ("log", "namespace", "image", "container"):
            if record.details.get(key):
                click.echo(f"  {key + ':':<9} {record.details[key]}")
        if record.previous:
            click.echo(f"  replaced: {record.previous.get('model_version')}")
    if data["status"] not in ("running", "recorded"):
        raise SystemExit(1)


@deployments.command("logs")
@click.argument("name")
@click.option("--lines", "-n", default=50, show_default=True, help="How many last lines.")
@file_option
@workspace_option
def logs_command(name: str, lines: int, file: str, workspace: str | None) -> None:
    """Print the last lines of a deployment's server log (a docker container's log)."""
    from legion_ci.deployment_state import require
    from legion_ci.errors import InputError
    from legion_ci.integrations.base import ShowsLogs

    record = require(_workspace(file, workspace), name)
    target = _target(record, file)
    if not isinstance(target, ShowsLogs):
        raise InputError(f"{name}: the {record.target!r} target shows no logs")
    click.echo(target.logs(record, lines), nl=False)


@deployments.command("delete")
@click.argument("name")
@click.option(
    "--drain-timeout", default=30.0, show_default=True, help="Seconds to drain before SIGKILL."
)
@file_option
@workspace_option
def delete_command(name: str, drain_timeout: float, file: str, workspace: str | None) -> None:
    """Stop a deployment and forget it."""
    from legion_ci import deployment_state as state
    from legion_ci.errors import InputError
    from legion_ci.integrations.base import Deletes

    folder = _workspace(file, workspace)
    with state.locked(folder, name):
        record = state.require(folder, name)
        target = _target(record, file)
        if not isinstance(target, Deletes):
            raise InputError(
                f"{name}: cannot delete a {record.target!r} deployment"
                + ("" if target else f" (no {record.target!r} target is registered here)")
            )
        how = target.delete(record, workspace=folder, drain_timeout=drain_timeout)
        state.remove(folder, name)
    click.echo(f"{name}: {how}; deployment removed")
