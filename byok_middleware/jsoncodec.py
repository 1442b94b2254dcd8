"""JSON in and out, the same way everywhere: orjson for speed, the standard library for what
orjson refuses, so both agree on every input. No ASGI here: the engine uses it too."""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "loads"]


def loads(raw: bytes | str) -> Any:
    """Parse JSON text with orjson; what orjson refuses but the standard library reads (integers
    beyond 64 bits, ``NaN``, unpaired surrogate escapes, very deep nesting) is parsed by
    ``json.loads``, so the two agree on every input and only the rare ones pay twice.

    Raises ``ValueError`` (``UnicodeDecodeError`` included) or ``RecursionError``.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; objects JSON has no type for (``Decimal``, ``datetime``) as ``str``.

    orjson writes it; values it refuses (integers beyond 64 bits, non-string keys, unpaired
    surrogates) fall back to ``json.dumps``, which may still raise ``ValueError`` for those.
    """
    try:
        return orjson.dumps(value, default=str, option=_PASSTHROUGH)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


# Types orjson would write itself but differently from ``json.dumps(default=str)``.
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
