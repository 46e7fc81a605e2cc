"""Secret references: `${env:NAME}` and `${file:path}`, resolved after validation.

Values resolved for credential fields are handed to the Redactor, so logs and reports show
`***` in their place.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from legion_ci.errors import Problem
from legion_ci.yaml_loader import Located, PathT, UnreadableFile, one_line, read_capped

REFERENCE = re.compile(r"\$\{(env|file):([^}]*)\}")
# A password, token or key is a few hundred bytes; a certificate bundle a few dozen KiB.
MAX_SECRET_BYTES = 64 * 1024


def resolve_references(
    located: Located,
    base_dir: Path,
    secret_paths: set[PathT],
    environ: dict[str, str] | None = None,
    optional: set[PathT] = frozenset(),  # type: ignore[assignment]
) -> tuple[Any, list[str], list[Problem]]:
    """Return (data with references substituted, secret values, problems).

    A reference under a path in `optional` (the connections a `legion-ci stage` run does not
    use) that cannot be resolved is left empty rather than being a problem: a training agent
    needs no registry password."""
    env = os.environ if environ is None else environ
    secrets: list[str] = []
    problems: list[Problem] = []

    def resolve_string(text: str, path: PathT) -> str:
        def one(match: re.Match[str]) -> str:
            kind, name = match.group(1), match.group(2).strip()
            if not name:
                problems.append(located.problem(path, f"empty ${{{kind}:}} reference"))
                return ""
            if kind == "env":
                if name not in env:
                    if path[:2] in optional:
                        return ""
                    problems.append(
                        located.problem(
                            path, f"environment variable {name} is not set (${{env:{name}}})"
                        )
                    )
                    return ""
                value = env[name]
            else:
                file_path = base_dir / name
                shown = one_line(name)
                try:
                    raw = read_capped(file_path, MAX_SECRET_BYTES)
                    value = raw.decode("utf-8").rstrip("\r\n")
                except UnreadableFile as exc:
                    if path[:2] in optional:
                        return ""
                    problems.append(located.problem(path, f"secret file {shown}: {exc}"))
                    return ""
                except UnicodeDecodeError as exc:
                    problems.append(
                        located.problem(
                            path, f"secret file {shown} is not UTF-8 text (byte {exc.start})"
                        )
                    )
                    return ""
            if path in secret_paths or kind == "file":
                secrets.append(value)
            return value

        return REFERENCE.sub(one, text)

    def walk(value: Any, path: PathT) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return resolve_string(value, path)
        return value

    return walk(located.data, ()), secrets, problems
