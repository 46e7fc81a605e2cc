"""A deploy target's `arguments`, validated against its registration and defaults filled."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from legion_ci.errors import InputError


def fill_defaults(schema: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` plus every top-level `default` of `schema` it leaves out."""
    filled = copy.deepcopy(dict(given))
    for key, prop in (schema.get("properties") or {}).items():
        if key not in filled and isinstance(prop, Mapping) and "default" in prop:
            filled[key] = copy.deepcopy(prop["default"])
    return filled


def resolve_arguments(target: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate `given` against the registered target's schema; return it with defaults."""
    from jsonschema import Draft202012Validator

    from legion_ci.integrations.registry import load_registry

    registration = load_registry().get("DeployTarget", target)
    problems = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(arguments)'}: {error.message}"
        for error in Draft202012Validator(registration.arguments).iter_errors(dict(given or {}))
    ]
    if problems:
        raise InputError(f"deploy target {target!r} arguments: " + "; ".join(problems))
    return fill_defaults(registration.arguments, given or {})


def with_defaults(target: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` with the registered target's defaults filled in (the runner validates and fills
    them too; a target called directly must not depend on it)."""
    from legion_ci.integrations.registry import load_registry

    return fill_defaults(load_registry().get("DeployTarget", target).arguments, given)
