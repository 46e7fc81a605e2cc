"""What a docker-rest image says about itself: a CycloneDX SBOM of its Python environment and an
in-toto Statement with a SLSA v1 provenance predicate.

Both are made from what goes into the image (the build context's wheelhouse, the base image
reference, the pipeline file, the commit) and nothing else: no wall-clock time (the SBOM's
timestamp is SOURCE_DATE_EPOCH), no random ids (the serial number is a uuid5 of the inputs),
no connection (so no secret can reach them). The same inputs give the same bytes, which keeps
the buildah image reproducible with both files inside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from legion_ci.errors import StageError
from legion_ci.gitinfo import commit_time, relative_to_top
from legion_ci.gppi.archive import sha256_file
from legion_ci.packaging.requirements import canonical
from legion_ci.processes import StageLog
from legion_ci.version import __version__

# Where the image holds them, and their names in the run's artifacts and the build context.
IMAGE_DIR = "/opt/legion/attestations"
CONTEXT_DIR = "attestations"
SBOM_FILE = "sbom.cdx.json"
PROVENANCE_FILE = "provenance.intoto.json"
SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
PROVENANCE_MEDIA_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:legion-ci:build-type:docker-rest:v1"
# The Dockerfile uninstalls these from the venv after the install.
_REMOVED = {"pip", "setuptools"}
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
_SERIAL_NAMESPACE = uuid.UUID("6f1b6c55-2a56-5b8a-9a57-4c5e6a1d0b3e")


def source_date_epoch(pipeline_file: Path | None, log: StageLog) -> int | None:
    """SOURCE_DATE_EPOCH when the user set it, else the commit time of HEAD of the checkout the
    pipeline lives in, else None (the build is then not reproducible, and the log says so)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        if not epoch.isdigit():
            raise StageError(f"SOURCE_DATE_EPOCH: {epoch!r} is not whole seconds")
        log.line(f"SOURCE_DATE_EPOCH={epoch} (set in the environment)")
        return int(epoch)
    folder = pipeline_file.parent if pipeline_file else None
    found = commit_time(folder) if folder else None
    if found is None:
        log.line("SOURCE_DATE_EPOCH: not set and no git commit: timestamps are the build's")
        return None
    log.line(f"SOURCE_DATE_EPOCH={found} (commit time of HEAD in {folder})")
    return found


def wheel_name_version(filename: str) -> tuple[str, str] | None:
    found = _WHEEL.match(filename)
    if not found:
        return None
    return canonical(found["name"]), found["version"]


@dataclass
class Inputs:
    """Everything both documents are made from."""

    image: str  # the image name, without a registry
    model_name: str
    model_version: str
    base_image: str
    base_digest: str | None  # "sha256:..." when the base came from a registry
    wheels: Path  # the build context's wheels/
    legion_ci_wheel: str  # its file name in wheels/
    model_artifact: Path  # the trained model binary
    run_id: str
    git_commit: str | None
    pipeline_file: Path | None
    builder: str  # docker | buildah
    builder_version: str
    epoch: int | None
    context_digest: str = ""  # filled by context_digest() before the documents are made
    wheel_hashes: dict[str, str] = field(default_factory=dict)


def context_digest(folder: Path, wheel_hashes: dict[str, str] | None = None) -> str:
    """sha256 over the build context's files (relative path, mode bit x, content hash), in
    path order, without the attestations folder, which is written after it. The wheels'
    hashes go into `wheel_hashes` (by file name), so the SBOM reads each wheel once."""
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        top = relative.split("/", 1)[0]
        if top == CONTEXT_DIR:
            continue
        executable = "x" if os.access(path, os.X_OK) else "-"
        digest = sha256_file(path)
        if top == "wheels" and wheel_hashes is not None:
            wheel_hashes[path.name] = digest
        lines.append(f"{relative}\0{executable}\0{digest}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def _installed_wheels(inputs: Inputs) -> list[tuple[str, str, str, str]]:
    """(name, version, file, sha256) of every wheel pip installs from the context."""
    found = []
    for path in sorted(inputs.wheels.glob("*.whl")):
        parsed = wheel_name_version(path.name)
        if parsed is None or parsed[0] in _REMOVED:
            continue
        digest = inputs.wheel_hashes.get(path.name) or sha256_file(path)
        inputs.wheel_hashes[path.name] = digest
        found.append((*parsed, path.name, digest))
    return found


def sbom(inputs: Inputs) -> str:
    """The CycloneDX 1.6 JSON SBOM: the image, its base, the model and every Python package."""
    try:
        from cyclonedx.model import HashAlgorithm, HashType, Property
        from cyclonedx.model.bom import Bom, BomMetaData
        from cyclonedx.model.bom_ref import BomRef
        from cyclonedx.model.component import Component, ComponentType
        from cyclonedx.output.json import JsonV1Dot6
        from packageurl import PackageURL
    except ImportError:
        raise StageError(
            "SBOM: cyclonedx-python-lib is not installed (pip install cyclonedx-python-lib)"
        ) from None

    def sha256(value: str) -> list[Any]:
        return [HashType(alg=HashAlgorithm.SHA_256, content=value)]

    wheels = _installed_wheels(inputs)
    packages = [
        Component(
            type=ComponentType.LIBRARY,
            name=name,
            version=version,
            purl=PackageURL(type="pypi", name=name, version=version),
            bom_ref=BomRef(f"pkg:pypi/{name}@{version}"),
            hashes=sha256(digest),
            properties=[Property(name="legion:wheel", value=filename)],
        )
        for name, version, filename, digest in wheels
    ]
    base = Component(
        type=ComponentType.CONTAINER,
        name=inputs.base_image,
        version=inputs.base_digest,
        bom_ref=BomRef("base-image"),
        description="the base image the model image is built on",
    )
    model = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=inputs.model_name,
        version=inputs.model_version,
        bom_ref=BomRef("model"),
        hashes=sha256(sha256_file(inputs.model_artifact)),
        properties=[Property(name="legion:artifact", value=inputs.model_artifact.name)],
    )
    image = Component(
        type=ComponentType.CONTAINER,
        name=inputs.image,
        version=inputs.model_version,
        bom_ref=BomRef("image"),
        properties=[
            Property(name="legion:run_id", value=inputs.run_id),
            Property(name="legion:python_environment", value="/opt/legion/venv"),
        ],
    )
    # The serial number names these inputs: the same packages and image, the same number.
    key = json.dumps(
        [inputs.image, inputs.base_image, inputs.base_digest, inputs.run_id, wheels], default=str
    )
    stamp = datetime.fromtimestamp(inputs.epoch, UTC) if inputs.epoch is not None else None
    bom = Bom(
        components=[base, model, *packages],
        metadata=BomMetaData(component=image, timestamp=stamp),
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, key),
    )
    bom.register_dependency(image, [base, model, *packages])
    document = json.loads(JsonV1Dot6(bom).output_as_string())
    if stamp is None:
        # The library stamps "now" when given nothing; a timestamp-less SBOM is still valid.
        document["metadata"].pop("timestamp", None)
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def _pipeline_parameters(pipeline_file: Path | None) -> dict[str, Any]:
    if pipeline_file is None or not pipeline_file.is_file():
        return {}
    # Relative to the checkout's top: the same in every clone of the commit.
    path = relative_to_top(pipeline_file) or pipeline_file.name
    return {"path": path, "sha256": sha256_file(pipeline_file)}


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1] if ":" in digest else digest


def provenance(inputs: Inputs, subjects: list[tuple[str, str]]) -> str:
    """The in-toto Statement v1 with a SLSA v1 provenance predicate, about `subjects` (name,
    "sha256:..."): inside the image, the build context; in the registry, the image."""
    external: dict[str, Any] = {
        "image": inputs.image,
        "model": {"name": inputs.model_name, "version": inputs.model_version},
        "baseImage": inputs.base_image,
    }
    pipeline = _pipeline_parameters(inputs.pipeline_file)
    if pipeline:
        external["pipeline"] = pipeline
    if inputs.git_commit:
        external["gitCommit"] = inputs.git_commit
    base: dict[str, Any] = {"name": "base-image", "uri": inputs.base_image}
    if inputs.base_digest:
        base["digest"] = {"sha256": _hex(inputs.base_digest)}
    dependencies = [
        base,
        {"name": "build-context", "digest": {"sha256": _hex(inputs.context_digest)}},
        {
            "name": "model",
            "uri": inputs.model_artifact.name,
            "digest": {"sha256": sha256_file(inputs.model_artifact)},
        },
    ]
    if inputs.git_commit:
        dependencies.append({"name": "source", "digest": {"gitCommit": inputs.git_commit}})
    internal: dict[str, Any] = {"legionCiWheel": inputs.legion_ci_wheel}
    if inputs.epoch is not None:
        internal["sourceDateEpoch"] = inputs.epoch
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": _hex(d)}} for name, d in subjects],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": internal,
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": f"urn:legion-ci:builder:{inputs.builder}",
                    "version": {
                        **(
                            {inputs.builder: inputs.builder_version}
                            if inputs.builder_version
                            else {}
                        ),
                        "legion-ci": __version__,
                    },
                },
                "metadata": {"invocationId": inputs.run_id},
            },
        },
    }
    return json.dumps(statement, indent=1, sort_keys=True) + "\n"


def write_into_context(folder: Path, inputs: Inputs) -> dict[str, str]:
    """Both documents into the context's attestations/ (copied to IMAGE_DIR by the Dockerfile);
    the provenance there is about the build context, since an image cannot name its own
    digest. Returns {file name: text}."""
    inputs.context_digest = context_digest(folder, inputs.wheel_hashes)
    documents = {
        SBOM_FILE: sbom(inputs),
        PROVENANCE_FILE: provenance(inputs, [("build-context", inputs.context_digest)]),
    }
    target = folder / CONTEXT_DIR
    target.mkdir(exist_ok=True)
    for name, text in documents.items():
        (target / name).write_text(text, encoding="utf-8")
        os.chmod(target / name, 0o644)
    os.chmod(target, 0o755)
    return documents


def write_artifacts(out_dir: Path, documents: dict[str, str]) -> dict[str, str]:
    """The run's copies (outputs `sbom` and `provenance`): their paths."""
    from legion_ci.atomic import write_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in documents.items():
        write_atomic(out_dir / name, text)
        paths[name] = str(out_dir / name)
    return {"sbom": paths[SBOM_FILE], "provenance": paths[PROVENANCE_FILE]}
