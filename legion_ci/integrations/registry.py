"""The integration registry: built-ins, entry-point plugins and YAML registrations, one table.

Built-ins are registered the same way as third-party YAML registrations (files in
`toolchains/`), so the built-ins prove the plugin path. Sources, in order:
1. `legion_ci.toolchains` (the top-level `toolchains/` folder, shipped in the package);
2. the `legion_ci.integrations` entry-point group (in-process Python plugins);
3. files or folders named by `$LEGION_CI_INTEGRATIONS` (os.pathsep-separated);
4. files named by the pipeline's `integrations:` list.
A name registered twice for one kind is an error naming both sources.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legion_ci import fs
from legion_ci.connection_types import BUILT_IN, ConnectionType, conflicts
from legion_ci.errors import InputError, Problem, SpecError
from legion_ci.integrations.connection_registrations import registration_schema
from legion_ci.stage_types import BY_KIND, STAGES

ENTRY_POINT_GROUP = "legion_ci.integrations"
ENV_PATHS = "LEGION_CI_INTEGRATIONS"

# Registration kind -> the pipeline stage it serves, from the one stage table.
KINDS = {stage.kind: stage.name for stage in STAGES}
# The method each kind's Protocol (legion_ci.integrations.base) requires.
METHODS = {"Trainer": "train", "Packager": "pack", "Deployer": "deploy"}

REGISTRATION_SCHEMA: dict[str, Any] = {
    **registration_schema(
        {"enum": list(KINDS)},
        {
            "python": {"type": "string", "pattern": r"^[\w.]+:[\w.]+$"},
            "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "arguments": {"type": "object"},
        },
    ),
    "oneOf": [{"required": ["python"]}, {"required": ["command"]}],
}


@dataclass
class Registration:
    name: str
    kind: str
    description: str = ""
    python: str | None = None  # "module:Class", in-process
    command: list[str] | None = None  # out-of-process, Legion's CLI contract
    arguments: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    source: str = ""
    base_dir: Path = field(default_factory=Path.cwd)
    factory: Any = None  # an entry point's loaded object, when it is one
    located: Any = None  # the registration file as loaded (Located), to place its problems

    @property
    def stage(self) -> str:
        return KINDS[self.kind]

    @property
    def mode(self) -> str:
        return "python" if (self.python or self.factory is not None) else "command"

    def load(self) -> Any:
        """The integration as an object satisfying its kind's Protocol (Trainer, Packager,
        Deployer): the in-process object itself, or the adapter that speaks Legion's
        out-of-process contract. The runner never needs to know which."""
        if self.mode == "command":
            from legion_ci.integrations.external import ADAPTERS

            return ADAPTERS[self.kind](self.name, self.argv())
        return self.instantiate()

    def describe(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """What a plan shows of this integration run with the stage's `arguments`: its name,
        mode and source, and the command when it runs out of process. The registration says
        how it is implemented, so the plan need not branch on it."""
        description: dict[str, Any] = {
            "integration": self.name,
            "mode": self.mode,
            "source": self.source,
            "arguments": arguments,
        }
        if self.mode == "command":
            description["command"] = self.argv()
        return description

    def _refused(self, message: str) -> InputError:
        """`message` about the `python:` target, at its line in the registration file."""
        if self.located is not None:
            return SpecError([self.located.problem(("python",), message)])
        return InputError(f"{self.source}: integration {self.name!r}: {message}")

    def instantiate(self) -> Any:
        """The in-process integration object (imports its module only now): an object with
        its kind's method (`train`, `pack`, `deploy`). Anything else a `python:` line can name
        (`subprocess:Popen`, `os:system`) is refused before it is called."""
        target = self.factory
        if target is None:
            assert self.python is not None
            module_name, _, attr = self.python.partition(":")
            try:
                target = importlib.import_module(module_name)
            except Exception as exc:  # an import runs the module: it may raise anything
                raise self._refused(
                    f"cannot import {module_name}: {type(exc).__name__}: {exc}"
                ) from None
            for part in attr.split("."):
                target = getattr(target, part, None)
                if target is None:
                    raise self._refused(f"{self.python} not found")
            method = METHODS[BY_KIND[self.kind].protocol]
            if not callable(getattr(target, method, None)):
                what = "class" if isinstance(target, type) else type(target).__name__
                raise self._refused(
                    f"{self.python} is not a {self.kind} class: the {what} has no {method}(ctx)"
                )
        try:
            obj = target() if isinstance(target, type) else target
        except Exception as exc:
            raise self._refused(
                f"{self.python or self.source} cannot be created without arguments:"
                f" {type(exc).__name__}: {exc}"
            ) from None
        method = METHODS[BY_KIND[self.kind].protocol]
        if not callable(getattr(obj, method, None)):
            raise InputError(
                f"{self.source}: integration {self.name!r} is a {self.kind} but"
                f" {type(obj).__name__} has no {method}(ctx)"
            )
        return obj

    def argv(self) -> list[str]:
        """The out-of-process command, with paths relative to its registration file resolved."""
        assert self.command is not None
        first = self.command[0]
        if "/" in first and not os.path.isabs(first):
            first = str((self.base_dir / first).resolve())
        return [first, *self.command[1:]]


class Registry:
    def __init__(self, registrations: list[Registration] | None = None):
        self._by_kind: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        # The connection type table the pipeline schema and the stage fields are built from:
        # the built-ins, plus what `kind: ConnectionType` registrations bring.
        self.connection_types: dict[str, ConnectionType] = dict(BUILT_IN)
        for registration in registrations or []:
            self.add(registration)

    def add_connection_type(self, connection_type: ConnectionType) -> None:
        problems = conflicts(self.connection_types, connection_type)
        if problems:
            raise InputError(f"{connection_type.source}: " + "; ".join(problems))
        self.connection_types[connection_type.name] = connection_type

    def add(self, registration: Registration) -> None:
        table = self._by_kind[registration.kind]
        existing = table.get(registration.name)
        if existing is not None:
            raise InputError(
                f"integration {registration.name!r} ({registration.kind}) is registered twice:"
                f" {existing.source} and {registration.source}"
            )
        table[registration.name] = registration

    def for_stage(self, stage: str) -> dict[str, Registration]:
        for kind, stage_name in KINDS.items():
            if stage_name == stage:
                return dict(self._by_kind[kind])
        raise KeyError(stage)

    def for_stage_named(self, stage: str, name: str) -> Registration:
        """The registration that runs `stage` under `name` (e.g. train, mlflow)."""
        kind = next(kind for kind, stage_name in KINDS.items() if stage_name == stage)
        return self.get(kind, name)

    def get(self, kind: str, name: str) -> Registration:
        table = self._by_kind[kind]
        if name not in table:
            known = ", ".join(sorted(table)) or "(none registered)"
            raise InputError(f"unknown {kind} {name!r}; known: {known}")
        return table[name]

    def all(self) -> list[Registration]:
        return [r for kind in KINDS for _, r in sorted(self._by_kind[kind].items())]


def _checked_marker(located: Any) -> Path | None:
    """A registration file already found valid is remembered by its content's hash (and the
    registration schema's), so every validate need not import jsonschema for the built-ins."""
    import hashlib
    import json

    from legion_ci.cache import cache_root

    if not located.sha256:
        return None
    # CHECKS: what the full check does beyond the schema; a new check invalidates old markers.
    checks = json.dumps([REGISTRATION_SCHEMA, CHECKS], sort_keys=True)
    schema = hashlib.sha256(checks.encode()).hexdigest()
    return cache_root() / "registrations" / f"{located.sha256[:32]}-{schema[:16]}.ok"


CHECKS = ["schema", "arguments is a schema", "safe patterns"]


def _validate_registration(located: Any) -> None:
    marker = _checked_marker(located)
    if marker is not None and marker.is_file():
        return
    _validate_registration_fully(located)
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass  # a read-only cache only costs speed


def _validate_registration_fully(located: Any) -> None:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(REGISTRATION_SCHEMA)
    problems = []
    for error in validator.iter_errors(located.data):
        path = tuple(error.absolute_path)
        message = error.message
        if error.validator == "oneOf":
            message = "exactly one of 'python' (module:Class) or 'command' (argument list)"
        problems.append(located.problem(path, message))
    if problems:
        raise SpecError(problems)
    if "arguments" in located.data:
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(located.data["arguments"])
        except SchemaError as exc:
            raise SpecError(
                [located.problem(("arguments",), f"not a valid JSON Schema: {exc.message}")]
            ) from None
        from legion_ci.regex_safety import pattern_problems

        # Pipeline values are matched against these patterns: one that backtracks for ever
        # would hang every validate.
        unsafe = pattern_problems(located.data["arguments"], ("arguments",))
        if unsafe:
            raise SpecError([located.problem(path, message) for path, message in unsafe])


def load_registration_file(path: Path, located: Any = None) -> Registration:
    from legion_ci.yaml_loader import load_located

    located = located or load_located(path)
    if not isinstance(located.data, dict):
        raise SpecError([Problem(str(path), 1, 1, "", "a registration must be a mapping")])
    _validate_registration(located)
    data = located.data
    return Registration(
        name=data["name"],
        kind=data["kind"],
        description=data.get("description", ""),
        python=data.get("python"),
        command=data.get("command"),
        arguments=data.get("arguments") or {"type": "object"},
        source=str(path),
        base_dir=Path(path).resolve().parent,
        located=located,
    )


def _registration_files(location: Path) -> list[Path]:
    if fs.is_dir(location):
        return sorted([*location.glob("*.yaml"), *location.glob("*.yml")])
    if fs.is_file(location):
        return [location]
    raise InputError(f"{location}: no such integration registration file or folder")


def _builtin_files() -> list[Path]:
    from importlib import resources

    folder = resources.files("legion_ci.toolchains")
    return sorted(
        Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith((".yaml", ".yml"))
    )


def _entry_points() -> list[tuple[str, str]]:
    """(name, value) of the group's entry points, cached on the sys.path folders' mtimes.

    Scanning every installed distribution costs ~50 ms in an MLflow environment, a third of
    the `legion-ci validate` budget; installing or removing a package changes its folder's
    mtime, which invalidates the cache.
    """
    import hashlib
    import json
    import sys

    from legion_ci.cache import cache_root

    stamps = []
    for entry in sys.path:
        try:
            stamps.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            stamps.append([entry, None])
    key = hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:24]
    cache = cache_root() / f"entry-points-{key}.json"
    try:
        return [tuple(pair) for pair in json.loads(cache.read_text(encoding="utf-8"))]
    except (OSError, ValueError):
        pass
    from importlib.metadata import entry_points

    found = sorted({(ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP)})
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(found), encoding="utf-8")
        tmp.replace(cache)
    except OSError:
        pass  # a read-only home only costs speed
    return found


def _entry_point_registrations() -> list[Registration]:
    found = []
    for name, value in _entry_points():
        source = f"entry point {name} = {value}"
        try:
            # What EntryPoint.load() does, without importing importlib.metadata (~20 ms).
            module_name, _, attrs = value.partition(":")
            obj = importlib.import_module(module_name.strip())
            for attr in filter(None, attrs.strip().split(".")):
                obj = getattr(obj, attr)
        except Exception as exc:
            raise InputError(f"{source}: cannot load: {type(exc).__name__}: {exc}") from None
        meta = (
            obj
            if isinstance(obj, dict)
            else {
                "kind": getattr(obj, "kind", None),
                "name": getattr(obj, "name", name),
                "description": getattr(obj, "description", ""),
                "arguments": getattr(obj, "arguments", None),
            }
        )
        kind = meta.get("kind")
        if kind not in KINDS:
            raise InputError(f"{source}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
        found.append(
            Registration(
                name=str(meta.get("name") or name),
                kind=kind,
                description=str(meta.get("description") or ""),
                python=meta.get("python") if isinstance(obj, dict) else None,
                command=meta.get("command") if isinstance(obj, dict) else None,
                arguments=meta.get("arguments") or {"type": "object"},
                source=source,
                factory=None if isinstance(obj, dict) else obj,
            )
        )
    return found


def _add_file(registry: Registry, path: Path) -> None:
    """An integration's registration file, or a connection type's (`kind: ConnectionType`)."""
    from legion_ci.integrations import connection_registrations as connection_files
    from legion_ci.yaml_loader import load_located

    located = load_located(path)
    if connection_files.is_connection_type(located.data):
        registry.add_connection_type(connection_files.connection_type(located, path))
    else:
        registry.add(load_registration_file(path, located))


def load_registry(extra: list[Path] | tuple[Path, ...] = ()) -> Registry:
    registry = Registry()
    for path in _builtin_files():
        registry.add(load_registration_file(path))
    for registration in _entry_point_registrations():
        registry.add(registration)
    for chunk in filter(None, os.environ.get(ENV_PATHS, "").split(os.pathsep)):
        for path in _registration_files(Path(chunk)):
            _add_file(registry, path)
    for location in extra:
        for path in _registration_files(Path(location)):
            _add_file(registry, path)
    return registry
