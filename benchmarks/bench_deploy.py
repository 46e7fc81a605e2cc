"""Benchmark: the `process` deploy target, first deployment and replacement under traffic.

Until the runner calls the deploy stage, this drives `ProcessTarget.deploy()` with a
DeployContext the way the stage will. Measured, on 127.0.0.1 only:
- first deployment: from the deploy call to a ready, smoke-tested server (includes reading
  the example from the binary's info() in a fresh interpreter), then the server is stopped;
- replacement: a client invokes the model continuously (one fresh connection per request)
  while the deployment is replaced N times; printed: the time of each replacement, the failed
  requests the client saw (target 0) and the longest gap between two answered requests.

    .venv/bin/python benchmarks/bench_deploy.py [--model GPPI.zip] [--runs 3] [--replacements 10]
        [--workers 1] [--json]

Without --model it uses the hand-written tiny model of the tests (no training needed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from legion_ci.gppi.archive import open_artifact, write_zip  # noqa: E402
from legion_ci.gppi.manifest import read_manifest  # noqa: E402
from legion_ci.integrations.base import DeployContext  # noqa: E402
from legion_ci.runner.process import StageLog  # noqa: E402
from legion_ci.targets import pids, state  # noqa: E402
from legion_ci.targets.arguments import resolve_arguments  # noqa: E402
from legion_ci.targets.process import ProcessTarget  # noqa: E402
from legion_ci.targets.smoke import example_request, request  # noqa: E402


def context(
    workspace: Path, artifact: Path, name: str, version: str, workers: int
) -> DeployContext:
    return DeployContext(
        model_name=name,
        model_version=version,
        run_id=f"bench-{version}",
        artifact=artifact,
        package_outputs={},
        arguments=resolve_arguments("process", {"name": "bench", "workers": workers}),
        connection=None,
        workspace=workspace,
        scratch_dir=workspace,
        log=StageLog(workspace / "deploy.log"),
    )


def stop_all(workspace: Path) -> None:
    for record in state.list_states(workspace):
        pids.stop(record.details["pid"], record.details.get("start_time"), grace=30)
        state.remove(workspace, record.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GPPI zip (default: the tests' tiny model)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replacements", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()

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
    target = ProcessTarget()

    first = []
    for _ in range(options.runs):
        began = time.perf_counter()
        target.deploy(context(workspace, options.model, name, "1", options.workers))
        first.append(time.perf_counter() - began)
        stop_all(workspace)

    url = target.deploy(context(workspace, options.model, name, "1", options.workers)).outputs[
        "url"
    ]
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
            ctx = context(workspace, options.model, name, str(i + 2), options.workers)
            target.deploy(ctx)
            replace.append(time.perf_counter() - began)
        elapsed = time.perf_counter() - began_all
    finally:
        stop.set()
        thread.join(60)
        stop_all(workspace)
    result = {
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
    print(f"model {result['model']}, {options.workers} worker(s)")
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
