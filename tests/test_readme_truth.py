"""The README's commands and arguments, checked against the click command tree of
`legion_ci.cli.main`: every command and option the README names exists, and every public
command appears in its "Commands" table. Renaming or dropping a documented command or option
fails here until the README says so too."""

from __future__ import annotations

import re
from dataclasses import dataclass

import click
import pytest
from conftest import REPO

from legion_ci.cli.main import cli

README = (REPO / "README.md").read_text(encoding="utf-8")
OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][a-zA-Z0-9-]*)")
CELL_SPLIT = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]
    command: click.Command

    @property
    def options(self) -> set[str]:
        names = {"--help", "-h"}
        for param in self.command.params:
            if isinstance(param, click.Option):
                names.update(param.opts)
                names.update(param.secondary_opts)
        return names


def leaves() -> dict[tuple[str, ...], Leaf]:
    """Every public (not hidden) command of the tree, by its path: ("runs", "list")."""
    found: dict[tuple[str, ...], Leaf] = {}
    ctx = click.Context(cli)

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    walk(sub, (*path, name))
        else:
            found[path] = Leaf(path, command)

    walk(cli, ())
    return found


LEAVES = leaves()
TOP = {path[0] for path in LEAVES}


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else len(README)]


def inline_spans(text: str) -> list[str]:
    """Inline code spans outside fenced blocks, whitespace (a wrapped line) made one space."""
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def commands_in(span: str) -> tuple[list[tuple[str, ...]], str]:
    """The command paths a span names (`legion-ci model self-check|info|predict ARTIFACT`, or
    `runs show ...` without the prefix) and the rest of the span, where its options are."""
    words = span.replace("\\|", "|").split()
    if words and words[0] == "legion-ci":
        words = words[1:]
        if words and words[0] in ("--help", "-h", "--version", "..."):
            return [()], ""  # the program itself, or a placeholder for any command
    if not words or words[0] not in TOP:
        return [], span
    top, rest = words[0], words[1:]
    if (top,) in LEAVES:
        return [(top,)], " ".join(rest)
    if not rest:
        return [path for path in LEAVES if path[0] == top], ""
    return [(top, sub) for sub in rest[0].split("|")], " ".join(rest[1:])


def table_rows() -> list[tuple[list[str], list[str]]]:
    """(code spans of the first cell, code spans of the second) of each Commands table row."""
    rows = []
    for line in section("Commands").split("\n### ")[0].splitlines():
        if not line.startswith("| ") or line.startswith("| ---") or line.startswith("| command"):
            continue
        cells = [cell.strip() for cell in CELL_SPLIT.split(line.strip().strip("|"))]
        if len(cells) < 2:
            continue
        rows.append((inline_spans(cells[0]), inline_spans(cells[1])))
    return rows


def check_options(paths: list[tuple[str, ...]], text: str, where: str) -> list[str]:
    """Each option in `text` must exist on at least one of `paths` (a row like
    `model self-check|info|predict ARTIFACT [--input FILE]` documents predict's --input)."""
    problems = []
    paths = [path for path in paths if path]  # (): the program itself, nothing to check
    for path in paths:
        if path not in LEAVES:
            problems.append(f"{where}: `legion-ci {' '.join(path)}` is not a command")
    known = [LEAVES[p] for p in paths if p in LEAVES]
    for option in OPTION.findall(text):
        if known and not any(option in leaf.options for leaf in known):
            names = " / ".join(" ".join(leaf.path) for leaf in known)
            problems.append(f"{where}: {option} is not an option of `legion-ci {names}`")
    return problems


def test_every_command_and_option_in_the_commands_table_exists() -> None:
    problems: list[str] = []
    rows = table_rows()
    assert len(rows) >= 10, "the README's Commands table was not found"
    for first, second in rows:
        paths: list[tuple[str, ...]] = []
        for span in first:
            named, rest = commands_in(span)
            paths += named
            if named:
                problems += check_options(named, rest, f"Commands table `{span}`")
        if not paths:
            # An options row (`--dry-run`, `-q`): the commands it names in its text (`run`/`stage`).
            paths = [(s,) for s in second if (s,) in LEAVES]
            assert paths, f"the Commands table row {first} names no command"
            for span in first:
                problems += check_options(paths, span, f"Commands table `{span}`")
        for span in second:
            if span.startswith("-"):
                problems += check_options(paths, span, f"Commands table `{span}`")
    assert problems == []


def test_every_public_command_is_in_the_commands_table() -> None:
    listed: set[tuple[str, ...]] = set()
    for first, _second in table_rows():
        for span in first:
            listed.update(commands_in(span)[0])
    missing = sorted(" ".join(path) for path in LEAVES if path not in listed)
    assert missing == [], f"commands missing from the README's Commands table: {missing}"


def invocations() -> list[str]:
    """Every `legion-ci ...` the README shows: inline code spans and lines of code blocks."""
    found = [s for s in inline_spans(README) if s.startswith("legion-ci ")]
    for block in re.findall(r"```.*?```", README, flags=re.DOTALL):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            if command.startswith(("legion-ci ", ".venv/bin/legion-ci ")):
                found.append(command.removeprefix(".venv/bin/"))
    return found


@pytest.mark.parametrize("command", sorted(set(invocations())))
def test_every_legion_ci_command_line_in_the_readme_names_real_commands_and_options(
    command: str,
) -> None:
    paths, rest = commands_in(command)
    assert paths, f"README: `{command}`: no such legion-ci command"
    assert check_options(paths, rest, f"README `{command}`") == []


def test_the_model_servers_settings_are_serve_options() -> None:
    """The `--...` settings the "Model server" section lists (outside `legion-ci ...` lines,
    which the test above checks against their own command) are `legion-ci serve` options."""
    text = section("Model server")
    other_tools = {"--checks"}  # schemathesis `--checks all`, named in the same section
    spans = [
        s for s in inline_spans(text) if s.startswith("--") and s.split()[0] not in other_tools
    ]
    assert len(spans) >= 8, "the Model server section's settings were not found"
    assert check_options([("serve",)], " ".join(spans), "Model server section") == []


def test_the_layout_names_exactly_the_verbs_that_go_through_legion_ci_api() -> None:
    """The Layout row of `legion_ci/cli/` says which verbs call `legion_ci.api`: exactly those
    whose module (or a legion_ci.cli module it imports) uses it."""
    from legion_ci.cli.main import COMMANDS

    cli_dir = REPO / "legion_ci" / "cli"

    def uses_api(module: str, seen: frozenset[str] = frozenset()) -> bool:
        text = (cli_dir / f"{module.rsplit('.', 1)[1]}.py").read_text(encoding="utf-8")
        if "legion_ci.api" in text:
            return True
        helpers = set(re.findall(r"from (legion_ci\.cli\.\w+) import", text)) - seen - {module}
        return any(uses_api(helper, seen | {module}) for helper in helpers)

    through_api = {verb for verb, (module, _attr, _help) in COMMANDS.items() if uses_api(module)}
    row = next(line for line in section("Layout").splitlines() if "`legion_ci/cli/`" in line)
    documented = set(re.findall(r"`([a-z-]+)`", row.split("go through")[0]))
    assert "go through `legion_ci.api`" in row, row
    assert documented == through_api, row


def test_the_readme_offers_no_extra_that_adds_nothing() -> None:
    """An extra whose requirements install_requires already holds installs nothing more, so
    the README must not offer it as a slimmer install (it once did with `legion-ci[serve]`)."""
    from importlib import metadata

    def name(requirement: str) -> str:
        return re.split(r"[ <>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    requires = metadata.requires("legion-ci") or []
    base = {name(r) for r in requires if "extra ==" not in r}
    extras: dict[str, set[str]] = {}
    for requirement in requires:
        found = re.search(r"extra == ['\"]([\w-]+)['\"]", requirement)
        if found:
            extras.setdefault(found.group(1), set()).add(name(requirement))
    empty = sorted(extra for extra, names in extras.items() if names <= base)
    assert "serve" in empty  # what this test is about: the serve extra adds nothing
    offered = [extra for extra in empty if f"legion-ci[{extra}]" in README]
    assert offered == [], f"README offers extras that add nothing to install_requires: {offered}"


def test_the_training_job_is_not_called_unwired_while_the_train_stage_runs_it() -> None:
    runner = (REPO / "legion_ci" / "runner" / "stages" / "train_cluster.py").read_text()
    assert "run_training_job" in runner  # the train stage's `cluster:` runs the Job
    for path in ("legion_ci/training/README.md", "legion_ci/training/job.py"):
        text = " ".join((REPO / path).read_text(encoding="utf-8").split())
        assert "not wired" not in text, f"{path} still says the training Job is not wired"
