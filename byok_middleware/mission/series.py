"""Ledger rows -> time buckets: the sans-I/O half of ``GET /byok/usage/series``.

Percentiles are computed here, in Python, from the rows ``KeyStore.usage_rows`` returns, so every
backend gives the same figures. The series is dense: every bucket between ``since`` and ``until``
is listed (charts need a steady axis), and a group that had no rows in a bucket has zeros there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from byok_middleware.storage.base import UsageRecord

__all__ = [
    "BUCKETS",
    "SERIES_GROUP_BY",
    "bucket_starts",
    "group_of",
    "percentile",
    "series_view",
]

BUCKETS: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
SERIES_GROUP_BY = ("attribution", "provider", "model", "key", "tenant")
PLATFORM_KEY_GROUP = "platform"  # the ``key`` group of rows served by the operator's key


def floor_to(moment: datetime, bucket: str) -> datetime:
    """The start of the UTC hour or day holding ``moment``."""
    moment = moment.astimezone(UTC)
    if bucket == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def bucket_starts(since: datetime, until: datetime, bucket: str) -> list[datetime]:
    """Every bucket start from the one holding ``since`` up to (not including) ``until``."""
    step = BUCKETS[bucket]
    starts, current = [], floor_to(since, bucket)
    while current < until:
        starts.append(current)
        current += step
    return starts


def group_of(row: UsageRecord, group_by: str | None) -> str | None:
    if group_by is None:
        return None
    if group_by == "key":
        return row.key_id or PLATFORM_KEY_GROUP
    if group_by == "tenant":
        return row.tenant_id
    value: str = getattr(row, group_by)
    return value


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(slots=True)
class _Bucket:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced_requests: int = 0
    cache_hits: int = 0
    saved_usd: Decimal = Decimal(0)
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)

    def add(self, row: UsageRecord) -> None:
        self.requests += 1
        self.errors += row.status_code >= 400
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        if row.cost_usd is None:
            self.unpriced_requests += 1
        else:
            self.cost_usd += row.cost_usd
        self.cache_hits += row.cache_hit
        self.latencies.append(row.latency_ms)
        if row.cost_saved_usd is not None:
            self.saved_usd += row.cost_saved_usd
        if row.ttft_ms is not None:
            self.ttfts.append(row.ttft_ms)

    def view(self, start: datetime, group: str | None) -> dict[str, Any]:
        return {
            "start": start.isoformat(),
            "group": group,
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": float(self.cost_usd),
            "unpriced_requests": self.unpriced_requests,
            "cache_hits": self.cache_hits,
            "saved_usd": float(self.saved_usd),
            "latency_p50_ms": _rounded(percentile(self.latencies, 0.50)),
            "latency_p95_ms": _rounded(percentile(self.latencies, 0.95)),
            "ttft_p50_ms": _rounded(percentile(self.ttfts, 0.50)),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def series_view(
    rows: Iterable[UsageRecord],
    *,
    since: datetime,
    until: datetime,
    bucket: str,
    group_by: str | None,
) -> dict[str, Any]:
    """The JSON body of a series: ``buckets`` (every start, ISO-8601) and ``data``.

    ``data`` holds one entry per (bucket, group) with rows, ordered by start then group; the
    entries of an empty bucket are left out (the client fills zeros from ``buckets``).
    """
    starts = bucket_starts(since, until, bucket)
    cells: dict[tuple[datetime, str | None], _Bucket] = {}
    for row in rows:
        if not since <= row.created_at < until:
            continue
        key = (floor_to(row.created_at, bucket), group_of(row, group_by))
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = _Bucket()
        cell.add(row)
    ordered = sorted(cells.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    groups = sorted({group for (_, group) in cells if group is not None})
    return {
        "object": "byok.usage_series",
        "since": since.isoformat(),
        "until": until.isoformat(),
        "bucket": bucket,
        "group_by": group_by,
        "groups": groups,
        "buckets": [start.isoformat() for start in starts],
        "data": [cell.view(start, group) for (start, group), cell in ordered],
    }
