"""The docker-rest image's SBOM and provenance, for real: one buildah build (no Docker engine)
from a pipeline in a git checkout, pushed to Debian's registry (htpasswd); the SBOM against
what is installed in the image, the provenance's fields, the documents inside the image and
beside it in the registry (fetched by `legion-ci attestations`), and no secret in any of them.
The reproducibility of the image with both documents inside is
tests/test_buildah_packaging.py's two-clean-builds test."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from docker_support import (
    BASE_IMAGE,
    base_tarball,
    package_ctx,
    push_target,
    registry_tags,
    tiny_binary,
)

from legion_ci.packaging import attestations, buildah
from legion_ci.packaging.docker_rest import DockerRestPackager
from legion_ci.packaging.requirements import canonical

pytestmark = [pytest.mark.slow]

COMMIT_TIME = 1_750_000_000
RUN_ID = "20261206-090000-att123"


def _git(folder: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": f"@{COMMIT_TIME} +0000",
        "GIT_COMMITTER_DATE": f"@{COMMIT_TIME} +0000",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    done = subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def _podman(store: buildah.Storage, *args: str) -> str:
    done = subprocess.run(["podman", *store.options, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def packed(tmp_path_factory, reg, wheel_cache) -> Iterator[dict[str, Any]]:
    """One buildah build and push of a pipeline committed in a git checkout."""
    root = tmp_path_factory.mktemp("att")
    store = buildah.storage(root / "buildah")
    _podman(store, "import", str(base_tarball()), BASE_IMAGE)
    checkout = root / "checkout"
    (checkout / "ml").mkdir(parents=True)
    pipeline = checkout / "ml" / "legion-ci.yaml"
    pipeline.write_text("model: {name: tinyatt, version: '1.0'}\n")
    _git(checkout, "init", "-q")
    _git(checkout, "add", ".")
    _git(checkout, "commit", "-q", "-m", "pipeline")
    commit = _git(checkout, "rev-parse", "HEAD")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", f"unix://{root}/no-dockerd.sock")
        patch.setenv(buildah.ROOT_ENV, str(store.root))
        patch.setenv("LEGION_CI_CACHE", str(wheel_cache))
        patch.delenv("SOURCE_DATE_EPOCH", raising=False)
        ctx = package_ctx(
            tiny_binary(root, "tinyatt"),
            root / "w",
            run_id=RUN_ID,
            git_commit=commit,
            targets=[push_target(reg.address, reg.user, reg.password)],
            arguments={"baseImage": BASE_IMAGE, "builder": "buildah"},
        )
        ctx.pipeline_file = pipeline
        outputs = DockerRestPackager().pack(ctx).outputs
    yield {
        "out": outputs,
        "store": store,
        "root": root,
        "commit": commit,
        "pipeline": pipeline,
        "log": (root / "w" / "package.log").read_text(),
    }
    subprocess.run(["umount", str(store.root / "storage" / "overlay")], capture_output=True)


def _load(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _local(packed: dict[str, Any]) -> str:
    """The built image's name in the storage (outputs name the pushed one)."""
    return packed["out"]["image"].split("/", 1)[1]


def _in_image(packed: dict[str, Any], *argv: str) -> str:
    image = _local(packed)
    return _podman(
        packed["store"], "run", "--rm", "--network", "none", *buildah._ulimits(), image, *argv
    )


def test_sbom_lists_what_is_installed_in_the_image(packed):
    sbom = _load(packed["out"]["sbom"])
    listed = {
        (c["name"], c["version"])
        for c in sbom["components"]
        if c.get("purl", "").startswith("pkg:pypi/")
    }
    # What the image's venv holds, read by its own Python (pip itself is uninstalled there).
    script = (
        "import importlib.metadata as m, json; "
        "print(json.dumps(sorted({(d.metadata['Name'], d.version) for d in m.distributions()})))"
    )
    installed = json.loads(_in_image(packed, "/opt/legion/venv/bin/python", "-c", script))
    assert listed == {(canonical(name), version) for name, version in installed}
    assert ("legion-ci", "0.1.0") in listed and len(listed) > 5
    # Every package names its wheel and that wheel's sha256, as in the build context.
    wheels = Path(packed["out"]["context"]) / "wheels"
    for component in sbom["components"]:
        if component.get("purl", "").startswith("pkg:pypi/"):
            assert component["purl"] == f"pkg:pypi/{component['name']}@{component['version']}"
            wheel = next(p["value"] for p in component["properties"] if p["name"] == "legion:wheel")
            digest = hashlib.sha256((wheels / wheel).read_bytes()).hexdigest()
            assert component["hashes"] == [{"alg": "SHA-256", "content": digest}]
    base = next(c for c in sbom["components"] if c["bom-ref"] == "base-image")
    assert base["name"] == BASE_IMAGE
    # No wall clock: the commit's time, and the same document inside the image.
    assert sbom["metadata"]["timestamp"].startswith("2025-06-15T15:06:40")
    assert sbom["serialNumber"].startswith("urn:uuid:")
    inside = _in_image(packed, "cat", f"{attestations.IMAGE_DIR}/{attestations.SBOM_FILE}")
    assert json.loads(inside) == sbom


def test_source_date_epoch_comes_from_the_commit(packed):
    assert f"SOURCE_DATE_EPOCH={COMMIT_TIME} (commit time of HEAD in" in packed["log"]
    created = _podman(
        packed["store"], "image", "inspect", _local(packed), "--format", "{{.Created.Unix}}"
    )
    assert int(created.strip()) == COMMIT_TIME


def test_provenance_fields(packed):
    out = packed["out"]
    statement = _load(out["provenance"])
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    repository, digest = out["digest"].split("@")
    assert statement["subject"] == [{"name": repository, "digest": {"sha256": digest[7:]}}]
    definition = statement["predicate"]["buildDefinition"]
    external = definition["externalParameters"]
    pipeline_sha = hashlib.sha256(packed["pipeline"].read_bytes()).hexdigest()
    assert external["pipeline"] == {"path": "ml/legion-ci.yaml", "sha256": pipeline_sha}
    assert external["gitCommit"] == packed["commit"]
    deps = {d["name"]: d for d in definition["resolvedDependencies"]}
    context = attestations.context_digest(Path(out["context"]))
    assert deps["build-context"]["digest"] == {"sha256": context[7:]}
    assert deps["base-image"]["uri"] == BASE_IMAGE
    assert deps["source"]["digest"] == {"gitCommit": packed["commit"]}
    run = statement["predicate"]["runDetails"]
    assert run["builder"]["id"] == "urn:legion-ci:builder:buildah"
    assert run["builder"]["version"]["buildah"] == buildah.version() != ""
    assert run["metadata"]["invocationId"] == RUN_ID
    # Inside the image: the same statement about the build context (it cannot name itself).
    inside = json.loads(
        _in_image(packed, "cat", f"{attestations.IMAGE_DIR}/{attestations.PROVENANCE_FILE}")
    )
    assert inside["subject"] == [{"name": "build-context", "digest": {"sha256": context[7:]}}]
    assert inside["predicate"] == statement["predicate"]


def test_the_verb_fetches_them_from_the_registry(packed, reg):
    out = packed["out"]
    digest = out["digest"].split("@")[1]
    hex_ = digest[7:]
    tags = registry_tags(reg.address, "tinyatt")
    assert {f"sha256-{hex_}.sbom", f"sha256-{hex_}.att"} <= set(tags)
    login = ["--username", reg.user, "--password-stdin"]
    shown = run_cli("attestations", out["image"], *login, input_text=reg.password)
    assert shown.code == 0, shown.err
    sbom = _load(out["sbom"])
    count = sum(1 for c in sbom["components"] if c.get("purl", "").startswith("pkg:pypi/"))
    assert f"packages:   {count} Python packages" in shown.out
    assert "urn:legion-ci:builder:buildah" in shown.out and packed["commit"] in shown.out
    assert hashlib.sha256(packed["pipeline"].read_bytes()).hexdigest() in shown.out
    raw = run_cli("attestations", out["digest"], *login, "--json", input_text=reg.password)
    found = json.loads(raw.out)
    assert found["sbom"] == sbom and found["provenance"] == _load(out["provenance"])
    assert found["image"] == out["digest"]
    # A wrong password and an image without attestations: one line each, exit 1.
    refused = run_cli("attestations", out["image"], *login, input_text="not-it")
    assert refused.code == 1 and "unauthorized" in refused.err
    assert len(refused.err.strip().splitlines()) == 1 and "not-it" not in refused.err
    other = f"{reg.address}/tinyatt@sha256:{'0' * 64}"
    missing = run_cli("attestations", other, *login, input_text=reg.password)
    assert missing.code == 1 and "no sbom beside it" in missing.err


def test_no_secret_in_either_document(packed, reg):
    secret = reg.password
    out = packed["out"]
    found = [Path(out["sbom"]), Path(out["provenance"])]
    found += list((Path(out["context"]) / attestations.CONTEXT_DIR).iterdir())
    assert len(found) == 4
    for path in found:
        assert secret not in path.read_text(), path
    assert secret not in packed["log"] and secret not in json.dumps(out)


def test_the_docker_engine_path_attests_and_pushes_too(engine, reg, wheel_cache, tmp_path):
    """The same documents from a build on the Docker engine: the SBOM against the image's own
    environment, the builder and its version, the pair beside the pushed image."""
    from legion_ci.integrations.clients import Clients

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", engine.host)
        patch.setenv("LEGION_CI_CACHE", str(wheel_cache))
        patch.setenv("SOURCE_DATE_EPOCH", str(COMMIT_TIME))
        ctx = package_ctx(
            tiny_binary(tmp_path, "tinyattd"),
            tmp_path / "w",
            run_id=RUN_ID,
            targets=[push_target(reg.address, reg.user, reg.password)],
            arguments={"baseImage": BASE_IMAGE, "builder": "docker", "smokeTest": False},
        )
        out = DockerRestPackager().pack(ctx).outputs
        client = Clients(engine.host).docker()
        script = (
            "import importlib.metadata as m, json; "
            "print(json.dumps(sorted({(d.metadata['Name'], d.version) "
            "for d in m.distributions()})))"
        )
        installed = json.loads(
            client.containers.run(
                out["image_id"], ["/opt/legion/venv/bin/python", "-c", script], remove=True
            )
        )
        inside = client.containers.run(
            out["image_id"],
            ["cat", f"{attestations.IMAGE_DIR}/{attestations.SBOM_FILE}"],
            remove=True,
        )
        version = client.version()["Version"]
    sbom = _load(out["sbom"])
    listed = {
        (c["name"], c["version"])
        for c in sbom["components"]
        if c.get("purl", "").startswith("pkg:pypi/")
    }
    assert listed == {(canonical(name), version) for name, version in installed}
    assert json.loads(inside) == sbom
    builder = _load(out["provenance"])["predicate"]["runDetails"]["builder"]
    assert builder["id"] == "urn:legion-ci:builder:docker"
    assert builder["version"]["docker"] == version
    hex_ = out["digest"].split("@sha256:")[1]
    tags = set(registry_tags(reg.address, "tinyattd"))
    assert {f"sha256-{hex_}.sbom", f"sha256-{hex_}.att"} <= tags
    assert len(out["attestations"]) == 2
    assert reg.password not in Path(out["provenance"]).read_text() + json.dumps(sbom)


def test_a_registry_that_does_not_answer_is_one_line(tmp_path):
    from legion_ci.errors import StageError
    from legion_ci.integrations.docker_engine import free_port
    from legion_ci.packaging import oci_artifacts

    registry = oci_artifacts.Registry(f"127.0.0.1:{free_port()}", "ci", "s3cret-pw")
    with pytest.raises(StageError) as info:
        oci_artifacts.push_attestations(registry, "m", "sha256:" + "a" * 64, {"sbom": b"{}"})
    message = str(info.value)
    assert "does not answer" in message and "\n" not in message and "s3cret-pw" not in message
