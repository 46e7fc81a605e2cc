"""Benchmark: the `process` and `docker` deploy targets, first deployment and replacement
under traffic.

It drives the target's `deploy()` with a DeployContext the way the deploy stage does.
Measured, on 127.0.0.1 only:
- first deployment: from the deploy call to a ready, smoke-tested server (includes reading
  the example from the binary's info() in a fresh interpreter), then the server is stopped;
- replacement: a client invokes the model continuously (one fresh connection per request)
  while the deployment is replaced N times; printed: the time of each replacement, the failed
  requests the client saw (target 0) and the longest gap between two answered requests.

    .venv/bin/python benchmarks/bench_deploy.py [--target process|docker] [--model GPPI.zip]
        [--runs 3] [--replacements 10] [--workers 1] [--json]

Without --model it uses the hand-written tiny model of the tests (no training needed). With
--target docker it starts its own dockerd (the tests' set-up: scripts/setup.d/20-docker.sh),
builds the model's image with the docker-rest packager once, and deploys that image.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from legion_ci import deployment_state as state  # noqa: E402
from legion_ci import processes  # noqa: E402
from legion_ci.gppi.archive import open_artifact, write_zip  # noqa: E402
from legion_ci.gppi.manifest import read_manifest  # noqa: E402
from legion_ci.integrations.base import DeployContext  # noqa: E402
from legion_ci.processes import StageLog  # noqa: E402
from legion_ci.targets.arguments import resolve_arguments  # noqa: E402
from legion_ci.targets.process import ProcessTarget  # noqa: E402
from legion_ci.targets.smoke import example_request, request  # noqa: E402

PACKAGED: dict = {}  # the docker target's package outputs and clients


def context(
    workspace: Path, artifact: Path, name: str, version: str, workers: int, kind: str = "process"
) -> DeployContext:
    return DeployContext(
        model_name=name,
        model_version=version,
        run_id=f"bench-{version}",
        artifact=artifact,
        package_outputs=PACKAGED.get("outputs", {}),
        arguments=resolve_arguments(kind, {"name": "bench", "workers": workers}),
        connection=None,
        workspace=workspace,
        scratch_dir=workspace,
        log=StageLog(workspace / "deploy.log"),
        clients=PACKAGED.get("clients"),
    )


def stop_all(workspace: Path) -> None:
    for record in state.list_states(workspace):
        if record.target == "docker":
            client = PACKAGED["clients"].docker()
            label = "legion-ci.epam.com/deployment"
            for container in client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
        else:
            processes.stop_pid(record.details["pid"], record.details.get("start_time"), grace=30)
        state.remove(workspace, record.name)


def start_docker(stack: contextlib.ExitStack, tmp: Path, model: Path) -> None:
    """A dockerd of our own, the base image, and the model's image built once."""
    import os

    sys.path.insert(0, str(REPO / "tests"))
    from docker_support import BASE_IMAGE, dockerd, import_base_image, package_ctx

    from legion_ci.integrations.clients import Clients
    from legion_ci.packaging.docker_rest import DockerRestPackager

    root = Path(tempfile.mkdtemp(prefix="lcdb-", dir="/tmp"))  # a short socket path
    daemon = stack.enter_context(dockerd(root))
    import_base_image(daemon.host)
    os.environ["DOCKER_HOST"] = daemon.host
    ctx = package_ctx(model, tmp / "package", arguments={"baseImage": BASE_IMAGE}, secrets=())
    ctx.clients = Clients(daemon.host)
    began = time.perf_counter()
    PACKAGED["outputs"] = DockerRestPackager().pack(ctx).outputs
    PACKAGED["clients"] = Clients(daemon.host)
    print(f"image {PACKAGED['outputs']['image']} built in {time.perf_counter() - began:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["process", "docker"], default="process")
    parser.add_argument("--model", type=Path, help="a GPPI zip (default: the tests' tiny model)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replacements", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()

    with contextlib.ExitStack() as stack:
        run(options, stack)


def run(options: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    import threading

    tmp = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    if options.model is None:
        from tests.server_support import make_tiny_model

        write_zip(make_tiny_model(tmp / "tiny"), tmp / "tiny.zip")
        options.model = tmp / "tiny.zip"
    manifest = read_manifest(open_artifact(options.model))
    name = manifest.model_name
    payload = example_request(options.model)
    workspace = tmp / "ws"
    kind = options.target
    if kind == "docker":
        from legion_ci.targets.docker import DockerTarget

        start_docker(stack, tmp, options.model)
        target = DockerTarget()
    else:
        target = ProcessTarget()

    first = []
    for _ in range(options.runs):
        began = time.perf_counter()
        target.deploy(context(workspace, options.model, name, "1", options.workers, kind))
        first.append(time.perf_counter() - began)
        stop_all(workspace)

    url = target.deploy(
        context(workspace, options.model, name, "1", options.workers, kind)
    ).outputs["url"]
    stop = threading.Event()
    seen = {"ok": 0, "failed": 0, "gap": 0.0}

    def client() -> None:
        last = time.perf_counter()
        for _ in range(10_000_000):  # bounded; stopped by the event long before
            if stop.is_set():
                return
            try:
                status = request(url, "POST", "/api/model/invoke", payload, timeout=30)[0]
            except OSError:
                status = 0
            now = time.perf_counter()
            if status == 200:
                seen["ok"] += 1
                seen["gap"] = max(seen["gap"], now - last)
                last = now
            else:
                seen["failed"] += 1

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    replace = []
    try:
        began_all = time.perf_counter()
        for i in range(options.replacements):
            began = time.perf_counter()
            ctx = context(workspace, options.model, name, str(i + 2), options.workers, kind)
            target.deploy(ctx)
            replace.append(time.perf_counter() - began)
        elapsed = time.perf_counter() - began_all
    finally:
        stop.set()
        thread.join(60)
        stop_all(workspace)
    result = {
        "target": kind,
        "model": f"{name} {manifest.model_version}",
        "workers": options.workers,
        "first_deploy_s": {"median": statistics.median(first), "runs": first},
        "replacement_s": {"median": statistics.median(replace), "max": max(replace)},
        "replacements": options.replacements,
        "answered": seen["ok"],
        "answered_per_s": seen["ok"] / elapsed,
        "failed_requests": seen["failed"],
        "longest_gap_s": seen["gap"],
    }
    if options.json:
        print(json.dumps(result, indent=2))
        return
    print(f"target {kind}, model {result['model']}, {options.workers} worker(s)")
    print(f"first deploy to ready + smoke-tested: median {statistics.median(first):.2f} s")
    print(
        f"replacement: median {result['replacement_s']['median']:.2f} s, "
        f"max {result['replacement_s']['max']:.2f} s ({options.replacements} replacements)"
    )
    print(
        f"polling client: {seen['ok']} answered ({result['answered_per_s']:.0f}/s), "
        f"{seen['failed']} failed, longest gap {seen['gap'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
