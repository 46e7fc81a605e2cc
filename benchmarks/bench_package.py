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

    .venv/bin/python benchmarks/bench_package.py [--starts 3] [--json]

Needs root (it starts its own dockerd) and the tools scripts/setup.d/20-docker.sh installs.
"""

from __future__ import annotations

import argparse
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
    dockerd,
    import_base_image,
    package_ctx,
    train_wine,
)

from legion_ci.gppi.manifest import read_manifest  # noqa: E402
from legion_ci.integrations.docker_engine import free_port  # noqa: E402
from legion_ci.packaging import build, requirements, wheelhouse  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lcb-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="bench-package-"))
    try:
        print("training the wine model twice (two runs, same dependencies) ...", file=sys.stderr)
        first = train_wine(work / "train-a", alpha=0.5)
        second = train_wine(work / "train-b", alpha=0.4)
        with dockerd(root / "d") as daemon:
            os.environ["DOCKER_HOST"] = daemon.host
            import_base_image(daemon.host)
            from legion_ci.integrations.clients import Clients

            client = Clients(daemon.host).docker()
            base_size = client.images.get(BASE_IMAGE).attrs["Size"]
            args = {"baseImage": BASE_IMAGE}

            print("legion-ci image: first build ...", file=sys.stderr)
            ctx = package_ctx(first.artifact, work / "pack-a", run_id=first.run_id, arguments=args)
            legion = DockerRestPackager().pack(ctx).outputs
            print("legion-ci image: rebuild after the retrained model ...", file=sys.stderr)
            ctx_b = package_ctx(
                second.artifact,
                work / "pack-b",
                run_id=second.run_id,
                arguments={**args, "smokeTest": False},
            )
            started = time.monotonic()
            legion_b = DockerRestPackager().pack(ctx_b).outputs
            legion_pack_s = time.monotonic() - started

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

            legion_ready = [
                start_to_ready(client, legion["image_id"], "/readyz", "LEGION_SERVE_PORT")
                for _ in range(opts.starts)
            ]
            mlflow_ready = [
                start_to_ready(client, built_a.image_id, "/ping", "PORT")
                for _ in range(max(1, opts.starts))
            ]
            native_ready = [native_start_to_ready(first.artifact) for _ in range(opts.starts)]
            load = os.getloadavg()[0]
            client.close()
        model_reqs = requirements.model_requirements(
            ctx.artifact_dir, read_manifest(ctx.artifact_dir)
        )
    finally:
        subprocess.run(["rm", "-rf", str(root), str(work)], check=False)
    result = {
        "base_image_mb": round(base_size / 1e6, 1),
        "legion_above_base_mb": round(legion["size_above_base"] / 1e6, 1),
        "mlflow_above_base_mb": round(mlflow_size / 1e6, 1),
        "size_ratio": round(legion["size_above_base"] / mlflow_size, 3),
        "legion_rebuild_build_s": legion_b["build_s"],
        "legion_rebuild_pack_s": round(legion_pack_s, 2),
        "legion_rebuild_cached_steps": f"{legion_b['cached_steps']}/{legion_b['build_steps']}",
        "mlflow_rebuild_build_s": round(mlflow_rebuild_s, 2),
        "legion_start_to_ready_s": round(statistics.median(legion_ready), 2),
        "mlflow_start_to_ready_s": round(statistics.median(mlflow_ready), 2),
        "native_start_to_ready_s": round(statistics.median(native_ready), 2),
        "load_average_1min": round(load, 1),
        "start_ratio": round(statistics.median(legion_ready) / statistics.median(mlflow_ready), 3),
        "legion_first_build_s": legion["build_s"],
        "mlflow_first_build_s": round(mlflow_first_s, 2),
        "model_requirements": model_reqs,
    }
    if opts.json:
        print(json.dumps(result, indent=1))
        return
    print(f"base image {BASE_IMAGE}: {result['base_image_mb']} MB")
    print(
        f"size above base: legion-ci {result['legion_above_base_mb']} MB, mlflow "
        f"{result['mlflow_above_base_mb']} MB, ratio {result['size_ratio']:.2f} (target <= 0.70)"
    )
    print(
        f"rebuild after a retrained model: legion-ci build {result['legion_rebuild_build_s']} s "
        f"(whole pack without smoke test {result['legion_rebuild_pack_s']} s, "
        f"{result['legion_rebuild_cached_steps']} steps cached), mlflow build "
        f"{result['mlflow_rebuild_build_s']} s (target <= 5 s)"
    )
    print(
        f"start to ready (median of {opts.starts}): legion-ci {result['legion_start_to_ready_s']}"
        f" s, mlflow {result['mlflow_start_to_ready_s']} s, ratio {result['start_ratio']:.2f} "
        f"(target <= 2 s); the same server outside a container "
        f"{result['native_start_to_ready_s']} s"
    )
    print(
        f"machine load average (1 min) at the end: {result['load_average_1min']} "
        f"on {os.cpu_count()} cores"
    )
    print(f"model requirements in the legion-ci image: {', '.join(model_reqs)}")


if __name__ == "__main__":
    main()
