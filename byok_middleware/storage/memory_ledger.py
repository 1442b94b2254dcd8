"""The usage ledger of ``MemoryStore``, on a dict in insertion order (see ``storage.memory``)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from byok_middleware.storage.base import (
    UsageBatchError,
    check_admin_group_by,
    check_group_by,
    check_limit,
    decode_cursor,
    encode_cursor,
    require_aware,
)
from byok_middleware.storage.records import AdminUsageRow, UsageRecord, UsageTotal

__all__ = ["MemoryLedger"]


def _group_value(row: UsageRecord, key: str) -> str:
    if key == "day":
        return row.created_at.date().isoformat()
    return row.tenant_id if key == "tenant" else str(getattr(row, key))


def _cost(rows: Iterable[UsageRecord], of: Callable[[UsageRecord], Decimal | None]) -> Decimal:
    return sum((c for r in rows if (c := of(r)) is not None), Decimal(0))


class MemoryLedger:
    """Ledger rows by request id; every method runs without awaiting, so atomically."""

    def __init__(self) -> None:
        self._usage: dict[str, UsageRecord] = {}  # by request_id, in insertion order

    async def record_usage(self, rows: Sequence[UsageRecord]) -> None:
        # Check the whole batch first: like a transaction, a bad row stores nothing.
        bad = tuple(i for i, row in enumerate(rows) if row.created_at.utcoffset() is None)
        if bad:
            raise UsageBatchError(
                f"{len(bad)} of {len(rows)} ledger rows cannot be stored (created_at must be "
                "a timezone-aware datetime); none of the batch was",
                bad,
            )
        for row in rows:
            if row.request_id not in self._usage:
                self._usage[row.request_id] = dataclasses.replace(
                    row, created_at=row.created_at.astimezone(UTC)
                )

    def _window(
        self, tenant_id: str | None, since: datetime | None, until: datetime | None
    ) -> list[UsageRecord]:
        """Rows of one tenant (None: all) in [since, until), in insertion order."""
        require_aware(since, "since")
        require_aware(until, "until")
        return [
            row
            for row in self._usage.values()
            if (tenant_id is None or row.tenant_id == tenant_id)
            and (since is None or row.created_at >= since)
            and (until is None or row.created_at < until)
        ]

    def _groups(
        self, rows: list[UsageRecord], keys: Sequence[str]
    ) -> list[tuple[tuple[str, ...], list[UsageRecord]]]:
        groups: dict[tuple[str, ...], list[UsageRecord]] = defaultdict(list)
        if not keys:
            groups[()] = rows  # the grand total exists even when it is all zeros
        for row in rows if keys else ():
            groups[tuple(_group_value(row, k) for k in keys)].append(row)
        return sorted(groups.items())

    async def usage_totals(
        self,
        tenant_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: str | None = None,
    ) -> list[UsageTotal]:
        check_group_by(group_by)
        keys = () if group_by is None else (group_by,)
        return [
            UsageTotal(
                group=group[0] if group else None,
                requests=len(members),
                prompt_tokens=sum(r.prompt_tokens for r in members),
                completion_tokens=sum(r.completion_tokens for r in members),
                cost_usd=_cost(members, lambda r: r.cost_usd),
                unpriced_requests=sum(1 for r in members if r.cost_usd is None),
                cache_hits=sum(1 for r in members if r.cache_hit),
                saved_usd=_cost(members, lambda r: r.cost_saved_usd),
            )
            for group, members in self._groups(self._window(tenant_id, since, until), keys)
        ]

    async def admin_usage(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Sequence[str],
    ) -> list[AdminUsageRow]:
        keys = check_admin_group_by(group_by)
        return [
            AdminUsageRow(
                groups=dict(zip(keys, group, strict=True)),
                requests=len(members),
                input_tokens=sum(r.prompt_tokens for r in members),
                output_tokens=sum(r.completion_tokens for r in members),
                cost_usd=_cost(members, lambda r: r.cost_usd),
            )
            for group, members in self._groups(self._window(None, since, until), keys)
        ]

    async def key_spend(self, key_id: str, since: datetime) -> Decimal:
        rows = [r for r in self._window(None, since, None) if r.key_id == key_id]
        return _cost(rows, lambda r: r.cost_usd)

    async def spend_since(self, tenant_id: str, since: datetime) -> tuple[Decimal, Decimal]:
        rows = self._window(tenant_id, since, None)
        platform = [r for r in rows if r.attribution != "byok"]
        return _cost(rows, lambda r: r.cost_usd), _cost(platform, lambda r: r.cost_usd)

    async def list_usage(
        self, tenant_id: str, *, limit: int = 100, since: datetime | None = None
    ) -> list[UsageRecord]:
        check_limit(limit)
        rows = self._window(tenant_id, since, None)
        # Newest first; among equal times the later insert first (sorted() is stable).
        return sorted(reversed(rows), key=lambda r: r.created_at, reverse=True)[:limit]

    async def list_requests(
        self,
        tenant_id: str | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        status: int | None = None,
        provider: str | None = None,
        model: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[UsageRecord], str | None]:
        check_limit(limit)
        after = None if cursor is None else decode_cursor(cursor)
        rows = [
            r
            for r in self._window(tenant_id, since, until)
            if (status is None or r.status_code == status)
            and (provider is None or r.provider == provider)
            and (model is None or r.model == model)
            and (after is None or (r.created_at, r.request_id) < after)
        ]
        rows.sort(key=lambda r: (r.created_at, r.request_id), reverse=True)
        page = rows[:limit]
        more = len(rows) > limit
        return page, encode_cursor(page[-1].created_at, page[-1].request_id) if more else None

    async def usage_rows(
        self,
        tenant_id: str | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100_000,
    ) -> list[UsageRecord]:
        check_limit(limit)
        rows = self._window(tenant_id, since, until)
        return sorted(rows, key=lambda r: r.created_at)[:limit]  # stable: insertion order next
