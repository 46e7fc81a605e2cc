"""The OpenAPI 3 document of a served model, built from its entrypoint's info()."""

from __future__ import annotations

from typing import Any

_JSON_TYPES = {
    "number": "number",
    "float": "number",
    "double": "number",
    "integer": "integer",
    "int": "integer",
    "long": "integer",
    "boolean": "boolean",
    "bool": "boolean",
}


def _schema_type(type_name: str) -> str:
    return _JSON_TYPES.get(type_name.lower(), "string")


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def build_openapi(model: Any) -> dict[str, Any]:
    """`model` is a GppiModel: name, version, input_fields, output_fields."""
    inputs, outputs = model.input_fields, model.output_fields
    columns = [f.name for f in inputs]
    example_row = [f.example for f in inputs]
    out_columns = [f.name for f in outputs]
    out_example = [[f.example for f in outputs]]
    value_items = {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]}
    row_props = {f.name: {"type": _schema_type(f.type), "example": f.example} for f in inputs}
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
        "500": _error("The model failed on this request (details in the server log)."),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{model.name} model",
            "version": model.version,
            "description": f"Legion model REST API of {model.name} {model.version}.",
        },
        "paths": {
            "/api/model/invoke": {
                "post": {
                    "summary": "Predict on rows",
                    "operationId": "invoke",
                    "parameters": [
                        {"name": "Request-ID", "in": "header", "schema": {"type": "string"}}
                    ],
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
                            "description": "One prediction row per input row.",
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
                    "responses": {"200": {"description": "OpenAPI 3 document"}},
                }
            },
            "/api/model/feedback": {
                "post": {
                    "summary": "Record feedback on a prediction",
                    "operationId": "feedback",
                    "parameters": [
                        {
                            "name": "Request-ID",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {"name": "Model-Name", "in": "header", "schema": {"type": "string"}},
                        {"name": "Model-Version", "in": "header", "schema": {"type": "string"}},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "object"},
                                "example": {"truth": out_example[0][0] if out_example[0] else 1},
                            }
                        },
                    },
                    "responses": {
                        "200": {"description": "Stored durably."},
                        **{k: v for k, v in errors.items() if k != "500"},
                    },
                }
            },
            "/invocations": {
                "post": {
                    "summary": "MLflow scoring protocol",
                    "operationId": "invocations",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "object"},
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
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {"200": {"description": '{"predictions": ...}'}, **errors},
                }
            },
            "/healthcheck": {
                "get": {
                    "summary": "Readiness: 200 once the model is loaded, 503 before",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "loading"},
                    },
                }
            },
            "/livez": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "loading"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text/plain; version=0.0.4"}},
                }
            },
        },
        "components": {
            "schemas": {
                "InvokeRequest": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "columns": {
                            "type": "array",
                            "items": {"type": "string", "enum": columns},
                            "example": columns,
                        },
                        "data": {
                            "type": "array",
                            "items": {"type": "array", "items": value_items},
                            "example": [example_row],
                        },
                    },
                },
                "InvokeResponse": {
                    "type": "object",
                    "properties": {
                        "prediction": {"type": "array", "items": {"type": "array", "items": {}}},
                        "columns": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "InputRow": {
                    "type": "object",
                    "properties": row_props,
                    "required": [f.name for f in inputs if f.required],
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error_code": {"type": "string"},
                        "message": {"type": "string"},
                        "request_id": {"type": "string"},
                    },
                },
            }
        },
    }
