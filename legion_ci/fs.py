"""File tests that answer False instead of raising for paths the OS refuses to look at
(`File name too long`, a loop of symlinks): validation reports those as missing, located."""

from __future__ import annotations

from pathlib import Path


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
