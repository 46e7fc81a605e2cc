"""`legion-ci jenkins render` without --git-url / --branch: the checkout's origin remote and
current branch, or one clear line when there is none."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, run_cli


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "pipelines", root / "pipelines", ignore=shutil.ignore_patterns(".*"))
    git(root, "init", "-q", "-b", "feature-x")
    return root


def test_render_defaults_to_the_origin_remote_and_current_branch(checkout: Path) -> None:
    git(checkout, "remote", "add", "origin", "https://git.example/ml/wine.git")
    outcome = run_cli("jenkins", "render", "pipelines/wine.yaml", cwd=checkout).assert_success()
    assert "git(url: 'https://git.example/ml/wine.git', branch: 'feature-x')" in outcome.out
    # Explicit options still win over the checkout.
    outcome = run_cli(
        "jenkins", "render", "pipelines/wine.yaml", "--git-url", "u", "--branch", "b", cwd=checkout
    ).assert_success()
    assert "git(url: 'u', branch: 'b')" in outcome.out


def test_render_without_an_origin_remote_is_one_clear_line(checkout: Path) -> None:
    outcome = run_cli("jenkins", "render", "pipelines/wine.yaml", cwd=checkout).assert_failed(2)
    assert outcome.err.strip().splitlines() == [
        "legion-ci: error: --git-url not given and the git checkout at . has no 'origin'"
        " remote: pass --git-url (the repository the job checks out)"
    ]
    outside = checkout.parent / "plain"
    shutil.copytree(checkout / "pipelines", outside / "pipelines")
    outcome = run_cli("jenkins", "render", "pipelines/wine.yaml", cwd=outside).assert_failed(2)
    assert outcome.err.strip().splitlines() == [
        "legion-ci: error: --git-url not given and . is not a git checkout: pass --git-url"
        " (the repository the job checks out)"
    ]


def test_render_on_a_detached_head_builds_main(checkout: Path) -> None:
    git(checkout, "remote", "add", "origin", "https://git.example/ml/wine.git")
    git(checkout, "add", "-A")
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "x")
    git(checkout, "switch", "-q", "--detach")
    outcome = run_cli("jenkins", "render", "pipelines/wine.yaml", cwd=checkout).assert_success()
    assert "git(url: 'https://git.example/ml/wine.git', branch: 'main')" in outcome.out
