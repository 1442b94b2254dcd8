"""Alerts to the key owner: ``KeyEvent``s delivered to the tenant's webhook, as an ``Observer``.

``key_event`` only schedules work on the running loop; the delivery (store lookup, secret
decryption, URL check, signed POST with retries, one delivery-log row per attempt) runs in the
background. At most ``max_pending`` deliveries wait at a time (more are dropped with a
warning), and one (tenant, event, key) fires at most once per ``min_interval`` seconds, so a
key that keeps failing does not flood its owner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from byok_middleware.crypto import DecryptionError, Keyring
from byok_middleware.storage.base import AdminStore, WebhookConfig, WebhookDelivery
from byok_middleware.telemetry.observer import AttemptResult, KeyEvent, RequestEnd, RequestStart
from byok_middleware.telemetry.webhooks import UnsafeWebhookURL, check_webhook_url, deliver

__all__ = ["WebhookNotifier", "event_body", "webhook_aad"]

logger = logging.getLogger("byok_middleware.webhooks")


def webhook_aad(tenant_id: str) -> bytes:
    """Associated data binding a webhook secret's envelope to its tenant."""
    return b"byok-webhook\x00" + tenant_id.encode("utf-8")


def event_body(event: KeyEvent, event_id: str, when: datetime) -> bytes:
    data: dict[str, Any] = {
        "provider": event.provider or None,
        "key_id": event.key_id,
        "reason": event.reason or None,
        "cooldown_until": event.cooldown_until.isoformat() if event.cooldown_until else None,
    }
    if event.kind == "budget.threshold":
        data["threshold"] = event.threshold
        data["budget_usd"] = str(event.budget_usd) if event.budget_usd is not None else None
        data["spent_usd"] = str(event.spent_usd) if event.spent_usd is not None else None
    body = {
        "id": event_id,
        "type": event.kind,
        "created_at": when.isoformat(),
        "tenant_id": event.tenant_id,
        "data": data,
    }
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


class WebhookNotifier:
    """Sends ``KeyEvent``s to the tenant's webhook (see the module doc).

    Args:
        store: where webhook configs live and delivery attempts are logged.
        keyring: decrypts the stored signing secrets.
        client: the HTTP client for deliveries (default: one of its own, closed by ``aclose``).
        allow_private: deliver to private/loopback/link-local addresses too.
    """

    def __init__(
        self,
        store: AdminStore,
        keyring: Keyring,
        *,
        client: httpx.AsyncClient | None = None,
        allow_private: bool = False,
        max_attempts: int = 5,
        backoff: float = 1.0,
        max_pending: int = 1000,
        min_interval: float = 60.0,
        timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._allow_private = allow_private
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_pending = max_pending
        self._min_interval = min_interval
        self._last_sent: dict[tuple[str, str, str], float] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"WebhookNotifier(pending={len(self._pending)})"

    # Observer: only key events matter here.
    def needs(self) -> int:
        return 0  # nothing per request: the engine skips the calls below

    def request_started(self, start: RequestStart) -> object:
        return None

    def attempt_finished(self, token: object, attempt: AttemptResult) -> None:
        return None

    def request_finished(self, token: object, end: RequestEnd) -> None:
        return None

    def key_event(self, event: KeyEvent) -> None:
        marker = (event.tenant_id, event.kind, event.key_id or str(event.threshold))
        now = time.monotonic()
        last = self._last_sent.get(marker)
        if last is not None and now - last < self._min_interval:
            return
        if len(self._pending) >= self._max_pending:
            logger.warning("webhook queue full: dropped %s for tenant %s", event.kind, marker[0])
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            logger.warning("webhook event %s raised outside an event loop: dropped", event.kind)
            return
        self._last_sent[marker] = now
        if len(self._last_sent) > 10 * self._max_pending:
            self._last_sent.clear()  # bounded memory; at worst one repeat alert
        task = loop.create_task(self._send(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, event: KeyEvent) -> None:
        config = await self._store.get_webhook(event.tenant_id)
        if config is None or event.kind not in config.events:
            return
        event_id = "evt_" + uuid.uuid4().hex
        try:
            secret = self._keyring.decrypt(config.secret_ciphertext, webhook_aad(event.tenant_id))
            await check_webhook_url(config.url, allow_private=self._allow_private)
        except (DecryptionError, UnsafeWebhookURL) as exc:
            reason = "secret undecryptable" if isinstance(exc, DecryptionError) else str(exc)
            await self._log(config, event.kind, 0, None, reason[:200])
            logger.warning("webhook of tenant %s not sent: %s", event.tenant_id, reason)
            return
        body = event_body(event, event_id, datetime.now(UTC))

        async def log_attempt(attempt: int, status: int | None, error: str | None) -> None:
            await self._log(config, event.kind, attempt, status, error)

        delivered = await deliver(
            self._client,
            config.url,
            body,
            secret,
            event_id=event_id,
            max_attempts=self._max_attempts,
            backoff=self._backoff,
            log_attempt=log_attempt,
        )
        if not delivered:
            logger.warning("webhook %s to tenant %s failed", event.kind, event.tenant_id)

    async def _log(
        self, config: WebhookConfig, event: str, attempt: int, status: int | None, error: str | None
    ) -> None:
        delivery = WebhookDelivery(
            id="whd_" + uuid.uuid4().hex,
            tenant_id=config.tenant_id,
            event=event,
            status_code=status,
            attempt=attempt,
            error=error,
            created_at=datetime.now(UTC),
        )
        await self._store.record_delivery(delivery)

    async def drain(self, seconds: float = 30.0) -> None:
        """Wait for scheduled deliveries (at most ``seconds``)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=seconds)

    async def aclose(self, seconds: float = 5.0) -> None:
        """Let pending deliveries finish for ``seconds``, cancel the rest, close the client."""
        await self.drain(seconds)
        for task in list(self._pending):
            task.cancel()
        if self._own_client:
            await self._client.aclose()
