"""Benchmark: from a commit to a model answering a request, legion-ci against the MLflow way.

Both start from the same clean copy of the wine project and end when the served model has
answered one prediction request over HTTP:

- legion-ci: `legion-ci run` of a train -> package (docker-rest) -> deploy (docker) pipeline.
- the MLflow way, the same work by hand with MLflow's own tools: `mlflow run` (local env
  manager, the same sqlite tracking store kind), an image built the way
  `mlflow models build-docker` builds one (MLflow plus the model's requirements, serving with
  `mlflow models serve`; on the same base image, from the same wheelhouse, since no image hub
  or package index is reachable here: benchmarks/bench_package.py's MLflow image), then
  `docker run` and a wait for /ping.

Then a second commit that changes only a hyper-parameter (alpha), done both ways again: the
dependency layers and the wheelhouse are warm for both; the old server is replaced.

Targets (issue 27): the first commit <= 0.5x the MLflow way, the second <= 0.3x.

    .venv/bin/python benchmarks/bench_e2e.py [--json]

Needs root (it starts its own dockerd) and the tools scripts/setup.d/20-docker.sh installs.
The wheelhouse cache is fresh for the run; legion-ci goes first, so the MLflow way finds most
of its wheels already downloaded (which favours the peer).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from bench_package import mlflow_model_context  # noqa: E402
from conftest import copy_wine_project  # noqa: E402
from docker_support import BASE_IMAGE, dockerd, import_base_image  # noqa: E402

from legion_ci.integrations.docker_engine import free_port  # noqa: E402
from legion_ci.packaging import build  # noqa: E402
from legion_ci.processes import StageLog  # noqa: E402


def wine_row() -> dict:
    """One row of the data the example trains on (examples/wine/train.py), as split JSON."""
    from sklearn.datasets import load_wine

    # examples/wine/train.py predicts `alcohol` from the other columns.
    frame = load_wine(as_frame=True).frame.drop(columns=["target", "alcohol"])
    return {"columns": list(frame.columns), "data": [frame.iloc[0].tolist()]}


def post(url: str, body: dict) -> bytes:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def wait_ready(url: str, container, limit: float = 300) -> None:
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        container.reload()
        if container.status == "exited":
            raise SystemExit(f"{url}: container exited: {container.logs(tail=20).decode()}")
        if time.monotonic() - started > limit:
            raise SystemExit(f"{url}: not ready within {limit} s")
        time.sleep(0.05)


def run_or_exit(argv: list[str], what: str, **options: Any) -> str:
    """stdout of `argv`; the benchmark stops with the tail of its stderr when it fails."""
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=1800, **options
    )
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc.stdout


def commit(root: Path, message: str) -> None:
    git = ["git", "-C", str(root), "-c", "user.name=b", "-c", "user.email=b@example.invalid"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", message], check=True)


class LegionWay:
    """`legion-ci run` of train -> package (docker-rest) -> deploy (docker)."""

    def __init__(self, root: Path, port: int):
        self.root = root
        self.pipeline = copy_wine_project(root, git=True)
        spec = yaml.safe_load(self.pipeline.read_text(encoding="utf-8"))
        spec["stages"]["train"].pop("baseline", None)
        spec["stages"]["package"] = {
            "integration": "docker-rest",
            "arguments": {"baseImage": BASE_IMAGE},
        }
        spec["stages"]["deploy"] = {"target": "docker", "arguments": {"port": port}}
        self.spec = spec
        self.stage_s: list[dict[str, float]] = []
        self.write(alpha=0.5)
        commit(root, "e2e pipeline")

    def write(self, alpha: float) -> None:
        self.spec["stages"]["train"]["hyperParameters"]["alpha"] = alpha
        self.pipeline.write_text(yaml.safe_dump(self.spec, sort_keys=False), encoding="utf-8")

    def run(self) -> float:
        started = time.monotonic()
        argv = [sys.executable, "-m", "legion_ci.cli.main", "run", str(self.pipeline), "-o", "json"]
        document = json.loads(run_or_exit(argv, "legion-ci run"))
        stages = document["stages"]
        post(stages["deploy"]["outputs"]["url"].rstrip("/") + "/api/model/invoke", wine_row())
        elapsed = time.monotonic() - started
        record = json.loads(Path(document["record"]).read_text(encoding="utf-8"))
        self.stage_s.append({n: st.get("duration_s") for n, st in record["stages"].items()})
        return elapsed

    def delete(self) -> None:
        subprocess.run(
            [
                sys.executable,
                *("-m", "legion_ci.cli.main", "deployments", "delete", "wine"),
                *("--file", str(self.pipeline)),
            ],
            capture_output=True,
            check=False,
            timeout=300,
        )


class MlflowWay:
    """`mlflow run`, an `mlflow models serve` image, `docker run`, wait for /ping."""

    def __init__(self, root: Path, client, port: int):
        self.root = root
        self.client = client
        self.port = port
        copy_wine_project(root, git=True)
        self.project = root / "examples" / "wine"
        self.log = StageLog(root / "mlflow-way.log")
        self.container = None
        self.builds = 0

    def run(self, alpha: float) -> float:
        started = time.monotonic()
        tracking = f"sqlite:///{self.root / 'mlflow.db'}"
        bin_dir = str(Path(sys.executable).parent)
        run_or_exit(
            [
                *(str(Path(bin_dir) / "mlflow"), "run", str(self.project)),
                *("--env-manager", "local", "-e", "main"),
                *("-P", f"alpha={alpha}", "-P", "l1_ratio=0.5"),
            ],
            "mlflow run",
            cwd=self.root,
            # The project's command is `python train.py`: this environment's python.
            env={
                **os.environ,
                "MLFLOW_TRACKING_URI": tracking,
                "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            },
        )
        models = sorted(
            (p.parent for p in self.root.rglob("MLmodel")), key=lambda p: p.stat().st_mtime
        )
        self.builds += 1
        context = mlflow_model_context(self.root / f"image-{self.builds}", models[-1], self.log)
        built = build.build(self.client, str(context), f"mlflow-wine:{self.builds}", self.log)
        self.stop()
        self.container = self.client.containers.run(
            built.image_id,
            detach=True,
            network_mode="host",
            environment={"PORT": str(self.port)},
        )
        wait_ready(f"http://127.0.0.1:{self.port}/ping", self.container)
        body = {"dataframe_split": wine_row()}
        post(f"http://127.0.0.1:{self.port}/invocations", body)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.container is not None:
            self.container.remove(force=True)
            self.container = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-", dir="/tmp"))
    os.environ["LEGION_CI_CACHE"] = str(work / "cache")
    try:
        with dockerd(work / "d") as daemon:
            os.environ["DOCKER_HOST"] = daemon.host
            import_base_image(daemon.host)
            from legion_ci.integrations.clients import Clients

            client = Clients(daemon.host).docker()
            legion = LegionWay(work / "legion", free_port())
            mlflow_way = MlflowWay(work / "mlflow", client, free_port())
            try:
                print("first commit: legion-ci run ...", file=sys.stderr)
                legion_first = legion.run()
                print("first commit: the MLflow way ...", file=sys.stderr)
                mlflow_first = mlflow_way.run(alpha=0.5)
                legion.write(alpha=0.4)
                commit(legion.root, "alpha 0.4")
                print("second commit (alpha 0.4): legion-ci run ...", file=sys.stderr)
                legion_second = legion.run()
                print("second commit (alpha 0.4): the MLflow way ...", file=sys.stderr)
                mlflow_second = mlflow_way.run(alpha=0.4)
            finally:
                legion.delete()
                mlflow_way.stop()
                client.close()
            load = os.getloadavg()[0]
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "legion_first_s": round(legion_first, 1),
        "mlflow_first_s": round(mlflow_first, 1),
        "first_ratio": round(legion_first / mlflow_first, 3),
        "legion_second_s": round(legion_second, 1),
        "mlflow_second_s": round(mlflow_second, 1),
        "second_ratio": round(legion_second / mlflow_second, 3),
        "legion_stage_s": legion.stage_s,
        "load_average_1min": round(load, 1),
    }
    if opts.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"first commit to an answering model: legion-ci {result['legion_first_s']} s, the MLflow"
        f" way {result['mlflow_first_s']} s, ratio {result['first_ratio']:.2f} (target <= 0.5)"
    )
    print(
        f"second commit (a hyper-parameter): legion-ci {result['legion_second_s']} s, the MLflow"
        f" way {result['mlflow_second_s']} s, ratio {result['second_ratio']:.2f} (target <= 0.3)"
    )
    for label, stages in zip(("first", "second"), result["legion_stage_s"], strict=True):
        print(
            f"legion-ci stages, {label} commit: "
            + ", ".join(f"{k} {v} s" for k, v in stages.items())
        )
    print(f"load average (1 min) at the end: {result['load_average_1min']} on {os.cpu_count()}")


if __name__ == "__main__":
    main()
