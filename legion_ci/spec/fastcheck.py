"""A fast yes for valid documents, so `legion-ci validate` need not import jsonschema.

Importing jsonschema (and its referencing machinery) is most of a validate's time. A valid
document — the common case — only needs a yes: the schema is compiled once to plain Python
by fastjsonschema, cached on disk keyed by the schema's hash (its bytecode cached beside it),
and run. Only a "no" (or a schema this path cannot vouch for) goes to jsonschema, which finds
and locates every error. So the fast path can never accept what jsonschema would refuse: it
is used only for schemas whose every keyword means the same in both (`SAFE_KEYWORDS`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Keywords with the same meaning in draft 7 (fastjsonschema) and draft 2020-12 (jsonschema).
SAFE_KEYWORDS = frozenset(
    {
        "$schema", "$id", "title", "description", "default", "examples", "type", "enum",
        "const", "properties", "additionalProperties", "required", "items", "minItems",
        "maxItems", "uniqueItems", "minLength", "maxLength", "pattern", "minimum", "maximum",
        "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minProperties",
        "maxProperties", "oneOf", "anyOf", "allOf", "not", "if", "then", "else",
        "propertyNames", "patternProperties",
    }
)  # fmt: skip
# Keywords whose value is a map of names to schemas, or a schema, or a list of schemas.
_SCHEMA_MAPS = ("properties", "patternProperties")
_SCHEMA_ONE = ("additionalProperties", "items", "not", "if", "then", "else", "propertyNames")
_SCHEMA_LIST = ("oneOf", "anyOf", "allOf")

_loaded: dict[str, Callable[[Any], Any] | None] = {}


def _safe(schema: Any) -> bool:
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict) or not set(schema) <= SAFE_KEYWORDS:
        return False
    # Python's `True == 1` would let an enum or const of numbers accept a boolean.
    for key in ("enum", "const"):
        values = schema.get(key, []) if key == "enum" else [schema.get(key)]
        if key in schema and any(isinstance(v, (int, float, bool)) for v in values):
            return False
    for key in _SCHEMA_MAPS:
        if not all(_safe(s) for s in (schema.get(key) or {}).values()):
            return False
    for key in _SCHEMA_ONE:
        if key in schema and not _safe(schema[key]):
            return False
    return all(_safe(s) for key in _SCHEMA_LIST for s in schema.get(key) or [])


_PRELUDE = """
class JsonSchemaValueException(ValueError):
    def __init__(self, message, value=None, name=None, definition=None, rule=None):
        super().__init__(message)


class JsonSchemaValuesException(JsonSchemaValueException):
    def __init__(self, errors):
        super().__init__("several errors")
"""


def _compile(schema: dict[str, Any], path: Path) -> None:
    import fastjsonschema

    code = fastjsonschema.compile_to_code(schema)
    root = re.search(r"^def (\w+)\(", code, re.MULTILINE)
    if root is None:
        raise ValueError("no validate function in the generated code")
    # The generated module imports its exception classes from fastjsonschema; defining them
    # here keeps fastjsonschema out of every later validate.
    code = code.replace(
        "from fastjsonschema import JsonSchemaValueException, JsonSchemaValuesException\n",
        _PRELUDE,
    )
    code += f"\n\nVALIDATE = {root.group(1)}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(code, encoding="utf-8")
    tmp.replace(path)


def _validator(schema: dict[str, Any]) -> Callable[[Any], Any] | None:
    text = json.dumps(schema, sort_keys=True, default=str)
    key = hashlib.sha256(text.encode()).hexdigest()[:32]
    if key in _loaded:
        return _loaded[key]
    _loaded[key] = None
    if not _safe(schema):
        return None
    from legion_ci.cache import cache_root

    path = cache_root() / "validators" / f"schema_{key}.py"
    try:
        if not path.is_file():
            _compile(schema, path)
        if not os.path.isfile(importlib.util.cache_from_source(str(path))):
            # The generated module is large (compiling it costs more than validating); write
            # its bytecode once even where PYTHONDONTWRITEBYTECODE keeps the import system from
            # doing so, since that only stops writing, not reading.
            import py_compile

            py_compile.compile(str(path), doraise=True)
        spec = importlib.util.spec_from_file_location(f"legion_ci_schema_{key}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[key] = module.VALIDATE
    except Exception:  # no fastjsonschema, a read-only cache, a schema it cannot compile
        return None
    return _loaded[key]


def is_valid(schema: dict[str, Any], instance: Any) -> bool:
    """True only when the fast path vouches that `instance` is valid; False means "ask
    jsonschema" (an invalid instance, or a schema the fast path does not handle)."""
    validate = _validator(schema)
    if validate is None:
        return False
    try:
        validate(instance)
    except Exception:
        return False
    return True
