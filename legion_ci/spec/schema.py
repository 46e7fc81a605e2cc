"""The pipeline file's JSON Schema (draft 2020-12), built from the integration registry.

Integration names, the schema of each integration's `arguments` and the connection types come
from the registry, so a third-party registration extends validation without anyone editing
this file.
"""

from __future__ import annotations

from typing import Any

from legion_ci.connection_types import BUILT_IN, connection_schema, secret_fields
from legion_ci.integrations.registry import Registry
from legion_ci.stage_schemas import BASELINE, GATE
from legion_ci.stage_types import STAGES

__all__ = ["BASELINE", "CONNECTION", "GATE", "SECRET_FIELDS", "build_schema"]

SCHEMA_ID = "https://legion-ci.dev/schemas/pipeline-v1.json"
MODEL_NAME = "^[a-z0-9][a-z0-9._-]*$"
MODEL_VERSION = "^[A-Za-z0-9_][A-Za-z0-9._-]*$"
# The built-in connection types' entry and credential fields; a pipeline's own schema is
# built from its registry's table, which plugins may extend.
CONNECTION = connection_schema(BUILT_IN)
SECRET_FIELDS = secret_fields(BUILT_IN.values())


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
                "additionalProperties": connection_schema(registry.connection_types),
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
