"""Where the legion-ci virtual environment lives, what pip installs into it, its cache key.

Run by the setup action with the Python the environment is made from; inputs come from the
environment (LEGION_CI_SPEC, LEGION_CI_VERSION), results go to $GITHUB_OUTPUT. The folder is
under the runner's tool cache, a path that stays the same between jobs, so a restored (or, on
a self-hosted runner, left over) environment works where it was made. A local folder spec is
keyed by the hash of its files, so a changed checkout gets a fresh environment.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

SKIPPED_DIRS = {".git", ".legion", ".venv", "__pycache__", "node_modules", "build", "dist"}


def _tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = Path(root, name)
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def main() -> None:
    spec = os.environ.get("LEGION_CI_SPEC", "").strip()
    version = os.environ.get("LEGION_CI_VERSION", "").strip()
    if not spec and not version:
        print("::error title=legion-ci setup::set legion-ci-version or legion-ci-spec")
        sys.exit(2)
    requirement = spec or f"legion-ci=={version}"
    source = _tree_hash(Path(spec)) if spec and Path(spec).is_dir() else requirement
    python = platform.python_version()
    fingerprint = hashlib.sha256(f"{python}\0{sys.prefix}\0{source}".encode()).hexdigest()[:16]
    tool_cache = os.environ.get("RUNNER_TOOL_CACHE") or os.environ.get("RUNNER_TEMP") or "."
    venv = Path(tool_cache, "legion-ci", fingerprint).resolve()
    os_name = os.environ.get("RUNNER_OS", platform.system())
    arch = os.environ.get("RUNNER_ARCH", platform.machine())
    outputs = {
        "venv": str(venv),
        "requirement": str(Path(spec).resolve()) if spec and Path(spec).is_dir() else requirement,
        "key": f"legion-ci-venv-{os_name}-{arch}-py{python}-{fingerprint}",
    }
    with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as handle:
        for name, value in outputs.items():
            handle.write(f"{name}={value}\n")


if __name__ == "__main__":
    main()
