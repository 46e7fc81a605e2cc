"""GitHub Actions: step summary, step outputs (multi-line safe), error annotations, and
stop-commands around the echoed log."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING

from legion_ci.ci import shareable, terminal
from legion_ci.errors import Problem
from legion_ci.redact import redact

if TYPE_CHECKING:
    from legion_ci.records import RunRecord

NAME = "github"
SHOWS_REPRODUCE = True


def detect(env: Mapping[str, str]) -> bool:
    return env.get("GITHUB_ACTIONS") == "true"


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(problem: Problem, level: str = "error") -> str:
    where = f"file={_escape_property(problem.file)},line={problem.line},col={problem.col}"
    message = f"{problem.path}: {problem.message}" if problem.path else problem.message
    return f"::{level} {where}::{escape_data(message)}"


def annotate(problems: list[Problem], message: str, stream: IO[str]) -> None:
    """One annotation per located problem, else one for the message. The runner reads
    workflow commands from stderr too, so stdout stays clean for --output json."""
    for problem in problems:
        stream.write(annotation(problem) + "\n")
    if not problems:
        stream.write(f"::error title=legion-ci::{escape_data(message)}\n")
    stream.flush()


def guard(stream: IO[str] | None, title: str) -> contextlib.AbstractContextManager[None]:
    """Training output is echoed live; a line of it that looks like a workflow command
    (::add-mask::, ::set-env::, ::error::) must not be obeyed by the Actions runner."""
    resume = secrets.token_hex(16)
    return terminal.between(stream, f"::stop-commands::{resume}\n", lambda: f"::{resume}::\n")


def write_outputs(outputs: Mapping[str, object]) -> None:
    """Append outputs to $GITHUB_OUTPUT using a random heredoc delimiter for every value."""
    target = os.environ.get("GITHUB_OUTPUT")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as handle:
        for name, value in shareable(outputs).items():
            text = value if isinstance(value, str) else json.dumps(value)
            delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
            while delimiter in text:
                delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
            handle.write(f"{name}<<{delimiter}\n{text}\n{delimiter}\n")


def write_summary(record: RunRecord) -> None:
    """The run's Markdown (with its Mermaid chart) on the job's summary page."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        from legion_ci.reports.markdown import render_markdown

        with open(target, "a", encoding="utf-8") as handle:
            handle.write(redact(render_markdown(record)))
