"""The HTTP edge of ``model: "auto"``: the cost-weight header, and ``POST /byok/feedback``.

``POST /byok/feedback {"request_id": "req_...", "score": 0.0-1.0}`` scores one of the caller's
own requests that ``auto`` routed (1 = as good as it gets); the router learns from it for that
kind of request. Another tenant's request id, or one ``auto`` did not route, is a 404; a second
score for the same request a 409. The engine side is ``gateway/autorouting.py``.
"""

from __future__ import annotations

from typing import Any

from byok_middleware.asgi import Scope, header, json_body, send_json
from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Gateway
from byok_middleware.gateway.autorouting import is_auto
from byok_middleware.router import Incoming

__all__ = ["COST_WEIGHT_HEADER", "handle_feedback", "route_auto"]

COST_WEIGHT_HEADER = b"x-byok-route-cost-weight"
_FEEDBACK_BODY_LIMIT = 4096


async def route_auto(gateway: Gateway, call: Call, body: dict[str, Any], scope: Scope) -> None:
    """Choose the model of a ``model: "auto"`` body (no-op for any other model); call it before
    ``Gateway.route_model`` in every handler that accepts ``auto`` (chat, Responses, Messages)."""
    if is_auto(body.get("model")):  # the header is only read for the router
        await gateway.auto.prepare(call, body, header(scope, COST_WEIGHT_HEADER))


def _request_id(body: dict[str, Any]) -> str:
    value = body.get("request_id")
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise InvalidRequest(
            "'request_id' must be the x-byok-request-id of a request routed by model 'auto'",
            param="request_id",
        )
    return value


def _score(body: dict[str, Any]) -> float:
    value = body.get("score")
    # bool is an int in Python: true/false are not scores.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidRequest("'score' must be a number from 0 to 1", param="score")
    return float(value)


async def handle_feedback(gateway: Gateway, incoming: Incoming) -> None:
    body = await json_body(incoming.receive, _FEEDBACK_BODY_LIMIT)
    request_id, score = _request_id(body), _score(body)
    model = await gateway.auto.feedback(incoming.tenant_id, request_id, score)
    answer = {"object": "byok.feedback", "request_id": request_id, "model": model, "score": score}
    await send_json(incoming.send, 200, answer)
