"""The JSON Schema of one data binding, apart from the code that fetches data.

Kept in its own module so building the pipeline schema does not import urllib, http.client
and the rest of the fetching code: `legion-ci validate` has a 150 ms budget.
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
