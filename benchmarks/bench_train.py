"""Benchmark: `legion-ci stage train pipelines/wine.yaml` against `mlflow run examples/wine`.

Both run the same project with the same parameters, the same environment manager and the same
kind of tracking store (a sqlite file), each in a fresh copy of the project under a temporary
folder so the work tree stays clean. One untimed warm-up each (it creates the sqlite tables and
fills the OS file cache), then N timed runs, alternating so that drift on the machine hits both
sides alike. legion-ci's time includes its whole stage: the run, the GPPI conversion, the
self-check, the zip and checksum, the gates and the run record.

    .venv/bin/python benchmarks/bench_train.py [--runs 5] [--env-manager local] [--json]
        [--fail-above 1.15]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PIPELINE = REPO / "pipelines" / "wine.yaml"


def tool(name: str) -> str:
    """The CLI installed beside this interpreter, so both sides use the same environment."""
    candidate = Path(sys.executable).parent / name
    if not candidate.is_file():
        sys.exit(f"bench_train: {candidate} is missing; install legion-ci into this environment")
    return str(candidate)


def prepare(root: Path, env_manager: str) -> tuple[Path, Path, dict]:
    """Copy pipelines/ and examples/wine/ (their relative layout kept) into `root`."""
    shutil.copytree(
        REPO / "pipelines", root / "pipelines", ignore=shutil.ignore_patterns(".legion")
    )
    shutil.copytree(
        REPO / "examples" / "wine",
        root / "examples" / "wine",
        ignore=shutil.ignore_patterns("mlruns", "__pycache__"),
    )
    pipeline = root / "pipelines" / "wine.yaml"
    spec = yaml.safe_load(pipeline.read_text(encoding="utf-8"))
    train = spec["stages"]["train"]
    train.setdefault("arguments", {})["envManager"] = env_manager
    pipeline.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    project = (pipeline.parent / train["workDir"]).resolve()
    return pipeline, project, train


def timed(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        code = subprocess.call(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    elapsed = time.perf_counter() - started
    if code != 0:
        sys.exit(f"bench_train: {argv[0]} exited with {code}; see {log}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side (default 5)")
    parser.add_argument("--env-manager", choices=["local", "virtualenv"], default="local")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--fail-above", type=float, default=None, help="exit 1 when the ratio exceeds this"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    legion_ci, mlflow = tool("legion-ci"), tool("mlflow")
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        pipeline, project, train = prepare(root, args.env_manager)
        env = {
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            # `mlflow run` with envManager local runs `python` from PATH: make it this one,
            # as legion-ci does itself.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        baseline_dir = root / "mlflow-run"
        baseline_dir.mkdir()
        mlflow_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{baseline_dir / 'mlflow.db'}"}
        mlflow_argv = [
            mlflow,
            "run",
            str(project),
            "--entry-point",
            str(train.get("entrypoint", "main")),
            "--env-manager",
            args.env_manager,
            "--experiment-name",
            str(train.get("arguments", {}).get("experiment") or "wine"),
        ]
        for key, value in (train.get("hyperParameters") or {}).items():
            mlflow_argv += ["-P", f"{key}={value}"]
        legion_argv = [legion_ci, "stage", "train", str(pipeline), "--quiet"]
        log = root / "bench.log"

        timed(legion_argv, pipeline.parent, env, log)  # warm-up, untimed
        timed(mlflow_argv, baseline_dir, mlflow_env, log)
        legion_times, mlflow_times = [], []
        for _ in range(args.runs):
            legion_times.append(timed(legion_argv, pipeline.parent, env, log))
            mlflow_times.append(timed(mlflow_argv, baseline_dir, mlflow_env, log))
        legion_median = statistics.median(legion_times)
        mlflow_median = statistics.median(mlflow_times)
        ratio = legion_median / mlflow_median
        result = {
            "env_manager": args.env_manager,
            "runs": args.runs,
            "legion_ci_stage_train_s": [round(t, 3) for t in legion_times],
            "mlflow_run_s": [round(t, 3) for t in mlflow_times],
            "legion_ci_median_s": round(legion_median, 3),
            "mlflow_median_s": round(mlflow_median, 3),
            "ratio": round(ratio, 3),
        }
        if args.json:
            print(json.dumps(result))
        else:
            print(f"env manager: {args.env_manager}, {args.runs} timed runs each")
            print(
                f"legion-ci stage train: median {legion_median:.2f}s  "
                f"({', '.join(f'{t:.2f}' for t in legion_times)})"
            )
            print(
                f"mlflow run:            median {mlflow_median:.2f}s  "
                f"({', '.join(f'{t:.2f}' for t in mlflow_times)})"
            )
            print(f"ratio: {ratio:.3f}")
        if args.fail_above is not None and ratio > args.fail_above:
            print(f"bench_train: ratio {ratio:.3f} > {args.fail_above}", file=sys.stderr)
            return 1
        return 0
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
