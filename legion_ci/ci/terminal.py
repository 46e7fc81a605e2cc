"""A plain terminal: the default host, and the default implementation other hosts reuse.

The interface every host module provides:
- NAME: str
- detect(env) -> bool: is legion-ci running under this host
- SHOWS_REPRODUCE: bool: print the "reproduce locally" line on failure (it only helps on a
  machine that is not the user's own)
- write_outputs(outputs): hand the run's outputs (CI names) to later steps or jobs
- write_summary(record): a run summary the host shows on its own page
- annotate(problems, message, stream): mark located problems (or one message) in the host's UI
- guard(stream, title): a context manager around the echoed stage log, so a line of it cannot
  be obeyed as one of the host's own commands (and, where the host can, folds it)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import IO, TYPE_CHECKING

from legion_ci.errors import Problem

if TYPE_CHECKING:
    from legion_ci.records import RunRecord

NAME = "terminal"
SHOWS_REPRODUCE = False


def detect(env: Mapping[str, str]) -> bool:
    return True


def write_outputs(outputs: Mapping[str, object]) -> None:
    """A terminal has no later step: the outputs are in the summary and the JSON."""


def write_summary(record: RunRecord) -> None:
    """The summary printed on stdout is all a terminal shows."""


def annotate(problems: list[Problem], message: str, stream: IO[str]) -> None:
    """The error lines already printed are the annotation."""


@contextlib.contextmanager
def guard(stream: IO[str] | None, title: str) -> Iterator[None]:
    """A terminal obeys no commands in its output."""
    yield


@contextlib.contextmanager
def between(stream: IO[str] | None, opening: str, closing: Callable[[], str]) -> Iterator[None]:
    """Write `opening` before the body and `closing()` after it, also when it fails: how a
    host brackets the echoed log. Nothing when the log is not echoed."""
    if stream is None:
        yield
        return
    stream.write(opening)
    stream.flush()
    try:
        yield
    finally:
        stream.write(closing())
        stream.flush()
