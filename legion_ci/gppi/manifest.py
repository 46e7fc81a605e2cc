"""The GPPI manifest: `legion.project.yaml` at the root of a trained model binary.

A binary may come from anywhere, so its manifest is hostile input: it is read with the
pipeline loader's limits (size, aliases, depth, encoding), every field is checked for its type,
and every path it names must stay inside the binary. Each refusal is one ModelError line that
names the binary, the manifest, the line and the field.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from legion_ci.errors import ModelError, SpecError

MANIFEST_NAME = "legion.project.yaml"
# Legion's docs named the manifest legion.model.yaml while its code wrote legion.project.yaml:
# read both, write the one the code used.
MANIFEST_NAMES = (MANIFEST_NAME, "legion.model.yaml")
LEGION_VERSION = "1.0"
# Names and versions end up in HTTP headers, file names and log lines.
MAX_TEXT = 256


class _Fields:
    """Typed access to the manifest's fields; each problem names its line and field."""

    def __init__(self, data: Any, source: str, positions: Any = None):
        self.source = source
        self.positions = positions  # a spec Located, for line numbers
        if not isinstance(data, dict):
            raise self.error((), f"must be a mapping, not {_kind(data)}")
        self.data = data

    def where(self, path: tuple[str, ...]) -> str:
        if self.positions is None:
            return self.source
        line, col = self.positions.position(path)
        return f"{self.source}:{line}:{col}"

    def error(self, path: tuple[str, ...], message: str) -> ModelError:
        name = ".".join(path)
        return ModelError(f"{self.where(path)}: {name + ': ' if name else ''}{message}")

    def section(self, key: str, *, required: bool = False) -> dict[str, Any]:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.error((key,), "missing in the GPPI manifest")
            return {}
        if not isinstance(value, dict):
            raise self.error((key,), f"must be a mapping, not {_kind(value)}")
        return value

    def text(
        self, section: str, key: str, default: str | None = None, *, required: bool = False
    ) -> str:
        value = self.section(section).get(key)
        path = (section, key)
        if value is None:
            if required:
                raise self.error(path, "missing in the GPPI manifest")
            return default if default is not None else ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(path, f"must be a string, not {_kind(value)}")
        text = str(value)
        if required and not text.strip():
            raise self.error(path, "must not be empty")
        if len(text) > MAX_TEXT:
            raise self.error(path, f"longer than {MAX_TEXT} characters")
        if not text.isprintable():  # also U+2028 and the like, which break a line too
            raise self.error(path, "holds control characters or line breaks")
        return text

    def relative_path(self, section: str, key: str, default: str | None = None) -> str | None:
        """A path inside the binary: relative, no '..' (symbolic links: `inside()`)."""
        value = self.text(section, key) or default
        if value is None:
            return None
        parts = PurePosixPath(value).parts
        if PurePosixPath(value).is_absolute() or ".." in parts or value.startswith("~"):
            raise self.error((section, key), f"must stay inside the binary: {value!r}")
        return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "empty"}.get(
        type(value), type(value).__name__
    )


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a free-form manifest section (YAML dates, binary, non-finite)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return str(value)


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
    def from_dict(cls, data: Any, source: str, positions: Any = None) -> Manifest:
        """Check and convert a loaded manifest; `positions` (a spec Located) adds lines."""
        f = _Fields(data, source, positions)
        f.section("model", required=True)
        for name in ("binaries", "toolchain"):
            f.section(name)
        output = f.section("output")
        entrypoint = f.text("model", "entrypoint", "entrypoint")
        if not entrypoint.isidentifier():
            raise f.error(("model", "entrypoint"), f"not a module name: {entrypoint!r}")
        legion_version = data.get("legionVersion", LEGION_VERSION)
        if isinstance(legion_version, (dict, list)):
            raise f.error(("legionVersion",), f"must be a string, not {_kind(legion_version)}")
        return cls(
            model_name=f.text("model", "name", required=True),
            model_version=f.text("model", "version", required=True),
            toolchain_name=f.text("toolchain", "name", "unknown"),
            toolchain_version=f.text("toolchain", "version", ""),
            work_dir=f.relative_path("model", "workDir", "legion_model") or "legion_model",
            entrypoint=entrypoint,
            binaries_type=f.text("binaries", "type", "python"),
            dependencies=f.text("binaries", "dependencies", "pip"),
            conda_path=f.relative_path("binaries", "conda_path"),
            requirements_path=f.relative_path("binaries", "requirements_path"),
            output=_plain(output),
            legion_version=str(legion_version),
        )

    def write(self, root: Path) -> Path:
        import yaml

        path = Path(root) / MANIFEST_NAME
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return path


def find_manifest(root: Path, shown: str | None = None) -> Path:
    for name in MANIFEST_NAMES:
        candidate = Path(root) / name
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"{shown or root}: not a GPPI trained model binary: "
        f"no {' or '.join(MANIFEST_NAMES)} at its root"
    )


def _inside(root: Path, manifest: Manifest, f: _Fields) -> None:
    """Every path the manifest names resolves (symbolic links followed) inside `root`."""
    real_root = root.resolve()
    for path, value in (
        (("model", "workDir"), manifest.work_dir),
        (("binaries", "conda_path"), manifest.conda_path),
        (("binaries", "requirements_path"), manifest.requirements_path),
    ):
        if value is None:
            continue
        try:
            inside = (root / value).resolve().is_relative_to(real_root)
        except (OSError, ValueError, RuntimeError):  # a link loop, a name too long
            inside = False
        if not inside:
            raise f.error(path, f"must stay inside the binary: {value!r} leads outside it")


def read_manifest(root: Path, binary: Path | str | None = None) -> Manifest:
    """Read and check the manifest of the binary unpacked at `root`.

    `binary` is what the user named (a zip), so that messages name it rather than the cache
    folder it was unpacked into. Every problem is a one-line ModelError.
    """
    from legion_ci.yaml_loader import load_located

    root = Path(root)
    path = find_manifest(root, str(binary) if binary else None)
    shown = f"{binary}: {path.name}" if binary else str(path)
    try:
        # The pipeline loader's limits: 1 MiB, UTF-8, 100,000 values (alias bombs), depth 64.
        located = load_located(path, shown)
    except SpecError as exc:
        more = len(exc.problems) - 1
        # One line: PyYAML's reader appends the position on a second one.
        first = (str(exc.problems[0]).splitlines() or [shown])[0]
        raise ModelError(f"{first}{f' (and {more} more problems)' if more else ''}") from None
    manifest = Manifest.from_dict(located.data, shown, located)
    _inside(root, manifest, _Fields(located.data, shown, located))
    return manifest


def check_binary(root: Path, binary: Path | str | None = None) -> Manifest:
    """What every loader refuses before running any of a binary's code: a bad manifest, a
    binary type other than python, a missing entrypoint module."""
    manifest = read_manifest(root, binary)
    shown = binary or root
    if manifest.binaries_type != "python":
        raise ModelError(f"{shown}: binaries.type {manifest.binaries_type!r} is not 'python'")
    module = Path(root) / manifest.work_dir / f"{manifest.entrypoint}.py"
    if not module.is_file():
        raise ModelError(
            f"{shown}: entrypoint {manifest.work_dir}/{manifest.entrypoint}.py is missing"
        )
    return manifest
