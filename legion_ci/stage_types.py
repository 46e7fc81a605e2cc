"""What each stage type is, in one table: everything that knows about stages reads it.

A stage type names the registration kind that serves it, the key naming its integration, its
own keys (a JSON Schema fragment, with defaults), which fields name connections and of which
types, the functions that run, plan and validate it ("module:function", imported only when
used, so `legion-ci validate` stays fast) and the outputs it declares. Adding a stage is one
entry here plus its module under `legion_ci.runner.stages`.

Nearly pure data: it imports only `legion_ci.data.schema` (the data binding schema, itself
plain data), so spec/, runner/ and integrations/ can all read it without importing each other.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from legion_ci.data.schema import BINDING_SCHEMA

GATE: dict[str, Any] = {
    "type": "object",
    "description": "Bounds on one training metric; the stage fails when a bound is broken.",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "min": {"type": "number", "description": "Smallest acceptable value."},
        "max": {"type": "number", "description": "Largest acceptable value."},
        "maxIncrease": {
            "type": "number",
            "description": "Largest acceptable increase over the baseline value.",
        },
        "maxDecrease": {
            "type": "number",
            "description": "Largest acceptable decrease from the baseline value.",
        },
    },
}

BASELINE: dict[str, Any] = {
    "description": "What the metrics are compared with: a metrics JSON file checked in on the"
    " main branch, or an earlier succeeded run of the same model ({run: latest} or"
    " {run: <run id>}).",
    "oneOf": [
        {"type": "string", "description": "Path to a JSON file {metric: value} or a summary.json."},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["run"],
            "properties": {
                "run": {"type": "string", "description": "'latest' or a run id."},
            },
        },
    ],
}

TRAIN_PROPERTIES: dict[str, Any] = {
    "workDir": {
        "type": "string",
        "default": ".",
        "description": "Project folder, relative to the pipeline file.",
    },
    "entrypoint": {
        "type": "string",
        "default": "main",
        "description": "Entry point of the project.",
    },
    "hyperParameters": {
        "type": "object",
        "additionalProperties": {"type": ["string", "number", "boolean"]},
        "description": "Parameters passed to the training entry point.",
    },
    "tracking": {
        "type": "string",
        "description": "Name of an mlflow connection; default: $MLFLOW_TRACKING_URI,"
        " else a sqlite store in the workspace.",
    },
    "data": {
        "type": "array",
        "items": BINDING_SCHEMA,
        "description": "Data placed in the work dir before training (Data Bindings).",
    },
    "gates": {
        "type": "object",
        "additionalProperties": GATE,
        "description": "Quality gates: metric name -> bounds.",
    },
    "baseline": BASELINE,
    "cluster": {
        "type": "object",
        "description": "Run the training as a Kubernetes Job (`legion-ci stage train` in a"
        " toolchain image holding legion-ci and the project), the binary coming back through"
        " S3-compatible storage; the rest of the pipeline does not change.",
        "additionalProperties": False,
        "required": ["connection", "image", "storage", "credentialsSecret"],
        "properties": {
            "connection": {"type": "string", "description": "The kubernetes connection."},
            "image": {"type": "string", "minLength": 1, "description": "The toolchain image."},
            "storage": {"type": "string", "description": "The s3 connection for the binary."},
            "credentialsSecret": {
                "type": "string",
                "minLength": 1,
                "description": "Secret in the namespace with AWS_ACCESS_KEY_ID and"
                " AWS_SECRET_ACCESS_KEY for the pod.",
            },
            "namespace": {"type": "string", "description": "Default: the connection's."},
            "pipeline": {
                "type": "string",
                "description": "This pipeline file's path inside the image; default: its path"
                " relative to the working folder.",
            },
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 21600,
                "description": "Seconds the Job may take before it is deleted.",
            },
            "resources": {"type": "object", "description": "The pod's resources."},
        },
    },
}

PACKAGE_PROPERTIES: dict[str, Any] = {
    "targets": {
        "type": "array",
        "description": "Where the packed model goes, e.g. a docker registry connection.",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "connection"],
            "properties": {
                "name": {"type": "string", "description": "Target role, e.g. docker-push."},
                "connection": {"type": "string", "description": "Connection name."},
            },
        },
    }
}

DEPLOY_PROPERTIES: dict[str, Any] = {
    "connection": {
        "type": "string",
        "description": "Connection of the place to deploy to (a kubernetes cluster, a docker"
        " engine); local targets need none.",
    },
}


@dataclass(frozen=True)
class ConnectionField:
    """A stage field that names a connection: `path` under the stage, `*` for each item."""

    path: tuple[str, ...]
    types: tuple[str, ...]


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
            ConnectionField(("data", "*", "connection"), ("local", "http", "s3")),
            ConnectionField(("tracking",), ("mlflow",)),
            ConnectionField(("cluster", "connection"), ("kubernetes",)),
            ConnectionField(("cluster", "storage"), ("s3",)),
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
        connections=(ConnectionField(("targets", "*", "connection"), ("docker",)),),
        run="legion_ci.runner.stages.package:run_package",
        plan="legion_ci.runner.stages.package:plan_package",
        outputs={
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": _image_ref(),
                "digest": {"type": ["string", "null"], "pattern": "sha256:[0-9a-f]{64}$"},
            },
        },
        ci_outputs={"image": "image", "digest": "digest"},
    ),
    StageType(
        name="deploy",
        kind="DeployTarget",
        integration_key="target",
        noun="deploy target",
        protocol="Deployer",
        properties=DEPLOY_PROPERTIES,
        connections=(ConnectionField(("connection",), ("kubernetes", "docker")),),
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
