"""One reading of input rows from CSV text, shared by the server's `/invocations` (text/csv) and
`legion-ci model predict --input FILE.csv`, so both accept the same files and turn each cell
into the same value. Errors carry the line and column; each caller words the place its way
(a file position, or "CSV line N" in an HTTP answer)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

NUMBER_TYPES = frozenset(("number", "float", "double"))
INTEGER_TYPES = frozenset(("integer", "int", "long"))
BOOLEAN_TYPES = frozenset(("boolean", "bool"))
_TRUE = frozenset(("true", "1", "yes"))
_FALSE = frozenset(("false", "0", "no"))


class RowError(ValueError):
    """A problem with the CSV text: `line` (1-based, or None) and what was wrong."""

    def __init__(self, detail: str, line: int | None = None):
        super().__init__(detail if line is None else f"line {line}: {detail}")
        self.detail = detail
        self.line = line


def read_csv(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (stripped names) and each data row with its line number. Blank rows are
    skipped; a byte-order mark is not part of the first name."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        raise RowError("empty CSV; the first row must name the columns") from None
    except csv.Error as exc:
        raise RowError(f"not valid CSV: {exc}", 1) from None
    header = [h.strip() for h in header]
    if not any(header):
        raise RowError("the first row must name the columns", 1)
    records: list[tuple[int, list[str]]] = []
    try:
        for record in reader:
            if not record or not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                raise RowError(f"{len(record)} values for {len(header)} columns", reader.line_num)
            records.append((reader.line_num, record))
    except csv.Error as exc:
        raise RowError(f"not valid CSV: {exc}", reader.line_num) from None
    if not records:
        raise RowError("no data rows after the header")
    return header, records


def cell_value(text: str, type_name: str) -> Any:
    """A CSV cell as the value its declared type says; an empty cell is None (missing).
    Raises ValueError with what was wrong."""
    raw, text = text, text.strip()
    if not text:
        return None
    kind = type_name.lower()
    if kind in NUMBER_TYPES:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"non-finite numbers are not accepted, got {text!r}")
        return number
    if kind in INTEGER_TYPES:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if kind in BOOLEAN_TYPES:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"expected a boolean (true/false), got {text!r}")
    return raw


def typed_rows(
    header: list[str], records: list[tuple[int, list[str]]], types: dict[str, str]
) -> list[list[Any]]:
    """Each record's cells converted by its column's declared type (unknown columns: text)."""
    kinds = [types.get(name, "string") for name in header]
    rows = []
    for line, record in records:
        row = []
        for name, kind, text in zip(header, kinds, record, strict=True):
            try:
                row.append(cell_value(text, kind))
            except ValueError as exc:
                raise RowError(f"column {name!r}: {exc}", line) from None
        rows.append(row)
    return rows
