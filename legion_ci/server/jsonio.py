"""JSON on the hot path: orjson when installed (parsing a 100-row body is several times faster,
and the parse runs on the event loop), the standard library otherwise."""

from __future__ import annotations

import json
import math
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps a broken env serving
    orjson = None  # type: ignore[assignment]


class NonFiniteNumber(ValueError):
    """NaN, Infinity or a number too large for a float: not JSON, refused."""


# orjson's limit on nested arrays and objects; the standard library's parser gives up near
# the interpreter's recursion limit (about 1,000), with a RecursionError.
MAX_DEPTH = 1024


class TooDeep(ValueError):
    """Arrays and objects nested deeper than the parsers (and the code after them) can take."""

    def __init__(self) -> None:
        super().__init__(
            f"nested too deeply: JSON arrays and objects may nest at most {MAX_DEPTH} levels"
        )


def _refuse(value: str) -> Any:
    raise NonFiniteNumber(value)


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise NonFiniteNumber(text)
    return number


def loads(data: bytes) -> Any:
    """Parse JSON; raises ValueError (NonFiniteNumber for NaN, Infinity or a number beyond a
    float's range, TooDeep for nesting beyond MAX_DEPTH). What orjson refuses gets a second
    look from the standard library, only to tell those numbers apart from malformed JSON
    (whose error stays orjson's)."""
    try:
        if orjson is None:
            return json.loads(data.decode("utf-8"), parse_constant=_refuse, parse_float=_finite)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if str(exc).startswith("depth limit exceeded"):
                raise TooDeep() from None
            first = exc
        try:
            json.loads(data.decode("utf-8"), parse_constant=_refuse, parse_float=_finite)
        except NonFiniteNumber:
            raise
        except ValueError:
            pass
        raise first
    except RecursionError:
        # The standard library's recursive parser on deep nesting (`[` * 100,000): a client's
        # mistake, not a server failure.
        raise TooDeep() from None


def dumps(obj: Any, encoder: type[json.JSONEncoder] | None = None) -> bytes:
    """Compact JSON bytes. With orjson, NaN/Infinity (which JSON cannot express) become null.

    `encoder` is the model's own encoder (GPPI get_output_json_serializer), used for what
    orjson cannot serialise.
    """
    if orjson is not None:
        try:
            return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            pass  # e.g. an int beyond 64 bits or a custom object: the slow path copes
    if encoder is not None:
        return json.dumps(obj, cls=encoder, separators=(",", ":")).encode()
    return json.dumps(obj, separators=(",", ":"), default=str).encode()
