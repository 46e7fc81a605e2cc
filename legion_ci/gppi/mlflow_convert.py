"""Turn one MLflow model folder into a GPPI trained model binary folder."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from legion_ci.errors import ModelError
from legion_ci.gppi.manifest import Manifest

WORK_DIR = "legion_model"


def convert_mlflow_model(
    model_dir: Path,
    out_dir: Path,
    *,
    name: str,
    version: str,
    toolchain_version: str,
    output: dict[str, Any] | None = None,
) -> Manifest:
    """Copy `model_dir` (holding an MLmodel file) into a GPPI layout under `out_dir`."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "MLmodel").is_file():
        raise ModelError(f"{model_dir}: not an MLflow model folder (no MLmodel file)")
    work = out_dir / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, work / "model", dirs_exist_ok=True)
    template = resources.files("legion_ci.gppi").joinpath("templates/mlflow_entrypoint.py")
    (work / "entrypoint.py").write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    has_reqs = (work / "model" / "requirements.txt").is_file()
    has_conda = (work / "model" / "conda.yaml").is_file()
    manifest = Manifest(
        model_name=name,
        model_version=version,
        toolchain_name="mlflow",
        toolchain_version=toolchain_version,
        work_dir=WORK_DIR,
        entrypoint="entrypoint",
        dependencies="pip" if has_reqs or not has_conda else "conda",
        conda_path=f"{WORK_DIR}/model/conda.yaml" if has_conda else None,
        requirements_path=f"{WORK_DIR}/model/requirements.txt" if has_reqs else None,
        output=dict(output or {}),
    )
    manifest.write(out_dir)
    return manifest
