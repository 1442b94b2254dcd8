"""Embeddings, images and moderations end to end: openai SDK, real uvicorn, the fake upstream."""

from __future__ import annotations

import base64
import struct
from typing import Any

import openai
import pytest

from byok_middleware.fake.media import embedding_vector
from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import PLATFORM_OPENAI_KEY, Gateway, metadata

TENANT_OPENAI = "sk-tenant-acme-1111111111111111111111"
TENANT_NVIDIA = "nvapi-tenant-2222222222222222"
TENANT_GOOGLE = "AIza-tenant-3333333333333333333"


def test_embeddings_byok_base64_passthrough_and_token_cost(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """OpenAI embeddings: the tenant key pays, the SDK's base64 goes through, cost by tokens."""
    key = gateway.add_key("acme", "openai", TENANT_OPENAI)
    result = sdk.embeddings.create(
        model="openai/text-embedding-3-small", input=["hello big world", "again"]
    )
    meta = metadata(result)
    assert meta["cost_attribution"] == "byok"
    assert meta["key_id"] == key["id"]
    assert meta["provider_used"] == "openai"
    assert meta["model_used"] == "text-embedding-3-small"
    # The fake counts 4 words as 4 prompt tokens; text-embedding-3-small is $0.02 / 1M tokens.
    assert result.usage.prompt_tokens == 4
    assert meta["cost_usd"] == pytest.approx(4 * 0.02 / 1e6)
    (received,) = fake.requests_for("openai")
    assert received.api_key == TENANT_OPENAI
    assert received.json["model"] == "text-embedding-3-small"
    assert received.json["encoding_format"] == "base64"
    assert result.data[0].embedding == embedding_vector("hello big world")


def test_embeddings_platform_key(gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI) -> None:
    """Without a tenant key the platform key serves embeddings and says so."""
    result = sdk.embeddings.create(model="openai/text-embedding-3-small", input="hi")
    meta = metadata(result)
    assert meta["cost_attribution"] == "xantly"
    assert meta["key_id"] is None
    assert meta["cost_usd"] == pytest.approx(0.02 / 1e6)
    assert fake.requests_for("openai")[0].api_key == PLATFORM_OPENAI_KEY


def test_embeddings_nvidia_defaults_input_type_and_reencodes_base64(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """NVIDIA gets input_type=query and no encoding_format; base64 is re-encoded for the SDK."""
    gateway.add_key("acme", "nvidia", TENANT_NVIDIA)
    result = sdk.embeddings.create(model="nvidia/nvidia/nv-embedqa-e5-v5", input="what is byok")
    (received,) = fake.requests_for("nvidia")
    assert received.api_key == TENANT_NVIDIA
    assert received.json["model"] == "nvidia/nv-embedqa-e5-v5"
    assert received.json["input_type"] == "query"
    assert "encoding_format" not in received.json
    assert result.data[0].embedding == embedding_vector("what is byok")
    meta = metadata(result)
    assert meta["cost_attribution"] == "byok"
    assert meta["cost_usd"] is None  # no NVIDIA price is known: null, never a silent 0

    with gateway.client("acme") as client:
        raw = client.post(
            "/v1/embeddings",
            json={
                "model": "nvidia/nvidia/nv-embedqa-e5-v5",
                "input": "x",
                "input_type": "passage",
                "encoding_format": "base64",
            },
        )
    assert raw.status_code == 200, raw.text
    assert fake.requests_for("nvidia")[1].json["input_type"] == "passage"
    encoded = raw.json()["data"][0]["embedding"]
    decoded = list(struct.unpack("<8f", base64.b64decode(encoded)))
    assert decoded == embedding_vector("x")
    assert "x-byok-cost-usd" not in raw.headers


def test_embeddings_google_priced(gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI) -> None:
    """Google embeddings go to its OpenAI-compatible endpoint and are priced by tokens."""
    gateway.add_key("acme", "google", TENANT_GOOGLE)
    result = sdk.embeddings.create(model="google/gemini-embedding-001", input="one two")
    assert fake.requests_for("google")[0].api_key == TENANT_GOOGLE
    assert "encoding_format" not in fake.requests_for("google")[0].json
    assert metadata(result)["cost_usd"] == pytest.approx(2 * 0.15 / 1e6)


BAD_EMBEDDINGS: list[tuple[dict[str, Any], str]] = [
    ({"input": "x"}, "model"),
    ({"model": 42, "input": "x"}, "model"),
    ({"model": "openai/text-embedding-3-small"}, "input"),
    ({"model": "openai/text-embedding-3-small", "input": [1, "a"]}, "input"),
    ({"model": "openai/text-embedding-3-small", "input": "x", "dimensions": "8"}, "dimensions"),
    (
        {"model": "openai/text-embedding-3-small", "input": "x", "encoding_format": "hex"},
        "encoding_format",
    ),
]


def test_embeddings_bad_input_is_400_before_upstream(gateway: Gateway, fake: FakeUpstream) -> None:
    """Missing or mistyped fields are 400s in OpenAI's shape naming the field; nothing upstream."""
    with gateway.client("acme") as client:
        for body, param in BAD_EMBEDDINGS:
            response = client.post("/v1/embeddings", json=body)
            assert response.status_code == 400, body
            error = response.json()["error"]
            assert error["param"] == param, body
            assert error["type"] == "invalid_request_error"
        response = client.post("/v1/embeddings", content=b"{not json")
        assert response.status_code == 400
    assert fake.requests == []


def test_images_dalle3_priced_per_image(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """dall-e-3 standard 1024x1024 costs $0.04 an image, priced with the request's model."""
    gateway.add_key("acme", "openai", TENANT_OPENAI)
    result = sdk.images.generate(
        model="openai/dall-e-3", prompt="a red fox", n=2, size="1024x1024", quality="standard"
    )
    assert len(result.data) == 2
    meta = metadata(result)
    assert meta["cost_attribution"] == "byok"
    assert meta["model_used"] == "dall-e-3"
    assert meta["cost_usd"] == pytest.approx(0.08)
    (received,) = fake.requests_for("openai")
    assert received.api_key == TENANT_OPENAI
    assert received.json["model"] == "dall-e-3"


def test_images_gpt_image_priced_by_usage_on_platform_key(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """gpt-image-1 is priced from its token usage; the platform key pays without a tenant key."""
    with gateway.client("acme") as client:
        response = client.post(
            "/v1/images/generations", json={"model": "openai/gpt-image-1", "prompt": "a red fox"}
        )
    assert response.status_code == 200, response.text
    meta = response.json()["xantly_metadata"]
    assert meta["cost_attribution"] == "xantly"
    # 3 text tokens at $5/1M + 4160 image output tokens at $40/1M.
    assert meta["cost_usd"] == pytest.approx(3 * 5 / 1e6 + 4160 * 40 / 1e6)
    assert float(response.headers["x-byok-cost-usd"]) == pytest.approx(meta["cost_usd"])
    assert fake.requests_for("openai")[0].api_key == PLATFORM_OPENAI_KEY


def test_images_bad_n_is_400(gateway: Gateway, fake: FakeUpstream) -> None:
    """n outside 1..10 is refused before any upstream call."""
    with gateway.client("acme") as client:
        response = client.post(
            "/v1/images/generations", json={"model": "openai/dall-e-3", "prompt": "x", "n": 0}
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "n"
    assert fake.requests == []


def test_moderations_cost_zero_and_attribution(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """Moderations are free: cost_usd is 0 (not null), with the attribution of the key used."""
    key = gateway.add_key("acme", "openai", TENANT_OPENAI)
    result = sdk.moderations.create(model="openai/omni-moderation-latest", input=["hello", "world"])
    assert len(result.results) == 2
    meta = metadata(result)
    assert meta["cost_usd"] == 0
    assert meta["cost_attribution"] == "byok"
    assert meta["key_id"] == key["id"]
    (received,) = fake.requests_for("openai")
    assert received.api_key == TENANT_OPENAI
    assert received.json["model"] == "omni-moderation-latest"


def test_moderations_without_model_go_to_openai_platform(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """Without a model (optional at OpenAI) the request goes to OpenAI; the platform key pays."""
    with gateway.client("acme") as client:
        response = client.post("/v1/moderations", json={"input": "hello"})
    assert response.status_code == 200, response.text
    meta = response.json()["xantly_metadata"]
    assert meta["cost_attribution"] == "xantly"
    assert meta["cost_usd"] == 0
    assert meta["model_used"] == "omni-moderation-latest"
    assert response.headers["x-byok-cost-usd"] == "0"
    (received,) = fake.requests_for("openai")
    assert received.api_key == PLATFORM_OPENAI_KEY
    assert "model" not in received.json


def test_upstream_error_mapped_and_redacted(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """An upstream 400 comes back in OpenAI's shape through the chat error mapping."""
    fake.script("openai", Scripted.error("openai", 400, f"bad input near {PLATFORM_OPENAI_KEY}"))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="openai/text-embedding-3-small", input="x")
    assert PLATFORM_OPENAI_KEY not in str(caught.value.body)
    assert caught.value.response.headers["x-byok-provider-used"] == "openai"
