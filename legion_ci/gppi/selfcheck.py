"""The GPPI self-check: import, init(), info(), predict_on_matrix() on the model's example.

Run it in a fresh interpreter (`python -m legion_ci.gppi.selfcheck PATH`) so a model's
imports never leak into the runner; it prints one JSON object on stdout.

At train time (the `--warm`/`--stdin` modes the train stage uses, on the binary's folder
before it is zipped) the prediction it made is recorded in the binary as `EXAMPLE_NAME`
beside the manifest: the model server documents it as the response example instead of
calling the model at start, which a model with state (a counter, a database write) would see
as a call nobody made.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from legion_ci.errors import LegionError, ModelError

if TYPE_CHECKING:
    from legion_ci.gppi.loader import Field, GppiModel

# The self-check's example and the model's answer to it, at the root of the binary.
EXAMPLE_NAME = "legion.example.json"
# A record bigger than this is not written (nor read): one row's answer is small, and the
# server reads it at every start.
MAX_EXAMPLE_BYTES = 64 * 1024


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


def record_example(root: Path, report: dict[str, Any]) -> bool:
    """Write the self-check's example and prediction into the binary folder `root`; False
    when it cannot be recorded (too big, or NaN in it, which JSON cannot hold): the server
    then documents info()'s declared output instead. Never fails the self-check."""
    try:
        data = json.dumps(
            {"example": report["example"], "prediction": report["prediction"]},
            separators=(",", ":"),
            allow_nan=False,
        ).encode()
    except ValueError:
        return False
    if len(data) > MAX_EXAMPLE_BYTES:
        return False
    try:
        (Path(root) / EXAMPLE_NAME).write_bytes(data)
    except OSError:
        return False
    return True


def recorded_prediction(model: GppiModel) -> tuple[list[list[Any]], list[str]] | None:
    """The prediction recorded at train time for the model's example row, as (rows, columns);
    None when the binary has no usable record (Legion's binaries, a record over the size
    limit or malformed, or made for another example row than info() now gives)."""
    path = Path(model.root) / EXAMPLE_NAME
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_EXAMPLE_BYTES + 1)
    except OSError:
        return None
    try:
        data = json.loads(raw) if len(raw) <= MAX_EXAMPLE_BYTES else None
        columns, rows = model.example_rows()
        if data["example"] != {"columns": columns, "data": rows}:
            return None
        out_rows, out_columns = data["prediction"]["data"], data["prediction"]["columns"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    if not (
        isinstance(out_rows, list)
        and out_rows
        and all(isinstance(row, list) for row in out_rows)
        and isinstance(out_columns, list)
        and all(isinstance(c, str) for c in out_columns)
    ):
        return None
    return out_rows, out_columns


def typed_outputs(
    model: GppiModel, prediction: tuple[list[list[Any]], list[str]] | None
) -> list[Field]:
    """The output columns as the model really answers: the recorded prediction gives each
    column's name, JSON type (a string-label classifier answers strings, whatever info()
    says) and example; without one, info()'s declared fields."""
    from legion_ci.gppi.loader import Field, _observed_type

    if prediction is None:
        return model.output_fields
    out_rows, out_columns = prediction
    first = out_rows[0]
    if len(first) != len(out_columns):
        return model.output_fields
    declared = {f.name: f for f in model.output_fields}
    fields = []
    for i, (name, value) in enumerate(zip(out_columns, first, strict=True)):
        field = declared.get(name)
        if field is None and len(model.output_fields) == len(out_columns):
            field = model.output_fields[i]
        fields.append(
            Field(
                name=name,
                type=_observed_type(value, field.type if field else None),
                required=field.required if field else True,
                example=value,
            )
        )
    return fields


def main(argv: list[str]) -> int:
    """`selfcheck PATH`, or `selfcheck --warm|--stdin`: (pre-import, then) read PATH on stdin,
    the train stage's way, which also records the example's prediction in the binary."""
    record = False
    if argv and argv[0] in ("--warm", "--stdin"):
        record = True
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
        if record and Path(path).is_dir():
            record_example(Path(path), report)
    except LegionError as exc:
        report = {"ok": False, "error": str(exc)}
    except Exception as exc:  # a model's own bug: report it, the caller decides
        report = {"ok": False, "error": f"{path}: {type(exc).__name__}: {exc}"}
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
