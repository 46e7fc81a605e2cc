"""What each connection type is, in one table: the pipeline schema's `connections`, the stage
fields' allowed types, the secret fields and the client factories are all built from it.

A connection type names its own keys (a JSON Schema fragment per key, besides `type` and
`uri`), which of them are credentials (only `${env:...}` / `${file:...}` references there),
which name files relative to the pipeline, the stage fields that accept a connection of this
type ("deploy.connection", "train.data.*.connection") and the function that builds its client
("module:function(connection)", imported only when a client is asked for). A plugin brings a
connection type with a `kind: ConnectionType` registration file (integrations/registry.py).

Pure data, imports nothing from legion_ci: spec/, integrations/ and the stage table can all
read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SECRET_REF = r"^\$\{(env|file):[^}]+\}$"

SECRET: dict[str, Any] = {
    "type": "string",
    "pattern": SECRET_REF,
    "description": "A secret reference: ${env:NAME} or ${file:path/relative/to/pipeline}.",
}

URI: dict[str, Any] = {
    "type": "string",
    "description": "Path (for a local connection, relative to the pipeline file), URL,"
    " s3://bucket/prefix, registry host or API server.",
}

# The built-in types' keys, in the order the schema lists them. A key two types share (a
# username) is one fragment, so the schema's one `connections` object stays the same for both.
FIELDS: dict[str, dict[str, Any]] = {
    "endpoint": {
        "type": "string",
        "description": "S3-compatible endpoint URL; for ecr, the AWS API endpoint of ECR and STS.",
    },
    "region": {"type": "string", "description": "Object storage or AWS region."},
    "username": {"type": "string", "description": "User name (may be a reference)."},
    "password": SECRET,
    "token": SECRET,
    "keyID": SECRET,
    "keySecret": SECRET,
    "sessionToken": SECRET,
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
    "role": {
        "type": "string",
        "pattern": r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$",
        "description": "IAM role ARN to assume (STS) before asking ECR for a registry login.",
    },
    "host": {
        "type": "string",
        "description": "Docker engine to use (unix:// or tcp://); default $DOCKER_HOST.",
    },
}


@dataclass(frozen=True)
class ConnectionType:
    name: str
    description: str
    properties: Mapping[str, Any]  # its own keys besides `type` and `uri`: key -> schema
    secrets: tuple[str, ...] = ()  # keys that take only secret references
    paths: tuple[str, ...] = ()  # keys naming files, resolved against the pipeline's folder
    accepted_by: tuple[str, ...] = ()  # stage fields naming it: "stage.field" ("*": each item)
    client: str | None = None  # "module:function(connection) -> client"
    source: str = "built-in"


def _fields(*names: str) -> dict[str, Any]:
    return {name: FIELDS[name] for name in names}


DATA_FIELD = "train.data.*.connection"

BUILT_IN: dict[str, ConnectionType] = {
    t.name: t
    for t in (
        ConnectionType(
            "local", "A folder; `uri` relative to the pipeline file.", {}, (), (), (DATA_FIELD,)
        ),
        ConnectionType(
            "http",
            "An HTTP(S) server for data bindings (basic auth, extra headers).",
            _fields("username", "password", "headers"),
            secrets=("password",),
            accepted_by=(DATA_FIELD,),
        ),
        ConnectionType(
            "s3",
            "S3-compatible storage: data bindings, the cluster training's binary.",
            _fields("endpoint", "region", "keyID", "keySecret", "sessionToken"),
            secrets=("keyID", "keySecret", "sessionToken"),
            accepted_by=(DATA_FIELD, "train.cluster.storage"),
            client="legion_ci.integrations.clients:s3_client",
        ),
        ConnectionType(
            "mlflow",
            "An MLflow tracking server.",
            _fields("username", "password", "token"),
            secrets=("password", "token"),
            accepted_by=("train.tracking",),
        ),
        ConnectionType(
            "docker",
            "A registry to push to (`uri`, credentials) and the engine to use (`host`).",
            _fields("username", "password", "host"),
            secrets=("password",),
            accepted_by=("package.targets.*.connection", "deploy.connection"),
            client="legion_ci.integrations.clients:docker_clients",
        ),
        ConnectionType(
            "ecr",
            "An AWS ECR registry to push to: `uri`, `region`, AWS keys (else boto3's own"
            " credential chain), optional `role`; logged in through ECR just before a push.",
            _fields("endpoint", "region", "keyID", "keySecret", "sessionToken", "role"),
            secrets=("keyID", "keySecret", "sessionToken"),
            accepted_by=("package.targets.*.connection",),
        ),
        ConnectionType(
            "kubernetes",
            "A cluster: `uri` + `token` (+ `caFile`), or a kubeconfig (+ context).",
            _fields("token", "namespace", "kubeconfig", "context", "caFile"),
            secrets=("token",),
            paths=("kubeconfig", "caFile"),
            accepted_by=("train.cluster.connection", "deploy.connection"),
            client="legion_ci.integrations.clients:kubernetes_configuration",
        ),
    )
}


def connection_schema(types: Mapping[str, ConnectionType]) -> dict[str, Any]:
    """The schema of one entry of the pipeline's `connections`: `type` one of `types`, and
    every key some type declares (the built-ins' in FIELDS order, then the plugins')."""
    keys = [key for key in FIELDS if any(key in t.properties for t in types.values())]
    extra = {k: v for t in types.values() for k, v in t.properties.items() if k not in FIELDS}
    properties = {key: FIELDS[key] for key in keys} | extra
    return {
        "type": "object",
        "description": "A named connection; credentials only as secret references.",
        "additionalProperties": False,
        "required": ["type"],
        "properties": {
            "type": {"enum": list(types), "description": "What the connection points at."},
            "uri": URI,
            **properties,
        },
    }


def secret_fields(types: Iterable[ConnectionType]) -> tuple[str, ...]:
    """Every key some type declares a credential (refused unless a secret reference)."""
    return tuple(dict.fromkeys(key for t in types for key in t.secrets))


def accepted_types(
    types: Mapping[str, ConnectionType], stage: str, path: Iterable[str]
) -> tuple[str, ...]:
    """The connection types a stage field (`path` under `stage`) may name."""
    where = ".".join((stage, *path))
    return tuple(name for name, t in types.items() if where in t.accepted_by)


def conflicts(types: Mapping[str, ConnectionType], new: ConnectionType) -> list[str]:
    """Why `new` cannot join `types`: its name is taken, or a key it declares means something
    else already (all types share one `connections` schema, so a key has one meaning)."""
    if new.name in types:
        return [f"connection type {new.name!r} is already registered ({types[new.name].source})"]
    known = {k: v for t in types.values() for k, v in t.properties.items()}
    reserved = {"type", "uri"}
    return [
        f"key {key!r} is already declared with another schema"
        if key not in reserved
        else f"key {key!r} is every connection's own"
        for key, schema in new.properties.items()
        if key in reserved or (key in known and known[key] != schema)
    ]
