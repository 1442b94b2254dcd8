"""Input limits and gateway-key authentication, each a clear 4xx that says nothing it should not."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from byok_middleware import SQLiteStore
from byok_middleware.clock import utcnow
from tests.conftest import Gateway


def test_failed_auth_answers_are_identical_whatever_the_reason(start_gateway: Any) -> None:
    """Missing, malformed, unknown and revoked keys get byte-identical bodies (a request id aside).

    Why timing cannot tell "unknown" from "wrong": a token is never compared with a tenant's
    stored key. It is hashed (SHA-256) and the hash is looked up; there is no "right tenant,
    wrong token" case, every well-formed token costs one hash and one indexed lookup, and a hit
    in the positive cache is confirmed with hmac.compare_digest.
    """
    gateway: Gateway = start_gateway(key_cache_ttl=0.01)
    revoked = gateway.tenant("to-revoke")
    gateway.tenant("acme")

    async def revoke() -> None:
        store = SQLiteStore(gateway.db_path)
        try:
            assert await store.revoke_tenant("to-revoke", utcnow())
        finally:
            await store.close()

    asyncio.run(revoke())
    asyncio.run(asyncio.sleep(0.05))
    bodies = set()
    for authorization in (
        None,
        "Bearer",
        "Basic abc",
        "Bearer sk-not-ours",
        "Bearer byok_unknown-but-well-formed-0000000000",
        f"Bearer {revoked}",
    ):
        headers = {"authorization": authorization} if authorization else {}
        response = httpx.get(gateway.url + "/v1/byok/providers", headers=headers)
        assert response.status_code == 401
        assert "acme" not in response.text and "revoke" not in response.text
        bodies.add(response.content)
    assert len(bodies) == 1


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("body", 413, "payload_too_large"),
        ("nesting", 400, None),
        ("headers", 431, "request_headers_too_large"),
        ("label", 422, "invalid_value"),
        ("key_length", 422, "invalid_value"),
        ("non_ascii_key", 422, "invalid_value"),
        ("surrogate", 400, None),
    ],
)
def test_each_limit_is_a_clear_4xx(
    start_gateway: Any, case: str, status: int, code: str | None
) -> None:
    """Body size, JSON nesting, header size, label and key length: OpenAI-shaped 4xx, no write."""
    gateway: Gateway = start_gateway(max_body_bytes=8192)
    body: dict[str, Any] = {"provider": "openai", "api_key": "sk-limit-000000000000"}
    kwargs: dict[str, Any] = {}
    if case == "body":
        kwargs["json"] = {**body, "label": "x" * 9000}
    elif case == "nesting":
        kwargs["content"] = b'{"a":' * 70 + b"1" + b"}" * 70
    elif case == "headers":
        kwargs["json"] = body
        kwargs["headers"] = {"x-filler": "a" * 40_000}
    elif case == "label":
        kwargs["json"] = {**body, "label": "x" * 101}
    elif case == "key_length":
        kwargs["json"] = {**body, "api_key": "sk-" + "a" * 600}
    elif case == "non_ascii_key":
        kwargs["json"] = {**body, "api_key": "sk-\u00e9t\u00e9-000000"}
    else:
        kwargs["content"] = b'{"provider": "openai", "api_key": "sk-x", "label": "\\ud800"}'
    with gateway.client("acme") as http:
        response = http.post("/v1/byok/providers", **kwargs)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        if code:
            assert error["code"] == code
        assert http.get("/v1/byok/providers").json()["data"] == []


def test_keys_per_tenant_are_capped(start_gateway: Any) -> None:
    """The key past ``max_keys_per_tenant`` is a 400 naming the limit; the others stay."""
    gateway: Gateway = start_gateway(max_keys_per_tenant=3)
    for n in range(3):
        gateway.add_key("acme", "openai", f"sk-cap-{n}-00000000000000")
    with gateway.client("acme") as http:
        response = http.post(
            "/v1/byok/providers", json={"provider": "openai", "api_key": "sk-cap-x-000000000000"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "too_many_keys"
        assert len(http.get("/v1/byok/providers").json()["data"]) == 3
