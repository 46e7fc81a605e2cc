"""Container operations of the docker target, shared by its deploy and by what
`legion-ci deployments` asks of a docker deployment (docker_deployments.py).

The Docker SDK is imported inside the functions: `legion-ci --help` must not load it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from legion_ci.errors import StageError
from legion_ci.integrations.docker_engine import api_error_text, one_line

STOP_GRACE_S = 5  # after the server's own drain timeout, before the engine's SIGKILL
LOG_TAIL_LINES = 20


def engine_of(details: dict[str, Any]) -> Any:
    """A Docker client for the engine a deployment was made on (one-line StageError if none)."""
    from legion_ci.integrations.clients import Clients

    return Clients(details.get("docker_host")).docker()


def log_tail(container: Any, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = container.logs(stdout=True, stderr=True, tail=lines).decode("utf-8", "replace")
    except Exception as exc:  # the engine's answer is only a detail of the error being raised
        return f"    (no log: {one_line(str(exc), 200)})"
    return "\n".join(f"    {line}" for line in text.splitlines()) or "    (empty log)"


def remove(container: Any) -> None:
    from docker.errors import APIError

    with contextlib.suppress(APIError):  # already gone
        container.remove(force=True)


def remove_named(client: Any, name: str) -> None:
    from docker.errors import APIError

    with contextlib.suppress(APIError):
        client.containers.get(name).remove(force=True)


def stop_container(container: Any, drain_timeout: float) -> str:
    """SIGTERM (the server drains), SIGKILL after the drain timeout and a grace; then remove.
    Returns what happened."""
    from docker.errors import APIError, NotFound

    try:
        container.stop(timeout=int(drain_timeout + STOP_GRACE_S))
        container.reload()
        code = (container.attrs.get("State") or {}).get("ExitCode")
        container.remove(force=True)
    except NotFound:
        return "was already gone"
    except APIError as exc:
        raise StageError(f"container {container.name}: {api_error_text(exc)}") from None
    return "stopped and removed" if code == 0 else f"stopped (exit code {code}) and removed"
