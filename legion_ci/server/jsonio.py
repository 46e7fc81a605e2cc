"""JSON on the hot path: orjson when installed (parsing a 100-row body is several times faster,
and the parse runs on the event loop), the standard library otherwise."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps a broken env serving
    orjson = None  # type: ignore[assignment]


def loads(data: bytes) -> Any:
    """Parse JSON; raises ValueError (UnicodeDecodeError for bad UTF-8 with the stdlib)."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


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
