"""``SQLStore``: every ``AdminStore`` method, written once over the ``storage.sql`` seam.

A SQL backend subclasses it and supplies what ``SQLBase`` leaves open: connections,
transactions, codecs and driver error mapping.
"""

from __future__ import annotations

from byok_middleware.storage.sql_keys import KeySQL, TenantSQL
from byok_middleware.storage.sql_ledger import LedgerSQL
from byok_middleware.storage.sql_responses import ResponsesSQL
from byok_middleware.storage.sql_router import RouterSQL
from byok_middleware.storage.sql_settings import SettingsSQL

__all__ = ["SQLStore"]


class SQLStore(TenantSQL, KeySQL, LedgerSQL, SettingsSQL, ResponsesSQL, RouterSQL):
    """The shared SQL of a store; see ``AdminStore`` for what each method promises."""

    async def schema_version(self) -> int:
        """The schema version of the open database (for diagnostics and tests)."""
        async with self._session() as session:
            rows = await session.fetch("SELECT coalesce(max(version), 0) FROM schema_version")
        return int(rows[0][0])
