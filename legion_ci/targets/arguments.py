"""A deploy target's `arguments`, validated against its registration and defaults filled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from legion_ci.errors import InputError
from legion_ci.integrations.arguments import fill_defaults


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
    """`given` with the registered target's defaults filled in. The loader filled them for a
    pipeline already (a no-op then); a target called directly (a test's `render`, a script)
    gets them here."""
    from legion_ci.integrations.registry import load_registry

    return fill_defaults(load_registry().get("DeployTarget", target).arguments, given)
