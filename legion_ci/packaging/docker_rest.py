"""`docker-rest`: the built-in Model Packager. Build context, image, smoke test, push.

Order, so that the slow work comes after the cheap checks: the engine (or its absence), the
registries' credentials and the base image are checked first; then the wheelhouse and the build
context; then the build, the smoke test, and only after it passes, the pushes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from legion_ci.errors import StageError
from legion_ci.gppi.manifest import Manifest, read_manifest
from legion_ci.integrations import docker_engine
from legion_ci.integrations.arguments import fill_defaults
from legion_ci.integrations.base import PackageContext, PackageResult
from legion_ci.integrations.clients import Clients, RegistryAuth, registry_auth
from legion_ci.packaging import (
    attestations,
    build,
    buildah,
    image_smoke,
    push,
    requirements,
    wheelhouse,
)
from legion_ci.packaging.context import write_context
from legion_ci.packaging.dockerfile import ImageSpec

# Legion's packaging targets: where the image goes, and whose credentials pull the base image.
PUSH_TARGET = "docker-push"
PULL_TARGET = "docker-pull"
# A Docker reference without the registry: lower-case path components, then a tag.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}$")


def _arguments_schema() -> dict[str, Any]:
    """The arguments declared in toolchains/docker-rest.yaml (the one place they live)."""
    import yaml

    text = resources.files("legion_ci.toolchains").joinpath("docker-rest.yaml").read_text("utf-8")
    return yaml.safe_load(text).get("arguments") or {}


def argument_defaults() -> dict[str, Any]:
    return fill_defaults(_arguments_schema(), {})


def image_name(template: str, ctx: PackageContext) -> str:
    values = {
        "name": ctx.model_name,
        "version": ctx.model_version,
        "run_id": ctx.run_id,
        "short_run_id": ctx.run_id.rsplit("-", 1)[-1],
        "git_sha": (ctx.git_commit or "unknown")[:12],
    }
    try:
        name = template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        known = ", ".join("{" + key + "}" for key in values)
        raise StageError(
            f"arguments.imageName: {template!r}: bad field {exc}; known: {known}"
        ) from None
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    if not _IMAGE_NAME.match(name):
        raise StageError(
            f"arguments.imageName: {template!r} gives {name!r}, not a Docker image name "
            "(lower-case name components separated by /, then :tag)"
        )
    return name


def labels(
    ctx: PackageContext, manifest: Manifest, base_image: str, epoch: int | None = None
) -> dict[str, str]:
    mlflow_run_id = ctx.train_outputs.get("mlflow_run_id") or manifest.output.get("run_id")
    found = {
        "org.opencontainers.image.title": ctx.model_name,
        "org.opencontainers.image.version": ctx.model_version,
        "org.opencontainers.image.description": (
            f"legion-ci model server for {ctx.model_name} {ctx.model_version}"
        ),
        "org.opencontainers.image.created": _created(epoch).isoformat(timespec="seconds"),
        "org.opencontainers.image.revision": ctx.git_commit,
        "org.opencontainers.image.base.name": base_image,
        "legion.model.name": ctx.model_name,
        "legion.model.version": ctx.model_version,
        "legion.run_id": ctx.run_id,
        "legion.git_commit": ctx.git_commit,
        "legion.mlflow_run_id": mlflow_run_id,
        "legion.toolchain": f"{manifest.toolchain_name} {manifest.toolchain_version}".strip(),
    }
    return {key: str(value) for key, value in found.items() if value}


def _created(epoch: int | None) -> datetime:
    """SOURCE_DATE_EPOCH (set, or the commit's time: the same inputs, the same label), else
    now."""
    return datetime.now(UTC) if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _write_result(artifact_dir: Path, outputs: dict[str, Any]) -> None:
    # Legion's packager contract: result.json in the artifact dir, {"image": ...}.
    result = {"image": outputs.get("image"), **outputs}
    (artifact_dir / "result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")


def _smoke_then_push(
    ctx: PackageContext,
    args: dict[str, Any],
    outputs: dict[str, Any],
    smoke: Callable[[float, str], dict[str, Any]],
    pushes: list[Callable[[], tuple[str, str]]],
) -> None:
    """Either engine's smoke test, then (only once it passed) its pushes, into `outputs`."""
    if args.get("smokeTest", True):
        found = smoke(float(args["smokeTestTimeout"]), f"legion-smoke-{ctx.run_id}")
        outputs["smoke_test_ready_s"] = found["ready_s"]
    else:
        ctx.log.line("smoke test: skipped (arguments.smokeTest is false)")
    pushed = [push_one() for push_one in pushes]
    if pushed:
        outputs["image"], outputs["digest"] = pushed[0]
        outputs["pushed"] = [{"image": ref, "digest": digest} for ref, digest in pushed]


def _choose_builder(wanted: str, engine: bool, no_engine: str | None) -> str:
    """`builder` resolved: docker, buildah, or none (the build context only)."""
    if wanted == "docker" and not engine:
        raise StageError(f"arguments.builder docker: {no_engine}")
    if wanted == "buildah" and not buildah.installed():
        raise StageError("arguments.builder buildah: 'buildah' is not installed (on PATH)")
    if wanted == "auto":
        if engine:
            return "docker"
        return "buildah" if buildah.installed() else "none"
    return wanted


def _attestation_inputs(
    ctx: PackageContext,
    spec: ImageSpec,
    folder: Path,
    builder: str,
    client: Any,
    epoch: int | None,
) -> attestations.Inputs:
    if builder == "docker":
        version = str(client.version().get("Version", ""))
        base_digest = build.base_digest(client, spec.base_image)
    elif builder == "buildah":
        version, base_digest = buildah.version(), buildah.base_digest(spec.base_image)
    else:
        version, base_digest = "", None
    return attestations.Inputs(
        image=spec.image,
        model_name=ctx.model_name,
        model_version=ctx.model_version,
        base_image=spec.base_image,
        base_digest=base_digest,
        wheels=folder / "wheels",
        legion_ci_wheel=spec.legion_ci_wheel,
        model_artifact=Path(ctx.artifact),
        run_id=ctx.run_id,
        git_commit=ctx.git_commit,
        pipeline_file=ctx.pipeline_file,
        builder=builder,
        builder_version=version,
        epoch=epoch,
    )


def _attest(
    ctx: PackageContext,
    outputs: dict[str, Any],
    made: attestations.Inputs,
    documents: dict[str, str],
    auths: list[RegistryAuth],
) -> None:
    """The run's SBOM and provenance (about the pushed image, else the built one, else the
    context), pushed beside each pushed image; then result.json."""
    from legion_ci.packaging import oci_artifacts

    pushed = [oci_artifacts.Reference.parse(p["digest"]) for p in outputs.get("pushed") or []]
    if pushed:
        subjects = [(f"{ref.registry}/{ref.repository}", str(ref.digest)) for ref in pushed]
    elif outputs.get("image_id"):
        subjects = [(made.image, str(outputs["image_id"]))]
    else:
        subjects = [("build-context", made.context_digest)]
    documents = {**documents, attestations.PROVENANCE_FILE: attestations.provenance(made, subjects)}
    outputs.update(attestations.write_artifacts(Path(ctx.output_dir) / "attestations", documents))
    beside = []
    for ref, auth in zip(pushed, auths, strict=True):
        config = auth.fresh().auth_config() or {}
        registry = oci_artifacts.Registry(
            ref.registry, config.get("username"), config.get("password")
        )
        found = oci_artifacts.push_attestations(
            registry,
            ref.repository,
            str(ref.digest),
            {
                "sbom": documents[attestations.SBOM_FILE].encode(),
                "provenance": documents[attestations.PROVENANCE_FILE].encode(),
            },
        )
        ctx.log.line(f"attestations pushed: {found['sbom']}, {found['provenance']}")
        beside.extend(found.values())
    if beside:
        outputs["attestations"] = beside
    _write_result(ctx.artifact_dir, outputs)


class DockerRestPackager:
    """The in-process `docker-rest` packaging integration (see toolchains/docker-rest.yaml)."""

    def pack(self, ctx: PackageContext) -> PackageResult:
        clients = ctx.clients if isinstance(ctx.clients, Clients) else Clients()
        try:
            return self._pack(ctx, clients)
        except docker_engine.connection_errors() as exc:
            # The engine died or refused between the steps that say so themselves.
            raise StageError(
                f"Docker engine at {clients.docker_host}: {docker_engine.lost_engine_text(exc)}"
            ) from None
        finally:
            if clients is not ctx.clients:
                clients.close()

    def _pack(self, ctx: PackageContext, clients: Clients) -> PackageResult:
        # Filled at load for a pipeline (a no-op then); a caller's own context gets them here.
        args = fill_defaults(_arguments_schema(), ctx.arguments)
        log = ctx.log
        manifest = read_manifest(ctx.artifact_dir)
        name = image_name(str(args["imageName"]), ctx)
        base_image = str(args["baseImage"])
        unknown = sorted({t.name for t in ctx.targets} - {PUSH_TARGET, PULL_TARGET})
        if unknown:
            raise StageError(
                f"targets: unknown target {unknown[0]!r} for docker-rest; "
                f"known: {PUSH_TARGET}, {PULL_TARGET}"
            )
        targets = [t for t in ctx.targets if t.name == PUSH_TARGET]
        auths = [registry_auth(t.connection) for t in targets]
        pull_auth = next(
            (registry_auth(t.connection) for t in ctx.targets if t.name == PULL_TARGET), None
        )

        client, no_engine = clients.docker_or_reason()
        builder = _choose_builder(str(args["builder"]), client is not None, no_engine)
        if builder == "buildah" and args["builder"] == "auto" and not buildah.has_image(base_image):
            # Not an error for `auto`: the agent has buildah but not the base (no registry to
            # pull it from), so it does what it did before buildah: the context only.
            builder = "none"
            no_engine = f"{no_engine}; buildah has no {base_image} image to build on"
        if builder == "buildah":
            client = None
            for auth in auths:
                buildah.check_login(auth.fresh())
        elif client is None and targets:
            raise StageError(f"{no_engine} (needed to push to {auths[0].registry})")
        if client is not None:
            for auth in auths:
                clients.registry_login(auth.fresh(), log)
            build.ensure_base_image(
                client, base_image, log, pull_auth.fresh().auth_config() if pull_auth else None
            )

        epoch = attestations.source_date_epoch(ctx.pipeline_file, log)
        pins = requirements.merge(
            requirements.serve_requirements(),
            requirements.model_requirements(ctx.artifact_dir, manifest, log),
        )
        log.line("image requirements: " + ", ".join(pins))
        source = Path(args["wheelhouse"]).resolve() if args.get("wheelhouse") else None
        wheels = wheelhouse.download(
            pins, python_version=str(args["pythonVersion"]), log=log, source=source
        )
        spec = ImageSpec(
            model_name=ctx.model_name,
            model_version=ctx.model_version,
            image=name,
            base_image=base_image,
            legion_ci_wheel="",
            port=int(args["port"]),
            workers=int(args["workers"]),
            keep_test_suites=bool(args["keepTestSuites"]),
            labels=labels(ctx, manifest, base_image, epoch),
        )
        folder = write_context(
            Path(ctx.output_dir) / "docker-context",
            spec=spec,
            requirements=pins,
            wheels=wheels,
            model_dir=ctx.artifact_dir,
            python_version=str(args["pythonVersion"]),
            log=log,
        )
        made = _attestation_inputs(ctx, spec, folder, builder, client, epoch)
        documents = attestations.write_into_context(folder, made)
        log.line(
            f"build context: {folder} (digest {made.context_digest}; SBOM and provenance "
            f"at {attestations.IMAGE_DIR} in the image)"
        )
        outputs: dict[str, Any] = {"context": str(folder)}
        if builder == "buildah":
            outputs.update(self._with_buildah(ctx, args, str(folder), name, auths, epoch))
            _attest(ctx, outputs, made, documents, auths)
            return PackageResult(outputs=outputs)
        if client is None:
            log.line(f"no image built: {no_engine}")
            log.line(
                f"to build it where Docker runs: docker build --network host -t {name} {folder}"
            )
            outputs.update(image=None, reason=no_engine)
            _attest(ctx, outputs, made, documents, auths)
            return PackageResult(outputs=outputs)

        outputs["builder"] = "docker"
        started = time.monotonic()
        built = build.build(client, str(folder), name, log)
        build_s = round(time.monotonic() - started, 2)
        image = client.images.get(built.image_id)
        base_size = client.images.get(base_image).attrs.get("Size") or 0
        outputs.update(
            image=name,
            image_id=built.image_id,
            size=image.attrs.get("Size"),
            size_above_base=(image.attrs.get("Size") or 0) - base_size,
            build_s=build_s,
            build_steps=built.steps,
            cached_steps=built.cached_steps,
        )
        log.line(
            f"built {name} ({built.image_id[:19]}, {outputs['size'] / 1e6:.1f} MB, "
            f"in {build_s:.1f} s, {built.cached_steps} of {built.steps} steps from the cache)"
        )
        _smoke_then_push(
            ctx,
            args,
            outputs,
            lambda timeout, smoke_name: image_smoke.smoke_test(
                client,
                built.image_id,
                docker_engine.model_example(client, built.image_id),
                log,
                timeout=timeout,
                name=smoke_name,
            ),
            [
                lambda auth=auth: self._push(client, auth.fresh(), name, built.image_id, log)
                for auth in auths
            ],
        )
        _attest(ctx, outputs, made, documents, auths)
        return PackageResult(outputs=outputs)

    @staticmethod
    def _with_buildah(
        ctx: PackageContext,
        args: dict[str, Any],
        folder: str,
        name: str,
        auths: list[RegistryAuth],
        epoch: int | None,
    ) -> dict[str, Any]:
        """Build with buildah, smoke-test with podman, push with skopeo: the Docker path's
        outputs, plus `builder`."""
        log = ctx.log
        store = buildah.storage()
        log.line(f"builder: buildah ({store.driver} storage under {store.root})")
        started = time.monotonic()
        built = buildah.build(store, folder, name, log, epoch)
        outputs: dict[str, Any] = {"builder": "buildah", "image": name, **built}
        outputs["build_s"] = round(time.monotonic() - started, 2)
        log.line(f"built {name} ({built['image_id'][:19]}, {built['size'] / 1e6:.1f} MB)")
        _smoke_then_push(
            ctx,
            args,
            outputs,
            lambda timeout, smoke_name: buildah.smoke_test(
                store, name, log, timeout=timeout, name=smoke_name
            ),
            [lambda auth=auth: buildah.push(store, name, auth.fresh(), log) for auth in auths],
        )
        return outputs

    @staticmethod
    def _push(
        client: Any, auth: RegistryAuth, name: str, image_id: str, log: Any
    ) -> tuple[str, str]:
        reference = f"{auth.registry}/{name}"
        repository, tag = reference.rsplit(":", 1)
        client.api.tag(image_id, repository, tag)
        digest = push.push(client, reference, auth, log)
        proven = push.verify_digest(client, repository, digest, auth, image_id, log)
        return reference, proven
