"""``POST /moderations``: OpenAI only, and free, so its cost is reported as 0, never null.

``model`` is optional, as it is at OpenAI: without one the request goes to OpenAI, the only
provider offering moderations, which picks its default model (``omni-moderation-latest``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from byok_middleware.asgi import json_body
from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Gateway
from byok_middleware.gateway.core import providers_offering
from byok_middleware.pricing import Usage
from byok_middleware.providers.specs import Endpoint
from byok_middleware.proxy.endpoints import (
    forward_json,
)
from byok_middleware.proxy.respond import read_json, send_metered
from byok_middleware.router import Incoming

__all__ = ["DEFAULT_MODERATION_MODEL", "handle_moderations"]

DEFAULT_MODERATION_MODEL = "omni-moderation-latest"


def _validate(body: dict[str, Any]) -> None:
    raw = body.get("input")
    if isinstance(raw, str) and raw:
        return
    if isinstance(raw, list) and raw and all(isinstance(item, str | dict) for item in raw):
        return
    raise InvalidRequest(
        "'input' must be a non-empty string or a non-empty array of strings or content parts",
        param="input",
    )


def _payload(body: dict[str, Any], model: str) -> dict[str, Any]:
    payload = {key: value for key, value in body.items() if key != "model"}
    return {**payload, "model": model} if model else payload


async def handle_moderations(gateway: Gateway, call: Call, incoming: Incoming) -> None:
    body = await json_body(incoming.receive, gateway.config.max_body_bytes)
    if body.get("model") is None:
        call.provider, call.model = providers_offering(Endpoint.MODERATIONS)[0], ""
    else:
        gateway.route_model(call, body.get("model"), Endpoint.MODERATIONS)
    _validate(body)
    forwarded = await forward_json(gateway, call, lambda served: _payload(body, served.model))
    raw, data = await read_json(forwarded)
    if not call.model:
        answered = data.get("model") if isinstance(data, dict) else None
        call.model = answered if isinstance(answered, str) else DEFAULT_MODERATION_MODEL
    # OpenAI lists moderations as free; a model the price data does not know yet is free too.
    usage = Usage()
    cost = gateway.cost(call, usage)
    await send_metered(
        gateway,
        call,
        forwarded,
        incoming.send,
        raw=raw,
        data=data,
        usage=usage,
        cost=Decimal(0) if cost is None else cost,
        data_is_raw=True,
    )
