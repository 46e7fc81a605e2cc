"""Shared helpers for the MLflow toolchain tests: real projects, a real TrainContext, a real
`mlflow server` on 127.0.0.1."""

from __future__ import annotations

import contextlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from procs import free_port, http_ok, service

from legion_ci.integrations.base import TrainContext
from legion_ci.processes import StageLog
from legion_ci.redact import Redactor

REPO = Path(__file__).resolve().parent.parent
WINE = REPO / "examples" / "wine"

# A pyfunc model that needs no scikit-learn: quick to log and to load, and sensitive to
# column order (b*10 + a), so a lost order shows in the numbers.
PYFUNC_TRAIN = textwrap.dedent(
    """
    import argparse
    import os
    import sys

    import mlflow
    import mlflow.pyfunc
    import pandas as pd

    class Weighted(mlflow.pyfunc.PythonModel):
        def __init__(self, weight):
            self.weight = weight

        def predict(self, context, model_input, params=None):
            return model_input["b"] * self.weight + model_input["a"]

    parser = argparse.ArgumentParser()
    parser.add_argument("--weight", type=float, default=10.0)
    parser.add_argument("--models", type=int, default=1)
    parser.add_argument("--exit-code", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()

    print("training with weight", args.weight, flush=True)
    if args.sleep:
        import time
        with open("child.pid", "w") as handle:
            handle.write(str(os.getpid()))
        print("sleeping", flush=True)
        time.sleep(args.sleep)
    if args.exit_code:
        for i in range(30):
            print(f"progress line {i}")
        print("boom: the training failed", file=sys.stderr)
        sys.exit(args.exit_code)

    example = pd.DataFrame({"b": [1.0, 2.0], "a": [0.5, 0.25]})
    with mlflow.start_run():
        mlflow.log_metric("rmse", 0.125)
        mlflow.log_metric("r2", 0.875)
        mlflow.set_tag("trained_by", "pyfunc-test")
        for i in range(args.models):
            mlflow.pyfunc.log_model(
                name="model" if i == 0 else f"model{i}",
                python_model=Weighted(args.weight),
                input_example=example,
                pip_requirements=["mlflow", "pandas"],
            )
    """
)

PYFUNC_MLPROJECT = textwrap.dedent(
    """
    name: pyfunc-test
    entry_points:
      main:
        parameters:
          weight: {type: float, default: 10.0}
          models: {type: int, default: 1}
          exit_code: {type: int, default: 0}
          sleep: {type: float, default: 0}
        command: >-
          python train.py --weight {weight} --models {models} --exit-code {exit_code}
          --sleep {sleep}
      needs_alpha:
        parameters:
          alpha: float
        command: python train.py --weight {alpha}
    """
)


def write_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def pyfunc_project(root: Path) -> Path:
    return write_project(root, {"MLproject": PYFUNC_MLPROJECT, "train.py": PYFUNC_TRAIN})


def make_ctx(
    tmp_path: Path,
    project_dir: Path,
    *,
    entrypoint: str = "main",
    hyper_parameters: dict[str, Any] | None = None,
    arguments: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    env: dict[str, str] | None = None,
    model_name: str = "wine",
    secrets: tuple[str, ...] = (),
) -> TrainContext:
    stage = tmp_path / "stage"
    (stage / "out").mkdir(parents=True, exist_ok=True)
    (stage / "scratch").mkdir(parents=True, exist_ok=True)
    return TrainContext(
        model_name=model_name,
        model_version="1.2",
        project_dir=project_dir,
        entrypoint=entrypoint,
        hyper_parameters=dict(hyper_parameters or {}),
        arguments=dict(arguments or {}),
        output_dir=stage / "out",
        scratch_dir=stage / "scratch",
        tracking_uri=tracking_uri or f"sqlite:///{tmp_path / 'mlflow.db'}",
        env=dict(env or {}),
        tags={
            "legion.model.name": model_name,
            "legion.model.version": "1.2",
            "legion.run_id": "run-test-1",
            "legion.git.commit": "0123456789abcdef0123456789abcdef01234567",
        },
        run_id="run-test-1",
        log=StageLog(stage / "train.log", redact=Redactor(secrets)),
    )


@contextlib.contextmanager
def mlflow_server(root: Path, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1, stopped by pid when the block ends (failures too)."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        *extra_args,
    ]
    with service(
        argv,
        root / "server.log",
        ready=http_ok(f"{url}/health"),
        timeout=90,
        cwd=root,
        name="mlflow server",
    ):
        yield url
