"""``POST /moderations``: OpenAI only, and free, so its cost is reported as 0, never null.

``model`` is optional, as it is at OpenAI: without one the request goes to OpenAI, the only
provider offering moderations, which picks its default model (``omni-moderation-latest``).
"""

from __future__ import annotations

from typing import Any

from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Gateway
from byok_middleware.gateway.core import providers_offering
from byok_middleware.pricing import Usage
from byok_middleware.providers.specs import Endpoint
from byok_middleware.proxy.pipeline import JsonEndpoint

__all__ = ["DEFAULT_MODERATION_MODEL", "MODERATIONS"]

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


def _payload(body: dict[str, Any], call: Call) -> dict[str, Any]:
    payload = {key: value for key, value in body.items() if key != "model"}
    return {**payload, "model": call.model} if call.model else payload


def _default_model(gateway: Gateway, call: Call) -> None:
    call.provider, call.model = providers_offering(Endpoint.MODERATIONS)[0], ""


def _answered_model(body: dict[str, Any], data: dict[str, Any], call: Call) -> bool:
    if not call.model:
        answered = data.get("model")
        call.model = answered if isinstance(answered, str) else DEFAULT_MODERATION_MODEL
    return False


def _free(body: dict[str, Any], data: dict[str, Any], call: Call) -> Usage:
    return Usage()


# OpenAI lists moderations as free; a model the price data does not know yet is free too.
MODERATIONS = JsonEndpoint(
    Endpoint.MODERATIONS,
    validate=_validate,
    payload=_payload,
    usage=_free,
    rewrite=_answered_model,
    default_model=_default_model,
    free=True,
)
