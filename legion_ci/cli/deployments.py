"""`legion-ci deployments list|status|logs|delete`: what the deploy stage left running.

Reads the state store (<workspace>/deployments/); a process deployment counts as running only
while its recorded pid is alive with its recorded start time, so a stale pid is reported as
`stale`, never as running; a docker deployment only while the engine says its container runs,
so a removed container is reported as `vanished`.
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


def _status(record: Any) -> tuple[str, str]:
    """(status, detail) of one deployment, checked live where that costs nothing."""
    from legion_ci.targets import pids

    if record.target == "process":
        pid = record.details.get("pid")
        if pids.is_running(pid, record.details.get("start_time")):
            return "running", f"pid {pid}"
        return "stale", f"pid {pid} is not running"
    if record.target == "docker":
        from legion_ci.targets.docker import container_status

        return container_status(record)
    return "recorded", "the state as of the last deploy (not checked against the cluster)"


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


def _as_dict(record: Any) -> dict[str, Any]:
    status, detail = _status(record)
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
    from legion_ci.targets.state import list_states

    records = list_states(_workspace(file, workspace))
    if output == "json":
        click.echo(json.dumps([_as_dict(r) for r in records], indent=2))
        return
    if not records:
        click.echo("no deployments")
        return
    for r in records:
        status, _ = _status(r)
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
    from legion_ci.targets.state import require

    record = require(_workspace(file, workspace), name)
    data = _as_dict(record)
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
    from legion_ci.errors import InputError
    from legion_ci.targets.state import require

    record = require(_workspace(file, workspace), name)
    if record.target == "docker":
        from legion_ci.targets.docker import container_logs

        click.echo(container_logs(record, lines), nl=False)
        return
    log = record.details.get("log")
    if not log:
        raise InputError(
            f"{name}: a {record.target} deployment keeps no local log"
            + (
                f"; try: kubectl logs -n {record.details.get('namespace')} deploy/{name}"
                if record.target == "kubernetes"
                else ""
            )
        )
    try:
        text = Path(log).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"{name}: cannot read {log}: {exc.strerror}") from None
    for line in text.splitlines()[-lines:]:
        click.echo(line)


@deployments.command("delete")
@click.argument("name")
@click.option(
    "--drain-timeout", default=30.0, show_default=True, help="Seconds to drain before SIGKILL."
)
@file_option
@workspace_option
def delete_command(name: str, drain_timeout: float, file: str, workspace: str | None) -> None:
    """Stop a deployment and forget it."""
    from legion_ci.errors import InputError
    from legion_ci.targets import state

    folder = _workspace(file, workspace)
    with state.locked(folder, name):
        record = state.require(folder, name)
        if record.target == "process":
            from legion_ci.targets.process import stop_deployment

            how = stop_deployment(folder, record, grace=drain_timeout)
        elif record.target == "kubernetes":
            from legion_ci.targets.kubernetes import delete_deployment

            how = delete_deployment(record)
        elif record.target == "docker":
            from legion_ci.targets.docker import delete_deployment as delete_container

            how = delete_container(record, drain_timeout)
        else:
            raise InputError(f"{name}: cannot delete a {record.target!r} deployment")
        state.remove(folder, name)
    click.echo(f"{name}: {how}; deployment removed")
