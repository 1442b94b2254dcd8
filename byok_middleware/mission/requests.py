"""Ledger rows as the request log shows them: JSON objects and CSV lines.

A row never holds prompt or answer text (the ledger has none); the view adds nothing the ledger
does not hold.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from byok_middleware.storage.base import UsageRecord

__all__ = ["CSV_COLUMNS", "request_view", "requests_csv"]

CSV_COLUMNS = (
    "request_id",
    "created_at",
    "tenant_id",
    "route",
    "provider",
    "model",
    "key_id",
    "attribution",
    "status_code",
    "error_type",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "cost_source",
    "cost_saved_usd",
    "latency_ms",
    "ttft_ms",
    "cache_hit",
)


def request_view(row: UsageRecord, *, with_tenant: bool = False) -> dict[str, Any]:
    """One request-log entry; ``tenant_id`` only in the operator's view."""
    view: dict[str, Any] = {
        "request_id": row.request_id,
        "created_at": row.created_at.isoformat(),
        "route": row.endpoint,
        "provider": row.provider,
        "model": row.model,
        "key_id": row.key_id,
        "attribution": row.attribution,
        "status_code": row.status_code,
        "error_type": row.error_type,
        "attempts": row.attempts,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cached_tokens": row.cached_tokens,
        # A string keeps the exact Decimal; null means unpriced, never a silent 0.
        "cost_usd": None if row.cost_usd is None else str(row.cost_usd),
        "cost_source": row.cost_source,
        "cost_saved_usd": None if row.cost_saved_usd is None else str(row.cost_saved_usd),
        "latency_ms": round(row.latency_ms, 3),
        "ttft_ms": _maybe_round(row.ttft_ms),
        "cache_hit": row.cache_hit,
    }
    if with_tenant:
        view["tenant_id"] = row.tenant_id
    return view


def _maybe_round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    # Spreadsheets run a cell starting with these as a formula; model names come from clients.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def requests_csv(rows: Sequence[UsageRecord], *, with_tenant: bool = False) -> bytes:
    """A header line and one line per row (``tenant_id`` empty in a tenant's own export)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        view = request_view(row, with_tenant=with_tenant)
        writer.writerow(_cell(view.get(column)) for column in CSV_COLUMNS)
    return out.getvalue().encode("utf-8")
