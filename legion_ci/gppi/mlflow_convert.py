"""Turn one MLflow model folder into a GPPI trained model binary folder."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from legion_ci.errors import ModelError
from legion_ci.gppi.manifest import Manifest

WORK_DIR = "legion_model"


def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    import yaml

    path = Path(model_dir) / "MLmodel"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: not a readable MLmodel file: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a readable MLmodel file: not a mapping")
    return data


def _drop_machine_paths(mlmodel: dict[str, Any]) -> bool:
    """MLflow records where a local store kept the artifacts (`artifact_path:
    file:///home/...`); a path of the training machine means nothing where the binary is
    served, so it is left out. Returns whether anything was dropped."""
    value = mlmodel.get("artifact_path")
    if isinstance(value, str) and (value.startswith("file:") or value.startswith("/")):
        del mlmodel["artifact_path"]
        return True
    return False


def convert_mlflow_model(
    model_dir: Path,
    out_dir: Path,
    *,
    name: str,
    version: str,
    toolchain_version: str,
    output: dict[str, Any] | None = None,
) -> Manifest:
    """Copy `model_dir` (holding an MLmodel file) into a GPPI layout under `out_dir`.

    Layout: legion.project.yaml, legion_model/entrypoint.py (the template),
    legion_model/MLmodel.json and legion_model/model/ (the MLflow model, untouched).
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "MLmodel").is_file():
        raise ModelError(f"{model_dir}: not an MLflow model folder (no MLmodel file)")
    mlmodel = read_mlmodel(model_dir)
    if "python_function" not in (mlmodel.get("flavors") or {}):
        flavors = ", ".join(sorted(mlmodel.get("flavors") or {})) or "none"
        raise ModelError(
            f"{model_dir}: the MLflow model has no python_function flavor (has: {flavors}); "
            "a GPPI binary needs a pyfunc model"
        )
    work = out_dir / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, work / "model", dirs_exist_ok=True)
    if _drop_machine_paths(mlmodel):
        import yaml

        (work / "model" / "MLmodel").write_text(
            yaml.safe_dump(mlmodel, sort_keys=False), encoding="utf-8"
        )
    # The entrypoint reads this instead of MLmodel, so it needs no YAML parser at serve time.
    (work / "MLmodel.json").write_text(json.dumps(mlmodel, indent=1, default=str), encoding="utf-8")
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
