"""The import map of legion_ci/: rooms on floors, arrows pointing down, no circles.

A room is a sub-package of legion_ci (cli, runner, targets, ...) or a top-level module
(errors, processes, records, ...). Every import counts: at module level, inside functions and
under TYPE_CHECKING, because each one is a dependency a reader has to hold in mind (and a lazy
import in a circle is a circle all the same).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "legion_ci"

# Bottom first. A room may import rooms on its own floor or below.
FLOORS: list[tuple[str, ...]] = [
    # helpers every phase uses: errors, files, processes, records
    (
        "errors",
        "version",
        "redact",
        "yaml_loader",
        "regex_safety",
        "gitinfo",
        "cache",
        "fs",
        "atomic",
        "processes",
        "records",
        "deployment_state",
    ),
    # the formats: the binary (GPPI), the stage and connection tables and their schema
    # fragments, the model server, the reports
    ("gppi", "stage_types", "stage_schemas", "connection_types", "server", "reports"),
    # the integration contract and the integrations built on it; data bindings
    ("integrations", "data"),
    # the pipeline file
    ("spec",),
    # the phases' own code
    ("packaging", "targets", "training"),
    # the step runner
    ("runner",),
    # what callers use: the Python API and the CI wrappers
    ("api", "ci", "jenkins", "airflow"),
    # the command line, and the package's lazy facade over the API
    ("cli", "__init__"),
]
MAX_ARROWS_UP = 3


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if "templates" in rel.parts:  # copied into binaries, never imported by legion_ci
            continue
        parts = ["legion_ci", *rel.with_suffix("").parts]
        if parts[-1] == "__init__" and len(parts) > 2:
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from legion_ci import fs` imports the module legion_ci.fs
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            edges[name].update(t for t in targets if t in modules and t != name)
    return edges


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_room_has_a_floor() -> None:
    floor_of = {room for floor in FLOORS for room in floor}
    rooms = {_room(name) for name in _modules()}
    assert rooms - floor_of == set(), "put each new room on a floor in FLOORS"


def test_no_module_imports_in_a_circle() -> None:
    assert _cycles(_imports(_modules())) == []


def test_no_room_imports_in_a_circle() -> None:
    rooms: dict[str, set[str]] = {}
    for source, targets in _imports(_modules()).items():
        for target in targets:
            if _room(source) != _room(target):
                rooms.setdefault(_room(source), set()).add(_room(target))
                rooms.setdefault(_room(target), set())
    assert _cycles(rooms) == []


def test_at_most_three_arrows_run_back_up() -> None:
    floor = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
    up = sorted(
        {
            f"{_room(source)} -> {_room(target)} ({source} -> {target})"
            for source, targets in _imports(_modules()).items()
            for target in targets
            if floor.get(_room(target), 0) > floor.get(_room(source), 0)
        }
    )
    rooms_up = {line.split(" (")[0] for line in up}
    assert len(rooms_up) <= MAX_ARROWS_UP, "\n".join(up)


def test_the_map_sees_a_circle_when_there_is_one() -> None:
    # The checker itself: a planted circle and a planted upward arrow are found.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert _room("legion_ci.runner.stages.train") == "runner"


def test_no_module_holds_more_than_about_450_lines() -> None:
    # One job per module. The GPPI entrypoint template is copied whole into each binary and
    # loaded under a name of its own, so it cannot be split without two binaries in one
    # process sharing a helper module (legion_ci/gppi/loader.py).
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
        if "templates" not in path.parts
    }
    assert {name: lines for name, lines in sizes.items() if lines > 450} == {}
