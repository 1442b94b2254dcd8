"""``GET /models`` (reachable providers, cached per key) and endpoints refused per provider."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import PLATFORM_OPENAI_KEY, Gateway

TENANT_ANTHROPIC = "sk-ant-tenant-5555555555555555555555"
TENANT_GROQ = "gsk_tenant_4444444444444444444444"


def test_models_lists_only_reachable_providers_and_caches(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """Tenant keys (anthropic, groq) plus the platform key (openai): prefixed ids, cached."""
    anthropic_key = gateway.add_key("acme", "anthropic", TENANT_ANTHROPIC)
    gateway.add_key("acme", "groq", TENANT_GROQ)
    page = sdk.models.list()
    ids = [model.id for model in page.data]
    assert "openai/gpt-4o" in ids
    assert "anthropic/claude-sonnet-4-5" in ids
    assert "groq/llama-3.3-70b-versatile" in ids
    assert {model_id.split("/", 1)[0] for model_id in ids} == {"openai", "anthropic", "groq"}
    assert all(model.object == "model" for model in page.data)
    assert fake.requests_for("openai")[0].api_key == PLATFORM_OPENAI_KEY
    assert fake.requests_for("anthropic")[0].api_key == TENANT_ANTHROPIC
    assert fake.requests_for("anthropic")[0].path == "/v1/models"
    assert fake.requests_for("groq")[0].api_key == TENANT_GROQ
    fetched = len(fake.requests)
    assert fetched == 3

    raw = sdk.models.with_raw_response.list()
    assert len(fake.requests) == fetched  # served from the cache: no second upstream fetch
    assert raw.headers["x-byok-cost-usd"] == "0"
    assert raw.headers["x-byok-provider-used"] == "openai,anthropic,groq"
    meta = raw.http_response.json()["xantly_metadata"]
    assert meta["cost_usd"] == 0
    assert meta["providers"]["anthropic"] == {
        "cost_attribution": "byok",
        "key_id": anthropic_key["id"],
        "cache_hit": True,
    }
    assert meta["providers"]["openai"]["cost_attribution"] == "xantly"
    assert [model.id for model in raw.parse().data] == ids


def test_models_cache_is_per_key(gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI) -> None:
    """Another tenant with its own key is not served the first tenant's cached list."""
    gateway.add_key("acme", "groq", TENANT_GROQ)
    sdk.models.list()
    gateway.add_key("globex", "groq", "gsk_globex_666666666666666666666")
    with gateway.openai("globex") as other:
        other.models.list()
    groq_keys = [request.api_key for request in fake.requests_for("groq")]
    assert groq_keys == [TENANT_GROQ, "gsk_globex_666666666666666666666"]
    # The platform key's list is shared across tenants: fetched once.
    assert len(fake.requests_for("openai")) == 1


def test_failing_provider_is_skipped_without_leaking_keys(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """A provider that fails is left out and named; the others are still listed."""
    gateway.add_key("acme", "groq", TENANT_GROQ)
    fake.script("openai", Scripted.invalid_key("openai"))
    raw = sdk.models.with_raw_response.list()
    ids = [model.id for model in raw.parse().data]
    assert ids
    assert all(model_id.startswith("groq/") for model_id in ids)
    meta = raw.http_response.json()["xantly_metadata"]
    assert "openai" in meta["providers_skipped"]
    assert PLATFORM_OPENAI_KEY not in raw.http_response.text
    assert PLATFORM_OPENAI_KEY[-4:] not in meta["providers_skipped"]["openai"]


def test_models_empty_without_any_key(start_gateway: Callable[..., Gateway]) -> None:
    """No tenant key and no platform key: an empty list, not an error."""
    gateway = start_gateway(platform_keys={})
    with gateway.openai("acme") as sdk:
        assert sdk.models.list().data == []


UNSUPPORTED: list[tuple[str, Callable[[openai.OpenAI], Any], str]] = [
    (
        "speech on deepseek",
        lambda c: c.audio.speech.create(model="deepseek/deepseek-chat", voice="alloy", input="hi"),
        "openai, groq",
    ),
    (
        "embeddings on anthropic",
        lambda c: c.embeddings.create(model="anthropic/claude-sonnet-4-5", input="x"),
        "openai, nvidia, google",
    ),
    (
        "moderations on groq",
        lambda c: c.moderations.create(model="groq/llama-guard-4-12b", input="x"),
        "openai",
    ),
    (
        "images on nvidia",
        lambda c: c.images.generate(model="nvidia/some-image-model", prompt="x"),
        "openai, google",
    ),
    (
        "transcriptions on google",
        lambda c: c.audio.transcriptions.create(
            model="google/gemini-2.5-flash", file=("a.wav", b"RIFF", "audio/wav")
        ),
        "openai, groq",
    ),
]


def test_unsupported_endpoint_is_400_naming_providers(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """An endpoint the provider lacks is a 400 naming those that offer it; nothing goes upstream."""
    for name, call, offering in UNSUPPORTED:
        with pytest.raises(openai.BadRequestError) as caught:
            call(sdk)
        error = caught.value.body
        assert isinstance(error, dict), name
        assert error["code"] == "unsupported_endpoint", name
        assert error["param"] == "model", name
        assert error["message"].endswith(offering), (name, error["message"])
    assert fake.requests == []
