"""Micro-benchmark of the MLflow GPPI entrypoint template on its own, without the server.

    flock /tmp/legion-bench.lock .venv/bin/python benchmarks/bench_entrypoint.py
    ... bench_entrypoint.py --template /tmp/old.py --template legion_ci/gppi/templates/...

For each model (the server benchmark's `rf` and `wine`, built and cached by
benchmarks/server_support/models.py) and each batch size (1, 100 and 1,600 rows, real rows of
the training data as the list of lists the server hands over), times:

- raw: the estimator's own predict() on a ready DataFrame in the model's column order, the
  least any MLflow-style server can do;
- template: predict_on_matrix(rows, columns) of the entrypoint template;
- loader: GppiModel.predict(rows, columns), i.e. the template plus legion-ci's to_rows();

and prints the median of each, the overhead (loader - raw) and the ratio loader / raw.
`--template` (repeatable) benchmarks other versions of the template, e.g. one extracted with
`git show HEAD:legion_ci/gppi/templates/mlflow_entrypoint.py > /tmp/old.py`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from benchmarks.server_support.models import build  # noqa: E402
from benchmarks.server_support.servers import CACHE  # noqa: E402
from legion_ci.gppi.loader import GppiModel  # noqa: E402
from legion_ci.gppi.manifest import read_manifest  # noqa: E402

TEMPLATE = REPO / "legion_ci" / "gppi" / "templates" / "mlflow_entrypoint.py"
SIZES = (1, 100, 1600)


def _load_template(path: Path, model_dir: Path, tag: str):
    os.environ["MODEL_LOCATION"] = str(model_dir)
    spec = importlib.util.spec_from_file_location(f"bench_entrypoint_{tag}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.init() == "matrix"
    return module


def _median_ms(func, budget_s: float) -> float:
    func()  # warm up
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 5000):
        began = time.perf_counter()
        func()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000.0


def _measure(key, template, module, wrapped, columns, rows, seconds) -> None:
    import pandas as pd

    estimator = module._model
    order = [columns.index(c) for c in module._columns]
    frame = pd.DataFrame([[r[i] for i in order] for r in rows], columns=module._columns)
    raw = _median_ms(lambda: estimator.predict(frame), seconds)
    tpl = _median_ms(lambda: module.predict_on_matrix(rows, columns), seconds)
    full = _median_ms(lambda: wrapped.predict(rows, columns), seconds)
    expected = estimator.predict(frame).tolist()
    got = [row[0] for row in wrapped.predict(rows, columns)[0]]
    assert got == expected, f"{key} {template}: predictions differ from the estimator's"
    print(
        f"{key:5} {template.name[-24:]:24} {len(rows):>5} {raw:>8.3f} {tpl:>12.3f}"
        f" {full:>10.3f} {full - raw:>12.3f} {full / raw:>10.2f}x",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="rf,wine")
    parser.add_argument("--template", type=Path, action="append", help="template file(s)")
    parser.add_argument("--seconds", type=float, default=1.5, help="time budget per measurement")
    args = parser.parse_args()
    templates = args.template or [TEMPLATE]
    print(f"{'model':5} {'template':24} {'rows':>5} {'raw ms':>8} {'template ms':>12}"
          f" {'loader ms':>10} {'overhead ms':>12} {'loader/raw':>11}")  # fmt: skip
    for key in (m.strip() for m in args.models.split(",") if m.strip()):
        model = build(CACHE / "models", key)
        manifest = read_manifest(model.gppi_dir)
        base = model.rows * (max(SIZES) // len(model.rows) + 1)
        for number, template in enumerate(templates):
            module = _load_template(template, model.gppi_dir / manifest.work_dir, f"{number}")
            wrapped = GppiModel(model.gppi_dir, manifest, module)
            for size in SIZES:
                rows = [list(r) for r in base[:size]]
                _measure(key, template, module, wrapped, model.columns, rows, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
