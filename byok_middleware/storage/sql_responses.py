"""Stored Responses-API conversations: the record, the store Protocol, and their shared SQL.

``POST /v1/responses`` with ``store`` true keeps, per response, the response object and the
conversation up to it (for a later ``previous_response_id``), sealed with the keyring before it
reaches a store: a store only ever holds ``ciphertext``. Rows belong to one tenant; every method
takes ``tenant_id`` and never sees another tenant's rows, so another tenant's id is "not found".
A row past ``expires_at`` is never returned, and ``purge_responses`` deletes such rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from byok_middleware.storage.base import require_aware
from byok_middleware.storage.sql import SQLBase, columns

__all__ = ["RESPONSE_COLUMNS", "MemoryResponses", "ResponseStore", "ResponsesSQL", "StoredResponse"]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One stored response of a tenant: the sealed JSON and its lifetime (aware datetimes)."""

    tenant_id: str
    id: str
    ciphertext: bytes
    created_at: datetime
    expires_at: datetime


@runtime_checkable
class ResponseStore(Protocol):
    """What the Responses API needs of a store (the built-in stores all provide it)."""

    async def put_response(self, response: StoredResponse) -> None:
        """Store the row, replacing the tenant's row of the same id."""

    async def get_response(
        self, tenant_id: str, response_id: str, now: datetime
    ) -> StoredResponse | None:
        """The tenant's row of this id unless it expired at or before ``now``; else None."""

    async def delete_response(self, tenant_id: str, response_id: str) -> bool:
        """Delete the tenant's row; False if it has none of this id."""

    async def purge_responses(self, now: datetime) -> int:
        """Delete every tenant's rows that expired at or before ``now``; how many went."""


RESPONSE_COLUMNS = columns(StoredResponse)
_INSERT = (
    f"INSERT INTO stored_responses ({', '.join(RESPONSE_COLUMNS)}) "  # noqa: S608 -- constants
    f"VALUES ({', '.join('?' * len(RESPONSE_COLUMNS))}) "
    "ON CONFLICT (tenant_id, id) DO UPDATE SET ciphertext = excluded.ciphertext, "
    "created_at = excluded.created_at, expires_at = excluded.expires_at"
)
_SELECT = (
    f"SELECT {', '.join(RESPONSE_COLUMNS)} FROM stored_responses "  # noqa: S608 -- constants
    "WHERE tenant_id = ? AND id = ? AND expires_at > ?"
)
_DELETE = "DELETE FROM stored_responses WHERE tenant_id = ? AND id = ?"
_PURGE = "DELETE FROM stored_responses WHERE expires_at <= ?"


class ResponsesSQL(SQLBase):
    """``ResponseStore`` over the ``storage.sql`` seam."""

    async def put_response(self, response: StoredResponse) -> None:
        require_aware(response.created_at, "created_at")
        require_aware(response.expires_at, "expires_at")
        params = self._record_params(response, RESPONSE_COLUMNS)
        async with self._session() as session:
            await session.execute(_INSERT, params)

    async def get_response(
        self, tenant_id: str, response_id: str, now: datetime
    ) -> StoredResponse | None:
        params = (tenant_id, response_id, self._encode(now, "now"))
        async with self._session() as session:
            rows = await session.fetch(_SELECT, params)
        return self._record(StoredResponse, rows[0]) if rows else None

    async def delete_response(self, tenant_id: str, response_id: str) -> bool:
        async with self._session() as session:
            return await session.execute(_DELETE, (tenant_id, response_id)) > 0

    async def purge_responses(self, now: datetime) -> int:
        async with self._session() as session:
            return await session.execute(_PURGE, (self._encode(now, "now"),))


class MemoryResponses:
    """``ResponseStore`` on a dict (for ``MemoryStore``); nothing awaits, so each call is atomic."""

    def __init__(self) -> None:
        self._responses: dict[tuple[str, str], StoredResponse] = {}

    async def put_response(self, response: StoredResponse) -> None:
        require_aware(response.created_at, "created_at")
        require_aware(response.expires_at, "expires_at")
        self._responses[(response.tenant_id, response.id)] = dataclasses.replace(
            response,
            created_at=response.created_at.astimezone(UTC),
            expires_at=response.expires_at.astimezone(UTC),
        )

    async def get_response(
        self, tenant_id: str, response_id: str, now: datetime
    ) -> StoredResponse | None:
        found = self._responses.get((tenant_id, response_id))
        return found if found is not None and found.expires_at > now else None

    async def delete_response(self, tenant_id: str, response_id: str) -> bool:
        return self._responses.pop((tenant_id, response_id), None) is not None

    async def purge_responses(self, now: datetime) -> int:
        expired = [k for k, row in self._responses.items() if row.expires_at <= now]
        for key in expired:
            del self._responses[key]
        return len(expired)
