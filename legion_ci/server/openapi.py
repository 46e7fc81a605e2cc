"""The OpenAPI 3.1 document of a served model, built from its entrypoint's info().

The document describes exactly what the server accepts, no more and no less, so generated
clients and API fuzzers (tests/test_server_openapi.py runs schemathesis against it) find the
two in agreement: rows of exactly the model's width with each value of its column's type
(JSON Schema 2020-12 `prefixItems`, hence 3.1), at least one row, one of MLflow's four
payload keys, a CSV body matching the header and value shapes, a non-empty Request-ID of the
characters the server takes, and any JSON value as feedback.
"""

from __future__ import annotations

import re
from typing import Any

from legion_ci.server.protocols import REQUEST_ID_PATTERN

_JSON_TYPES = {
    "number": "number",
    "float": "number",
    "double": "number",
    "integer": "integer",
    "int": "integer",
    "long": "integer",
    "boolean": "boolean",
    "bool": "boolean",
    "string": "string",
    "str": "string",
}

# What one CSV cell of each type may look like in the documented CSV body (the server reads
# more, e.g. exponents and quoted cells; the document promises what it surely accepts).
_CSV_CELLS = {
    "number": r"-?[0-9]{1,12}(\.[0-9]{1,12})?",
    "integer": r"-?[0-9]{1,12}",
    "boolean": r"(true|false)",
    "string": r"[A-Za-z0-9_.][A-Za-z0-9 _.]{0,20}",
}


def json_type(type_name: str) -> str | None:
    """The JSON Schema type of a GPPI type name; None for a type the server does not check."""
    return _JSON_TYPES.get(type_name.lower())


def _value_schema(field: Any) -> dict[str, Any]:
    kind = json_type(field.type)
    if kind is None:
        return {}  # a type the server does not check: any value
    return {"type": kind} if field.required else {"type": [kind, "null"]}


# A value of each JSON type, for a declared output column without a usable example.
_TYPE_EXAMPLES: dict[str, Any] = {"number": 0.0, "integer": 0, "boolean": False, "string": ""}


def _fits(value: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {"boolean": bool, "string": str}[kind])


def _declared_example(field: Any) -> Any:
    """info()'s example of an output column when it fits the declared type, else a value of
    that type: the response example of a binary without a recorded prediction."""
    kind = json_type(field.type)
    if kind is None or _fits(field.example, kind):
        return field.example
    return _TYPE_EXAMPLES[kind]


def _csv_pattern(fields: list[Any]) -> str:
    header = ",".join(re.sub(r"([^A-Za-z0-9_])", r"\\\1", f.name) for f in fields)
    cells = []
    for f in fields:
        cell = _CSV_CELLS.get(json_type(f.type) or "string", _CSV_CELLS["string"])
        cells.append(cell if f.required else f"({cell})?")
    return f"^{header}\\n({','.join(cells)}\\n){{1,5}}$"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def build_openapi(
    model: Any,
    prediction: tuple[list[list[Any]], list[str]] | None = None,
    *,
    outputs: list[Any] | None = None,
    feedback: bool = True,
) -> dict[str, Any]:
    """`model` is a GppiModel (name, version, input_fields, output_fields); `prediction` the
    model's real answer on the example row (recorded by the train-time self-check), used as
    the response example, and `outputs` the output fields typed by it (selfcheck.
    typed_outputs()); without one, info()'s declared output. `feedback`: whether this server
    accepts feedback (it stores it only with --log-requests)."""
    inputs = model.input_fields
    outputs = outputs if outputs is not None else model.output_fields
    columns = [f.name for f in inputs]
    example_row = [f.example for f in inputs]
    if prediction is not None:
        out_example, out_columns = prediction
    else:
        out_example = [[_declared_example(f) for f in outputs]]
        out_columns = [f.name for f in outputs]
    kinds = [json_type(f.type) for f in outputs]
    out_items: list[dict[str, Any]] = [
        {"type": [k, "null"]} if k else {} for k in kinds
    ]  # null: a NaN in the output is answered as null
    row = {
        "type": "array",
        "prefixItems": [_value_schema(f) for f in inputs],
        "items": False,
        "minItems": len(inputs),
        "maxItems": len(inputs),
    }
    record = {
        "type": "object",
        "properties": {f.name: _value_schema(f) for f in inputs},
        "required": [f.name for f in inputs if f.required],
        "additionalProperties": False,
    }
    request_id = {
        "name": "Request-ID",
        "in": "header",
        "description": "Your id for this request, echoed in the answer; one is made up if absent.",
        "schema": {"type": "string", "pattern": f"^{REQUEST_ID_PATTERN}$"},
    }
    model_headers = {
        "Model-Name": {"schema": {"type": "string"}, "example": model.name},
        "Model-Version": {"schema": {"type": "string"}, "example": model.version},
        "Request-ID": {"schema": {"type": "string"}},
    }
    errors = {
        "400": _error("The request is malformed; the message says what was wrong."),
        "408": _error("The request body did not arrive in time."),
        "413": _error("The request body is over the server's limit."),
        "415": _error("The Content-Type is not supported."),
        "500": _error("The model raised: the message has the exception's type and message."),
        "503": _error("The model is not loaded (yet)."),
    }
    params = {"type": "object", "description": "MLflow inference parameters (not used)."}

    def mlflow_body(key: str, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {key: value, "params": params},
            "required": [key],
            "additionalProperties": False,
        }

    rows_or_records = {
        "oneOf": [
            {"type": "array", "items": {"$ref": "#/components/schemas/Row"}, "minItems": 1},
            {"type": "array", "items": {"$ref": "#/components/schemas/Record"}, "minItems": 1},
        ]
    }
    paths: dict[str, Any] = {
        "/api/model/invoke": {
            "post": {
                "summary": "Predict on rows",
                "operationId": "invoke",
                "parameters": [request_id],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/InvokeRequest"},
                            "example": {"columns": columns, "data": [example_row]},
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The model's rows (one per input row, unless the model"
                        " answers otherwise) and its output columns.",
                        "headers": model_headers,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/InvokeResponse"},
                                "example": {"prediction": out_example, "columns": out_columns},
                            }
                        },
                    },
                    **errors,
                },
            }
        },
        "/api/model/info": {
            "get": {
                "summary": "This document",
                "operationId": "info",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "503": errors["503"],
                },
            }
        },
        "/invocations": {
            "post": {
                "summary": "MLflow scoring protocol",
                "operationId": "invocations",
                "parameters": [request_id],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    mlflow_body(
                                        "dataframe_split",
                                        {"$ref": "#/components/schemas/DataframeSplit"},
                                    ),
                                    mlflow_body(
                                        "dataframe_records",
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Record"},
                                            "minItems": 1,
                                        },
                                    ),
                                    mlflow_body("instances", rows_or_records),
                                    mlflow_body("inputs", rows_or_records),
                                ]
                            },
                            "examples": {
                                "dataframe_split": {
                                    "value": {
                                        "dataframe_split": {
                                            "columns": columns,
                                            "data": [example_row],
                                        }
                                    }
                                },
                                "dataframe_records": {
                                    "value": {
                                        "dataframe_records": [
                                            dict(zip(columns, example_row, strict=False))
                                        ]
                                    }
                                },
                            },
                        },
                        "text/csv": {
                            "schema": {"type": "string", "pattern": _csv_pattern(inputs)},
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": '{"predictions": ...} as MLflow answers',
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["predictions"],
                                    "properties": {"predictions": {"type": "array"}},
                                }
                            }
                        },
                    },
                    **errors,
                },
            }
        },
        "/healthcheck": {
            "get": {
                "summary": "Readiness: 200 once the model is loaded, 503 before",
                "responses": {
                    "200": {"description": "ready", "content": {"application/json": {}}},
                    "503": {"description": "loading", "content": {"application/json": {}}},
                },
            }
        },
        "/livez": {
            "get": {
                "summary": "Liveness",
                "responses": {"200": {"description": "alive", "content": {"application/json": {}}}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "responses": {
                    "200": {"description": "ready", "content": {"application/json": {}}},
                    "503": {"description": "loading", "content": {"application/json": {}}},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    if feedback:
        paths["/api/model/feedback"] = {
            "post": {
                "summary": "Record feedback on a prediction",
                "operationId": "feedback",
                "parameters": [
                    {**request_id, "required": True, "description": "The prediction's id."},
                    {
                        "name": "Model-Name",
                        "in": "header",
                        "schema": {"type": "string", "enum": [model.name]},
                    },
                    {
                        "name": "Model-Version",
                        "in": "header",
                        "schema": {"type": "string", "enum": [model.version]},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"description": "Any JSON value: the truth, a rating, ..."},
                            "example": {"truth": out_example[0][0] if out_example[0] else 1},
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Stored durably.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["registered", "request_id", "message"],
                                }
                            }
                        },
                    },
                    **{k: v for k, v in errors.items() if k not in ("500", "503")},
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{model.name} model",
            "version": model.version,
            "description": f"Legion model REST API of {model.name} {model.version}.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "InvokeRequest": {
                    "type": "object",
                    "required": ["data"],
                    "additionalProperties": False,
                    "properties": {
                        # Other orders of the columns are accepted too; the document names the
                        # model's own.
                        "columns": {"const": columns},
                        "data": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Row"},
                            "minItems": 1,
                            "example": [example_row],
                        },
                    },
                },
                "DataframeSplit": {
                    "type": "object",
                    "required": ["data"],
                    "additionalProperties": False,
                    "properties": {
                        "columns": {"const": columns},
                        "data": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Row"},
                            "minItems": 1,
                        },
                        "index": {"type": "array", "description": "pandas' index (ignored)"},
                    },
                },
                "Row": row,
                "Record": record,
                "InvokeResponse": {
                    "type": "object",
                    "required": ["prediction", "columns"],
                    "properties": {
                        "prediction": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/OutputRow"},
                        },
                        "columns": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "OutputRow": {
                    "type": "array",
                    "description": "Output columns: "
                    + ", ".join(
                        f"{f.name} ({k or 'any'})" for f, k in zip(outputs, kinds, strict=True)
                    ),
                    "prefixItems": out_items,
                },
                "Error": {
                    "type": "object",
                    "required": ["error_code", "message", "request_id"],
                    "properties": {
                        "error_code": {"type": "string"},
                        "message": {"type": "string"},
                        "request_id": {"type": "string"},
                        "exception": {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            }
        },
    }
