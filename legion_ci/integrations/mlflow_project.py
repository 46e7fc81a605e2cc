"""Reading an MLflow project for the `mlflow` toolchain's validate(): its MLproject file,
entry points and parameter types, and the stage's problems with them.

Plain YAML, so validation stays fast and works without importing MLflow; train() re-reads the
project with MLflow's own loader (legion_ci.integrations.mlflow_trainer).
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ENTRYPOINT = "main"
ENV_MANAGERS = ("local", "virtualenv")
# MLflow turns an entry point that is not in MLproject but names a script into a command.
SCRIPT_SUFFIXES = (".py", ".sh")
FLOAT_TYPES = ("float", "double", "number")
INT_TYPES = ("int", "integer", "long")

Problems = list[tuple[str, str]]


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any
    required: bool


def find_mlproject(project_dir: Path) -> Path | None:
    """MLflow matches the file name case-insensitively; so do we."""
    try:
        names = sorted(os.listdir(project_dir))
    except OSError:
        return None
    for name in names:
        if name.lower() == "mlproject" and (project_dir / name).is_file():
            return project_dir / name
    return None


def read_entry_points(mlproject: Path) -> tuple[dict[str, dict[str, Param]], str | None]:
    """Entry points with their declared parameters, or an error message for a broken file."""
    import yaml

    try:
        data = yaml.safe_load(mlproject.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        return {}, f"{mlproject}: not valid YAML{where}"
    except OSError as exc:
        return {}, f"{mlproject}: cannot be read: {exc.strerror}"
    if not isinstance(data, dict):
        return {}, f"{mlproject}: must be a mapping with 'entry_points'"
    raw_points = data.get("entry_points") or {}
    if not isinstance(raw_points, dict):
        return {}, f"{mlproject}: entry_points must be a mapping of name to entry point"
    points: dict[str, dict[str, Param]] = {}
    for name, raw in raw_points.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("command"), str):
            return {}, f"{mlproject}: entry_points.{name}: needs a 'command' string"
        raw_params = raw.get("parameters") or {}
        if not isinstance(raw_params, dict):
            return {}, f"{mlproject}: entry_points.{name}.parameters: must be a mapping"
        params: dict[str, Param] = {}
        for pname, spec in raw_params.items():
            if isinstance(spec, str):  # `alpha: float` declares a required parameter
                params[str(pname)] = Param(str(pname), spec, None, True)
            elif isinstance(spec, dict):
                default = spec.get("default")
                ptype = str(spec.get("type", "string"))
                params[str(pname)] = Param(str(pname), ptype, default, default is None)
            else:
                return {}, (
                    f"{mlproject}: entry_points.{name}.parameters.{pname}: "
                    "must be a type name or a mapping with type and default"
                )
        points[str(name)] = params
    return points, None


def type_problem(param: Param, value: Any) -> str | None:
    """Why `value` does not fit the parameter's declared type, or None."""
    ptype = param.type.lower()
    if isinstance(value, (dict, list)):
        return f"must be a single value, got a {'mapping' if isinstance(value, dict) else 'list'}"
    if ptype in FLOAT_TYPES:
        if isinstance(value, bool):
            return f"must be a number ({param.type}), got {value!r}"
        if isinstance(value, (int, float)):
            return None
        try:
            float(str(value))
        except ValueError:
            return f"must be a number ({param.type}), got {value!r}"
    elif ptype in INT_TYPES:
        if isinstance(value, (bool, float)):
            return f"must be an integer ({param.type}), got {value!r}"
        if isinstance(value, int):
            return None
        try:
            int(str(value))
        except ValueError:
            return f"must be an integer ({param.type}), got {value!r}"
    return None


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def is_script(entrypoint: str) -> bool:
    return entrypoint.endswith(SCRIPT_SUFFIXES)


def validate_stage(stage: Mapping[str, Any], project_dir: Path) -> Problems:
    """Every problem with a training stage's project, entry point and parameters."""
    problems: Problems = []
    project_dir = Path(project_dir)
    entrypoint = str(stage.get("entrypoint") or DEFAULT_ENTRYPOINT)
    hyper = stage.get("hyperParameters") or {}
    arguments = stage.get("arguments") or {}
    if not isinstance(hyper, Mapping):
        return [("hyperParameters", "must be a mapping of parameter name to value")]
    env_manager = arguments.get("envManager", "local") if isinstance(arguments, Mapping) else None
    if env_manager not in ENV_MANAGERS:
        problems.append(
            ("arguments.envManager", f"unknown {env_manager!r}; known: {', '.join(ENV_MANAGERS)}")
        )
    if not project_dir.is_dir():
        return [*problems, ("workDir", f"{project_dir}: no such directory")]

    mlproject = find_mlproject(project_dir)
    script = project_dir / entrypoint
    if mlproject is None:
        if not is_script(entrypoint):
            problems.append(
                (
                    "workDir",
                    f"{project_dir}: no MLproject file; add one, or set entrypoint to a "
                    f"{' or '.join(SCRIPT_SUFFIXES)} script in that folder",
                )
            )
        elif not script.is_file():
            problems.append(("entrypoint", f"no script {entrypoint!r} in {project_dir}"))
        return problems

    points, error = read_entry_points(mlproject)
    if error:
        return [*problems, ("workDir", error)]
    if "docker_env" in _top_keys(mlproject):
        problems.append(
            (
                "workDir",
                f"{mlproject}: docker_env projects are not supported; use envManager "
                "local or virtualenv",
            )
        )
    if entrypoint not in points:
        if is_script(entrypoint) and script.is_file():
            return problems  # MLflow runs a script that is not an entry point as-is
        known = ", ".join(sorted(points)) or "none"
        problems.append(
            (
                "entrypoint",
                f"unknown entry point {entrypoint!r} in {mlproject.name}"
                f"{did_you_mean(entrypoint, sorted(points))} (known: {known})",
            )
        )
        return problems

    declared = points[entrypoint]
    for name, param in declared.items():
        if param.required and name not in hyper:
            problems.append(
                (
                    f"hyperParameters.{name}",
                    f"required by entry point {entrypoint!r} ({param.type}, no default) "
                    "but not given",
                )
            )
    for name, value in hyper.items():
        name = str(name)
        if name not in declared:
            known = ", ".join(declared) or "none"
            problems.append(
                (
                    f"hyperParameters.{name}",
                    f"entry point {entrypoint!r} declares no parameter {name!r}"
                    f"{did_you_mean(name, list(declared))} (declared: {known})",
                )
            )
            continue
        if value is None:
            problems.append((f"hyperParameters.{name}", "has no value"))
            continue
        why = type_problem(declared[name], value)
        if why:
            problems.append((f"hyperParameters.{name}", why))
    return problems


def _top_keys(mlproject: Path) -> set[str]:
    import yaml

    with contextlib.suppress(Exception):
        data = yaml.safe_load(mlproject.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return {str(k) for k in data}
    return set()
