"""GitHub Actions: step summary, step outputs (multi-line safe), error annotations."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from typing import IO

from legion_ci.errors import Problem
from legion_ci.redact import ACTIVE, IDENTIFIERS, redact


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(problem: Problem, level: str = "error") -> str:
    where = f"file={_escape_property(problem.file)},line={problem.line},col={problem.col}"
    message = f"{problem.path}: {problem.message}" if problem.path else problem.message
    return f"::{level} {where}::{escape_data(message)}"


def print_annotations(problems: list[Problem], stream: IO[str]) -> None:
    for problem in problems:
        stream.write(annotation(problem) + "\n")
    stream.flush()


def write_outputs(outputs: Mapping[str, object]) -> None:
    """Append outputs to $GITHUB_OUTPUT using a random heredoc delimiter for every value."""
    target = os.environ.get("GITHUB_OUTPUT")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as handle:
        # Later steps read these back: identifiers (run id, paths, image) are kept where a
        # secret shares them; the metrics are free text.
        kept = [(name,) for name in outputs if name != "metrics"]
        for name, value in ACTIVE.fields(dict(outputs), kept, IDENTIFIERS.values()).items():
            text = value if isinstance(value, str) else json.dumps(value)
            delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
            while delimiter in text:
                delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
            handle.write(f"{name}<<{delimiter}\n{text}\n{delimiter}\n")


def append_step_summary(markdown: str) -> None:
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(redact(markdown))
