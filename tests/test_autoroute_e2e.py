"""``model: "auto"`` end to end: the openai SDK against a real uvicorn gateway and the fake upstream.

Every gateway here has no platform key (so the tenant's own providers are all there is), a fixed
seed and no random exploration, so each decision is the router's plain choice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import Gateway, metadata

AUTO = {"platform_keys": {}, "auto_route_seed": 7, "auto_route_explore": 0.0}
CODE = "Fix this function:\n```python\ndef add(a, b):\n    return a - b\n```"


def keys(gateway: Gateway, tenant: str, **priorities: int) -> dict[str, str]:
    """Register one key per provider for ``tenant`` (provider=priority); their ids."""
    return {
        provider: gateway.add_key(
            tenant, provider, f"sk-{provider}-{tenant}-0123456789abcdef", priority=p
        )["id"]
        for provider, p in priorities.items()
    }


def ask(sdk: Any, text: str = "Hello there", model: str = "auto", **extra: Any) -> Any:
    return sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], **extra
    )


def route(
    gateway: Gateway, tenant: str, body: dict[str, Any] | None = None, **params: str
) -> dict[str, Any]:
    with gateway.client(tenant) as client:
        query = {"model": "auto", **params}
        response = (
            client.post("/v1/byok/route", params=query, json=body)
            if body
            else client.get("/v1/byok/route", params=query)
        )
    assert response.status_code == 200, response.text
    return dict(response.json())


def feedback(gateway: Gateway, tenant: str, request_id: str, score: object) -> httpx.Response:
    with gateway.client(tenant) as client:
        return client.post("/v1/byok/feedback", json={"request_id": request_id, "score": score})


def test_auto_picks_among_the_tenants_providers_only(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """With groq and deepseek keys, every auto request goes to one of them, said in metadata."""
    gateway = start_gateway(**AUTO)
    keys(gateway, "acme", groq=1, deepseek=1)
    sdk = gateway.openai("acme")
    for model, text in [
        ("auto", "Hello"),
        ("auto:cheap", CODE),
        ("auto:best", "Solve 3x + 5 = 20"),
    ]:
        meta = metadata(ask(sdk, text, model))
        assert meta["provider_used"] in ("groq", "deepseek")
        assert meta["routed"] == "auto"
        assert meta["route_reason"]
    assert {r.provider for r in fake.requests} <= {"groq", "deepseek"}
