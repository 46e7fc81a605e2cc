"""The build context: a folder a person can read, and rebuild by hand with `docker build`.

Dockerfile         rendered from templates/Dockerfile.in
requirements.txt   the server's and the model's requirements, pinned
wheels/            every wheel they need, plus legion-ci's own (installed offline)
attestations/      the SBOM and provenance (attestations.py), copied to /opt/legion/attestations
model/             the GPPI trained model binary, unzipped, its Python files compiled
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from legion_ci.packaging import dockerfile, wheelhouse
from legion_ci.processes import StageLog, run_logged

# Written by packagers into the artifact dir; not part of the model.
_NOT_MODEL = ("result.json",)
# Where templates/Dockerfile.in copies model/: the path compiled code names in tracebacks.
IMAGE_MODEL_DIR = "/model"


def _readable(root: Path) -> None:
    """The image runs as a non-root user: every model file must be world-readable."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)


def _compile_model(model: Path, python_version: str, log: StageLog) -> None:
    """The model's Python files (its entrypoint) compiled into the context, so the server does
    not compile them at every container start: the image never writes bytecode
    (PYTHONDONTWRITEBYTECODE, and the root file system may be read-only). Checked-hash .pyc:
    valid for exactly these sources whatever their file times, and bytes that depend on
    nothing else (the file names in them are the image's, not this folder's), so the same
    model gives the same layer. A fresh interpreter compiles them, since marshal's output
    depends on what else the compiling process holds."""
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    if ours != python_version:
        log.line(f"model code not precompiled: this is Python {ours}, the image's {python_version}")
        return
    argv = [sys.executable, "-I", "-m", "compileall", "-q", "-d", IMAGE_MODEL_DIR]
    argv += ["--invalidation-mode", "checked-hash"]
    # A file that does not compile is the model's own error, met when the server imports it.
    run_logged([*argv, str(model)], log, what="precompiling the model's Python files", check=False)


def write_context(
    folder: Path,
    *,
    spec: dockerfile.ImageSpec,
    requirements: list[str],
    wheels: Path,
    model_dir: Path,
    python_version: str,
    log: StageLog,
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
    _compile_model(folder / "model", python_version, log)
    _readable(folder / "model")
    (folder / "Dockerfile").write_text(dockerfile.render(spec), encoding="utf-8")
    return folder
