"""What a rendered job checks out when the options do not say: the local checkout's `origin`
remote and current branch, read with git (argument lists, never a shell string)."""

from __future__ import annotations

from pathlib import Path

from legion_ci.errors import InputError
from legion_ci.gitinfo import git_output


def origin_url(root: Path) -> str:
    """The `origin` remote's URL, or a one-line InputError saying to pass --git-url."""
    url = git_output(root, "remote", "get-url", "origin")
    if url is None:
        where = (
            f"the git checkout at {root} has no 'origin' remote"
            if git_output(root, "rev-parse", "--git-dir")
            else f"{root} is not a git checkout"
        )
        raise InputError(
            f"--git-url not given and {where}: pass --git-url (the repository the job checks out)"
        )
    return url


def current_branch(root: Path, default: str = "main") -> str:
    """The checked-out branch; `default` (the job's old default) on a detached HEAD or outside
    a checkout, where there is no branch to name."""
    return git_output(root, "symbolic-ref", "--quiet", "--short", "HEAD") or default
