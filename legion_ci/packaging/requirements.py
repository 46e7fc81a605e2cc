"""What the image installs: the serving part of legion-ci and the model's own pinned requirements.

The server's requirements are declared once, in serve-requirements.txt (setup.py reads the same
file), and pinned here to the versions installed on the packaging agent, which are the versions
the tests ran. The model's requirements come from the GPPI binary (the MLflow model's
requirements.txt, pinned when it was trained); MLflow itself is left out when the model's
flavor loads without it, the same rule the GPPI entrypoint follows at serve time.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

from legion_ci.errors import StageError
from legion_ci.gppi.manifest import Manifest

SERVE_REQUIREMENTS = Path(__file__).with_name("serve-requirements.txt")
_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
# Loaded by the GPPI entrypoint without importing MLflow (see gppi/templates/mlflow_entrypoint).
_SKLEARN_FORMATS_WITHOUT_MLFLOW = ("pickle", "cloudpickle", "skops")
_MLFLOW_DISTRIBUTIONS = ("mlflow", "mlflow-skinny")


def canonical(name: str) -> str:
    """PEP 503 name: `Scikit_Learn` and `scikit-learn` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    match = _NAME.match(line)
    return canonical(match.group(1)) if match else None


def _lines(text: str) -> list[str]:
    out = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def serve_requirements() -> list[str]:
    """serve-requirements.txt, each pinned to the version installed here (when installed)."""
    pinned = []
    for line in _lines(SERVE_REQUIREMENTS.read_text(encoding="utf-8")):
        name = requirement_name(line) or line
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pinned.append(line)
    return pinned


def loads_without_mlflow(artifact_dir: Path, manifest: Manifest) -> bool:
    """True when the entrypoint loads this model itself (scikit-learn pickles), not via MLflow."""
    mlmodel_path = Path(artifact_dir) / manifest.work_dir / "MLmodel.json"
    if not mlmodel_path.is_file():
        return True  # not an MLflow-converted binary: MLflow was never its loader
    try:
        flavors = json.loads(mlmodel_path.read_text(encoding="utf-8")).get("flavors") or {}
    except (OSError, ValueError, AttributeError):
        return False
    pyfunc = flavors.get("python_function") or {}
    sklearn = flavors.get("sklearn")
    return bool(
        sklearn
        and pyfunc.get("loader_module") == "mlflow.sklearn"
        and sklearn.get("serialization_format", "cloudpickle") in _SKLEARN_FORMATS_WITHOUT_MLFLOW
    )


def _conda_pip_requirements(path: Path) -> list[str]:
    """conda.yaml's pip list, read with the pipeline loader's limits (size, aliases, depth,
    UTF-8): the file comes from a binary, which may be hostile."""
    from legion_ci.errors import SpecError
    from legion_ci.yaml_loader import load_located

    try:
        data = load_located(path).data
    except SpecError as exc:
        first = (str(exc.problems[0]).splitlines() or [str(path)])[0]
        raise StageError(f"conda environment of the binary: {first}") from None
    if data is None:
        return []
    deps = data.get("dependencies") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(deps, (list, type(None))):
        raise StageError(f"{path}: not a conda environment (a mapping with a dependencies list)")
    for dep in deps or []:
        if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            return [str(item) for item in dep["pip"]]
    return []


def model_requirements(artifact_dir: Path, manifest: Manifest) -> list[str]:
    """The binary's own requirements (requirements.txt, else conda.yaml's pip list)."""
    root = Path(artifact_dir)
    lines: list[str] = []
    source = None
    if manifest.requirements_path and (root / manifest.requirements_path).is_file():
        source = root / manifest.requirements_path
        lines = _lines(source.read_text(encoding="utf-8"))
    elif manifest.conda_path and (root / manifest.conda_path).is_file():
        source = root / manifest.conda_path
        lines = _conda_pip_requirements(source)
    for line in lines:
        if line.startswith("-"):
            # -r / -e / --index-url would reach outside the wheelhouse the image installs from.
            raise StageError(f"{source}: pip option {line.split()[0]!r} is not supported here")
    if loads_without_mlflow(root, manifest):
        lines = [ln for ln in lines if requirement_name(ln) not in _MLFLOW_DISTRIBUTIONS]
    return lines


def merge(serve: list[str], model: list[str]) -> list[str]:
    """One line per distribution; the model's pin wins over the server's (it was trained so)."""
    merged: dict[str, str] = {}
    for line in [*serve, *model]:
        merged[requirement_name(line) or line] = line
    return [merged[name] for name in sorted(merged)]
