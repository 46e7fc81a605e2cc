"""The deployment state store: one JSON file per deployment under <workspace>/deployments/.

`<workspace>/deployments/<name>.json` says what is deployed under `name` (target, model,
version, run id, URL, and the target's own facts: pid and log file for a process, namespace and
objects for Kubernetes). Each deployment also gets a folder `<workspace>/deployments/<name>/`
for its logs. Files are written atomically, so a reader sees the previous state or the new one.
A lock file serialises two stages deploying the same name at once.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from legion_ci.errors import InputError
from legion_ci.records import write_redacted


class Deployed(Protocol):
    """What a deployment state needs of the deploy stage's context (a DeployContext)."""

    model_name: str
    model_version: str
    run_id: str


NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check_name(name: str) -> str:
    """Deployment names double as Kubernetes object names and file names: DNS-1123 labels."""
    if not NAME_RE.match(name):
        raise InputError(
            f"deployment name {name!r}: use lower case letters, digits and '-' "
            "(at most 63, starting and ending with a letter or digit)"
        )
    return name


@dataclass
class DeploymentState:
    name: str
    target: str  # process | kubernetes | docker
    model_name: str
    model_version: str
    run_id: str
    url: str
    deployed_at: str
    details: dict[str, Any] = field(default_factory=dict)  # the target's own facts
    previous: dict[str, Any] | None = None  # what this deployment replaced (version, run id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def deployed(
        cls,
        ctx: Deployed,
        *,
        name: str,
        target: str,
        url: str,
        details: dict[str, Any],
        old: DeploymentState | None,
    ) -> DeploymentState:
        """The state of `ctx`'s model just deployed under `name`, replacing `old` (if any)."""
        return cls(
            name=name,
            target=target,
            model_name=ctx.model_name,
            model_version=ctx.model_version,
            run_id=ctx.run_id,
            url=url,
            deployed_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            details=details,
            previous=(
                {"model_version": old.model_version, "run_id": old.run_id, "url": old.url}
                if old is not None
                else None
            ),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentState:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def deployments_dir(workspace: Path) -> Path:
    return Path(workspace) / "deployments"


def state_path(workspace: Path, name: str) -> Path:
    return deployments_dir(workspace) / f"{check_name(name)}.json"


def logs_dir(workspace: Path, name: str) -> Path:
    return deployments_dir(workspace) / check_name(name)


def save(workspace: Path, state: DeploymentState) -> None:
    """Write the state atomically; every field is an identifier `deployments` reads back
    (a log path, a pid, an image), so only the identifiers a secret shares are kept."""
    from legion_ci.redact import ACTIVE, protect_identifiers

    identifiers = {
        "deployment name": state.name,
        "model name": state.model_name,
        "model version": state.model_version,
        "run id": state.run_id,
        "workspace path": str(Path(workspace).resolve()),
    }
    protect_identifiers(identifiers)
    data = ACTIVE.fields(
        state.to_dict(),
        [(name,) for name in state.to_dict()],
        [*identifiers.values(), str(workspace), f"{state.model_name}-{state.model_version}"],
    )
    write_redacted(state_path(workspace, state.name), json.dumps(data, indent=2) + "\n")


def load(workspace: Path, name: str) -> DeploymentState | None:
    path = state_path(workspace, name)
    try:
        return DeploymentState.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a deployment state file: {exc}") from None


def require(workspace: Path, name: str) -> DeploymentState:
    state = load(workspace, name)
    if state is None:
        known = ", ".join(s.name for s in list_states(workspace)) or "none"
        raise InputError(
            f"no deployment named {name!r} in {deployments_dir(workspace)}; known: {known}"
        )
    return state


def list_states(workspace: Path) -> list[DeploymentState]:
    folder = deployments_dir(workspace)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        with contextlib.suppress(InputError):
            state = load(workspace, path.stem)
            if state is not None:
                found.append(state)
    return found


def remove(workspace: Path, name: str) -> None:
    state_path(workspace, name).unlink(missing_ok=True)


@contextlib.contextmanager
def locked(workspace: Path, name: str) -> Iterator[None]:
    """Hold the deployment's lock: a second deploy of the same name waits for the first."""
    path = deployments_dir(workspace) / f".{check_name(name)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
