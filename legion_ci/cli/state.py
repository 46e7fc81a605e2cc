"""What the running command knows about itself, for the top-level error handler.

A module of its own because `python -m legion_ci.cli.main` loads main.py as __main__, and
state kept there would not be the state the verbs write to.
"""

from __future__ import annotations

# The local command that reproduces the running one (printed when it fails in CI).
reproduce: list[str] | None = None
