"""Tenant webhook routes: where the tenant's alerts go, and what was delivered.

    GET    {prefix}/byok/webhooks             the tenant's webhook (404 if none); never the secret
    PUT    {prefix}/byok/webhooks             {"url", "events"?: [...], "secret"?: str} -> 200
    DELETE {prefix}/byok/webhooks             204
    GET    {prefix}/byok/webhooks/deliveries  {"data": [delivery, ...]} newest first (?limit=)

``events`` defaults to all of ``KEY_EVENTS``. ``secret`` (16 to 256 characters) signs every
delivery; without one on the first PUT the gateway makes one and returns it once, in that
response only. The secret is stored encrypted under the master keyring, bound to the tenant.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from byok_middleware.asgi import json_body, send_bytes, send_json
from byok_middleware.errors import InvalidRequest, NotFound
from byok_middleware.mission.store import ledger_store
from byok_middleware.storage.base import WebhookConfig, WebhookDelivery
from byok_middleware.telemetry.alerts import webhook_aad
from byok_middleware.telemetry.observer import KEY_EVENTS
from byok_middleware.telemetry.webhooks import UnsafeWebhookURL, check_webhook_url

if TYPE_CHECKING:
    from byok_middleware.gateway import Gateway
    from byok_middleware.router import Handler, Incoming

__all__ = ["webhook_handlers"]


def _view(config: WebhookConfig) -> dict[str, Any]:
    return {
        "object": "byok.webhook",
        "url": config.url,
        "events": list(config.events),
        "updated_at": config.updated_at.isoformat(),
    }


def _delivery_view(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event": delivery.event,
        "attempt": delivery.attempt,
        "status_code": delivery.status_code,
        "error": delivery.error,
        "created_at": delivery.created_at.isoformat(),
    }


def _events(body: dict[str, Any]) -> tuple[str, ...]:
    events = body.get("events", list(KEY_EVENTS))
    if (
        not isinstance(events, list)
        or not events
        or not all(isinstance(e, str) and e in KEY_EVENTS for e in events)
    ):
        raise InvalidRequest(
            f"'events' must be a non-empty list of: {', '.join(KEY_EVENTS)}", param="events"
        )
    return tuple(dict.fromkeys(events))


def _secret(body: dict[str, Any]) -> str | None:
    secret = body.get("secret")
    if secret is None:
        return None
    if not isinstance(secret, str) or not 16 <= len(secret) <= 256:
        raise InvalidRequest("'secret' must be a string of 16 to 256 characters", param="secret")
    return secret


def webhook_handlers(*, allow_private: bool = False) -> tuple[Handler, Handler]:
    """The handlers of ``/byok/webhooks`` (GET, PUT, DELETE) and ``/byok/webhooks/deliveries``
    (GET). ``allow_private`` is ``BYOK_WEBHOOK_ALLOW_PRIVATE``."""

    async def webhook(gateway: Gateway, incoming: Incoming) -> None:
        store = ledger_store(gateway)
        tenant = incoming.tenant_id
        if incoming.method == "DELETE":
            if not await store.delete_webhook(tenant):
                raise NotFound("no webhook is registered")
            await send_bytes(incoming.send, 204, b"")
            return
        current = await store.get_webhook(tenant)
        if incoming.method == "GET":
            if current is None:
                raise NotFound("no webhook is registered; PUT one")
            await send_json(incoming.send, 200, _view(current))
            return
        body = await json_body(incoming.receive, gateway.config.max_body_bytes)
        url = body.get("url")
        if not isinstance(url, str):
            raise InvalidRequest(
                "'url' is required: the https:// URL to POST events to", param="url"
            )
        try:
            await check_webhook_url(url, allow_private=allow_private)
        except UnsafeWebhookURL as exc:
            raise InvalidRequest(str(exc), param="url", code="unsafe_url") from None
        events, secret = _events(body), _secret(body)
        made = False
        if secret is None and current is not None:
            ciphertext = current.secret_ciphertext  # an update keeps the secret it had
        else:
            if secret is None:
                secret, made = "whsec_" + secrets.token_urlsafe(32), True
            ciphertext = gateway.keyring.encrypt(secret, webhook_aad(tenant))
        config = WebhookConfig(tenant, url, events, ciphertext, gateway.clock())
        await store.put_webhook(config)
        view = _view(config)
        if made:
            view["secret"] = secret  # shown once: the tenant needs it to verify signatures
        await send_json(incoming.send, 200, view)

    async def deliveries(gateway: Gateway, incoming: Incoming) -> None:
        limit = incoming.query().get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 500:
            raise InvalidRequest("'limit' must be an integer from 1 to 500", param="limit")
        rows = await ledger_store(gateway).list_deliveries(incoming.tenant_id, int(limit))
        data = [_delivery_view(row) for row in rows]
        await send_json(incoming.send, 200, {"object": "list", "data": data})

    return webhook, deliveries
