"""CLI start-up benchmark: `legion-ci --help` and `legion-ci validate` beside `mlflow --help`.

    .venv/bin/python benchmarks/bench_cli.py [--runs 10]

Prints the median wall time of each command over N runs (fresh processes) and the ratio to
`mlflow --help` measured in the same run. Target: both legion-ci commands at most 0.15 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGET_S = 0.15


def median_wall(argv: list[str], runs: int) -> float:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    subprocess.run(argv, env=env, capture_output=True, check=True)  # warm the page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--pipeline", default=str(REPO / "pipelines" / "wine.yaml"))
    args = parser.parse_args()
    legion, mlflow = str(BIN / "legion-ci"), str(BIN / "mlflow")
    cases = {
        "legion-ci --help": [legion, "--help"],
        "legion-ci validate": [legion, "validate", args.pipeline],
        "mlflow --help": [mlflow, "--help"],
    }
    results = {name: median_wall(argv, args.runs) for name, argv in cases.items()}
    peer = results["mlflow --help"]
    print(f"median of {args.runs} runs, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")
    print(f"{'command':<22} {'seconds':>8} {'vs mlflow --help':>17} {'target':>8}")
    ok = True
    for name, seconds in results.items():
        target = "" if name.startswith("mlflow") else f"<= {TARGET_S}"
        if target and seconds > TARGET_S:
            ok, target = False, f"MISSED {TARGET_S}"
        print(f"{name:<22} {seconds:>8.3f} {seconds / peer:>16.3f}x {target:>8}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
