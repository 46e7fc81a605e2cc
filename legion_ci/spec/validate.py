"""Validate a pipeline file: every problem at once, each as FILE:LINE:COL: field.path: message."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from legion_ci.errors import InputError, LegionError, Problem, SpecError
from legion_ci.integrations.base import Connection
from legion_ci.integrations.registry import Registry, load_registry
from legion_ci.runner.process import Redactor
from legion_ci.spec.pipeline import STAGE_INTEGRATION_KEY, Pipeline
from legion_ci.spec.schema import SECRET_FIELDS, build_schema
from legion_ci.spec.secrets import resolve_references
from legion_ci.spec.yaml_loader import Located, PathT, format_path, load_located

DATA_CONNECTION_TYPES = ("local", "http", "s3")
# Toolchain problems in these stage fields are the pipeline file's, always found up front.
PIPELINE_FIELDS = ("hyperParameters", "arguments")
STAGE_NOUN = {"train": "toolchain", "package": "packaging integration", "deploy": "deploy target"}


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _schema_problems(located: Located, schema: dict[str, Any]) -> list[Problem]:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    validator = Draft202012Validator(schema)
    problems: list[Problem] = []
    for error in validator.iter_errors(located.data):
        problems.extend(_explain(located, error, best_match))
    # One mistake can break several branches of the schema; say it once.
    unique: dict[tuple[int, int, str, str], Problem] = {}
    for p in problems:
        unique.setdefault((p.line, p.col, p.path, p.message), p)
    return list(unique.values())


def _explain(located: Located, error: Any, best_match: Any) -> list[Problem]:
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
    if kind == "enum" and leaf in STAGE_INTEGRATION_KEY.values():
        known = list(error.validator_value)
        stage = path[-2] if len(path) >= 2 else "?"
        return [
            located.problem(
                path,
                f"unknown {STAGE_NOUN.get(str(stage), 'integration')} {error.instance!r}"
                f"{_did_you_mean(str(error.instance), known)};"
                f" known: {', '.join(known) or '(none registered)'}",
            )
        ]
    if leaf in SECRET_FIELDS:
        # Never echo what was written in a credential field: it may be a real secret.
        return [
            located.problem(
                path, "credentials must be a secret reference such as ${env:NAME}, not a value"
            )
        ]
    if kind == "const":
        return [located.problem(path, f"must be {error.validator_value!r}")]
    if kind in ("oneOf", "anyOf") and error.context:
        return _explain(located, best_match(error.context), best_match)
    if kind == "minProperties" and error.validator_value == 1:
        return [located.problem(path, "must not be empty")]
    return [located.problem(path, error.message)]


def _connections(
    data: dict[str, Any], located: Located, base_dir: Path
) -> tuple[dict[str, Connection], list[Problem]]:
    connections: dict[str, Connection] = {}
    for name, raw in (data.get("connections") or {}).items():
        options = {k: v for k, v in raw.items() if k not in ("type", "uri")}
        uri = str(raw.get("uri", ""))
        if raw["type"] == "local" and uri:
            uri = str((base_dir / uri).resolve())
        connections[name] = Connection(name=name, type=raw["type"], uri=uri, options=options)
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

    train = stages.get("train") or {}
    for i, binding in enumerate(train.get("data") or []):
        need(
            ("stages", "train", "data", i, "connection"),
            binding["connection"],
            DATA_CONNECTION_TYPES,
        )
    if "tracking" in train:
        need(("stages", "train", "tracking"), train["tracking"], ("mlflow",))
    for i, target in enumerate((stages.get("package") or {}).get("targets") or []):
        need(("stages", "package", "targets", i, "connection"), target["connection"], ("docker",))
    deploy = stages.get("deploy") or {}
    if "connection" in deploy:
        need(("stages", "deploy", "connection"), deploy["connection"], ("kubernetes",))
    return connections, problems


def _train_problems(
    data: dict[str, Any],
    located: Located,
    base_dir: Path,
    registry: Registry,
    strict_project: bool,
) -> list[Problem]:
    train = (data.get("stages") or {}).get("train")
    if not train:
        return []
    problems: list[Problem] = []
    base = ("stages", "train")
    project_dir = (base_dir / train.get("workDir", ".")).resolve()
    if not project_dir.is_dir():
        problems.append(located.problem((*base, "workDir"), f"no such folder: {project_dir}"))
        return problems
    baseline = train.get("baseline")
    if isinstance(baseline, str) and not (base_dir / baseline).is_file():
        problems.append(located.problem((*base, "baseline"), f"no such file: {baseline}"))
    registration = registry.for_stage_named("train", train["toolchain"])
    if registration.mode != "python":
        return problems
    trainer = registration.instantiate()
    validate = getattr(trainer, "validate", None)
    if callable(validate):
        for field_path, message in validate(train, project_dir):
            if not strict_project and not str(field_path).startswith(PIPELINE_FIELDS):
                # The project itself (MLproject, entry point) is the train stage's to judge
                # when running, so the failure lands in the run record and the CI reports.
                continue
            parts: list[str | int] = []
            for part in str(field_path).replace("]", "").replace("[", ".").split("."):
                if part:
                    parts.append(int(part) if part.isdigit() else part)
            problems.append(located.problem((*base, *parts), message))
    return problems


def _secret_paths(data: dict[str, Any]) -> set[PathT]:
    paths: set[PathT] = set()
    for name, raw in (data.get("connections") or {}).items():
        for key in SECRET_FIELDS:
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
) -> Pipeline:
    """Load, validate and resolve a pipeline; raises SpecError with every problem found.

    With strict_project=False (a run), problems the toolchain finds in the project itself
    (a missing MLproject, an unknown entry point) are left for the train stage to fail on.
    """
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
                if candidate.exists():
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

    problems.extend(_schema_problems(located, build_schema(registry)))
    if problems:
        raise SpecError(problems)

    data, secrets, ref_problems = resolve_references(
        located, base_dir, _secret_paths(located.data), environ
    )
    problems.extend(ref_problems)
    connections, conn_problems = _connections(data, located, base_dir)
    problems.extend(conn_problems)
    try:
        problems.extend(_train_problems(data, located, base_dir, registry, strict_project))
    except LegionError as exc:
        problems.append(located.problem(("stages", "train"), str(exc)))
    if problems:
        raise SpecError(problems)
    return Pipeline(
        path=path.resolve(),
        display=shown,
        data=data,
        located=located,
        registry=registry,
        redactor=Redactor(secrets),
        connections=connections,
    )
