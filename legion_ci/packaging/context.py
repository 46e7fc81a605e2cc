"""The build context: a folder a person can read, and rebuild by hand with `docker build`.

Dockerfile         rendered from templates/Dockerfile.in
requirements.txt   the server's and the model's requirements, pinned
wheels/            every wheel they need, plus legion-ci's own (installed offline)
attestations/      the SBOM and provenance (attestations.py), copied to /opt/legion/attestations
model/             the GPPI trained model binary, unzipped
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from legion_ci.packaging import dockerfile, wheelhouse

# Written by packagers into the artifact dir; not part of the model.
_NOT_MODEL = ("result.json",)


def _readable(root: Path) -> None:
    """The image runs as a non-root user: every model file must be world-readable."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)


def write_context(
    folder: Path,
    *,
    spec: dockerfile.ImageSpec,
    requirements: list[str],
    wheels: Path,
    model_dir: Path,
) -> Path:
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    wheel_dir = folder / "wheels"
    wheelhouse.link_wheels(wheels, wheel_dir)
    spec.legion_ci_wheel = wheelhouse.legion_ci_wheel(wheel_dir).name
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    shutil.copytree(
        model_dir,
        folder / "model",
        ignore=lambda _dir, names: [n for n in names if n in _NOT_MODEL or n == "__pycache__"],
    )
    _readable(folder / "model")
    (folder / "Dockerfile").write_text(dockerfile.render(spec), encoding="utf-8")
    return folder
