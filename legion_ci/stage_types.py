"""What each stage type is, in one table: everything that knows about stages reads it.

A stage type names the registration kind that serves it, the key naming its integration, its
own keys (a JSON Schema fragment with defaults, from legion_ci.stage_schemas), which fields
name connections (the types each accepts are in legion_ci.connection_types), the functions
that run, plan and validate it ("module:function", imported only when used, so `legion-ci
validate` stays fast) and the outputs it declares. Adding a stage is one entry here plus its
module under `legion_ci.runner.stages`.

Nearly pure data: it imports only `legion_ci.stage_schemas` (plain data), so spec/, runner/
and integrations/ can all read it without importing each other.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from legion_ci.stage_schemas import DEPLOY_PROPERTIES, PACKAGE_PROPERTIES, TRAIN_PROPERTIES


@dataclass(frozen=True)
class ConnectionField:
    """A stage field that names a connection: `path` under the stage, `*` for each item. The
    types it accepts come from the connection type table (legion_ci.connection_types), so a
    plugin's connection type can be accepted without an edit here."""

    path: tuple[str, ...]


@dataclass(frozen=True)
class StageType:
    name: str
    kind: str  # the registration kind that serves this stage
    integration_key: str  # the stage key naming its integration
    noun: str  # how messages name that integration
    protocol: str  # the Protocol in legion_ci.integrations.base an in-process one satisfies
    properties: dict[str, Any]  # the stage's own keys, besides the integration and arguments
    connections: tuple[ConnectionField, ...]
    run: str  # "module:function(pipeline, record, stage_record, log)"
    plan: str  # "module:function(pipeline, spec) -> dict" (added to the dry-run entry)
    # JSON Schema of the outputs an integration must hand back (checked after it returns)
    outputs: dict[str, Any]
    # outputs published as GitHub Actions step outputs (cli/execution.py): output key -> CI
    # name. The Jenkins steps and the Airflow operators read the run's JSON instead.
    ci_outputs: dict[str, str] = field(default_factory=dict)
    # "module:function(pipeline, located, strict_project) -> [Problem]", extra checks
    validate: str | None = None


def _image_ref() -> dict[str, Any]:
    return {"type": ["string", "null"], "minLength": 1}


STAGES: tuple[StageType, ...] = (
    StageType(
        name="train",
        kind="ToolchainIntegration",
        integration_key="toolchain",
        noun="toolchain",
        protocol="Trainer",
        properties=TRAIN_PROPERTIES,
        connections=(
            ConnectionField(("data", "*", "connection")),
            ConnectionField(("tracking",)),
            ConnectionField(("cluster", "connection")),
            ConnectionField(("cluster", "storage")),
        ),
        run="legion_ci.runner.stages.train:run_train",
        plan="legion_ci.runner.stages.train:plan_train",
        validate="legion_ci.runner.stages.train:validate_train",
        outputs={
            "type": "object",
            "required": ["artifact", "artifact_sha256"],
            "properties": {
                "artifact": {"type": "string", "minLength": 1},
                "artifact_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            },
        },
        ci_outputs={"artifact": "artifact", "artifact_sha256": "artifact-sha256"},
    ),
    StageType(
        name="package",
        kind="PackagingIntegration",
        integration_key="integration",
        noun="packaging integration",
        protocol="Packager",
        properties=PACKAGE_PROPERTIES,
        connections=(ConnectionField(("targets", "*", "connection")),),
        run="legion_ci.runner.stages.package:run_package",
        plan="legion_ci.runner.stages.package:plan_package",
        outputs={
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": _image_ref(),
                "digest": {"type": ["string", "null"], "pattern": "sha256:[0-9a-f]{64}$"},
                # paths in the run's artifacts: the CycloneDX SBOM, the in-toto provenance
                "sbom": {"type": "string", "minLength": 1},
                "provenance": {"type": "string", "minLength": 1},
            },
        },
        ci_outputs={
            "image": "image",
            "digest": "digest",
            "sbom": "sbom",
            "provenance": "provenance",
        },
    ),
    StageType(
        name="deploy",
        kind="DeployTarget",
        integration_key="target",
        noun="deploy target",
        protocol="Deployer",
        properties=DEPLOY_PROPERTIES,
        connections=(ConnectionField(("connection",)),),
        run="legion_ci.runner.stages.deploy:run_deploy",
        plan="legion_ci.runner.stages.deploy:plan_deploy",
        outputs={
            "type": "object",
            "required": ["url"],
            "properties": {"url": {"type": "string", "pattern": "^https?://"}},
        },
        ci_outputs={"url": "url"},
    ),
)

STAGE_ORDER: tuple[str, ...] = tuple(stage.name for stage in STAGES)
BY_NAME: dict[str, StageType] = {stage.name: stage for stage in STAGES}
BY_KIND: dict[str, StageType] = {stage.kind: stage for stage in STAGES}


def resolve(ref: str) -> Any:
    """Import "module:function" only when it is used."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
