"""The stages' own keys as JSON Schema fragments (with defaults), read by the stage table.

Plain data that imports nothing, so the stage table and the pipeline schema can both read it,
and building the pipeline schema does not import the data-fetching code (urllib, http.client):
`legion-ci validate` has a 150 ms budget.
"""

from __future__ import annotations

from typing import Any

BINDING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Data placed inside the training's work dir before the training runs.",
    "properties": {
        "connection": {
            "type": "string",
            "minLength": 1,
            "description": "Name of a data connection (type local, http or s3).",
        },
        "remotePath": {
            "type": "string",
            "description": (
                "Path on the connection, relative to its uri: a file, or a directory / S3 "
                "prefix (ending with '/') copied recursively. Leave it out when the "
                "connection's uri names the object itself (as Legion allowed)."
            ),
        },
        "localPath": {
            "type": "string",
            "minLength": 1,
            "description": "Where to place the data, relative to the work dir (stays inside it).",
        },
        "sha256": {
            "type": "string",
            "pattern": "^[0-9a-fA-F]{64}$",
            "description": (
                "Expected sha256 of the file, or of the sorted sha256sum listing of a directory; "
                "a mismatch fails the stage before training."
            ),
        },
    },
    "required": ["connection", "localPath"],
    "additionalProperties": False,
}


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
