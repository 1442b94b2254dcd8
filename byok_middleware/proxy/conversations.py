"""Stored Responses-API conversations: sealed, tenant-scoped, kept for a retention period.

A response created with ``store`` true (the default) is kept with the conversation up to it, so
that ``previous_response_id`` works whichever provider or key serves the next turn, and so that
``GET``/``DELETE /responses/{id}`` answer without asking a provider. What is stored is one JSON
document per response, ``{"response": <response object>, "conversation": [<items>]}``, sealed
with the keyring like provider keys (AES-256-GCM; the associated data binds it to the tenant and
the response id, so a row copied to another tenant or id fails to open). Stores only ever see
ciphertext.

A stream's response is written when its last event is sent; the write is queued as a task, and
a lookup of that id in this process waits for it, so a client that sends its next turn the moment
the stream ends always finds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from byok_middleware.asgi import dumps, loads
from byok_middleware.crypto import DecryptionError, Keyring, associated_data
from byok_middleware.errors import BYOKError, InvalidRequest, NotFound
from byok_middleware.storage.sql_responses import ResponseStore, StoredResponse

__all__ = ["DEFAULT_RETENTION", "Conversation", "Conversations"]

logger = logging.getLogger("byok_middleware.proxy.conversations")

# As long as OpenAI keeps stored responses by default.
DEFAULT_RETENTION = timedelta(days=30)
_AAD_KIND = "responses"
_PURGE_EVERY = timedelta(hours=1)
_MAX_PENDING = 10_000  # queued writes of streamed responses, bounded


@dataclass(frozen=True, slots=True)
class Conversation:
    """A stored response and the items (inputs and outputs, oldest first) up to and with it."""

    response: dict[str, Any]
    items: list[dict[str, Any]]


class Conversations:
    """Seal, store, find and delete a tenant's responses (one instance per router)."""

    def __init__(self, *, retention: timedelta = DEFAULT_RETENTION) -> None:
        self.retention = retention
        self._pending: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._next_purge: datetime | None = None

    def __repr__(self) -> str:
        return f"Conversations(retention={self.retention}, pending={len(self._pending)})"

    @staticmethod
    def _store(store: object) -> ResponseStore:
        if not isinstance(store, ResponseStore):
            raise InvalidRequest(
                "this gateway's store does not keep responses; send 'store': false and pass "
                "the conversation in 'input' instead of 'previous_response_id'",
                param="store",
            )
        return store

    async def save(
        self,
        store: object,
        keyring: Keyring,
        now: datetime,
        tenant_id: str,
        conversation: Conversation,
    ) -> None:
        """Store ``conversation`` under its response's id for ``retention``."""
        responses = self._store(store)
        response_id = str(conversation.response["id"])
        document = {"response": conversation.response, "conversation": conversation.items}
        sealed = keyring.encrypt(
            dumps(document).decode(), associated_data(tenant_id, response_id, _AAD_KIND)
        )
        await responses.put_response(
            StoredResponse(tenant_id, response_id, sealed, now, now + self.retention)
        )
        if self._next_purge is None or now >= self._next_purge:
            self._next_purge = now + _PURGE_EVERY
            purged = await responses.purge_responses(now)
            if purged:
                logger.info("purged %d stored responses past their retention", purged)

    def save_later(
        self,
        store: object,
        keyring: Keyring,
        clock: Callable[[], datetime],
        tenant_id: str,
        conversation: Conversation,
    ) -> None:
        """Queue ``save`` (from synchronous code: a stream's last frame); ``find`` waits for it."""
        key = (tenant_id, str(conversation.response["id"]))
        if len(self._pending) >= _MAX_PENDING:
            logger.warning("too many queued response writes; %s is not stored", key[1])
            return
        task = asyncio.ensure_future(
            self._save_logged(store, keyring, clock(), tenant_id, conversation)
        )
        self._pending[key] = task
        task.add_done_callback(lambda _: self._pending.pop(key, None))

    async def _save_logged(
        self,
        store: object,
        keyring: Keyring,
        now: datetime,
        tenant_id: str,
        conversation: Conversation,
    ) -> None:
        try:
            await self.save(store, keyring, now, tenant_id, conversation)
        except (BYOKError, OSError, ValueError) as exc:
            # The client already has its answer; only a later previous_response_id will miss it.
            logger.warning("a streamed response could not be stored: %s", type(exc).__name__)

    async def find(
        self, store: object, keyring: Keyring, now: datetime, tenant_id: str, response_id: str
    ) -> Conversation | None:
        """The tenant's stored response of this id, or None (absent, expired, another tenant's,
        or sealed for another tenant or id)."""
        pending = self._pending.get((tenant_id, response_id))
        if pending is not None:
            await asyncio.shield(pending)
        row = await self._store(store).get_response(tenant_id, response_id, now)
        if row is None:
            return None
        try:
            text = keyring.decrypt(
                row.ciphertext, associated_data(tenant_id, response_id, _AAD_KIND)
            )
        except DecryptionError:
            logger.warning("stored response %s does not open with this keyring", response_id)
            return None
        document = loads(text)
        if not isinstance(document, Mapping):
            return None
        response, items = document.get("response"), document.get("conversation")
        if not isinstance(response, dict) or not isinstance(items, list):
            return None
        return Conversation(response, [item for item in items if isinstance(item, dict)])

    async def require(
        self,
        store: object,
        keyring: Keyring,
        now: datetime,
        tenant_id: str,
        response_id: str,
        *,
        param: str | None = None,
    ) -> Conversation:
        """``find``, or a 404 in OpenAI's words."""
        found = await self.find(store, keyring, now, tenant_id, response_id)
        if found is None:
            what = "Previous response" if param else "Response"
            raise NotFound(f"{what} with id '{response_id}' not found.", param=param)
        return found

    async def delete(self, store: object, tenant_id: str, response_id: str) -> bool:
        pending = self._pending.get((tenant_id, response_id))
        if pending is not None:
            await asyncio.shield(pending)
        return await self._store(store).delete_response(tenant_id, response_id)
