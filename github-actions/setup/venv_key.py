"""Where the legion-ci virtual environment lives, what pip installs into it, its cache key.

Run by the setup action with the Python the environment is made from; inputs come from the
environment (LEGION_CI_SPEC, LEGION_CI_VERSION), results go to $GITHUB_OUTPUT. The folder is
under the runner's tool cache, a path that stays the same between jobs, so a restored (or, on
a self-hosted runner, left over) environment works where it was made. A local folder spec is
keyed by its dependency declarations only: the install step reinstalls the package itself from
the folder every time, which takes seconds, while the dependencies stay cached.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
from pathlib import Path

DECLARATIONS = ("setup.py", "setup.cfg", "pyproject.toml", "requirements.txt")
# Each output is one `name=value` line: a newline in a value would add lines (a second
# `venv=`, naming a folder the install step then deletes). C0, DEL, C1 and the Unicode line
# separators are refused wherever they come from.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _refuse_control(name: str, value: str) -> None:
    if CONTROL.search(value):
        print(f"::error title=legion-ci setup::{name} holds a control character (a newline?)")
        sys.exit(2)


def _declarations_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in DECLARATIONS:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def main() -> None:
    spec = os.environ.get("LEGION_CI_SPEC", "").strip()
    version = os.environ.get("LEGION_CI_VERSION", "").strip()
    _refuse_control("legion-ci-spec", spec)
    _refuse_control("legion-ci-version", version)
    if not spec and not version:
        print("::error title=legion-ci setup::set legion-ci-version or legion-ci-spec")
        sys.exit(2)
    requirement = spec or f"legion-ci=={version}"
    local = bool(spec) and Path(spec).is_dir()
    source = f"local:{_declarations_hash(Path(spec))}" if local else requirement
    python = platform.python_version()
    fingerprint = hashlib.sha256(f"{python}\0{sys.prefix}\0{source}".encode()).hexdigest()[:16]
    tool_cache = os.environ.get("RUNNER_TOOL_CACHE") or os.environ.get("RUNNER_TEMP") or "."
    venv = Path(tool_cache, "legion-ci", fingerprint).resolve()
    os_name = os.environ.get("RUNNER_OS", platform.system())
    arch = os.environ.get("RUNNER_ARCH", platform.machine())
    outputs = {
        "venv": str(venv),
        "requirement": str(Path(spec).resolve()) if local else requirement,
        "local": "true" if local else "false",
        "key": f"legion-ci-venv-{os_name}-{arch}-py{python}-{fingerprint}",
    }
    for name, value in outputs.items():
        _refuse_control(f"the {name} output", value)  # e.g. from RUNNER_TOOL_CACHE
    with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as handle:
        for name, value in outputs.items():
            handle.write(f"{name}={value}\n")


if __name__ == "__main__":
    main()
