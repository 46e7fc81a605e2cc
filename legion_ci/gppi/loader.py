"""Load a GPPI trained model binary and call its entrypoint through one normalising wrapper.

The wrapper is what the self-check, `legion-ci model predict` and the REST server share, so
every caller sees the same column handling, the same JSON-safe outputs and the same errors.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from legion_ci.errors import ModelError
from legion_ci.gppi.archive import open_artifact
from legion_ci.gppi.manifest import Manifest, check_binary


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    required: bool
    example: Any


def _fields(raw: Any, what: str, source: str) -> list[Field]:
    if not isinstance(raw, list):
        raise ModelError(f"{source}: info() {what} schema must be a list, got {type(raw).__name__}")
    fields = []
    for item in raw:
        if not isinstance(item, dict) or "name" not in item:
            raise ModelError(f"{source}: info() {what} schema entries need a 'name': {item!r}")
        fields.append(
            Field(
                name=str(item["name"]),
                type=str(item.get("type", "string")),
                required=bool(item.get("required", True)),
                example=to_jsonable(item.get("example")),
            )
        )
    return fields


def to_jsonable(value: Any) -> Any:
    """numpy/pandas values to plain Python, the step Legion's users kept tripping over."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return to_jsonable(tolist())
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    return str(value)


_PLAIN_SCALARS = frozenset((int, float, str, bool, type(None)))


def to_rows(result: Any) -> list[list[Any]]:
    """Any 2-D-ish prediction (DataFrame, ndarray, list, 1-D vector) as a list of rows."""
    values = getattr(result, "values", None)  # DataFrame / Series
    if values is not None and not callable(values):
        result = values
    # Fast path, checked with C-level iteration: the server calls this on every batch, and
    # walking thousands of already-plain values one Python call at a time cost milliseconds.
    if (
        type(result) is list
        and all(type(row) is list for row in result)
        and set(map(type, chain.from_iterable(result))) <= _PLAIN_SCALARS
    ):
        return result
    # A numeric numpy array converts to plain Python in C (not pandas extension arrays,
    # whose tolist() can hold pd.NA).
    if (
        type(result).__name__ == "ndarray"
        and result.dtype.kind in ("b", "i", "u", "f")
        and result.ndim in (1, 2)
    ):
        return result.reshape(len(result), -1).tolist()
    data = to_jsonable(result)
    if not isinstance(data, list):
        data = [data]
    return [row if isinstance(row, list) else [row] for row in data]


_NUMBER_NAMES = frozenset(("number", "float", "double", "integer", "int", "long"))
_INTEGER_NAMES = frozenset(("integer", "int", "long"))


def _observed_type(value: Any, declared: str | None) -> str:
    """A value's type name, keeping the declared one when the value fits it."""
    lowered = (declared or "").lower()
    if isinstance(value, bool):
        return declared if lowered in ("boolean", "bool") else "boolean"
    if isinstance(value, int):
        return declared if lowered in _NUMBER_NAMES else "integer"
    if isinstance(value, float):
        return declared if lowered in _NUMBER_NAMES and lowered not in _INTEGER_NAMES else "number"
    if isinstance(value, str):
        return declared if lowered in ("string", "str") else "string"
    return declared or "string"  # null (a NaN) or a nested value: info() knows better


class GppiModel:
    """A loaded trained model binary: manifest, entrypoint module and its schemas."""

    def __init__(self, root: Path, manifest: Manifest, module: Any):
        self.root = root
        self.manifest = manifest
        self.module = module
        self.source = str(root)
        raw_info = self._call("info")
        if not (isinstance(raw_info, (tuple, list)) and len(raw_info) == 2):
            raise ModelError(f"{self.source}: info() must return (input_schema, output_schema)")
        self.input_fields = _fields(raw_info[0], "input", self.source)
        self.output_fields = _fields(raw_info[1], "output", self.source)
        encoder = getattr(module, "get_output_json_serializer", None)
        self.json_encoder = encoder() if callable(encoder) else None

    @property
    def name(self) -> str:
        return self.manifest.model_name

    @property
    def version(self) -> str:
        return self.manifest.model_version

    @property
    def column_names(self) -> list[str]:
        return [f.name for f in self.input_fields]

    def example_rows(self) -> tuple[list[str], list[list[Any]]]:
        """One example row built from info(), the input the self-check predicts on."""
        return self.column_names, [[f.example for f in self.input_fields]]

    def real_outputs(self) -> tuple[list[Field], tuple[list[list[Any]], list[str]] | None]:
        """The output columns as the model really answers: its prediction on the example row
        gives each column's name, its JSON type (a string-label classifier answers strings,
        whatever info() says) and its example. Returns (fields, (rows, columns)), or info()'s
        fields and None when the model cannot answer its own example."""
        try:
            columns, rows = self.example_rows()
            out_rows, out_columns = self.predict(rows, columns)
        except Exception:
            return self.output_fields, None
        first = out_rows[0] if out_rows else None
        if first is None or len(first) != len(out_columns):
            return self.output_fields, (out_rows, out_columns)
        declared = {f.name: f for f in self.output_fields}
        fields = []
        for i, (name, value) in enumerate(zip(out_columns, first, strict=True)):
            field = declared.get(name)
            if field is None and len(self.output_fields) == len(out_columns):
                field = self.output_fields[i]
            kind = _observed_type(value, field.type if field else None)
            fields.append(
                Field(
                    name=name, type=kind, required=field.required if field else True, example=value
                )
            )
        return fields, (out_rows, out_columns)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        func = getattr(self.module, name, None)
        if not callable(func):
            raise ModelError(f"{self.source}: entrypoint has no {name}() function")
        return func(*args, **kwargs)

    def predict(
        self, rows: Any, columns: list[str] | None = None
    ) -> tuple[list[list[Any]], list[str]]:
        """Predict on rows given in `columns` order (the model's own order when None).

        Returns JSON-safe rows, one per input row, and the output column names.
        """
        result = self._call("predict_on_matrix", rows, provided_columns_names=columns)
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise ModelError(
                f"{self.source}: predict_on_matrix() must return (result_matrix, column_names)"
            )
        matrix, names = result
        out_rows = to_rows(matrix)
        return out_rows, [str(n) for n in to_jsonable(list(names) if names is not None else [])]


def load_model(path: Path | str) -> GppiModel:
    """Open (unzipping to a cache if needed), import and init() a trained model binary."""
    root = open_artifact(Path(path)).resolve()
    manifest = check_binary(root, None if root == Path(path).resolve() else path)
    work_dir = (root / manifest.work_dir).resolve()
    module_file = work_dir / f"{manifest.entrypoint}.py"
    # Legion's entrypoints find their files through MODEL_LOCATION.
    os.environ["MODEL_LOCATION"] = str(work_dir)
    if str(work_dir) not in sys.path:
        sys.path.insert(0, str(work_dir))
    unique = f"legion_gppi_{abs(hash(str(module_file)))}_{manifest.entrypoint}"
    spec = importlib.util.spec_from_file_location(unique, module_file)
    if spec is None or spec.loader is None:
        raise ModelError(f"{module_file}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelError(f"{module_file}: import failed: {type(exc).__name__}: {exc}") from exc
    init = getattr(module, "init", None)
    if not callable(init):
        raise ModelError(f"{module_file}: entrypoint has no init() function")
    try:
        kind = init()
    except Exception as exc:
        raise ModelError(f"{module_file}: init() failed: {type(exc).__name__}: {exc}") from exc
    if kind != "matrix":
        raise ModelError(f"{module_file}: init() returned {kind!r}; GPPI requires 'matrix'")
    try:
        return GppiModel(root, manifest, module)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{module_file}: info() failed: {type(exc).__name__}: {exc}") from exc
