"""A `kind: ConnectionType` registration file: a plugin's connection type for the table in
legion_ci.connection_types (its keys' schema, secrets, the stage fields that accept it, its
client factory). Loaded by the registry beside the integrations' registrations.

    apiVersion: legion-ci/v1
    kind: ConnectionType
    name: vault
    description: A secrets store.
    properties: {address: {type: string}, secretID: {type: string}}
    secrets: [secretID]
    acceptedBy: [deploy.connection]
    client: my_plugin.vault:client      # called with the resolved Connection
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from legion_ci.connection_types import SECRET, ConnectionType
from legion_ci.errors import SpecError
from legion_ci.stage_types import STAGES

KIND = "ConnectionType"


def registration_schema(kind: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """The schema of a registration file of `kind`: the header every registration shares
    (apiVersion, kind, name, description), then its own `properties`."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "name"],
        "properties": {
            "apiVersion": {"const": "legion-ci/v1"},
            "kind": kind,
            "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]*$"},
            "description": {"type": "string"},
            **properties,
        },
    }


_NAMES: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

SCHEMA = registration_schema(
    {"const": KIND},
    {
        "properties": {"type": "object", "additionalProperties": {"type": "object"}},
        "secrets": _NAMES,
        "paths": _NAMES,
        "acceptedBy": _NAMES,
        "client": {"type": "string", "pattern": r"^[\w.]+:[\w.]+$"},
    },
)


def is_connection_type(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND


def connection_type(located: Any, path: Path) -> ConnectionType:
    """The ConnectionType a registration file declares; SpecError, located, when it is wrong."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    data = located.data
    problems = [
        located.problem(tuple(error.absolute_path), error.message)
        for error in Draft202012Validator(SCHEMA).iter_errors(data)
    ]
    if problems:
        raise SpecError(problems)
    properties = dict(data.get("properties") or {})
    for key, schema in properties.items():
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            problems.append(
                located.problem(("properties", key), f"not a valid JSON Schema: {exc.message}")
            )
    for key in ("secrets", "paths"):
        for i, name in enumerate(data.get(key) or []):
            if name not in properties:
                problems.append(located.problem((key, i), f"{name!r} is not in its properties"))
    fields = [
        ".".join((stage.name, *conn_field.path))
        for stage in STAGES
        for conn_field in stage.connections
    ]
    for i, field in enumerate(data.get("acceptedBy") or []):
        if field not in fields:
            problems.append(
                located.problem(
                    ("acceptedBy", i),
                    f"{field!r} names no connection field; known: {', '.join(fields)}",
                )
            )
    if problems:
        raise SpecError(problems)
    secrets = tuple(data.get("secrets") or ())
    # A credential key takes only secret references, as the built-ins' do.
    properties.update({key: SECRET for key in secrets})
    return ConnectionType(
        name=data["name"],
        description=data.get("description", ""),
        properties=properties,
        secrets=secrets,
        paths=tuple(data.get("paths") or ()),
        accepted_by=tuple(data.get("acceptedBy") or ()),
        client=data.get("client"),
        source=str(path),
    )
