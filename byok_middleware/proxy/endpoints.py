"""Steps the non-chat proxy endpoints share: who offers an endpoint, routing, metered answers.

Each endpoint handler reads and validates its own input, then uses these to route the model,
refuse an endpoint the provider does not offer (before any upstream call), forward with failover
through ``Gateway.forward``, and answer with the cost metadata and the ledger row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from byok_middleware.asgi import dumps
from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Forwarded, Gateway
from byok_middleware.gateway.calls import Candidate
from byok_middleware.router import Incoming

__all__ = [
    "JSON_HEADERS",
    "EndpointHandler",
    "forward_json",
    "optional_str",
]

EndpointHandler = Callable[[Gateway, Call, Incoming], Awaitable[None]]
"""A proxied endpoint: reads its request from ``Incoming`` and answers through its ``send``."""

JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


def optional_str(body: dict[str, Any], name: str) -> str | None:
    """``body[name]`` when it is a string, ``None`` when absent or null; 400 for other types."""
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    raise InvalidRequest(f"'{name}' must be a string", param=name)


async def forward_json(
    gateway: Gateway,
    call: Call,
    payload: Callable[[Call], dict[str, Any]],
    *,
    accept: str = "application/json",
) -> Forwarded:
    """POST JSON to ``call.endpoint``, with failover. ``payload(call)`` builds the body for
    each candidate, ``call.provider`` and ``call.model`` being that candidate's by then."""

    def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
        return dumps(payload(call)), {**JSON_HEADERS, "accept": accept}

    return await gateway.forward(call, path=call.endpoint, build=build)
