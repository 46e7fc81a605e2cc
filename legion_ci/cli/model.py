"""`legion-ci model self-check|info|predict ARTIFACT`: run a trained model binary locally.

ARTIFACT is a GPPI binary: the zip the train stage produced, or its unpacked folder.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import sys
from pathlib import Path
from typing import Any

import click

from legion_ci.cli.options import output_option
from legion_ci.errors import InputError, ModelError

artifact_argument = click.argument("artifact", type=click.Path(path_type=Path), metavar="ARTIFACT")


def json_flag(func):  # type: ignore[no-untyped-def]
    """`-o/--output json` like every other verb (`--json` still works)."""

    @functools.wraps(func)
    def command(*args, output: str, json_alias: bool, **kwargs):  # type: ignore[no-untyped-def]
        return func(*args, as_json=json_alias or output == "json", **kwargs)

    command = click.option(
        "--json", "json_alias", is_flag=True, hidden=True, help="Same as --output json."
    )(command)
    return output_option(command)


@click.group()
def model() -> None:
    """Self-check, inspect and run a trained model binary (GPPI zip or folder)."""


@model.command("self-check")
@artifact_argument
@json_flag
def self_check_command(artifact: Path, as_json: bool) -> None:
    """Import the binary, init() it, read info() and predict on its example row.

    Exits 1 with the reason when any step fails.
    """
    from legion_ci.gppi.selfcheck import self_check

    try:
        report = self_check(artifact)
    except ModelError:
        raise
    except Exception as exc:  # the model's own code failed: say so in one line
        raise ModelError(f"{artifact}: self-check failed: {type(exc).__name__}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(report))
        return
    model_info = report["model"]
    click.echo(f"{artifact}: self-check passed: {model_info['name']} {model_info['version']}")
    click.echo(
        f"  load {report['load_seconds']}s, predict {report['predict_seconds']}s; "
        f"example -> {json.dumps(report['prediction'])}"
    )


@model.command("info")
@artifact_argument
@json_flag
def info_command(artifact: Path, as_json: bool) -> None:
    """Print the binary's manifest and its input and output schemas."""
    loaded = _load(artifact)
    manifest = loaded.manifest
    # Output columns as the model really answers its example row (type and example).
    outputs, _ = loaded.real_outputs()
    data = {
        "model": {"name": manifest.model_name, "version": manifest.model_version},
        "toolchain": {"name": manifest.toolchain_name, "version": manifest.toolchain_version},
        "output": manifest.output,
        "input": [field.__dict__ for field in loaded.input_fields],
        "outputs": [field.__dict__ for field in outputs],
    }
    if as_json:
        click.echo(json.dumps(data))
        return
    click.echo(f"model: {manifest.model_name} {manifest.model_version}")
    click.echo(f"toolchain: {manifest.toolchain_name} {manifest.toolchain_version}")
    for key, value in manifest.output.items():
        click.echo(f"  {key}: {value}")
    click.echo("input columns (in order):")
    for field in loaded.input_fields:
        required = "" if field.required else ", optional"
        click.echo(f"  {field.name}: {field.type}{required} (example: {field.example!r})")
    click.echo("output columns:")
    for field in outputs:
        click.echo(f"  {field.name}: {field.type} (example: {field.example!r})")


@model.command("predict")
@artifact_argument
@click.option(
    "--input",
    "-i",
    "input_file",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    help='JSON ({"columns": [...], "data": [[...]]} or a list of records) or CSV with a header '
    "row; '-' reads standard input. Without it: the model's example row.",
)
@click.option(
    "--output",
    "-o",
    "output_format",
    type=click.Choice(["json", "csv"]),
    default="json",
    show_default=True,
    help='json: {"columns": [...], "prediction": [[...]]}; csv: a header row, then one row '
    "per input row.",
)
def predict_command(artifact: Path, input_file: Path | None, output_format: str) -> None:
    """Predict on rows from a file (or the model's example row) and print the result."""
    loaded = _load(artifact)
    if input_file is None:
        columns, rows = loaded.example_rows()
        source = "the example row"
    else:
        source = str(input_file)
        text = _read_text(input_file)
        types = {f.name: f.type for f in loaded.input_fields}
        columns, rows = parse_rows(text, source, _kind(input_file, text), types)
    try:
        out_rows, out_columns = loaded.predict(rows, columns)
    except (ValueError, KeyError, TypeError) as exc:
        # The entrypoint's column and type checks: the caller's rows are wrong.
        raise InputError(f"{source}: {_one_line(exc)}") from None
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"{artifact}: predict_on_matrix() failed: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(out_columns)
        writer.writerows(out_rows)
        click.echo(buffer.getvalue(), nl=False)
    else:
        click.echo(json.dumps({"columns": out_columns, "prediction": out_rows}))


def _load(artifact: Path) -> Any:
    from legion_ci.gppi.loader import load_model

    return load_model(artifact)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such input file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (expected JSON or CSV)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None


def _kind(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".json", ".csv"):
        return suffix[1:]
    return "json" if text.lstrip()[:1] in ("{", "[") else "csv"


def parse_rows(
    text: str, source: str, kind: str, types: dict[str, str] | None = None
) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows from JSON (split or records, MLflow's wrappers accepted) or CSV, text
    cells converted to the `types` the model declares."""
    if kind == "csv":
        return _parse_csv(text, source, types or {})
    columns, rows = _parse_json(text, source)
    return columns, _typed(rows, columns, types or {}, source)


def _parse_json(text: str, source: str) -> tuple[list[str], list[list[Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        # The parser recurses per level: `[` * 100,000 is the file's fault, not a crash.
        raise InputError(
            f"{source}: JSON nested too deeply: arrays and objects may nest at most about"
            f" {sys.getrecursionlimit()} levels"
        ) from None
    if isinstance(data, dict) and len(data) == 1:
        # MLflow's scoring-server payloads, so the same file works against both servers.
        key = next(iter(data))
        if key in ("dataframe_split", "dataframe_records"):
            data = data[key]
    if isinstance(data, dict):
        if "columns" not in data or "data" not in data:
            raise InputError(
                f'{source}: a JSON object needs "columns" and "data" '
                f"(got keys: {', '.join(map(str, data)) or 'none'})"
            )
        columns, rows = data["columns"], data["data"]
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise InputError(f'{source}: "columns" must be a list of column names')
        if not isinstance(rows, list):
            raise InputError(f'{source}: "data" must be a list of rows')
        for number, row in enumerate(rows, 1):
            if not isinstance(row, list) or len(row) != len(columns):
                width = len(row) if isinstance(row, list) else "not a list:"
                raise InputError(
                    f'{source}: "data" row {number} has {width} values for {len(columns)} columns'
                )
        return columns, rows
    if isinstance(data, list):
        if not data:
            raise InputError(f"{source}: no rows")
        columns: list[str] = []
        for number, record in enumerate(data, 1):
            if not isinstance(record, dict):
                raise InputError(
                    f"{source}: record {number} is not an object; a JSON list must hold "
                    'records like {"column": value}'
                )
            columns += [str(k) for k in record if str(k) not in columns]
        rows = []
        for number, record in enumerate(data, 1):
            missing = [c for c in columns if c not in record]
            if missing:
                raise InputError(f"{source}: record {number} lacks {', '.join(missing)}")
            rows.append([record[c] for c in columns])
        return columns, rows
    raise InputError(f'{source}: expected {{"columns": ..., "data": ...}} or a list of records')


def _parse_csv(text: str, source: str, types: dict[str, str]) -> tuple[list[str], list[list[Any]]]:
    """CSV through the reader the server's /invocations uses, so both read a file alike
    (the same cells become the same values); errors name the file and line."""
    from legion_ci.gppi.rows import RowError, read_csv, typed_rows

    try:
        header, records = read_csv(text)
        return header, typed_rows(header, records, types)
    except RowError as exc:
        where = f"{source}:{exc.line}" if exc.line else source
        raise InputError(f"{where}: {exc.detail}") from None


def _typed(
    rows: list[list[Any]], columns: list[str], types: dict[str, str], source: str
) -> list[list[Any]]:
    """Text cells (CSV, or strings in JSON) become the numbers/booleans info() declares, the
    way the server converts a CSV body, so every entrypoint (not only ours) receives what it
    was trained on."""
    from legion_ci.gppi.rows import cell_value

    out = []
    for number, row in enumerate(rows, 1):
        converted = []
        for column, value in zip(columns, row, strict=True):
            if not isinstance(value, str) or column not in types:
                converted.append(value)
                continue
            try:
                converted.append(cell_value(value, types[column]))
            except ValueError as exc:
                raise InputError(f"{source}: row {number}, column {column!r}: {exc}") from None
        out.append(converted)
    return out
