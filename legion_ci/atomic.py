"""Atomic file output: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: Path, *, binary: bool = False, private: bool = False) -> Iterator[IO[Any]]:
    """Yield a handle on a temporary file beside `path`; on success fsync and rename it into
    place, on any failure (Ctrl-C included) remove it. `private` keeps it owner-only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if not private:
            # mkstemp makes 0600 files; what holds no secret follows the umask like any file.
            os.chmod(fd, 0o666 & ~_umask())
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write text atomically, through the redactor: no file legion-ci writes holds a secret."""
    from legion_ci.redact import redact

    with atomic_output(path) as handle:
        handle.write(redact(text))
