"""Where legion-ci keeps caches and crash logs: $LEGION_CI_CACHE, else ~/.cache/legion-ci."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("LEGION_CI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "legion-ci"
    )
    return Path(base)
