"""What the image installs: the serving part of legion-ci and the model's own pinned requirements.

The server's requirements are declared once, in serve-requirements.txt (setup.py reads the same
file), and pinned here to the versions installed on the packaging agent, which are the versions
the tests ran. The model's requirements come from the GPPI binary (the MLflow model's
requirements.txt, pinned when it was trained); MLflow itself is left out when the model's
flavor loads without it, the same rule the GPPI entrypoint follows at serve time.

MLflow infers a model's requirements from what the training process had imported, so a model
trained under a test runner lists `pytest` and `rich`, which the model never imports. For a
scikit-learn model the entrypoint loads itself, the image keeps only what that loader needs:
scikit-learn, numpy, pandas, the serialization library, and whatever those require (read from
the installed distributions' metadata here, where the tests ran with the same pins).
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

from legion_ci.errors import StageError
from legion_ci.gppi.manifest import Manifest
from legion_ci.processes import StageLog

SERVE_REQUIREMENTS = Path(__file__).with_name("serve-requirements.txt")
_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
# Loaded by the GPPI entrypoint without importing MLflow (see gppi/templates/mlflow_entrypoint).
_SKLEARN_FORMATS_WITHOUT_MLFLOW = ("pickle", "cloudpickle", "skops")
_MLFLOW_DISTRIBUTIONS = ("mlflow", "mlflow-skinny")
# What the entrypoint imports to load and call a scikit-learn model without MLflow.
_SKLEARN_LOADER = ("scikit-learn", "numpy", "pandas")
_FORMAT_LIBRARY = {"skops": "skops", "cloudpickle": "cloudpickle", "pickle": None}


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


def _sklearn_format(artifact_dir: Path, manifest: Manifest) -> str | None:
    """The serialization format of a scikit-learn model the entrypoint loads itself (not via
    MLflow); None for any other binary."""
    mlmodel_path = Path(artifact_dir) / manifest.work_dir / "MLmodel.json"
    try:
        flavors = json.loads(mlmodel_path.read_text(encoding="utf-8")).get("flavors") or {}
        pyfunc = flavors.get("python_function") or {}
        sklearn = flavors.get("sklearn")
        fmt = sklearn.get("serialization_format", "cloudpickle") if sklearn else None
    except (OSError, ValueError, AttributeError):
        return None
    if pyfunc.get("loader_module") == "mlflow.sklearn" and fmt in _SKLEARN_FORMATS_WITHOUT_MLFLOW:
        return str(fmt)
    return None


def loads_without_mlflow(artifact_dir: Path, manifest: Manifest) -> bool:
    """True when the entrypoint loads this model itself (scikit-learn pickles), not via MLflow."""
    if not (Path(artifact_dir) / manifest.work_dir / "MLmodel.json").is_file():
        return True  # not an MLflow-converted binary: MLflow was never its loader
    return _sklearn_format(artifact_dir, manifest) is not None


def _installed_closure(roots: list[str]) -> set[str] | None:
    """`roots` and every distribution they require (extras and markers that do not apply
    here left out), from the installed metadata; None when a root is not installed, since
    then nothing can be proven unneeded."""
    from packaging.requirements import InvalidRequirement, Requirement

    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            if name in roots:
                return None
            requires = []
        seen.add(name)
        for line in requires:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _unneeded(lines: list[str], fmt: str) -> list[str]:
    """The lines a scikit-learn model in format `fmt` does not need to load and predict."""
    library = _FORMAT_LIBRARY.get(fmt)
    needed = _installed_closure([*_SKLEARN_LOADER, *([library] if library else [])])
    if needed is None:
        return []
    return [ln for ln in lines if (requirement_name(ln) or ln) not in needed]


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


def model_requirements(
    artifact_dir: Path, manifest: Manifest, log: StageLog | None = None
) -> list[str]:
    """The binary's own requirements (requirements.txt, else conda.yaml's pip list), less what
    its flavor's loader does not need (said in `log`)."""
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
    fmt = _sklearn_format(root, manifest)
    dropped = _unneeded(lines, fmt) if fmt else []
    if dropped and log is not None:
        log.line(
            f"image requirements: left out {', '.join(dropped)}: the scikit-learn model"
            f" ({fmt}) loads and predicts without them (MLflow listed them from the training"
            " environment)"
        )
    return [ln for ln in lines if ln not in dropped]


def merge(serve: list[str], model: list[str]) -> list[str]:
    """One line per distribution; the model's pin wins over the server's (it was trained so)."""
    merged: dict[str, str] = {}
    for line in [*serve, *model]:
        merged[requirement_name(line) or line] = line
    return [merged[name] for name in sorted(merged)]
