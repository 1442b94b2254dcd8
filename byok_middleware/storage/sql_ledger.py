"""The shared SQL of the usage ledger (see ``storage.sql``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from byok_middleware.storage.base import (
    UsageBatchError,
    check_admin_group_by,
    check_group_by,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from byok_middleware.storage.records import AdminUsageRow, UsageRecord, UsageTotal
from byok_middleware.storage.sql import USAGE_COLUMNS, SQLBase

__all__ = ["LedgerSQL"]

_SELECT_USAGE = f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage"  # noqa: S608 -- constant
# ON CONFLICT rather than SQLite's INSERT OR IGNORE, which would also drop a row breaking a
# NOT NULL or CHECK constraint without a word.
_INSERT_USAGE = (
    f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) "  # noqa: S608 -- constant
    f"VALUES ({', '.join('?' * len(USAGE_COLUMNS))}) ON CONFLICT (request_id) DO NOTHING"
)
# The text columns PostgreSQL refuses NUL in (``\x00``).
_TEXT_FIELDS = (
    "request_id", "tenant_id", "key_id", "provider", "model", "endpoint", "attribution",
    "error_type", "cost_source",
)  # fmt: skip
_NEWEST_FIRST = " ORDER BY created_at DESC, request_id DESC LIMIT ?"
_COUNT_UNPRICED = "coalesce(sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END), 0)"
_COUNT_CACHE_HITS = "coalesce(sum(CASE WHEN cache_hit THEN 1 ELSE 0 END), 0)"
_TOKENS = "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0)"


class LedgerSQL(SQLBase):
    """The usage ledger: batched writes, totals, pages and series."""

    def _group_sql(self, key: str) -> str:
        # Trusted SQL for each grouping; user input only ever selects one of these.
        if key == "day":
            return self.dialect.day("created_at")
        return "tenant_id" if key == "tenant" else key

    def _where(
        self,
        tenant_id: str | None,
        since: datetime | None,
        until: datetime | None,
        **equal: object,
    ) -> tuple[str, list[object]]:
        """A WHERE clause (trusted text; empty if nothing filters) and its parameters for the
        rows in [since, until) of one tenant (None: all), with ``column = value`` filters for
        each ``equal`` value that is not None."""
        clauses, params = [], list[object]()
        for column, value in (("tenant_id", tenant_id), *equal.items()):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        bounds = (("created_at >= ?", "since", since), ("created_at < ?", "until", until))
        for clause, name, value in bounds:
            if value is not None:
                clauses.append(clause)
                params.append(self._encode(value, name))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    async def record_usage(self, rows: Sequence[UsageRecord]) -> None:
        # Encoded and checked before the transaction: a row the store cannot take is named,
        # and none of the batch is stored.
        encoded, bad, reason = [], set[int](), ""
        for index, row in enumerate(rows):
            try:
                encoded.append(self._encode_usage(row))
            except ValueError as exc:
                bad.add(index)
                reason = str(exc)
            if not self.dialect.text_allows_nul and any(
                "\x00" in value for name in _TEXT_FIELDS if (value := getattr(row, name))
            ):
                bad.add(index)
                reason = f"the {self.dialect.name} ledger cannot store NUL characters in text"
        if bad:
            raise UsageBatchError(
                f"{len(bad)} of {len(rows)} ledger rows cannot be stored ({reason}); "
                "none of the batch was",
                tuple(sorted(bad)),
            )
        if not encoded:
            return
        try:
            async with self._transaction() as tx:
                # One statement per row, in order: a request id repeated within the batch keeps
                # its first row, as across batches.
                await tx.executemany(_INSERT_USAGE, encoded)
        except self._data_errors as exc:
            raise UsageBatchError(
                f"the database refused the ledger batch of {len(rows)} rows "
                f"({type(exc).__name__}); none of it was stored",
                None,
            ) from exc

    async def usage_totals(
        self,
        tenant_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: str | None = None,
    ) -> list[UsageTotal]:
        check_group_by(group_by)
        where, params = self._where(tenant_id, since, until)
        money = self.dialect.money_sum
        group = "CAST(NULL AS TEXT)" if group_by is None else self._group_sql(group_by)
        # Without GROUP BY an aggregate query returns exactly one row: the grand total.
        tail = "" if group_by is None else " GROUP BY grp ORDER BY grp"
        sql = (
            f"SELECT {group} AS grp, count(*), {_TOKENS}, {money('cost_usd')}, "  # noqa: S608 -- trusted fragments
            f"{_COUNT_UNPRICED}, {_COUNT_CACHE_HITS}, {money('cost_saved_usd')} "
            f"FROM usage{where}{tail}"
        )
        async with self._session() as session:
            rows = await session.fetch(sql, params)
        return [
            UsageTotal(
                group=row[0],
                requests=int(row[1]),
                prompt_tokens=int(row[2]),
                completion_tokens=int(row[3]),
                cost_usd=self._money(row[4]),
                unpriced_requests=int(row[5]),
                cache_hits=int(row[6]),
                saved_usd=self._money(row[7]),
            )
            for row in rows
        ]

    async def admin_usage(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Sequence[str],
    ) -> list[AdminUsageRow]:
        keys = check_admin_group_by(group_by)
        where, params = self._where(None, since, until)
        groups = "".join(f"{self._group_sql(k)} AS g{n}, " for n, k in enumerate(keys))
        names = ", ".join(f"g{n}" for n in range(len(keys)))
        tail = f" GROUP BY {names} ORDER BY {names}" if keys else ""
        sql = (
            f"SELECT {groups}count(*), {_TOKENS}, {self.dialect.money_sum('cost_usd')} "  # noqa: S608 -- trusted fragments
            f"FROM usage{where}{tail}"
        )
        async with self._session() as session:
            rows = await session.fetch(sql, params)
        width = len(keys)
        return [
            AdminUsageRow(
                groups={k: str(row[n]) for n, k in enumerate(keys)},
                requests=int(row[width]),
                input_tokens=int(row[width + 1]),
                output_tokens=int(row[width + 2]),
                cost_usd=self._money(row[width + 3]),
            )
            for row in rows
        ]

    async def key_spend(self, key_id: str, since: datetime) -> Decimal:
        money = self.dialect.money_sum("cost_usd")
        sql = f"SELECT {money} FROM usage WHERE key_id = ? AND created_at >= ?"  # noqa: S608 -- trusted fragment
        async with self._session() as session:
            rows = await session.fetch(sql, (key_id, self._encode(since, "since")))
        return self._money(rows[0][0])

    async def spend_since(self, tenant_id: str, since: datetime) -> tuple[Decimal, Decimal]:
        money = self.dialect.money_sum
        platform = "CASE WHEN attribution <> 'byok' THEN cost_usd END"
        sql = (
            f"SELECT {money('cost_usd')}, {money(platform)} FROM usage "  # noqa: S608 -- trusted fragments
            "WHERE tenant_id = ? AND created_at >= ?"
        )
        async with self._session() as session:
            rows = await session.fetch(sql, (tenant_id, self._encode(since, "since")))
        return self._money(rows[0][0]), self._money(rows[0][1])

    async def list_usage(
        self, tenant_id: str, *, limit: int = 100, since: datetime | None = None
    ) -> list[UsageRecord]:
        check_limit(limit)
        where, params = self._where(tenant_id, since, None)
        sql = f"{_SELECT_USAGE}{where} ORDER BY created_at DESC, seq DESC LIMIT ?"
        async with self._session() as session:
            rows = await session.fetch(sql, [*params, limit])
        return [self._record(UsageRecord, row) for row in rows]

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
        where, params = self._where(
            tenant_id, since, until, status_code=status, provider=provider, model=model
        )
        if cursor is not None:
            after_time, after_id = decode_cursor(cursor)
            stamp = self._encode(after_time, "cursor")
            where += (" AND " if where else " WHERE ") + (
                "(created_at < ? OR (created_at = ? AND request_id < ?))"
            )
            params += [stamp, stamp, after_id]
        # One row more than asked for says whether there is a next page.
        async with self._session() as session:
            rows = await session.fetch(_SELECT_USAGE + where + _NEWEST_FIRST, [*params, limit + 1])
        page = [self._record(UsageRecord, row) for row in rows[:limit]]
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
        where, params = self._where(tenant_id, since, until)
        sql = f"{_SELECT_USAGE}{where} ORDER BY created_at, seq LIMIT ?"
        async with self._session() as session:
            rows = await session.fetch(sql, [*params, limit])
        return [self._record(UsageRecord, row) for row in rows]
