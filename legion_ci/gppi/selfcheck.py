"""The GPPI self-check: import, init(), info(), predict_on_matrix() on the model's example.

Run it in a fresh interpreter (`python -m legion_ci.gppi.selfcheck PATH`) so a model's
imports never leak into the runner; it prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from legion_ci.errors import LegionError, ModelError


def self_check(path: Path | str) -> dict[str, Any]:
    from legion_ci.gppi.loader import load_model

    started = time.perf_counter()
    model = load_model(path)
    loaded = time.perf_counter()
    columns, rows = model.example_rows()
    try:
        out_rows, out_columns = model.predict(rows, columns)
    except Exception as exc:
        raise ModelError(
            f"{path}: predict_on_matrix() failed on the example row: {type(exc).__name__}: {exc}"
        ) from exc
    if len(out_rows) != len(rows):
        raise ModelError(
            f"{path}: predict_on_matrix() returned {len(out_rows)} rows for {len(rows)} input rows"
        )
    json.dumps(out_rows)
    return {
        "ok": True,
        "model": {"name": model.name, "version": model.version},
        "input": [f.__dict__ for f in model.input_fields],
        "output": [f.__dict__ for f in model.output_fields],
        "example": {"columns": columns, "data": rows},
        "prediction": {"columns": out_columns, "data": out_rows},
        "load_seconds": round(loaded - started, 4),
        "predict_seconds": round(time.perf_counter() - loaded, 4),
    }


# Imported ahead by a warm self-check while the training still runs (on the other core):
# for a scikit-learn model these imports are nearly all of the self-check's time.
WARM_IMPORTS = ("numpy", "pandas", "sklearn", "skops.io", "cloudpickle")


def _warm_up() -> None:
    import importlib

    for name in WARM_IMPORTS:
        try:
            importlib.import_module(name)
        except Exception:  # not installed, or broken: the model's own import will say so
            continue


def main(argv: list[str]) -> int:
    """`selfcheck PATH`, or `selfcheck --warm|--stdin`: (pre-import, then) read PATH on stdin."""
    if argv and argv[0] in ("--warm", "--stdin"):
        if argv[0] == "--warm":
            _warm_up()
        path = sys.stdin.readline().strip()
        if not path:  # the stage ended before producing a binary
            return 0
    elif argv:
        path = argv[0]
    else:
        print("usage: python -m legion_ci.gppi.selfcheck PATH | --warm", file=sys.stderr)
        return 2
    try:
        report = self_check(path)
    except LegionError as exc:
        report = {"ok": False, "error": str(exc)}
    except Exception as exc:  # a model's own bug: report it, the caller decides
        report = {"ok": False, "error": f"{path}: {type(exc).__name__}: {exc}"}
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
