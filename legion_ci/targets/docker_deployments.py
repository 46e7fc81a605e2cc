"""What `legion-ci deployments` asks of a docker deployment: its status, its log, its deletion.

Each call talks to the engine the deployment was made on (its recorded DOCKER_HOST), so a
deployment made elsewhere is reported as such, never confused with one on today's engine.
"""

from __future__ import annotations

from legion_ci import deployment_state as state
from legion_ci.errors import StageError
from legion_ci.integrations.docker_engine import api_error_text
from legion_ci.targets.containers import engine_of, stop_container


def container_status(record: state.DeploymentState) -> tuple[str, str]:
    """(status, detail): running, vanished (no such container), exited/restarting/...
    (the container's own state), or unknown (no engine answers)."""
    from docker.errors import APIError, NotFound

    details = record.details
    label = details.get("container") or details.get("container_id", "?")[:12]
    try:
        client = engine_of(details)
    except StageError as exc:
        return "unknown", str(exc)
    try:
        container = client.containers.get(details.get("container_id"))
    except NotFound:
        return "vanished", f"container {label} no longer exists on {client.api.base_url}"
    except APIError as exc:
        return "unknown", f"container {label}: {api_error_text(exc)}"
    finally:
        client.close()
    attrs = container.attrs.get("State") or {}
    status = container.status
    if status == "running":
        return "running", f"container {label}"
    detail = f"container {label} is {status}"
    if status in ("exited", "dead"):
        detail += f" (exit code {attrs.get('ExitCode')}"
        detail += ", killed for its memory limit)" if attrs.get("OOMKilled") else ")"
    return status, detail


def container_logs(record: state.DeploymentState, lines: int) -> str:
    """The container's last `lines` log lines (stdout and stderr, as `docker logs`)."""
    from docker.errors import APIError, NotFound

    details = record.details
    client = engine_of(details)
    try:
        container = client.containers.get(details.get("container_id"))
        return container.logs(stdout=True, stderr=True, tail=lines).decode("utf-8", "replace")
    except NotFound:
        raise StageError(
            f"{record.name}: container {details.get('container')} no longer exists"
        ) from None
    except APIError as exc:
        raise StageError(f"{record.name}: {api_error_text(exc)}") from None
    finally:
        client.close()


def delete_deployment(record: state.DeploymentState, drain_timeout: float) -> str:
    """Stop (drain) and remove the deployment's container; returns what happened."""
    from docker.errors import NotFound

    details = record.details
    client = engine_of(details)
    try:
        container = client.containers.get(details.get("container_id"))
    except NotFound:
        return f"container {details.get('container')} was already gone"
    try:
        return f"container {container.name} " + stop_container(container, drain_timeout)
    finally:
        client.close()
