"""A validated pipeline: resolved data, its registry, connections and secret redactor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legion_ci.integrations.base import Connection
from legion_ci.integrations.registry import Registration, Registry
from legion_ci.redact import Redactor
from legion_ci.stage_types import BY_NAME, STAGE_ORDER
from legion_ci.yaml_loader import Located


@dataclass
class Pipeline:
    path: Path
    display: str
    data: dict[str, Any]
    located: Located
    registry: Registry
    redactor: Redactor
    connections: dict[str, Connection]
    _clients: Any = field(default=None, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def model_name(self) -> str:
        return str(self.data["model"]["name"])

    @property
    def model_version(self) -> str:
        return str(self.data["model"]["version"])

    @property
    def stages(self) -> list[str]:
        return [name for name in STAGE_ORDER if name in self.data["stages"]]

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"][name]

    def integration_name(self, stage: str) -> str:
        return str(self.stage(stage)[BY_NAME[stage].integration_key])

    def registration(self, stage: str) -> Registration:
        return self.registry.for_stage_named(stage, self.integration_name(stage))

    @property
    def workspace(self) -> Path:
        return (self.base_dir / self.data.get("workspace", ".legion")).resolve()

    def resolve_path(self, value: str) -> Path:
        return (self.base_dir / value).resolve()

    def clients(self) -> Any:
        """The Docker / Kubernetes clients, built once from the resolved connections; a
        connection's own client by its type's factory in the registry's table."""
        if self._clients is None:
            from legion_ci.integrations.clients import Clients

            self._clients = Clients.for_connections(self.connections.values())
            self._clients.connection_types = self.registry.connection_types
        return self._clients
