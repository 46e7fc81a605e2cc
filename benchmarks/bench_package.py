"""Benchmark: the docker-rest packager's image against an image serving the same model with
`mlflow models serve` (what `mlflow models build-docker` amounts to).

Both images are built the same way on the same engine: the same base image (Debian bookworm
made with debootstrap by scripts/setup.d/20-docker.sh, since no image hub is reachable here),
dependencies downloaded into a wheelhouse on the agent and installed offline in a first build
stage, no wheel left in either image, the model files in the last layer. The MLflow image
installs MLflow plus the model's own requirements (pinned as trained) and runs
`mlflow models serve --env-manager local`.

Printed: each image's size above the base, a rebuild after a retrained model (new training
run, same dependencies), container start to ready (median of --starts), and the ratios.
Targets (issue 10): legion-ci adds at most 70% of what the MLflow image adds; rebuild at most
5 s; start to ready at most 2 s.

The legion-ci image is built by both builders of the docker-rest packager on the same build
context in the same run (issue 25): the Docker engine (its own dockerd) and buildah (a fresh
containers storage with the same base imported; podman runs it, as the smoke test does). Each
builder: a first build from a warm wheelhouse pushed to a local registry (Debian's, htpasswd),
then a retrained model (model-only change) rebuilt and pushed (the whole pack, timed, with
where its time went), the image size, container start to ready; and buildah builds the first
inputs again in a second fresh storage: the same image digest or not. Targets: buildah's
build within 1.5x the Docker engine's; a model-only rebuild and push in at most 5 s; two
clean builds with the same digest. SOURCE_DATE_EPOCH is 1700000000 unless set.

    .venv/bin/python benchmarks/bench_package.py [--starts 3] [--builders docker,buildah] [--json]

Needs root (it starts its own dockerd and registry) and the tools scripts/setup.d/20-docker.sh
installs (buildah, podman, skopeo too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from docker_support import (  # noqa: E402
    BASE_IMAGE,
    buildah_store_with_base,
    dockerd,
    import_base_image,
    package_ctx,
    push_target,
    registry,
    train_wine,
)

from legion_ci.gppi.manifest import read_manifest  # noqa: E402
from legion_ci.integrations.docker_engine import free_port  # noqa: E402
from legion_ci.packaging import (  # noqa: E402
    attestations,
    build,
    buildah,
    oci_artifacts,
    requirements,
    wheelhouse,
)
from legion_ci.packaging.docker_rest import DockerRestPackager  # noqa: E402

MLFLOW_DOCKERFILE = """\
FROM {base} AS dependencies
COPY requirements.txt /tmp/req/requirements.txt
COPY wheels /tmp/req/wheels
RUN python3 -m venv /opt/mlflow/venv \\
 && /opt/mlflow/venv/bin/python -m pip install --no-index --no-cache-dir \\
      --find-links /tmp/req/wheels -r /tmp/req/requirements.txt

FROM {base}
COPY --from=dependencies /opt/mlflow/venv /opt/mlflow/venv
ENV PATH=/opt/mlflow/venv/bin:$PATH MLFLOW_DISABLE_TELEMETRY=true HOME=/tmp PORT=5000
EXPOSE 5000
COPY model /model
CMD ["sh", "-c", "exec mlflow models serve -m /model --env-manager local -h 127.0.0.1 -p $PORT"]
"""


def mlflow_context(folder: Path, artifact_dir: Path, log) -> Path:
    """The MLflow image's build context: MLflow and the model's requirements, as trained."""
    manifest = read_manifest(artifact_dir)
    return mlflow_model_context(folder, artifact_dir / manifest.work_dir / "model", log)


def mlflow_model_context(folder: Path, mlflow_model: Path, log) -> Path:
    """The build context of an image serving the MLflow model in `mlflow_model` (a folder with
    MLmodel and requirements.txt) with `mlflow models serve`."""
    import shutil

    pins = [
        ln
        for ln in (mlflow_model / "requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    wheels = wheelhouse.download(pins, python_version="3.11", log=log)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    wheelhouse.link_wheels(wheels, folder / "wheels")
    (folder / "requirements.txt").write_text("\n".join(pins) + "\n")
    shutil.copytree(mlflow_model, folder / "model")
    (folder / "Dockerfile").write_text(MLFLOW_DOCKERFILE.format(base=BASE_IMAGE))
    return folder


def start_to_ready(client, image: str, path: str, port_env: str) -> float:
    port = free_port()
    started = time.monotonic()
    container = client.containers.run(
        image,
        detach=True,
        network_mode="host",
        environment={"LEGION_SERVE_HOST": "127.0.0.1", port_env: str(port)},
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            container.reload()
            if container.status == "exited":
                raise SystemExit(f"{image} exited: {container.logs(tail=20).decode()}")
            if time.monotonic() - started > 300:
                raise SystemExit(f"{image}: not ready within 300 s")
            time.sleep(0.05)
    finally:
        container.remove(force=True)


def native_start_to_ready(artifact: Path) -> float:
    """The same server on the host, outside any container: what the image's start adds to."""
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "legion_ci.cli.main", "serve", str(artifact), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - started > 300:
                raise SystemExit(f"native server on {artifact} did not become ready")
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def podman_start_to_ready(store, image: str) -> float:
    """podman runs the buildah image as the smoke test does (host network, read-only root,
    tmpfs /tmp): seconds from `podman run` to /readyz answering 200."""
    port = free_port()
    env = {"LEGION_SERVE_HOST": "127.0.0.1", "LEGION_SERVE_PORT": str(port)}
    started = time.monotonic()
    container = buildah.run_server(store, image, f"bench-ready-{port}", env)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            if container.exit_code() is not None:
                raise SystemExit(f"{image} exited: {container.logs(20)}")
            if time.monotonic() - started > 300:
                raise SystemExit(f"{image}: not ready within 300 s")
            time.sleep(0.05)
    finally:
        container.remove()


class Phases:
    """Wall time spent in the packager's steps (its module functions wrapped), per pack: where
    a model-only rebuild and push goes."""

    STEPS = (
        (wheelhouse, "download", "wheelhouse"),
        (attestations, "write_into_context", "context_attestations"),
        (build, "build", "build"),
        (buildah, "build", "build"),
        (buildah, "push", "push_and_read_back"),
        (oci_artifacts, "push_attestations", "attestations_push"),
    )

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        for module, attr, label in self.STEPS:
            setattr(module, attr, self._timed(getattr(module, attr), label))
        docker_push = DockerRestPackager._push
        DockerRestPackager._push = staticmethod(self._timed(docker_push, "push_and_read_back"))

    def _timed(self, func, label: str):
        def timed(*args, **kwargs):
            started = time.monotonic()
            try:
                return func(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.monotonic() - started

        return timed

    def pack(self, ctx) -> tuple[dict, float, dict[str, float]]:
        """The pack's outputs, its wall time and its phases."""
        self.spent = {}
        started = time.monotonic()
        outputs = DockerRestPackager().pack(ctx).outputs
        wall = time.monotonic() - started
        phases = {key: round(value, 2) for key, value in self.spent.items()}
        phases["other"] = round(wall - sum(self.spent.values()), 2)
        return outputs, round(wall, 2), phases


def unmount_buildah(store) -> None:
    # The overlay driver bind-mounts its folder and each layer a build ran on: innermost first,
    # or the folder cannot be removed.
    subprocess.run(["buildah", *store.options, "rm", "--all"], capture_output=True)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{store.root}/")), reverse=True):
        subprocess.run(["umount", point], capture_output=True)
    subprocess.run(["rm", "-rf", str(store.runroot)], check=False)


def bench_builder(
    builder: str, first, second, work: Path, reg, phases: Phases, starts: int, ready
) -> dict:
    """First build (pushed), model-only rebuild and push, start to ready: one builder."""
    target = push_target(reg.address, reg.user, reg.password)
    args = {"baseImage": BASE_IMAGE, "builder": builder, "smokeTest": False}
    found: dict = {}
    for side, trained in (("first", first), ("rebuild_push", second)):
        print(f"{builder}: {side.replace('_', ' + ')} ...", file=sys.stderr)
        ctx = package_ctx(
            trained.artifact,
            work / f"{builder}-{side}",
            run_id=trained.run_id,
            targets=[target],
            arguments={**args, "imageName": f"bench/{builder}-wine:{side.replace('_', '-')}"},
        )
        outputs, wall, spent = phases.pack(ctx)
        found[side] = {"outputs": outputs, "wall_s": wall, "phases": spent, "ctx": ctx}
    image = found["first"]["outputs"]["image_id"]
    found["ready"] = [ready(image) for _ in range(starts)]
    return found


def buildah_again(first, work: Path, root: Path, phases: Phases) -> str:
    """The first inputs built again by buildah in a second fresh storage: its image id."""
    store = buildah_store_with_base(root / "buildah-clean-2")
    os.environ[buildah.ROOT_ENV] = str(store.root)
    try:
        ctx = package_ctx(
            first.artifact,
            work / "buildah-clean-2",
            run_id=first.run_id,
            arguments={
                "baseImage": BASE_IMAGE,
                "builder": "buildah",
                "smokeTest": False,
                "imageName": "bench/buildah-wine:first",
            },
        )
        outputs, _, _ = phases.pack(ctx)
        return str(outputs["image_id"])
    finally:
        unmount_buildah(store)


def base_size_podman(store) -> int:
    done = subprocess.run(
        ["podman", *store.options, "image", "inspect", BASE_IMAGE, "--format", "{{json .Size}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument(
        "--builders",
        default="docker,buildah",
        help="comma-separated: docker (with the MLflow peer), buildah (default both)",
    )
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    builders = [b.strip() for b in opts.builders.split(",") if b.strip()]
    if not builders or set(builders) - {"docker", "buildah"}:
        parser.error("--builders: docker, buildah or both")
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1700000000")
    root = Path(tempfile.mkdtemp(prefix="lcb-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="bench-package-"))
    phases = Phases()
    result: dict = {"load_average_start": [round(x, 2) for x in os.getloadavg()]}
    stores = []
    try:
        print("training the wine model twice (two runs, same dependencies) ...", file=sys.stderr)
        first = train_wine(work / "train-a", alpha=0.5)
        second = train_wine(work / "train-b", alpha=0.4)
        with contextlib.ExitStack() as stack:
            reg = stack.enter_context(registry(root / "registry"))
            if "docker" in builders:
                daemon = stack.enter_context(dockerd(root / "d"))
                os.environ["DOCKER_HOST"] = daemon.host
                import_base_image(daemon.host)
                from legion_ci.integrations.clients import Clients

                client = Clients(daemon.host).docker()
                stack.callback(client.close)
                base_size = client.images.get(BASE_IMAGE).attrs["Size"]
                result["base_image_mb"] = round(base_size / 1e6, 1)
                found = bench_builder(
                    "docker",
                    first,
                    second,
                    work,
                    reg,
                    phases,
                    opts.starts,
                    lambda image: start_to_ready(client, image, "/readyz", "LEGION_SERVE_PORT"),
                )
                result["docker"] = summary(found, base_size)
                mlflow_peer(client, found, work, base_size, opts.starts, result)
                native = [native_start_to_ready(first.artifact) for _ in range(opts.starts)]
                result["native_start_to_ready_s"] = round(statistics.median(native), 2)
            else:
                os.environ["DOCKER_HOST"] = f"unix://{root}/no-dockerd.sock"
            if "buildah" in builders:
                store = buildah_store_with_base(root / "buildah-clean-1")
                stores.append(store)
                os.environ[buildah.ROOT_ENV] = str(store.root)
                found = bench_builder(
                    "buildah",
                    first,
                    second,
                    work,
                    reg,
                    phases,
                    opts.starts,
                    lambda image: podman_start_to_ready(store, image),
                )
                result["buildah"] = summary(found, base_size_podman(store))
                print("buildah: the first inputs again, second fresh storage ...", file=sys.stderr)
                again = buildah_again(first, work, root, phases)
                result["buildah"]["clean_builds"] = [result["buildah"]["image_id"], again]
                result["buildah"]["same_digest"] = again == result["buildah"]["image_id"]
            result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
            first_ctx = (found["first"]["ctx"].artifact_dir, found["first"]["ctx"])
        result["model_requirements"] = requirements.model_requirements(
            first_ctx[0], read_manifest(first_ctx[0])
        )
    finally:
        for store in stores:
            unmount_buildah(store)
        subprocess.run(["rm", "-rf", str(root), str(work)], check=False)
    if "docker" in result and "buildah" in result:
        result["ratios_buildah_over_docker"] = {
            key: round(result["buildah"][key] / result["docker"][key], 2)
            for key in ("first_build_s", "rebuild_build_s", "rebuild_push_s", "start_to_ready_s")
            if result["docker"][key]
        }
    if opts.json:
        print(json.dumps(result, indent=1))
        return
    report(result, opts.starts)


def summary(found: dict, base_size: int) -> dict:
    first, again = found["first"], found["rebuild_push"]
    size = int(first["outputs"]["size"])
    return {
        "image_id": str(first["outputs"]["image_id"]),
        "first_build_s": first["outputs"]["build_s"],
        "first_pack_s": first["wall_s"],
        "rebuild_build_s": again["outputs"]["build_s"],
        "rebuild_push_s": again["wall_s"],
        "rebuild_push_phases": again["phases"],
        "size_mb": round(size / 1e6, 1),
        "above_base_mb": round((size - base_size) / 1e6, 1),
        "start_to_ready_s": round(statistics.median(found["ready"]), 2),
    }


def mlflow_peer(client, found: dict, work: Path, base_size: int, starts: int, result) -> None:
    """The MLflow image (first build, retrained model) on the same engine, as before."""
    legion = found["first"]["outputs"]
    ctx, ctx_b = found["first"]["ctx"], found["rebuild_push"]["ctx"]
    print("mlflow image: first build, then the retrained model ...", file=sys.stderr)
    mlflow_a = mlflow_context(work / "mlflow-a", ctx.artifact_dir, ctx.log)
    started = time.monotonic()
    built_a = build.build(client, str(mlflow_a), "mlflow-wine:a", ctx.log)
    mlflow_first_s = time.monotonic() - started
    mlflow_b = mlflow_context(work / "mlflow-b", ctx_b.artifact_dir, ctx.log)
    started = time.monotonic()
    build.build(client, str(mlflow_b), "mlflow-wine:b", ctx.log)
    mlflow_rebuild_s = time.monotonic() - started
    mlflow_size = client.images.get(built_a.image_id).attrs["Size"] - base_size
    mlflow_ready = [
        start_to_ready(client, built_a.image_id, "/ping", "PORT") for _ in range(max(1, starts))
    ]
    rebuilt = found["rebuild_push"]["outputs"]
    result["mlflow"] = {
        "above_base_mb": round(mlflow_size / 1e6, 1),
        "size_ratio": round(legion["size_above_base"] / mlflow_size, 3),
        "first_build_s": round(mlflow_first_s, 2),
        "rebuild_build_s": round(mlflow_rebuild_s, 2),
        "start_to_ready_s": round(statistics.median(mlflow_ready), 2),
        "legion_rebuild_cached_steps": f"{rebuilt['cached_steps']}/{rebuilt['build_steps']}",
    }


def report(result: dict, starts: int) -> None:
    if "base_image_mb" in result:
        print(f"base image {BASE_IMAGE}: {result['base_image_mb']} MB")
    docker, mlflow = result.get("docker"), result.get("mlflow")
    if docker and mlflow:
        print(
            f"size above base: legion-ci {docker['above_base_mb']} MB, mlflow "
            f"{mlflow['above_base_mb']} MB, ratio {mlflow['size_ratio']:.2f} (target <= 0.40)"
        )
        print(
            f"rebuild after a retrained model (Docker engine): legion-ci build "
            f"{docker['rebuild_build_s']} s ({mlflow['legion_rebuild_cached_steps']} steps "
            f"cached), mlflow build {mlflow['rebuild_build_s']} s (target <= 5 s)"
        )
        print(
            f"start to ready (median of {starts}): legion-ci {docker['start_to_ready_s']} s, "
            f"mlflow {mlflow['start_to_ready_s']} s (target <= 2 s); the same server outside "
            f"a container {result['native_start_to_ready_s']} s"
        )
    for name in ("docker", "buildah"):
        found = result.get(name)
        if not found:
            continue
        phases = ", ".join(f"{k} {v}" for k, v in found["rebuild_push_phases"].items())
        print(
            f"{name}: first build {found['first_build_s']} s (pack with push "
            f"{found['first_pack_s']} s); model-only rebuild {found['rebuild_build_s']} s; "
            f"model-only rebuild and push {found['rebuild_push_s']} s (target <= 5 s) "
            f"[{phases}]; image {found['size_mb']} MB ({found['above_base_mb']} MB above the "
            f"base); start to ready {found['start_to_ready_s']} s (median of {starts})"
        )
    if "buildah" in result:
        found = result["buildah"]
        print(
            f"buildah: two clean builds, same digest: {'yes' if found['same_digest'] else 'no'}"
            f" ({found['clean_builds'][0]} / {found['clean_builds'][1]})"
        )
    if "ratios_buildah_over_docker" in result:
        ratios = result["ratios_buildah_over_docker"]
        print(
            "buildah/docker, same run: "
            + ", ".join(f"{key} {value:.2f}x" for key, value in ratios.items())
            + " (target: first build <= 1.5x)"
        )
    print(
        f"machine load average (1, 5, 15 min): start {result['load_average_start']}, end "
        f"{result['load_average_end']}, on {os.cpu_count()} cores"
    )
    print(f"model requirements in the legion-ci image: {', '.join(result['model_requirements'])}")


if __name__ == "__main__":
    main()
