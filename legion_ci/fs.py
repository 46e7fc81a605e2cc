"""Paths: file tests that answer False instead of raising for paths the OS refuses to look at
(`File name too long`, a loop of symlinks), which validation reports as missing, located; and
`inside`, which keeps a path built from pipeline values (model name and version, run ids)
under its root.

Validation already refuses names with '/' or '..'; `inside` is the second line, at every place
a path is joined from such a value, so a value that slipped past (a record edited by hand, an
`--run-id` option, a future field) cannot make legion-ci write or read elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from legion_ci.errors import InputError


def is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def inside(root: Path | str, *parts: str) -> Path:
    """`root` joined with `parts`; InputError when the result would leave `root` (an
    absolute part, a '..' that climbs out, an empty name)."""
    base = os.path.normpath(os.path.abspath(root))
    joined = os.path.normpath(os.path.join(base, *parts))
    if (
        not parts
        or any(not part or "\0" in part for part in parts)
        or (os.path.commonpath([base, joined]) != base or joined == base)
    ):
        shown = "/".join(parts).encode("unicode_escape").decode("ascii")
        raise InputError(f"{shown!r} would leave {root}; refused")
    return Path(root).joinpath(*parts)
