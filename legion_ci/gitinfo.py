"""What git says about the checkout a pipeline lives in (commit, origin, branch), read with
argument lists and a time bound; None where git is missing, slow or the folder is no checkout.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_output(folder: Path, *args: str) -> str | None:
    """`git -C folder ARGS`'s stripped stdout, or None when it fails or prints nothing."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = proc.stdout.strip()
    return value if proc.returncode == 0 and value else None


def git_commit(folder: Path) -> str | None:
    """The checked-out commit's full sha."""
    commit = git_output(folder, "rev-parse", "HEAD")
    return commit if commit and len(commit) == 40 else None


def commit_time(folder: Path) -> int | None:
    """HEAD's committer time in seconds since the epoch (what SOURCE_DATE_EPOCH means)."""
    stamp = git_output(folder, "show", "-s", "--format=%ct", "HEAD")
    return int(stamp) if stamp and stamp.isdigit() else None


def relative_to_top(path: Path) -> str | None:
    """`path` relative to the top of its checkout (the same in every clone), or None."""
    top = git_output(path.parent, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    try:
        return path.resolve().relative_to(Path(top).resolve()).as_posix()
    except ValueError:
        return None
