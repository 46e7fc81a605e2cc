"""One error family: every expected failure is a LegionError with its own exit code.

The CLI turns a LegionError into a one-line message and its exit code; anything else is an
internal error (exit 3) whose traceback goes to a log file, never to the user's terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_STAGE_FAILED = 1
EXIT_INVALID_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class LegionError(Exception):
    """Base of every error legion-ci expects; `str()` is the one-line message."""

    exit_code = EXIT_INTERNAL


class InputError(LegionError):
    """The user's input (a file, an option, an argument) is wrong."""

    exit_code = EXIT_INVALID_INPUT


@dataclass(frozen=True)
class Problem:
    """One validation problem, located in a file."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpecError(InputError):
    """A pipeline or registration file is invalid; carries every problem found at once."""

    # A file with 60,000 unknown keys must not print 60,000 lines.
    SHOWN = 50

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.col, p.path))
        super().__init__("\n".join(self.lines()))

    @property
    def shown(self) -> list[Problem]:
        return self.problems[: self.SHOWN]

    def lines(self) -> list[str]:
        lines = [str(p) for p in self.shown]
        hidden = len(self.problems) - len(self.shown)
        if hidden > 0:
            lines.append(f"... and {hidden} more error{'s' if hidden != 1 else ''} not shown")
        return lines


class StageError(LegionError):
    """A stage ran and failed (training exited non-zero, a gate failed, ...)."""

    exit_code = EXIT_STAGE_FAILED


class GateError(StageError):
    """A quality gate on a training metric failed."""


class ModelError(StageError):
    """A trained model binary is malformed or fails its self-check."""


class StorageError(LegionError):
    """The disk is full (or the quota used up): nothing legion-ci can fix, exit 1."""

    exit_code = EXIT_STAGE_FAILED


def storage_error(exc: OSError) -> StorageError | None:
    """A StorageError for a full disk or quota, else None."""
    import errno

    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return StorageError(f"the disk is full{where}: {exc.strerror}; free some space and re-run")


class Cancelled(LegionError):
    """The run was interrupted by Ctrl-C or SIGTERM."""

    exit_code = EXIT_INTERRUPTED
