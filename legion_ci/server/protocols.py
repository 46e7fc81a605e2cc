"""The two request protocols the server speaks, reduced to one thing: rows in the model's column
order, validated, ready to be merged with other requests' rows into one predict() call.

Legion: POST /api/model/invoke {"columns": [...], "data": [[...]]}
MLflow: POST /invocations with dataframe_split | dataframe_records | instances | inputs (JSON)
        or text/csv, answering {"predictions": ...} the way MLflow's scoring server does.
"""

from __future__ import annotations

import json
from typing import Any

from legion_ci.server import jsonio

NUMERIC_TYPES = ("number", "integer", "float", "double", "long", "int")
REQUEST_ID_PATTERN = r"[A-Za-z0-9._:/+=@-]{1,200}"
# The Python classes a JSON value of each declared type may have (bool is not a number).
_CLASSES = {
    "number": (int, float),
    "float": (int, float),
    "double": (int, float),
    "integer": (int,),
    "int": (int,),
    "long": (int,),
    "string": (str,),
    "str": (str,),
    "boolean": (bool,),
    "bool": (bool,),
}
_KIND_NAMES = {
    (int, float): "a number",
    (int,): "an integer",
    (str,): "a string",
    (bool,): "a boolean",
}
_NUMBER_CLASSES = frozenset((int, float))
MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_MISSING = object()


class RequestError(Exception):
    """The client's mistake: answered with `status` and a message that says what was wrong."""

    def __init__(self, status: int, message: str, *, close: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        # Answer before the body is fully read (413, 408): the connection cannot be reused.
        self.close = close


def body_too_large(limit: int, declared: int | None = None) -> RequestError:
    """413, said the same way by both front ends, whether declared or counted."""
    size = f"is {declared} bytes, over" if declared is not None else "is over"
    return RequestError(
        413, f"the request body {size} this server's limit of {limit} bytes", close=True
    )


def body_too_slow(timeout_s: float) -> RequestError:
    return RequestError(408, f"the request body did not arrive within {timeout_s:g} s", close=True)


def bad(message: str) -> RequestError:
    return RequestError(400, message)


def _preview(value: Any) -> str:
    try:
        text = json.dumps(value) if not isinstance(value, str) else repr(value)
    except RecursionError:  # a value nested deeper than the encoder goes: name it, no 500
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


class InputSchema:
    """The model's input columns and how to check and reorder a request's rows against them."""

    def __init__(self, fields: list[Any]):
        self.columns: list[str] = [f.name for f in fields]
        self.width = len(self.columns)
        self.index = {name: i for i, name in enumerate(self.columns)}
        self.numeric = [f.type.lower() in NUMERIC_TYPES for f in fields]
        # Per column, the classes its values may have (None: any), as the OpenAPI document says.
        self.classes = [_CLASSES.get(f.type.lower()) for f in fields]
        self.types = {f.name: f.type for f in fields}
        self.required = [bool(f.required) for f in fields]
        self.all_numeric_required = all(c == (int, float) for c in self.classes) and all(
            self.required
        )

    # -- columns -----------------------------------------------------------------------------
    def plan(self, columns: Any) -> list[int] | None:
        """Where each model column sits in the request's columns (None: same order, same set)."""
        if columns is None or columns == self.columns:  # the common cases, checked first
            return None
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise bad('"columns" must be a list of column names (strings)')
        seen: set[str] = set()
        dupes = [c for c in columns if c in seen or seen.add(c)]  # type: ignore[func-returns-value]
        if dupes:
            raise bad(f"duplicate columns: {', '.join(sorted(set(dupes)))}")
        unknown = [c for c in columns if c not in self.index]
        missing = [
            c for c, req in zip(self.columns, self.required, strict=True) if req and c not in seen
        ]
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown columns: {', '.join(unknown)}")
            if missing:
                parts.append(f"missing columns: {', '.join(missing)}")
            raise bad(f"{'; '.join(parts)} (the model expects: {', '.join(self.columns)})")
        where = {c: i for i, c in enumerate(columns)}
        return [where.get(c, -1) for c in self.columns]

    # -- rows --------------------------------------------------------------------------------
    def rows(self, data: Any, columns: Any = None) -> list[list[Any]]:
        """Validated rows in model column order from a list of row lists in `columns` order."""
        plan = self.plan(columns)
        if not isinstance(data, list):
            raise bad('"data" must be a list of rows, each a list of values')
        if not data:
            raise bad('"data" has no rows')
        width = self.width if plan is None else len(columns)
        for i, row in enumerate(data):
            if row.__class__ is not list:
                raise bad(f"row {i} is not a list of values: {_preview(row)}")
            if len(row) != width:
                raise bad(f"row {i} has {len(row)} values, expected {width} (one per column)")
        if plan is not None:
            data = [[row[j] if j >= 0 else None for j in plan] for row in data]
        self.check_values(data)
        return data

    def check_values(self, data: list[list[Any]]) -> None:
        if self.all_numeric_required:
            # The common case, kept to one C-level pass per row.
            ok = _NUMBER_CLASSES.__contains__
            for row in data:
                if not all(map(ok, map(type, row))):
                    break
            else:
                return
        for i, row in enumerate(data):
            for j, value in enumerate(row):
                if value is None:
                    if self.required[j]:
                        raise bad(f"row {i}, column {self.columns[j]!r}: a value is required")
                    continue
                classes = self.classes[j]
                if classes is not None and value.__class__ not in classes:
                    raise bad(
                        f"row {i}, column {self.columns[j]!r}: expected {_KIND_NAMES[classes]}, "
                        f"got {type(value).__name__} {_preview(value)}"
                    )

    def records(self, records: Any, what: str) -> list[list[Any]]:
        """Rows from a list of {column: value} objects (MLflow's records orientation)."""
        if not isinstance(records, list) or not records:
            raise bad(f'"{what}" must be a non-empty list of records ({{column: value}} objects)')
        out = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise bad(f'"{what}" record {i} is not an object: {_preview(rec)}')
            unknown = [k for k in rec if k not in self.index]
            if unknown:
                raise bad(
                    f"record {i}: unknown columns: {', '.join(unknown)}"
                    f" (the model expects: {', '.join(self.columns)})"
                )
            row = [rec.get(c, _MISSING) for c in self.columns]
            missing = [
                c
                for c, v, req in zip(self.columns, row, self.required, strict=True)
                if req and v is _MISSING
            ]
            if missing:
                raise bad(f"record {i}: missing columns: {', '.join(missing)}")
            out.append([None if v is _MISSING else v for v in row])
        self.check_values(out)
        return out

    def columnar(self, data: dict[str, Any], what: str) -> list[list[Any]]:
        """Rows from {column: [values...]} (MLflow's columnar `inputs`)."""
        lists = list(data.values())
        if not all(isinstance(v, list) for v in lists):
            raise bad(f'"{what}" as an object must map each column to a list of values')
        lengths = {len(v) for v in lists}
        if len(lengths) != 1:
            raise bad(f'"{what}": columns have different numbers of values: {sorted(lengths)}')
        return self.rows([list(r) for r in zip(*lists, strict=True)], list(data.keys()))


def decode_json(body: bytes) -> Any:
    if not body:
        raise bad("the request body is empty; send a JSON document")
    try:
        return jsonio.loads(body)
    except UnicodeDecodeError:
        raise bad("the request body is not UTF-8 text") from None
    except jsonio.NonFiniteNumber:
        raise bad(
            "non-finite numbers (NaN, Infinity) are not accepted; JSON has no such numbers"
        ) from None
    except jsonio.TooDeep as exc:
        raise bad(f"the request body is {exc}") from None
    except ValueError as exc:
        raise bad(f"the request body is not valid JSON: {exc}") from None


def media_type(content_type: bytes | None) -> tuple[str, dict[str, str]]:
    if not content_type:
        return "", {}
    parts = content_type.decode("latin-1").split(";")
    params = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        params[k.strip().lower()] = v.strip().strip('"')
    return parts[0].strip().lower(), params


def is_json(mtype: str) -> bool:
    return mtype == "application/json" or mtype.endswith("+json")


def check_json_content_type(content_type: bytes | None) -> None:
    """Legion's routes take JSON; a missing Content-Type is read as JSON (curl scripts)."""
    if content_type == b"application/json":
        return
    mtype, _ = media_type(content_type)
    if mtype and not is_json(mtype):
        raise RequestError(415, f"Content-Type {mtype!r} is not supported; send application/json")


# -- Legion -------------------------------------------------------------------------------------
def parse_legion(schema: InputSchema, body: bytes) -> list[list[Any]]:
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise bad('the body must be a JSON object {"columns": [...], "data": [[...], ...]}')
    if "data" not in doc:
        raise bad('the body has no "data" (a list of rows)')
    unexpected = [k for k in doc if k not in ("columns", "data")]
    if unexpected:
        raise bad(f"unexpected keys in the body: {', '.join(unexpected)} (use columns, data)")
    return schema.rows(doc["data"], _columns(doc))


def _columns(doc: dict[str, Any]) -> Any:
    """The "columns" of a body: absent is the model's order, null is a mistake."""
    if "columns" in doc and doc["columns"] is None:
        raise bad('"columns" must be a list of column names (or left out), not null')
    return doc.get("columns")


def answer_legion(rows: list[list[Any]], columns: list[str]) -> dict[str, Any]:
    return {"prediction": rows, "columns": columns}


# -- MLflow -------------------------------------------------------------------------------------
def parse_mlflow(schema: InputSchema, body: bytes, content_type: bytes | None) -> list[list[Any]]:
    mtype, params = media_type(content_type)
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise RequestError(415, f"charset {charset!r} is not supported; send UTF-8")
    if mtype == "text/csv":
        return _parse_csv(schema, body)
    if not is_json(mtype):
        raise RequestError(
            415,
            f"Content-Type {mtype or '(none)'!r} is not supported on /invocations;"
            " send application/json or text/csv",
        )
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise bad(f"the body must be a JSON object with exactly one of: {', '.join(MLFLOW_KEYS)}")
    keys = [k for k in MLFLOW_KEYS if k in doc]
    if len(keys) != 1:
        found = ", ".join(keys) if keys else f"none (got: {', '.join(doc) or 'an empty object'})"
        raise bad(f"the body needs exactly one of {', '.join(MLFLOW_KEYS)}; found {found}")
    unexpected = [k for k in doc if k not in (keys[0], "params")]
    if unexpected:
        raise bad(f"unexpected keys in the body: {', '.join(unexpected)}")
    if "params" in doc and not isinstance(doc["params"], dict):
        raise bad('"params" must be an object')
    key, value = keys[0], doc[keys[0]]
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise bad('"dataframe_split" must be an object with "columns" and "data"')
        unknown = [k for k in value if k not in ("columns", "data", "index")]
        if unknown:
            raise bad(f'unexpected keys in "dataframe_split": {", ".join(unknown)}')
        if "index" in value and not isinstance(value["index"], list):
            raise bad('"dataframe_split" "index" must be a list')
        return schema.rows(value["data"], _columns(value))
    if key == "dataframe_records":
        return schema.records(value, key)
    # instances / inputs: records, columnar, rows of values, or one value per row.
    if isinstance(value, dict):
        return schema.columnar(value, key)
    if not isinstance(value, list) or not value:
        raise bad(f'"{key}" must be a non-empty list (or an object of columns)')
    if isinstance(value[0], dict):
        return schema.records(value, key)
    if schema.width == 1 and not isinstance(value[0], list):
        return schema.rows([[v] for v in value])
    return schema.rows(value)


def _parse_csv(schema: InputSchema, body: bytes) -> list[list[Any]]:
    from legion_ci.gppi.rows import RowError, read_csv, typed_rows

    if not body:
        raise bad("the request body is empty; send a CSV document with a header row")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("the CSV body is not UTF-8 text") from None
    try:
        header, records = read_csv(text)
        schema.plan(header)  # unknown/missing columns say so before any value is parsed
        rows = typed_rows(header, records, schema.types)
    except RowError as exc:
        raise bad(f"CSV body: {exc}") from None
    return schema.rows(rows, header)


def answer_mlflow(rows: list[list[Any]], columns: list[str]) -> dict[str, Any]:
    """MLflow answers a 1-D prediction as a flat list and a DataFrame as records."""
    if len(columns) <= 1 and all(len(r) == 1 for r in rows):
        return {"predictions": [r[0] for r in rows]}
    if columns and all(len(r) == len(columns) for r in rows):
        return {"predictions": [dict(zip(columns, r, strict=True)) for r in rows]}
    return {"predictions": rows}
