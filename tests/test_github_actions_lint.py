"""Every action and workflow passes the three GitHub Actions linters with no finding, and
the linters are really looking (a known-bad file is flagged)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write

TOOLS = Path(sys.executable).parent
ACTIONS = sorted((REPO / "github-actions").glob("*/action.yml"))
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml")) + sorted(
    (REPO / "github-actions" / "examples").glob("*.yml")
)
ZIZMOR_CONFIG = REPO / ".github" / "zizmor.yml"


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def test_there_is_something_to_lint() -> None:
    assert {p.parent.name for p in ACTIONS} >= {"setup", "run"}
    assert any(p.name == "github-actions.yml" for p in WORKFLOWS)
    assert len(WORKFLOWS) >= 3


@pytest.mark.parametrize(
    ("schema", "files"),
    [("vendor.github-actions", ACTIONS), ("vendor.github-workflows", WORKFLOWS)],
)
def test_check_jsonschema(schema: str, files: list[Path]) -> None:
    result = _run(TOOLS / "check-jsonschema", "--builtin-schema", schema, *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint() -> None:
    result = _run(TOOLS / "actionlint", "-no-color", *WORKFLOWS)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_zizmor() -> None:
    result = _run(
        TOOLS / "zizmor", "--offline", "--no-progress", "--config", ZIZMOR_CONFIG,
        *ACTIONS, *WORKFLOWS,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_the_linters_flag_a_script_injection(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad" / "action.yml",
        """
        name: bad
        description: Interpolates an input into a shell script.
        inputs:
          file: {description: A file., default: x}
        runs:
          using: composite
          steps:
            - uses: actions/upload-artifact@v4
              with: {path: x}
            - shell: bash
              run: legion-ci run ${{ inputs.file }}
        """,
    )
    result = _run(TOOLS / "zizmor", "--offline", "--no-progress", bad)
    assert result.returncode != 0
    assert "template-injection" in result.stdout and "unpinned-uses" in result.stdout
    workflow = write(
        tmp_path / "wf.yml",
        """
        on: push
        jobs:
          j:
            runs-on: ubuntu-latest
            steps:
              - run: echo "${{ github.event.head_commit.message }}"
              - uses: ./missing-action
        """,
    )
    result = _run(TOOLS / "actionlint", "-no-color", workflow)
    assert result.returncode != 0 and "potentially untrusted" in result.stdout


def _run_blocks(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "run" and isinstance(v, str)]
        return found + [s for v in node.values() for s in _run_blocks(v)]
    if isinstance(node, list):
        return [s for v in node for s in _run_blocks(v)]
    return []


@pytest.mark.parametrize("path", ACTIONS + WORKFLOWS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_expression_reaches_a_shell_script(path: Path) -> None:
    """Inputs and contexts reach `run:` only through `env:` and quoted variables."""
    scripts = _run_blocks(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert scripts
    for script in scripts:
        assert "${{" not in script, f"{path}: expression inside run: {script!r}"


@pytest.mark.parametrize("path", ACTIONS + WORKFLOWS, ids=lambda p: str(p.relative_to(REPO)))
def test_third_party_actions_are_pinned_to_a_full_commit(path: Path) -> None:
    uses = re.findall(r"uses:\s*([^\s#]+)", path.read_text(encoding="utf-8"))
    for ref in uses:
        if ref.startswith("./") or ref.startswith("legion-platform/legion-ci/"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{path}: {ref}"
