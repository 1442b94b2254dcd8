"""The one SQL layer: dialects, the session seam the backends fill in, and shared columns.

Statements are written once, in a neutral form: ``?`` for each parameter (never inside a
literal) and ``{name}`` fields for what differs per database (see :class:`Dialect`).
``Dialect.render`` turns one into the database's text, cached, so ``?`` becomes ``$1, $2, ...``
for PostgreSQL. A backend (``SQLiteStore``, ``PostgresStore``) supplies only connections,
transactions, the codecs between Python values and its column formats, and the mapping of its
driver's errors; every query and every contract check lives in the ``sql_*`` modules and
``storage.base``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from byok_middleware.storage.records import (
    KeyStatus,
    ProviderKeyRecord,
    Tenant,
    TenantPolicy,
    UsageRecord,
    WebhookConfig,
    WebhookDelivery,
)

__all__ = [
    "DELIVERY_COLUMNS",
    "KEY_COLUMNS",
    "POLICY_COLUMNS",
    "POSTGRES",
    "SQLITE",
    "TENANT_COLUMNS",
    "USAGE_COLUMNS",
    "WEBHOOK_COLUMNS",
    "Dialect",
    "Row",
    "SQLBase",
    "Session",
    "Violation",
    "columns",
]

Row = Any  # sqlite3.Row or asyncpg.Record: both index by position and by column name
R = TypeVar("R")


def columns(cls: type[object]) -> tuple[str, ...]:
    """The column names of a record type: its fields, so no field can go unstored."""
    return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]


TENANT_COLUMNS = columns(Tenant)
KEY_COLUMNS = columns(ProviderKeyRecord)
USAGE_COLUMNS = columns(UsageRecord)
POLICY_COLUMNS = columns(TenantPolicy)
WEBHOOK_COLUMNS = columns(WebhookConfig)
DELIVERY_COLUMNS = columns(WebhookDelivery)

_PLACEHOLDER = re.compile(r"\?")


# eq=False: a dialect is hashed by identity (its cache key), and it holds a dict.
@dataclass(frozen=True, slots=True, eq=False)
class Dialect:
    """What one database spells differently; every ``{name}`` a statement may use.

    ``day(expr)`` is the UTC date of a stored time as ``YYYY-MM-DD`` text; ``money_sum(expr)``
    aggregates exact money, read back by the backend's ``_money``; ``tenant_lock`` serialises
    writers of one tenant inside a transaction (empty where a transaction already does); the
    type fields are the column types of the migrations.
    """

    name: str
    numbered: bool  # "$1, $2, ..." rather than "?"
    day_sql: str  # with "{expr}"
    money_sum_sql: str  # with "{expr}"
    tenant_lock: str
    text_allows_nul: bool
    types: dict[str, object]

    def day(self, expr: str) -> str:
        return self.day_sql.format(expr=expr)

    def money_sum(self, expr: str) -> str:
        return self.money_sum_sql.format(expr=expr)

    def render(self, sql: str) -> str:
        """``sql`` in this dialect: ``{type}`` fields filled in, ``?`` numbered if need be."""
        return _render(self, sql)


@functools.lru_cache(maxsize=1024)
def _render(dialect: Dialect, sql: str) -> str:
    if "{" in sql:
        sql = sql.format(**dialect.types)
    if not dialect.numbered:
        return sql
    numbers = iter(range(1, sql.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql)


class _Flag:
    """The ``{flag:column}`` type of a NOT NULL flag: SQLite has no boolean, so 0/1 and a CHECK
    on the column."""

    def __init__(self, sqlite: bool) -> None:
        self._sqlite = sqlite

    def __format__(self, column: str) -> str:
        return (
            f"INTEGER NOT NULL CHECK ({column} IN (0, 1))" if self._sqlite else "BOOLEAN NOT NULL"
        )


# SQLite stores times as fixed-width ISO-8601 UTC text ("2025-01-31T23:59:59.000000Z", so text
# order is time order and ranges use the indexes), money as TEXT (exact), flags as 0/1. Its sum()
# goes through REAL and would round money, so money_sum hands the exact strings to the backend.
# A write transaction (BEGIN IMMEDIATE) already excludes every other writer.
SQLITE = Dialect(
    name="sqlite",
    numbered=False,
    day_sql="substr({expr}, 1, 10)",
    money_sum_sql="group_concat({expr}, ',')",
    tenant_lock="",
    text_allows_nul=True,
    types={
        "text_c": "TEXT",
        "time": "TEXT",
        "money": "TEXT",
        "blob": "BLOB",
        "real": "REAL",
        "bigint": "INTEGER",
        "seq": "INTEGER PRIMARY KEY",
        "flag": _Flag(sqlite=True),
    },
)

# PostgreSQL: timestamptz, NUMERIC (exact, any scale), BOOLEAN, BYTEA. Text that is ordered or
# grouped on is COLLATE "C", so it sorts in byte order as SQLite and Python do, whatever the
# cluster's locale. A per-tenant advisory lock (two-int key space: it can never meet the
# migrations' bigint lock) serialises the count-then-insert of provider keys.
POSTGRES = Dialect(
    name="postgresql",
    numbered=True,
    day_sql="to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    money_sum_sql="coalesce(sum({expr}), 0)",
    tenant_lock="SELECT pg_advisory_xact_lock(1652125547, hashtext(?))",
    text_allows_nul=False,
    types={
        "text_c": 'TEXT COLLATE "C"',
        "time": "TIMESTAMPTZ",
        "money": "NUMERIC",
        "blob": "BYTEA",
        "real": "DOUBLE PRECISION",
        "bigint": "BIGINT",
        "seq": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "flag": _Flag(sqlite=False),
    },
)


class Session(Protocol):
    """One connection (inside a transaction or not) taking neutral statements."""

    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...


@dataclass(frozen=True, slots=True)
class Violation:
    """A constraint the database said a write broke: ``kind`` is ``"unique"``,
    ``"foreign_key"`` or ``"other"``; ``target`` of a unique one is the constraint's name
    (PostgreSQL) or ``table.column`` (SQLite)."""

    kind: str
    target: str = ""


class SQLBase:
    """What a backend provides to the shared SQL of ``SQLStore``."""

    dialect: Dialect
    # The driver's exceptions for a broken constraint, and for a value the database refused
    # (out of range, bad text, NULL where none may be).
    _constraint_errors: tuple[type[BaseException], ...] = ()
    _data_errors: tuple[type[BaseException], ...] = ()

    def _session(self) -> AbstractAsyncContextManager[Session]:
        """A connection for statements that are atomic on their own."""
        raise NotImplementedError

    def _transaction(self) -> AbstractAsyncContextManager[Session]:
        """A connection in a transaction, committed when the block ends without an error."""
        raise NotImplementedError

    def _encode(self, value: object, name: str) -> object:
        """A Python value as the column ``name`` stores it; ``ValueError`` for a naive datetime."""
        raise NotImplementedError

    def _values(self, row: Row) -> dict[str, Any]:
        """A fetched row as column name -> Python value (datetimes aware in UTC, money
        Decimal, flags bool, blobs bytes)."""
        raise NotImplementedError

    def _money(self, value: Any) -> Decimal:
        """The value a ``Dialect.money_sum`` column was read as, as an exact Decimal."""
        raise NotImplementedError

    def _violation(self, exc: BaseException) -> Violation:
        """The constraint an exception of ``_constraint_errors`` reports."""
        raise NotImplementedError

    def _encode_usage(self, row: UsageRecord) -> tuple[object, ...]:
        """A ledger row as ``INSERT_USAGE`` binds it (a backend may unroll this: one is
        encoded per request)."""
        return tuple(self._encode(getattr(row, name), name) for name in USAGE_COLUMNS)

    def _params(self, values: Sequence[object], names: Sequence[str]) -> tuple[object, ...]:
        return tuple(self._encode(v, n) for v, n in zip(values, names, strict=True))

    def _record_params(self, record: object, names: Sequence[str]) -> tuple[object, ...]:
        return tuple(self._encode(getattr(record, name), name) for name in names)

    def _record(self, cls: type[R], row: Row) -> R:
        values = self._values(row)
        if cls is ProviderKeyRecord:
            values["status"] = KeyStatus(values["status"])
        return cls(**values)
