"""The pipeline file's JSON Schema (draft 2020-12), built from the integration registry.

Integration names and the schema of each integration's `arguments` come from the registry, so
a third-party registration extends validation without anyone editing this file.
"""

from __future__ import annotations

from typing import Any

from legion_ci.integrations.registry import Registry
from legion_ci.stage_types import BASELINE, GATE, STAGES

__all__ = ["BASELINE", "CONNECTION", "GATE", "SECRET_FIELDS", "build_schema"]

SCHEMA_ID = "https://legion-ci.dev/schemas/pipeline-v1.json"
SECRET_REF = r"^\$\{(env|file):[^}]+\}$"
MODEL_NAME = "^[a-z0-9][a-z0-9._-]*$"
MODEL_VERSION = "^[A-Za-z0-9_][A-Za-z0-9._-]*$"
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
            "description": "Path (for a local connection, relative to the pipeline file), URL,"
            " s3://bucket/prefix, registry host or API server.",
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
        "kubeconfig": {
            "type": "string",
            "description": "Path to a kubeconfig file, relative to the pipeline file.",
        },
        "context": {"type": "string", "description": "Kubernetes context in the kubeconfig."},
        "caFile": {
            "type": "string",
            "description": "CA bundle that verifies the API server of a uri + token"
            " connection, relative to the pipeline file.",
        },
        "host": {
            "type": "string",
            "description": "Docker engine to use (unix:// or tcp://); default $DOCKER_HOST.",
        },
    },
}


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
    stages = {
        stage.name: _stage_schema(stage.name, stage.integration_key, registry, stage.properties)
        for stage in STAGES
    }
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
                    # Both become file names (<name>-<version>.zip) and image references
                    # (<name>:<version>-...): no '/', no '..', at most a Docker tag's length.
                    "name": {
                        "type": "string",
                        "pattern": MODEL_NAME,
                        "maxLength": 128,
                        "description": "Model name (lower case, digits, . _ -).",
                    },
                    "version": {
                        "type": "string",
                        "pattern": MODEL_VERSION,
                        "maxLength": 128,
                        "description": "Model version, e.g. '1.0' (letters, digits, . _ -).",
                    },
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
                "properties": stages,
                "description": "The stages to run, always in the order train, package, deploy.",
            },
        },
    }
