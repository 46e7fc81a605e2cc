"""Benchmark: container start to ready of the docker-rest image, this tree against a baseline
commit, in the same run: one trained wine model, one dockerd, starts taking turns.

The baseline image is this tree's build context with the baseline's Dockerfile template (its
dependencies step), its MLflow entrypoint and no precompiled model code: what the baseline's
packager would have built for the same model. Before timing, each image loads the model under
`python -v` and the count of modules compiled from source at start is printed.

    .venv/bin/python benchmarks/bench_image_start.py --baseline 771c83a [--starts 9]

Needs root (it starts its own dockerd) and the tools scripts/setup.d/20-docker.sh installs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from bench_package import start_to_ready  # noqa: E402
from docker_support import (  # noqa: E402
    BASE_IMAGE,
    dockerd,
    import_base_image,
    package_ctx,
    train_wine,
)

from legion_ci.packaging import build  # noqa: E402
from legion_ci.packaging.docker_rest import DockerRestPackager  # noqa: E402
from legion_ci.processes import StageLog  # noqa: E402

TEMPLATE = "legion_ci/packaging/templates/Dockerfile.in"
ENTRYPOINT = "legion_ci/gppi/templates/mlflow_entrypoint.py"
LOAD = "from legion_ci.gppi.loader import load_model; load_model('/model')"


def at(rev: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def dependencies_step(template: str) -> str:
    """The template's first stage, after its FROM line, up to the second stage."""
    start = "FROM {{base_image}} AS dependencies\n"
    first = template.index(start) + len(start)
    return template[first : template.index("# --- the image")]


def baseline_context(new: Path, folder: Path, rev: str) -> Path:
    shutil.copytree(new, folder, symlinks=True)
    for cache in list((folder / "model").rglob("__pycache__")):
        shutil.rmtree(cache)
    (folder / "model" / "legion_model" / "entrypoint.py").write_text(at(rev, ENTRYPOINT))
    wheel = next(p.name for p in (new / "wheels").glob("legion_ci-*.whl"))
    ours = dependencies_step((REPO / TEMPLATE).read_text()).replace("{{legion_ci_wheel}}", wheel)
    theirs = dependencies_step(at(rev, TEMPLATE)).replace("{{legion_ci_wheel}}", wheel)
    dockerfile = (new / "Dockerfile").read_text()
    if ours not in dockerfile:
        raise SystemExit("this tree's Dockerfile does not hold its template's dependencies step")
    (folder / "Dockerfile").write_text(dockerfile.replace(ours, theirs))
    return folder


def from_source(client, image: str) -> list[str]:
    out = client.containers.run(image, ["python", "-v", "-c", LOAD], remove=True, stderr=True)
    return [ln for ln in out.decode().splitlines() if re.match(r"# code object from [^']", ln)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a commit of this repository")
    parser.add_argument("--starts", type=int, default=9)
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lcb-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="bench-image-start-"))
    try:
        print("training the wine model ...", file=sys.stderr)
        trained = train_wine(work / "train", alpha=0.5)
        with dockerd(root / "d") as daemon:
            os.environ["DOCKER_HOST"] = daemon.host
            import_base_image(daemon.host)
            from legion_ci.integrations.clients import Clients

            client = Clients(daemon.host).docker()
            args = {"baseImage": BASE_IMAGE, "smokeTest": False}
            ctx = package_ctx(
                trained.artifact, work / "pack", run_id=trained.run_id, arguments=args
            )
            print("building this tree's image and the baseline's ...", file=sys.stderr)
            new = DockerRestPackager().pack(ctx).outputs
            old_ctx = baseline_context(Path(new["context"]), work / "baseline", opts.baseline)
            old = build.build(client, str(old_ctx), "baseline:1", StageLog(work / "old.log"))
            images = {"baseline": old.image_id, "this tree": new["image_id"]}
            for name, image in images.items():
                compiled = from_source(client, image)
                print(f"{name}: {len(compiled)} module(s) compiled from source at load {compiled}")
            times: dict[str, list[float]] = {name: [] for name in images}
            for _ in range(opts.starts):
                for name, image in images.items():
                    times[name].append(
                        start_to_ready(client, image, "/readyz", "LEGION_SERVE_PORT")
                    )
            load = os.getloadavg()[0]
            client.close()
    finally:
        subprocess.run(["rm", "-rf", str(root), str(work)], check=False)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name}: container start to ready, median {medians[name]:.2f} s ({shown})")
    print(
        f"this tree / baseline {opts.baseline}: {medians['this tree'] / medians['baseline']:.2f}; "
        f"load average (1 min) at the end {load:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
