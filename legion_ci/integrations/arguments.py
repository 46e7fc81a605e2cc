"""An integration's `arguments` with its registration's schema defaults filled in.

The pipeline loader fills them once, at load, for every stage it runs. The integrations fill
them again only for callers that build a context by hand (tests, benchmarks, `render` from a
script): both phases call this one function, so the two fills cannot drift apart.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def fill_defaults(schema: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """`given` plus every `default` of `schema` it leaves out, recursively into the objects it
    gives (as the loader fills them); `given` itself is not changed."""
    filled = copy.deepcopy(dict(given or {}))
    for key, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, Mapping):
            continue
        if key not in filled and "default" in prop:
            filled[key] = copy.deepcopy(prop["default"])
        if isinstance(filled.get(key), dict) and prop.get("properties"):
            filled[key] = fill_defaults(prop, filled[key])
    return filled
