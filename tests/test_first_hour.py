"""What a newcomer trips on first: provider names, keys under the wrong provider, the OpenAPI
document against the routes that really answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from byok_middleware import BYOKConfig, BYOKMiddleware, MemoryStore, create_tenant
from byok_middleware import generate_master_key as new_master_key
from byok_middleware.openapi import build_openapi
from byok_middleware.routes import build_router


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    store = MemoryStore()
    app = BYOKMiddleware(Starlette(), config=BYOKConfig(master_key=new_master_key()), store=store)
    await app.open()
    _, key = await create_tenant(store, "acme")
    transport = httpx.ASGITransport(app=app)
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=headers
    ) as http:
        yield http
    await app.aclose()


@pytest.mark.parametrize(
    ("given", "stored"), [("OpenAI", "openai"), ("GOOGLE", "google"), ("gemini", "google")]
)
async def test_provider_names_are_case_insensitive_and_gemini_is_google(
    client: httpx.AsyncClient, given: str, stored: str
) -> None:
    """A key registered as "OpenAI" or "gemini" is stored under openai or google."""
    answer = await client.post(
        "/v1/byok/providers", json={"provider": given, "api_key": "key-0123456789abcdef"}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["provider"] == stored


@pytest.mark.parametrize(
    ("provider", "key", "owner"),
    [
        ("openai", "sk-ant-api03-canary0123456789", "anthropic"),
        ("anthropic", "sk-proj-canary0123456789", "openai"),
        ("openai", "gsk_canary0123456789", "groq"),
        ("groq", "nvapi-canary0123456789", "nvidia"),
        ("openai", "AIzaCanary0123456789", "google"),
    ],
)
async def test_a_key_of_another_provider_is_a_422_that_names_it(
    client: httpx.AsyncClient, provider: str, key: str, owner: str
) -> None:
    """A key whose prefix only another provider issues is refused, naming that provider and
    never echoing the key; nothing is stored."""
    answer = await client.post("/v1/byok/providers", json={"provider": provider, "api_key": key})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["param"] == "api_key"
    assert f"format of {owner} keys" in error["message"]
    assert f'provider "{owner}"' in error["message"]
    assert "canary" not in answer.text
    assert (await client.get("/v1/byok/providers")).json()["data"] == []


async def test_generic_keys_are_accepted_for_any_openai_wire_provider(
    client: httpx.AsyncClient,
) -> None:
    """A plain sk- key says nothing about its provider (DeepSeek's look like OpenAI's)."""
    for provider in ("openai", "deepseek"):
        answer = await client.post(
            "/v1/byok/providers", json={"provider": provider, "api_key": "sk-0123456789abcdef"}
        )
        assert answer.status_code == 201, answer.text


def _router_paths() -> dict[str, set[str]]:
    """The management routes the router answers: path template -> methods."""
    router = build_router()
    found: dict[str, set[str]] = {}
    # The router keeps its tables private; reading them is the only complete listing.
    for path, route in router._exact.items():
        found[path] = set(route.handlers)
    for (head, tail), route in router._with_id.items():
        found[f"{head}{{id}}{tail}"] = set(route.handlers)
    for head, route in router._with_path.items():
        found[f"{head}{{id}}"] = set(route.handlers)
    not_json_apis = {"/byok/openapi.json", "/byok/dashboard", "/byok/dashboard/static/{id}"}
    return {p: m for p, m in found.items() if p.startswith("/byok/") and p not in not_json_apis}


def test_openapi_document_lists_exactly_the_management_routes() -> None:
    """Every /byok/ JSON route of the router is in /byok/openapi.json with the same methods,
    and the document lists no route that does not answer."""
    document = build_openapi("/v1")
    documented = {
        path: {method.upper() for method in item} for path, item in document["paths"].items()
    }
    assert documented == _router_paths()


async def test_served_openapi_document_has_the_dry_run_and_verify(
    client: httpx.AsyncClient,
) -> None:
    """The served document includes /byok/route (its price unit stated) and the verify route."""
    served = (await client.get("/v1/byok/openapi.json")).json()
    assert "post" in served["paths"]["/byok/providers/{id}/verify"]
    route = served["paths"]["/byok/route"]["get"]["responses"]["200"]
    schema = route["content"]["application/json"]["schema"]
    price = schema["properties"]["providers"]["items"]["properties"]["reference_price_usd"]
    assert "USD" in price["description"] and "1,000,000 input" in price["description"]


def test_readme_documents_the_headers_and_the_price_unit() -> None:
    """The README names x-byok-key-id and says what unit reference_price_usd is in."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "`x-byok-key-id`" in readme
    assert "reference_price_usd" in readme and "1,000,000 input" in readme
