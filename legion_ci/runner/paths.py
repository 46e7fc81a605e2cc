"""Paths built from pipeline values (model name and version, run ids) stay under their root.

Validation already refuses names with '/' or '..'; this is the second line, at every place a
path is joined from such a value, so a value that slipped past (a record edited by hand, an
`--run-id` option, a future field) cannot make legion-ci write or read elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from legion_ci.errors import InputError


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
