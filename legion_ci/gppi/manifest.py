"""The GPPI manifest: `legion.project.yaml` at the root of a trained model binary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legion_ci.errors import ModelError

MANIFEST_NAME = "legion.project.yaml"
# Legion's docs named the manifest legion.model.yaml while its code wrote legion.project.yaml:
# read both, write the one the code used.
MANIFEST_NAMES = (MANIFEST_NAME, "legion.model.yaml")
LEGION_VERSION = "1.0"


@dataclass
class Manifest:
    model_name: str
    model_version: str
    toolchain_name: str
    toolchain_version: str
    work_dir: str = "legion_model"
    entrypoint: str = "entrypoint"
    binaries_type: str = "python"
    dependencies: str = "pip"
    conda_path: str | None = None
    requirements_path: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    legion_version: str = LEGION_VERSION

    def to_dict(self) -> dict[str, Any]:
        binaries: dict[str, Any] = {"type": self.binaries_type, "dependencies": self.dependencies}
        if self.conda_path:
            binaries["conda_path"] = self.conda_path
        if self.requirements_path:
            binaries["requirements_path"] = self.requirements_path
        return {
            "binaries": binaries,
            "legionVersion": self.legion_version,
            "model": {
                "name": self.model_name,
                "version": self.model_version,
                "workDir": self.work_dir,
                "entrypoint": self.entrypoint,
            },
            "toolchain": {"name": self.toolchain_name, "version": self.toolchain_version},
            "output": dict(self.output),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Manifest:
        def need(mapping: Any, key: str, where: str) -> Any:
            if not isinstance(mapping, dict) or key not in mapping:
                raise ModelError(f"{source}: {where}{key}: missing in the GPPI manifest")
            return mapping[key]

        model = need(data, "model", "")
        binaries = data.get("binaries") or {} if isinstance(data, dict) else {}
        toolchain = data.get("toolchain") or {} if isinstance(data, dict) else {}
        work_dir = str(model.get("workDir", "legion_model"))
        entrypoint = str(model.get("entrypoint", "entrypoint"))
        if Path(work_dir).is_absolute() or ".." in Path(work_dir).parts:
            raise ModelError(f"{source}: model.workDir: must stay inside the binary: {work_dir!r}")
        if not entrypoint.isidentifier():
            raise ModelError(f"{source}: model.entrypoint: not a module name: {entrypoint!r}")
        return cls(
            model_name=str(need(model, "name", "model.")),
            model_version=str(need(model, "version", "model.")),
            toolchain_name=str(toolchain.get("name", "unknown")),
            toolchain_version=str(toolchain.get("version", "")),
            work_dir=work_dir,
            entrypoint=entrypoint,
            binaries_type=str(binaries.get("type", "python")),
            dependencies=str(binaries.get("dependencies", "pip")),
            conda_path=binaries.get("conda_path"),
            requirements_path=binaries.get("requirements_path"),
            output=dict(data.get("output") or {}),
            legion_version=str(data.get("legionVersion", LEGION_VERSION)),
        )

    def write(self, root: Path) -> Path:
        import yaml

        path = Path(root) / MANIFEST_NAME
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return path


def find_manifest(root: Path) -> Path:
    for name in MANIFEST_NAMES:
        candidate = Path(root) / name
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"{root}: not a GPPI trained model binary: no {' or '.join(MANIFEST_NAMES)} at its root"
    )


def read_manifest(root: Path) -> Manifest:
    import yaml

    path = find_manifest(root)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ModelError(f"{path}{line}: not valid YAML") from None
    return Manifest.from_dict(data, str(path))
