"""Validate a pipeline file: every problem at once, each as FILE:LINE:COL: field.path: message."""

from __future__ import annotations

import difflib
import math
import urllib.parse
from dataclasses import replace
from pathlib import Path
from typing import Any

from legion_ci import fs
from legion_ci.connection_types import ConnectionType, accepted_types, secret_fields
from legion_ci.errors import InputError, LegionError, Problem, SpecError
from legion_ci.integrations.arguments import fill_defaults as fill_schema_defaults
from legion_ci.integrations.base import Connection
from legion_ci.integrations.registry import Registry, load_registry
from legion_ci.redact import Redactor, register
from legion_ci.spec.pipeline import Pipeline
from legion_ci.spec.schema import build_schema
from legion_ci.spec.secrets import resolve_references
from legion_ci.spec.stage_checks import integration_problems, split_field_path
from legion_ci.stage_types import BY_NAME, STAGES, ConnectionField, resolve
from legion_ci.yaml_loader import CONTROL, Located, PathT, format_path, load_located, one_line

INTEGRATION_KEYS = {stage.integration_key: stage for stage in STAGES}


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _schema_problems(
    located: Located, schema: dict[str, Any], secrets: tuple[str, ...]
) -> list[Problem]:
    from legion_ci.spec.fastcheck import is_valid

    if is_valid(schema, located.data):
        return []
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    validator = Draft202012Validator(schema)
    problems: list[Problem] = []
    for error in validator.iter_errors(located.data):
        problems.extend(_explain(located, error, best_match, secrets))
    # One mistake can break several branches of the schema; say it once.
    unique: dict[tuple[int, int, str, str], Problem] = {}
    for p in problems:
        unique.setdefault((p.line, p.col, p.path, p.message), p)
    return list(unique.values())


def _explain(
    located: Located, error: Any, best_match: Any, secrets: tuple[str, ...]
) -> list[Problem]:
    path: PathT = tuple(error.absolute_path)
    kind = error.validator
    leaf = path[-1] if path else ""
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        extras = [key for key in error.instance if key not in allowed]
        return [
            located.problem(
                (*path, key),
                f"unknown key {key!r}{_did_you_mean(key, allowed)}"
                + (f"; allowed: {', '.join(allowed)}" if not _did_you_mean(key, allowed) else ""),
                key=True,
            )
            for key in extras
        ]
    if kind == "required":
        missing = [k for k in error.validator_value if k not in (error.instance or {})]
        line, col = located.position(path, key=True)
        return [
            Problem(located.file, line, col, format_path((*path, key)), "required key is missing")
            for key in missing
        ]
    if kind == "enum" and leaf in INTEGRATION_KEYS and len(path) == 3:
        known = list(error.validator_value)
        stage = BY_NAME.get(str(path[1]))
        return [
            located.problem(
                path,
                f"unknown {stage.noun if stage else 'integration'} {error.instance!r}"
                f"{_did_you_mean(str(error.instance), known)};"
                f" known: {', '.join(known) or '(none registered)'}",
            )
        ]
    if leaf in secrets:
        # Never echo what was written in a credential field: it may be a real secret.
        return [
            located.problem(
                path, "credentials must be a secret reference such as ${env:NAME}, not a value"
            )
        ]
    if kind == "const":
        return [located.problem(path, f"must be {error.validator_value!r}")]
    if kind in ("oneOf", "anyOf") and error.context:
        return _explain(located, best_match(error.context), best_match, secrets)
    if kind == "minProperties" and error.validator_value == 1:
        return [located.problem(path, "must not be empty")]
    return [located.problem(path, error.message)]


# The one subtree the training code alone judges: a multi-line string or an infinite value
# may mean something to it, and it reaches MLflow as a quoted parameter, never an output line.
# Integration arguments are not free: a newline in docker-rest's baseImage would be a line of
# the Dockerfile, and Python's `$` lets a pattern-checked `name: "web\n"` through.
FREE_FORM: tuple[PathT, ...] = (("stages", "train", "hyperParameters"),)


def _value_problems(located: Located) -> list[Problem]:
    """What the schema cannot say: no control character in a key or in a value that becomes
    a path, a name, a URL or a line of an output file (a newline in `workspace` would add
    lines to $GITHUB_OUTPUT), and no infinite bound (`max: .inf`, `timeout: .inf`)."""
    problems: list[Problem] = []

    def walk(value: Any, path: PathT) -> None:
        free = any(path[: len(root)] == root for root in FREE_FORM)
        if isinstance(value, dict):
            for key, child in value.items():
                if CONTROL.search(key):
                    problems.append(
                        located.problem(
                            (*path, key), "a key must not hold control characters", key=True
                        )
                    )
                walk(child, (*path, key))
        elif isinstance(value, list):
            for i, child in enumerate(value):
                walk(child, (*path, i))
        elif isinstance(value, str) and not free and CONTROL.search(value):
            found = one_line(CONTROL.search(value).group())  # type: ignore[union-attr]
            problems.append(
                located.problem(path, f"control character {found} is not allowed in this value")
            )
        elif isinstance(value, float) and not free and math.isinf(value):
            problems.append(located.problem(path, "an infinite number is not allowed here"))

    walk(located.data, ())
    return problems


def _connections(
    data: dict[str, Any], located: Located, base_dir: Path, types: dict[str, ConnectionType]
) -> tuple[dict[str, Connection], list[Problem]]:
    connections: dict[str, Connection] = {}
    for name, raw in (data.get("connections") or {}).items():
        options = {k: v for k, v in raw.items() if k not in ("type", "uri")}
        uri = str(raw.get("uri", ""))
        if raw["type"] == "local" and uri:
            uri = str((base_dir / uri).resolve())
        # Files a connection names, relative to the pipeline like every path in it.
        for key in types[raw["type"]].paths:
            if options.get(key):
                options[key] = str((base_dir / Path(options[key]).expanduser()).resolve())
        located_at = {}
        for key in ("", *raw):
            path = ("connections", name, key) if key else ("connections", name)
            line, col = located.position(path, key=not key)  # the entry: its name's line
            located_at[key] = f"{located.file}:{line}:{col}: {'.'.join(path)}"
        connections[name] = Connection(
            name=name, type=raw["type"], uri=uri, options=options, located=located_at
        )
    problems: list[Problem] = []
    stages = data.get("stages") or {}

    def need(path: PathT, name: str, types: tuple[str, ...]) -> None:
        conn = connections.get(name)
        if conn is None:
            known = sorted(connections)
            problems.append(
                located.problem(
                    path,
                    f"unknown connection {name!r}{_did_you_mean(name, known)};"
                    f" known: {', '.join(known) or '(none)'}",
                )
            )
        elif conn.type not in types:
            problems.append(
                located.problem(
                    path, f"connection {name!r} is of type {conn.type!r}; need {' or '.join(types)}"
                )
            )

    for stage_type in STAGES:
        spec = stages.get(stage_type.name) or {}
        for conn_field in stage_type.connections:
            for path, name in _field_values(spec, conn_field):
                accepted = accepted_types(types, stage_type.name, conn_field.path)
                need(("stages", stage_type.name, *path), name, accepted)
    return connections, problems


def _field_values(spec: Any, conn_field: ConnectionField) -> list[tuple[PathT, str]]:
    """(path, value) of every string at `conn_field.path` in `spec` (`*`: each list item)."""
    found: list[tuple[PathT, Any]] = [((), spec)]
    for part in conn_field.path:
        step: list[tuple[PathT, Any]] = []
        for path, value in found:
            if part == "*" and isinstance(value, list):
                step.extend(((*path, i), item) for i, item in enumerate(value))
            elif isinstance(value, dict) and part in value:
                step.append(((*path, part), value[part]))
        found = step
    return [(path, value) for path, value in found if isinstance(value, str)]


def _stage_problems(
    data: dict[str, Any],
    located: Located,
    base_dir: Path,
    registry: Registry,
    strict_project: bool,
) -> list[Problem]:
    """Each stage type's own checks, or, without one, its in-process integration's."""
    problems: list[Problem] = []
    for stage_type in STAGES:
        spec = (data.get("stages") or {}).get(stage_type.name)
        if not spec:
            continue
        try:
            if stage_type.validate:
                problems.extend(
                    resolve(stage_type.validate)(data, located, base_dir, registry, strict_project)
                )
                continue
            registration = registry.for_stage_named(
                stage_type.name, spec[stage_type.integration_key]
            )
            for field_path, message in integration_problems(registration, spec, base_dir):
                problems.append(
                    located.problem(
                        ("stages", stage_type.name, *split_field_path(field_path)), message
                    )
                )
        except SpecError as exc:  # located in its own file (a registration's `python:`)
            problems.extend(exc.problems)
        except LegionError as exc:
            problems.append(located.problem(("stages", stage_type.name), str(exc)))
    return problems


def fill_defaults(data: dict[str, Any], registry: Registry) -> None:
    """Fill every stage's defaults, and its integration's `arguments` defaults, once, at load,
    from the same schemas that validated them (with the one fill function the integrations
    use for hand-built contexts, so the two cannot fill differently)."""
    stages = data.get("stages") or {}
    for stage_type in STAGES:
        spec = stages.get(stage_type.name)
        if not isinstance(spec, dict):
            continue
        spec = fill_schema_defaults({"properties": stage_type.properties}, spec)
        registration = registry.for_stage_named(stage_type.name, spec[stage_type.integration_key])
        spec["arguments"] = fill_schema_defaults(registration.arguments, spec.get("arguments"))
        stages[stage_type.name] = spec


def _secret_paths(data: dict[str, Any], registry: Registry) -> set[PathT]:
    paths: set[PathT] = set()
    keys = secret_fields(registry.connection_types.values())
    for name, raw in (data.get("connections") or {}).items():
        for key in keys:
            if key in raw:
                paths.add(("connections", name, key))
        for header in raw.get("headers") or {}:
            paths.add(("connections", name, "headers", header))
    return paths


def load_pipeline(
    path: Path | str,
    environ: dict[str, str] | None = None,
    *,
    strict_project: bool = True,
    stage: str | None = None,
) -> Pipeline:
    """Load, validate and resolve a pipeline; raises SpecError with every problem found.

    With strict_project=False (a run), problems the toolchain finds in the project itself
    (a missing MLproject, an unknown entry point) are left for the train stage to fail on.
    With `stage`, only the connections that stage uses must resolve their secrets.
    """
    try:
        return _load_pipeline(path, environ, strict_project=strict_project, stage=stage)
    except SpecError as exc:
        # Whatever a message quotes (a toolchain's finding, a registration's file name), each
        # problem stays one line.
        cleaned = [
            Problem(one_line(p.file), p.line, p.col, one_line(p.path), one_line(p.message))
            for p in exc.problems
        ]
        if cleaned == exc.problems:
            raise
        raise SpecError(cleaned) from None


def _load_pipeline(
    path: Path | str,
    environ: dict[str, str] | None,
    *,
    strict_project: bool,
    stage: str | None,
) -> Pipeline:
    shown = str(path)
    path = Path(path)
    located = load_located(path, shown)
    if not isinstance(located.data, dict):
        raise SpecError([Problem(shown, 1, 1, "", "a pipeline must be a YAML mapping")])
    base_dir = path.resolve().parent
    problems: list[Problem] = []

    extra: list[Path] = []
    integrations = located.data.get("integrations")
    if isinstance(integrations, list):
        for i, item in enumerate(integrations):
            if isinstance(item, str):
                candidate = base_dir / item
                if fs.exists(candidate):
                    extra.append(candidate)
                else:
                    problems.append(
                        located.problem(("integrations", i), f"no such registration file: {item}")
                    )
    try:
        registry = load_registry(extra)
    except SpecError:
        raise
    except InputError as exc:
        raise SpecError([Problem(shown, 1, 1, "integrations", str(exc))]) from None

    problems.extend(_value_problems(located))
    secret_keys = secret_fields(registry.connection_types.values())
    problems.extend(_schema_problems(located, build_schema(registry), secret_keys))
    if problems:
        problems.extend(_project_problems_despite(problems, located, base_dir, registry, environ))
        raise SpecError(problems)

    optional: set[PathT] = set()
    if stage is not None:
        used = _used_connections(located.data, stage)
        optional = {("connections", n) for n in located.data.get("connections") or {}} - {
            ("connections", n) for n in used
        }
    data, secrets, ref_problems = resolve_references(
        located, base_dir, _secret_paths(located.data, registry), environ, optional
    )
    # From here on every message may quote resolved values: register the secrets first.
    redactor = register(secrets)
    _register_connection_secrets(data, redactor)
    problems.extend(ref_problems)
    connections, conn_problems = _connections(data, located, base_dir, registry.connection_types)
    problems.extend(conn_problems)
    fill_defaults(data, registry)
    problems.extend(_stage_problems(data, located, base_dir, registry, strict_project))
    if problems:
        raise SpecError([replace(p, message=redactor(p.message)) for p in problems])
    return Pipeline(
        path=path.resolve(),
        display=shown,
        data=data,
        located=located,
        registry=registry,
        redactor=redactor,
        connections=connections,
    )


def _used_connections(data: dict[str, Any], stage: str) -> set[str]:
    spec = (data.get("stages") or {}).get(stage)
    if not isinstance(spec, dict) or stage not in BY_NAME:
        return set(data.get("connections") or {})
    return {
        name
        for conn_field in BY_NAME[stage].connections
        for _, name in _field_values(spec, conn_field)
    }


def _project_problems_despite(
    schema_problems: list[Problem],
    located: Located,
    base_dir: Path,
    registry: Registry,
    environ: dict[str, str] | None,
) -> list[Problem]:
    """With schema errors, still report what each schema-valid stage's own checks find (the
    toolchain's entry point, hyper-parameters ...), so one validate shows everything to fix.
    A stage with schema errors of its own is skipped: its checks assume a valid shape."""
    broken = {
        p.path.split(".")[1].split("[")[0] for p in schema_problems if p.path.startswith("stages.")
    }
    if any(not p.path.startswith("stages.") for p in schema_problems) and not isinstance(
        located.data.get("stages"), dict
    ):
        return []
    try:
        data, secrets, _ = resolve_references(
            located, base_dir, _secret_paths(located.data, registry), environ
        )
        redactor = register(secrets)
        stages = {k: v for k, v in (data.get("stages") or {}).items() if k not in broken}
        data = {**data, "stages": stages}
        fill_defaults(data, registry)
        found = _stage_problems(data, located, base_dir, registry, True)
    except Exception:  # best effort: the schema errors are the ones that must be shown
        return []
    known = {(p.line, p.col, p.path) for p in schema_problems}
    return [
        replace(p, message=redactor(p.message))
        for p in found
        if (p.line, p.col, p.path) not in known
    ]


def _register_connection_secrets(data: dict[str, Any], redactor: Redactor) -> None:
    """Secrets a connection carries outside its credential fields: the password in a URI's
    user info (`http://ci:pw@host`), and the base64 `user:password` pair of basic auth."""
    for raw in (data.get("connections") or {}).values():
        if not isinstance(raw, dict):
            continue
        for key in ("uri", "endpoint"):
            value = raw.get(key)
            if isinstance(value, str) and "@" in value:
                try:
                    parts = urllib.parse.urlsplit(value)
                    password = parts.password
                except ValueError:
                    continue
                if password:
                    redactor.add(password)
                    redactor.add(urllib.parse.unquote(password))
                    redactor.add_basic_auth(
                        urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(password)
                    )
        password = raw.get("password") or raw.get("keySecret")
        if isinstance(password, str):
            redactor.add_basic_auth(str(raw.get("username") or raw.get("keyID") or ""), password)
