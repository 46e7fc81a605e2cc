"""What the running command knows about itself, for the top-level error handler.

A module of its own because `python -m legion_ci.cli.main` loads main.py as __main__, and
state kept there would not be the state the verbs write to.
"""

from __future__ import annotations

from typing import Any

# The local command that reproduces the running one (printed when it fails in CI).
reproduce: list[str] | None = None

# `--output json` of run/stage: the top level prints exactly one JSON document on every exit
# code, `document` (the run's result, once there is a record) plus the error when it failed.
json_output: bool = False
document: dict[str, Any] | None = None
