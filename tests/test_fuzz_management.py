"""Property-based tests of the management API: random JSON never gets a 5xx, and nothing is
stored unless the body is valid. Driven in-process through ASGI (fast), one event loop for all
examples, upstream faked by ``httpx.MockTransport`` (which records every call)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.applications import Starlette

from byok_middleware import BYOKConfig, BYOKMiddleware, MemoryStore, create_tenant
from byok_middleware import generate_master_key as new_master_key
from byok_middleware.keys.schemas import KeyCreate, KeyUpdate

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PROVIDERS = ["openai", "anthropic", "groq", "deepseek", "nvidia", "google"]


def completion(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if body.get("stream"):
        chunk = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
        }
        usage = {
            **chunk,
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        text = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
    return httpx.Response(
        200,
        json={
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    )


@dataclass
class Harness:
    """A middleware over a memory store, one tenant, and an ASGI client on one event loop."""

    loop: asyncio.AbstractEventLoop
    store: MemoryStore
    client: httpx.AsyncClient
    tenant_id: str
    upstream: list[httpx.Request] = field(default_factory=list)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.run(self.client.request(method, path, **kwargs))

    def key_count(self) -> int:
        return int(self.run(self.store.count_keys(self.tenant_id)))


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    store = MemoryStore()
    tenant, key = loop.run_until_complete(create_tenant(store, "fuzz"))
    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return completion(request)

    config = BYOKConfig(
        master_key=new_master_key(),
        platform_keys={p: "sk-platform-fuzz-000000000000" for p in ("openai", "groq", "deepseek")},
        max_body_bytes=64 * 1024,
    )
    app = BYOKMiddleware(
        Starlette(), config=config, store=store, transport=httpx.MockTransport(upstream)
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://fuzz",
        headers={"authorization": f"Bearer {key}"},
    )
    yield Harness(loop, store, client, tenant.id, seen)
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(app.aclose())
    loop.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.sampled_from([*PROVIDERS, "mistral", "", "OPENAI"]),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(
        [
            "sk-fuzz-abcdef0123456789",
            " sk-x ",
            "\u00e9t\u00e9",
            "x" * 600,
            "10.5",
            "1e400",
            "\ud800",
        ]
    ),
)
create_bodies = st.one_of(
    st.dictionaries(st.sampled_from([*KeyCreate.model_fields, "extra"]), field_values, max_size=9),
    st.fixed_dictionaries(
        {"provider": st.sampled_from(PROVIDERS), "api_key": field_values},
        optional={
            name: field_values
            for name in (
                "is_active",
                "priority",
                "label",
                "always_use",
                "rpm",
                "tpm",
                "monthly_budget_usd",
            )
        },
    ),
    json_values,
)


def is_valid(model: type[KeyCreate] | type[KeyUpdate], body: Any) -> bool:
    try:
        model.model_validate(body)
    except (ValidationError, TypeError):
        return False
    return True


def encoded(body: Any) -> bytes:
    # ensure_ascii escapes lone surrogates the way a hostile client would send them
    return json.dumps(body).encode()


@FUZZ
@given(body=create_bodies)
def test_random_create_bodies_never_5xx_and_store_only_valid_keys(
    harness: Harness, body: Any
) -> None:
    """POST /byok/providers: 201 exactly for a valid body (then stored), else a 4xx, no write."""
    before = harness.key_count()
    response = harness.request(
        "POST",
        "/v1/byok/providers",
        content=encoded(body),
        headers={"content-type": "application/json"},
    )
    assert response.status_code < 500, response.text
    assert set(response.json()) != {"error"} or set(response.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    valid = isinstance(body, dict) and is_valid(KeyCreate, body)
    if response.status_code == 201:
        assert valid
        assert harness.key_count() == before + 1
        assert "api_key" not in response.json()
        harness.request("DELETE", f"/v1/byok/providers/{response.json()['id']}")
    else:
        assert not valid, response.text
        assert 400 <= response.status_code < 500
        assert harness.key_count() == before


update_bodies = st.one_of(
    st.dictionaries(
        st.sampled_from([*KeyUpdate.model_fields, "provider", "x"]), field_values, max_size=5
    ),
    json_values,
)


@FUZZ
@given(body=update_bodies)
def test_random_update_bodies_never_5xx_and_change_only_valid_fields(
    harness: Harness, body: Any
) -> None:
    """PUT /byok/providers/{id}: 200 only for a valid, non-empty body; otherwise nothing changes."""
    created = harness.request(
        "POST",
        "/v1/byok/providers",
        json={"provider": "openai", "api_key": "sk-fuzz-base-0000000000"},
    )
    key_id = created.json()["id"]
    before = harness.run(harness.store.get_key(harness.tenant_id, key_id))
    response = harness.request(
        "PUT",
        f"/v1/byok/providers/{key_id}",
        content=encoded(body),
        headers={"content-type": "application/json"},
    )
    assert response.status_code < 500, response.text
    valid = isinstance(body, dict) and bool(body) and is_valid(KeyUpdate, body)
    after = harness.run(harness.store.get_key(harness.tenant_id, key_id))
    if response.status_code == 200:
        assert valid
    else:
        assert not valid, response.text
        assert after == before
    harness.request("DELETE", f"/v1/byok/providers/{key_id}")


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["since", "until", "group_by", "x"]), st.text(max_size=40), max_size=3
    )
)
def test_random_usage_queries_never_5xx(harness: Harness, params: dict[str, str]) -> None:
    """GET /byok/usage with random query values: a 200 or a 400, never a 5xx."""
    response = harness.request("GET", "/v1/byok/usage", params=params)
    assert response.status_code in (200, 400), response.text
