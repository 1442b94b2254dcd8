"""Ledger rows made safe to store, and their one-line JSON form for the journal.

``clean_row`` is applied to every row before it is queued, so a row can never sink a batch
(on any store) for a reason known in advance:

* text (ids, model, provider, endpoint, attribution, error type, cost source): control
  characters (C0, DEL, C1) and lone surrogates are escaped as ``\\xNN`` / ``\\uNNNN``; more
  than ``MAX_TEXT`` characters are cut (a model name is client input; the edge refuses both, this
  is the backstop for anything that slipped through, e.g. an identity callable's tenant id);
* counts (tokens, attempts, status): clamped into ranges far inside int64, so the store's sums
  cannot overflow either (SQLite's ``sum`` raises on int64 overflow);
* latency, time to first token, money: finite, non-negative, bounded; a naive time is UTC.

Every change is flagged in ``error_type`` (``text_escaped``, ``usage_clamped``), so a clamped row
is visible in the ledger rather than silently "fixed".
"""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from byok_middleware.storage.base import UsageRecord

__all__ = [
    "LINE_FIELDS",
    "MAX_COST_USD",
    "MAX_TEXT",
    "MAX_TOKENS",
    "clean_row",
    "row_from_json",
    "row_to_json",
    "row_to_object_json",
]

MAX_TEXT = 512
MAX_TOKENS = (
    10**12
)  # no request is within six orders of magnitude; 9 million such rows sum in int64
MAX_COST_USD = Decimal(10**9)
_MAX_COST = 10**9  # comparing a Decimal with an int is faster than with a Decimal
_MAX_MS = 1e10  # ~115 days

_TEXT = (
    "request_id", "tenant_id", "key_id", "provider", "model", "endpoint", "attribution",
    "error_type", "cost_source",
)  # fmt: skip
_TOKENS = ("prompt_tokens", "completion_tokens", "cached_tokens")
_COUNTS = (
    *((name, 0, MAX_TOKENS) for name in _TOKENS),
    ("status_code", 0, 999),
    ("attempts", 0, 1000),  # 0: answered without an upstream attempt (a cache hit)
)
_FIELDS = tuple(f.name for f in dataclasses.fields(UsageRecord))
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _text(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, text)[:MAX_TEXT]


def _count(value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return low
    if isinstance(value, float | Decimal) and not math.isfinite(value):
        return high if value > 0 else low
    return min(max(int(value), low), high)


def _milliseconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return 0.0
    number = float(value)
    if math.isnan(number):
        return 0.0
    return min(max(number, 0.0), _MAX_MS)


def _money(value: object) -> Decimal | None:
    """A cost within [0, MAX_COST_USD]; None (unpriced) for what is not a number at all."""
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if number.is_nan():
        return None
    return min(max(number, Decimal(0)), MAX_COST_USD)


def _flag(error_type: str | None, flag: str) -> str:
    if not error_type:
        return flag
    return error_type if flag in error_type.split(";") else f"{error_type};{flag}"[:MAX_TEXT]


def _is_clean(row: UsageRecord) -> bool:
    """The fast path (one scan over all the text, plain comparisons): about 2 us."""
    try:
        text = "".join([row.request_id, row.tenant_id, row.key_id or "", row.provider,
                         row.model, row.endpoint, row.attribution, row.error_type or "",
                         row.cost_source or ""])  # fmt: skip
    except TypeError:
        return False  # something is not a string
    if len(text) > MAX_TEXT:
        return False  # (a long total is usually fine: the slow path checks field by field)
    # Printable text has no control character and no surrogate (both are category C), and
    # ``isprintable`` is a plain loop where the regex walks a character class per character.
    if not text.isprintable() and _UNSAFE.search(text):
        return False
    cost, ttft, latency, saved = row.cost_usd, row.ttft_ms, row.latency_ms, row.cost_saved_usd
    return (
        type(row.prompt_tokens) is int
        and type(row.completion_tokens) is int
        and type(row.cached_tokens) is int
        and 0 <= row.prompt_tokens <= MAX_TOKENS
        and 0 <= row.completion_tokens <= MAX_TOKENS
        and 0 <= row.cached_tokens <= MAX_TOKENS
        and type(row.status_code) is int
        and 0 <= row.status_code <= 999
        and type(row.attempts) is int
        and 0 <= row.attempts <= 1000
        and type(latency) is float
        and 0.0 <= latency <= _MAX_MS
        and (ttft is None or (type(ttft) is float and 0.0 <= ttft <= _MAX_MS))
        and (
            cost is None or (type(cost) is Decimal and cost.is_finite() and 0 <= cost <= _MAX_COST)
        )
        and (
            saved is None
            or (type(saved) is Decimal and saved.is_finite() and 0 <= saved <= _MAX_COST)
        )
        and type(row.created_at) is datetime
        and row.created_at.tzinfo is not None
    )


def clean_row(row: UsageRecord) -> UsageRecord:
    """``row`` if it is safe to store as is (the common case: no copy), else a cleaned copy."""
    if _is_clean(row):
        return row
    changes: dict[str, Any] = {}
    flags: list[str] = []
    for name in _TEXT:
        value = getattr(row, name)
        if value is None or (
            type(value) is str and len(value) <= MAX_TEXT and not _UNSAFE.search(value)
        ):
            continue
        changes[name] = _text(value)
        flags.append("text_escaped")
    for name, low, high in _COUNTS:
        value = getattr(row, name)
        if type(value) is not int or not low <= value <= high:
            changes[name] = _count(value, low, high)
            flags.append("usage_clamped")
    for name in ("latency_ms", "ttft_ms"):
        value = getattr(row, name)
        if (value is None and name == "ttft_ms") or (
            type(value) is float and 0.0 <= value <= _MAX_MS
        ):
            continue
        changes[name] = _milliseconds(value)
        if changes[name] != value:  # an int in range is only a type slip, not worth a flag
            flags.append("usage_clamped")
    for name in ("cost_usd", "cost_saved_usd"):
        value = getattr(row, name)
        if value is None:
            continue
        if (
            not isinstance(value, Decimal)
            or not value.is_finite()
            or not 0 <= value <= MAX_COST_USD
        ):
            changes[name] = _money(value)
            flags.append("usage_clamped")
    if not isinstance(row.created_at, datetime):
        changes["created_at"] = datetime.now(UTC)
        flags.append("usage_clamped")
    elif row.created_at.utcoffset() is None:
        changes["created_at"] = row.created_at.replace(tzinfo=UTC)
    if not changes:
        return row
    error_type = changes.get("error_type", row.error_type)
    for flag in dict.fromkeys(flags):
        error_type = _flag(error_type, flag)
    changes["error_type"] = error_type
    return dataclasses.replace(row, **changes)


def _default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


# The journal line: a JSON array, the tag then the values in ``LINE_FIELDS`` order. orjson
# writes a list about three times faster than the dataclass (no field introspection, no
# ``default`` hook for the Decimals), and the line is half the size: timed inside the served app
# under load, 17 us per row as an object, 9-10 us as an array. The order never changes: a later
# version only appends fields (a reader keeps the ones it knows), or uses a new tag.
_LINE_TAG = "r1"
LINE_FIELDS = (
    "request_id", "tenant_id", "key_id", "provider", "model", "endpoint", "attribution",
    "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "status_code",
    "latency_ms", "created_at", "attempts", "cache_hit", "error_type", "ttft_ms", "cost_source",
    "cost_saved_usd",
)  # fmt: skip


def row_to_json(row: UsageRecord) -> bytes:
    """One journal line (with its newline): the tag and the row's values (``LINE_FIELDS``)."""
    cost, saved = row.cost_usd, row.cost_saved_usd
    values = [
        _LINE_TAG, row.request_id, row.tenant_id, row.key_id, row.provider, row.model,
        row.endpoint, row.attribution, row.prompt_tokens, row.completion_tokens,
        row.cached_tokens, None if cost is None else str(cost), row.status_code,
        row.latency_ms, row.created_at, row.attempts, row.cache_hit, row.error_type,
        row.ttft_ms, row.cost_source, None if saved is None else str(saved),
    ]  # fmt: skip
    return orjson.dumps(values, option=orjson.OPT_APPEND_NEWLINE)


def row_to_object_json(row: UsageRecord) -> bytes:
    """The row as a JSON object, for what people read (the dead letters)."""
    return orjson.dumps(row, default=_default)


def row_from_json(line: bytes) -> UsageRecord:
    """The row of one journal line: the array form, or the object form older versions wrote;
    unknown fields (a newer version's) are dropped.

    Raises ``ValueError`` for a line that is not a row (a torn write after a machine crash).
    """
    data = orjson.loads(line)
    if isinstance(data, list):
        if not data or data[0] != _LINE_TAG or len(data) < len(LINE_FIELDS) + 1:
            raise ValueError("a journal line is not a ledger row (unknown form)")
        values = dict(zip(LINE_FIELDS, data[1:], strict=False))
    elif isinstance(data, dict):
        values = {name: data[name] for name in _FIELDS if name in data}
    else:
        raise ValueError("a journal line is not a JSON array or object")
    try:
        values["created_at"] = datetime.fromisoformat(str(values["created_at"]))
        for name in ("cost_usd", "cost_saved_usd"):
            if values.get(name) is not None:
                values[name] = Decimal(str(values[name]))
        return clean_row(UsageRecord(**values))
    except (KeyError, TypeError, InvalidOperation) as exc:
        raise ValueError(f"a journal line is not a ledger row ({type(exc).__name__})") from None
