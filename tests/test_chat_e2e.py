"""The gateway core end to end: real uvicorn, a real SQLite file, the openai SDK as the client."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import PLATFORM_OPENAI_KEY, Gateway, metadata

TENANT_KEY = "sk-tenant-acme-1111111111111111111111"
MESSAGES = [{"role": "user", "content": "Hello"}]
# gpt-4o: $2.50 / 1M input, $10 / 1M output; the fake reports 100 in, 20 out.
GPT4O_COST = 100 * 2.5 / 1e6 + 20 * 10 / 1e6


def test_tenant_key_pays_and_is_what_upstream_receives(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """A tenant with an OpenAI key is served with it: attribution byok, its key id, exact cost."""
    key = gateway.add_key("acme", "openai", TENANT_KEY)
    completion = gateway.openai("acme").chat.completions.create(
        model="openai/gpt-4o", messages=MESSAGES
    )
    meta = metadata(completion)
    assert meta["cost_attribution"] == "byok"
    assert meta["provider_used"] == "openai"
    assert meta["model_used"] == "gpt-4o"
    assert meta["key_id"] == key["id"]
    assert meta["attempts"] == 1
    assert meta["cost_usd"] == pytest.approx(GPT4O_COST)
    (received,) = fake.requests_for("openai")
    assert received.api_key == TENANT_KEY
    assert received.json is not None and received.json["model"] == "gpt-4o"
    assert completion.choices[0].message.content


def test_platform_key_is_the_fallback(gateway: Gateway, fake: FakeUpstream) -> None:
    """Without a tenant key the platform key is used and the response says 'xantly'."""
    completion = gateway.openai("acme").chat.completions.create(
        model="openai/gpt-4o", messages=MESSAGES
    )
    meta = metadata(completion)
    assert meta["cost_attribution"] == "xantly"
    assert meta["key_id"] is None
    assert fake.requests_for("openai")[0].api_key == PLATFORM_OPENAI_KEY


def test_metadata_headers_on_plain_responses(gateway: Gateway) -> None:
    """Plain JSON answers carry the x-byok-* headers, cost included."""
    gateway.add_key("acme", "openai", TENANT_KEY)
    with gateway.client("acme") as client:
        response = client.post(
            "/v1/chat/completions", json={"model": "openai/gpt-4o", "messages": MESSAGES}
        )
    assert response.status_code == 200
    assert response.headers["x-byok-cost-attribution"] == "byok"
    assert response.headers["x-byok-provider-used"] == "openai"
    assert float(response.headers["x-byok-cost-usd"]) == pytest.approx(GPT4O_COST)
    assert response.headers["x-byok-request-id"] == response.json()["xantly_metadata"]["request_id"]


def test_no_key_at_all_is_a_clear_error(start_gateway: Any, fake: FakeUpstream) -> None:
    """No tenant key and no platform key: a 400 naming the provider and how to register a key."""
    gateway = start_gateway(platform_keys={})
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.openai("acme").chat.completions.create(
            model="groq/llama-3.3-70b-versatile", messages=MESSAGES
        )
    message = caught.value.body["message"]  # type: ignore[index]
    assert "groq" in message and "/byok/providers" in message
    assert fake.requests == []


def test_provider_prefix_is_stripped_only_once(gateway: Gateway, fake: FakeUpstream) -> None:
    """nvidia/meta/llama-3.1-8b-instruct goes upstream as meta/llama-3.1-8b-instruct."""
    gateway.add_key("acme", "nvidia", "nvapi-tenant-2222222222222222")
    gateway.openai("acme").chat.completions.create(
        model="nvidia/meta/llama-3.1-8b-instruct", messages=MESSAGES
    )
    (received,) = fake.requests_for("nvidia")
    assert received.json is not None
    assert received.json["model"] == "meta/llama-3.1-8b-instruct"
    assert received.path == "/chat/completions"


def _sse_events(lines: list[tuple[float, str]]) -> list[tuple[float, str]]:
    return [(t, line[len("data: ") :]) for t, line in lines if line.startswith("data: ")]


def test_stream_arrives_incrementally_with_metadata_last(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """Chunks are relayed as they arrive; the event before [DONE] carries the metadata."""
    gateway.add_key("acme", "openai", TENANT_KEY)
    fake.chunk_delay = 0.25
    fake.stream_chunks = 6
    body = {"model": "openai/gpt-4o", "messages": MESSAGES, "stream": True}
    received: list[tuple[float, str]] = []
    with gateway.client("acme") as client:
        start = time.monotonic()
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-byok-cost-attribution"] == "byok"
            for line in response.iter_lines():
                received.append((time.monotonic() - start, line))
    events = _sse_events(received)
    first_content = next(t for t, data in events if '"content"' in data and data != "[DONE]")
    total = received[-1][0]
    # The fake spends >= 6 x 0.25 s; the first words must not wait for the end.
    assert total >= 1.4
    assert first_content < total - 0.9
    assert events[-1][1] == "[DONE]"
    last = json.loads(events[-2][1])
    # The metadata rides on the finish chunk, so a plain choices[0] loop never breaks.
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last.get("usage") is None  # the client did not ask for usage
    assert last["xantly_metadata"]["cost_attribution"] == "byok"
    assert last["xantly_metadata"]["cost_usd"] == pytest.approx(GPT4O_COST)
    upstream = fake.requests_for("openai")[0].json
    assert upstream is not None and upstream["stream_options"]["include_usage"] is True


def test_stream_usage_chunk_only_when_asked(gateway: Gateway) -> None:
    """With include_usage the SDK sees usage (and metadata) on the last chunk; without, no usage."""
    client = gateway.openai("acme")
    with_usage = list(
        client.chat.completions.create(
            model="openai/gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.prompt_tokens == 100
    assert with_usage[-1].model_extra["xantly_metadata"]["cost_attribution"] == "xantly"
    assert sum(1 for c in with_usage if c.usage is not None) == 1

    without = list(
        client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, stream=True)
    )
    assert all(c.usage is None for c in without)
    assert without[-1].model_extra["xantly_metadata"]["cost_usd"] == pytest.approx(GPT4O_COST)
    text = "".join(c.choices[0].delta.content or "" for c in without if c.choices)
    assert text == "Hello from the fake openai."


def test_rotation_takes_effect_on_the_next_request(gateway: Gateway, fake: FakeUpstream) -> None:
    """PUT with a new api_key is used by the very next request; DELETE falls back to platform."""
    key = gateway.add_key("acme", "openai", TENANT_KEY)
    client = gateway.openai("acme")
    client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    rotated = "sk-tenant-acme-rotated-99999999999999"
    with gateway.client("acme") as http:
        response = http.put(f"/v1/byok/providers/{key['id']}", json={"api_key": rotated})
        assert response.status_code == 200
        assert rotated not in response.text
    client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    with gateway.client("acme") as http:
        assert http.delete(f"/v1/byok/providers/{key['id']}").status_code == 204
    last = client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    keys = [r.api_key for r in fake.requests_for("openai")]
    assert keys == [TENANT_KEY, rotated, PLATFORM_OPENAI_KEY]
    assert metadata(last)["cost_attribution"] == "xantly"


def test_inactive_key_is_skipped(gateway: Gateway, fake: FakeUpstream) -> None:
    """is_active false: the platform key serves until the key is reactivated."""
    key = gateway.add_key("acme", "openai", TENANT_KEY, is_active=False)
    assert key["status"] == "inactive"
    client = gateway.openai("acme")
    assert (
        metadata(client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES))[
            "cost_attribution"
        ]
        == "xantly"
    )
    with gateway.client("acme") as http:
        view = http.put(f"/v1/byok/providers/{key['id']}", json={"is_active": True}).json()
    assert view["status"] == "active"
    assert (
        metadata(client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES))[
            "cost_attribution"
        ]
        == "byok"
    )


def test_upstream_error_that_echoes_the_key_is_redacted(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """OpenAI's 401 echoes part of the key; the client gets our message, never the key."""
    gateway.add_key("acme", "openai", TENANT_KEY)
    fake.script("openai", Scripted.invalid_key("openai"))
    fake.script("openai", Scripted.invalid_key("openai"))  # the platform key fails over too
    with gateway.client("acme") as http:
        response = http.post(
            "/v1/chat/completions", json={"model": "openai/gpt-4o", "messages": MESSAGES}
        )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    for secret in (TENANT_KEY, TENANT_KEY[:8] + "*", TENANT_KEY[-4:], PLATFORM_OPENAI_KEY[-4:]):
        assert secret not in response.text
    assert len(fake.requests_for("openai")) == 2


def test_other_4xx_is_relayed_without_failover(gateway: Gateway, fake: FakeUpstream) -> None:
    """A 400 from upstream is the request's fault: relayed in OpenAI's shape, no second key."""
    gateway.add_key("acme", "openai", TENANT_KEY)
    fake.script("openai", Scripted.error("openai", 400, message="bad temperature"))
    with gateway.client("acme") as http:
        response = http.post(
            "/v1/chat/completions", json={"model": "openai/gpt-4o", "messages": MESSAGES}
        )
    assert response.status_code == 400
    assert "bad temperature" in response.json()["error"]["message"]
    assert len(fake.requests_for("openai")) == 1


def test_usage_ledger_totals(gateway: Gateway) -> None:
    """Every proxied request is one ledger row; /byok/usage groups them."""
    gateway.add_key("acme", "openai", TENANT_KEY)
    client = gateway.openai("acme")
    for _ in range(3):
        client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    list(client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, stream=True))
    with gateway.client("acme") as http:
        usage = http.get("/v1/byok/usage", params={"group_by": "attribution"}).json()
    assert usage["total"]["requests"] == 4
    assert usage["total"]["prompt_tokens"] == 400
    assert usage["total"]["cost_usd"] == pytest.approx(4 * GPT4O_COST)
    assert [g["group"] for g in usage["data"]] == ["byok"]


def test_host_routes_still_work(gateway: Gateway) -> None:
    """The host app's own routes answer as before, with no gateway auth."""
    with httpx.Client(base_url=gateway.url) as http:
        assert http.get("/").json()["app"] == "acme-notes"
        assert http.get("/notes").status_code == 200
        assert http.get("/v1/not-a-gateway-route").status_code == 404


def test_failed_call_is_one_free_ledger_row_naming_the_last_key(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """A call every key failed costs 0 (not unpriced) and its row names the last key tried."""
    fake.script("openai", Scripted.server_error("openai"), Scripted.server_error("openai"))
    gateway.add_key("acme", "openai", TENANT_KEY)
    with gateway.client("acme") as http:
        response = http.post(
            "/v1/chat/completions", json={"model": "openai/gpt-4o", "messages": MESSAGES}
        )
        assert response.status_code == 500
        assert response.headers["x-byok-attempts"] == "2"
        by_attribution = http.get("/v1/byok/usage", params={"group_by": "attribution"}).json()
    assert by_attribution["total"]["requests"] == 1
    assert by_attribution["total"]["unpriced_requests"] == 0
    assert by_attribution["total"]["cost_usd"] == 0
    assert [g["group"] for g in by_attribution["data"]] == ["xantly"]  # tried last
