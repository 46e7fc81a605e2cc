"""The pipeline file's JSON Schema (draft 2020-12), built from the integration registry.

Integration names and the schema of each integration's `arguments` come from the registry, so
a third-party registration extends validation without anyone editing this file.
"""

from __future__ import annotations

from typing import Any

from legion_ci.integrations.registry import Registry

SCHEMA_ID = "https://legion-ci.dev/schemas/pipeline-v1.json"
SECRET_REF = r"^\$\{(env|file):[^}]+\}$"
# Fields of a connection that carry credentials: only secret references are accepted there.
SECRET_FIELDS = ("password", "token", "keyID", "keySecret", "sessionToken")

_secret_ref = {
    "type": "string",
    "pattern": SECRET_REF,
    "description": "A secret reference: ${env:NAME} or ${file:path/relative/to/pipeline}.",
}

CONNECTION = {
    "type": "object",
    "description": "A named connection; credentials only as secret references.",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {
            "enum": ["local", "http", "s3", "mlflow", "docker", "kubernetes"],
            "description": "What the connection points at.",
        },
        "uri": {
            "type": "string",
            "description": "Path, URL, s3://bucket/prefix, registry host or API server.",
        },
        "endpoint": {"type": "string", "description": "S3-compatible endpoint URL."},
        "region": {"type": "string", "description": "Object storage region."},
        "username": {"type": "string", "description": "User name (may be a reference)."},
        "password": _secret_ref,
        "token": _secret_ref,
        "keyID": _secret_ref,
        "keySecret": _secret_ref,
        "sessionToken": _secret_ref,
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Extra HTTP headers.",
        },
        "namespace": {"type": "string", "description": "Kubernetes namespace."},
        "kubeconfig": {"type": "string", "description": "Path to a kubeconfig file."},
    },
}

GATE = {
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

BASELINE = {
    "description": "What the metrics are compared with: a metrics JSON file checked in on the"
    " main branch, or an earlier run record ({run: latest} or {run: <run id>}).",
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


def _binding_schema() -> dict[str, Any]:
    try:
        from legion_ci.data.schema import BINDING_SCHEMA
    except ImportError:  # pragma: no cover - the data package always ships
        return {"type": "object"}
    return dict(BINDING_SCHEMA)


def _stage_schema(
    stage: str, name_key: str, registry: Registry, base: dict[str, Any]
) -> dict[str, Any]:
    registrations = registry.for_stage(stage)
    names = sorted(registrations)
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": [name_key],
        "properties": {
            name_key: {
                "enum": names,
                "description": f"Registered integration that runs the {stage} stage.",
            },
            "arguments": {
                "type": "object",
                "description": "Arguments of the chosen integration (its own schema).",
            },
            **base,
        },
    }
    branches = [
        {
            "if": {"properties": {name_key: {"const": name}}, "required": [name_key]},
            "then": {"properties": {"arguments": registration.arguments}},
        }
        for name, registration in sorted(registrations.items())
    ]
    if branches:
        schema["allOf"] = branches
    return schema


def build_schema(registry: Registry) -> dict[str, Any]:
    train = _stage_schema(
        "train",
        "toolchain",
        registry,
        {
            "workDir": {
                "type": "string",
                "description": "Project folder, relative to the pipeline file.",
            },
            "entrypoint": {"type": "string", "description": "Entry point of the project."},
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
                "items": _binding_schema(),
                "description": "Data placed in the work dir before training (Data Bindings).",
            },
            "gates": {
                "type": "object",
                "additionalProperties": GATE,
                "description": "Quality gates: metric name -> bounds.",
            },
            "baseline": BASELINE,
        },
    )
    package = _stage_schema(
        "package",
        "integration",
        registry,
        {
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
        },
    )
    deploy = _stage_schema(
        "deploy",
        "target",
        registry,
        {"connection": {"type": "string", "description": "Cluster connection name."}},
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "legion-ci pipeline",
        "description": "One model's way through train, package and deploy.",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "model", "stages"],
        "properties": {
            "apiVersion": {"const": "legion-ci/v1", "description": "Always legion-ci/v1."},
            "kind": {"const": "Pipeline", "description": "Always Pipeline."},
            "model": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "version"],
                "properties": {
                    "name": {
                        "type": "string",
                        "pattern": "^[a-z0-9][a-z0-9._-]*$",
                        "description": "Model name (lower case, digits, . _ -).",
                    },
                    "version": {"type": "string", "description": "Model version, e.g. '1.0'."},
                },
            },
            "connections": {
                "type": "object",
                "additionalProperties": CONNECTION,
                "description": "Named connections: data stores, tracking, registry, cluster.",
            },
            "integrations": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Registration files of extra integrations, relative to this file.",
            },
            "workspace": {
                "type": "string",
                "description": "Run records folder; default .legion/ beside this file.",
            },
            "stages": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "properties": {"train": train, "package": package, "deploy": deploy},
                "description": "The stages to run, always in the order train, package, deploy.",
            },
        },
    }
