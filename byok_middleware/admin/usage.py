"""The operator's usage export: totals across tenants per group, as JSON rows or CSV.

CSV has a header row, one row per group, a column per group key (in the order asked) and then
``requests``, ``input_tokens``, ``output_tokens``, ``cost_usd`` (exact decimal text, the sum of
priced rows; unpriced rows count as requests and tokens only).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from byok_middleware.storage.base import AdminUsageRow

__all__ = ["TOTAL_COLUMNS", "export_rows", "usage_csv"]

TOTAL_COLUMNS = ("requests", "input_tokens", "output_tokens", "cost_usd")


def _usd(amount: Decimal) -> str:
    return format(amount.normalize(), "f") if amount else "0"


def export_rows(rows: Sequence[AdminUsageRow], group_by: Sequence[str]) -> list[dict[str, Any]]:
    """JSON rows: the group values by name, then the totals (``cost_usd`` as a number)."""
    return [
        {
            **{key: row.groups.get(key) for key in group_by},
            "requests": row.requests,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
            "cost_usd": float(row.cost_usd),
        }
        for row in rows
    ]


def _cell(value: str) -> str:
    # A value starting with = + - @ would be a formula in a spreadsheet (CSV injection).
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def usage_csv(rows: Sequence[AdminUsageRow], group_by: Sequence[str]) -> str:
    """The CSV text of ``rows``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*group_by, *TOTAL_COLUMNS])
    for row in rows:
        groups = [_cell(row.groups.get(key) or "") for key in group_by]
        writer.writerow(
            [*groups, row.requests, row.input_tokens, row.output_tokens, _usd(row.cost_usd)]
        )
    return out.getvalue()
