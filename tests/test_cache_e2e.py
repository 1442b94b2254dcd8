"""The response cache through a real gateway: the openai SDK as client, uvicorn, SQLite.

Exact hits plain, streamed and across the two; tenants never share an entry; the per-request
controls; TTL expiry on an injected clock; semantic hits for a paraphrase (the fake's
``bag-of-words`` embedding model makes texts that share content words close); tools bypass the
semantic layer; the ledger and ``/byok/usage`` show the savings; two replicas share entries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from byok_middleware.cache import CacheMode, CacheSettings
from byok_middleware.testing import FakeUpstream
from tests.conftest import Gateway

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PARAPHRASE = [{"role": "user", "content": "Tell me: what is the capital of France"}]
OTHER = [{"role": "user", "content": "What is the capital of Spain?"}]
GPT4O_COST = 100 * 2.5 / 1e6 + 20 * 10 / 1e6
EMBEDDER = "openai/bag-of-words-embed"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _cache(mode: CacheMode, **extra: Any) -> CacheSettings:
    return CacheSettings(mode=mode, embedding_model=EMBEDDER, **extra)


@pytest.fixture
def cached(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(cache=_cache(CacheMode.EXACT))


def chat(gateway: Gateway, tenant: str = "acme", **body: Any) -> Any:
    payload = {"model": "openai/gpt-4o", "messages": QUESTION, **body}
    headers = {"x-byok-cache": body.pop("cache")} if "cache" in body else {}
    payload.pop("cache", None)
    with gateway.client(tenant) as http:
        return http.post("/v1/chat/completions", json=payload, headers=headers)


def chat_calls(fake: FakeUpstream) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))


def test_an_exact_hit_answers_without_calling_upstream(cached: Gateway, fake: FakeUpstream) -> None:
    """The same request again is served from the cache: cost 0, the original's cost saved."""
    first = chat(cached)
    assert first.headers["x-byok-cache"] == "miss"
    second = chat(cached)
    assert second.status_code == 200
    assert second.headers["x-byok-cache"] == "hit"
    meta = second.json()["xantly_metadata"]
    assert meta["cache_hit"] is True and meta["cost_attribution"] == "cache"
    assert meta["cost_usd"] == 0 and meta["attempts"] == 0
    assert meta["cost_saved_usd"] == pytest.approx(GPT4O_COST)
    assert meta["request_id"] != first.json()["xantly_metadata"]["request_id"]
    assert second.json()["choices"] == first.json()["choices"]
    assert chat_calls(fake) == 1


def test_streamed_and_plain_answers_serve_each_other(cached: Gateway, fake: FakeUpstream) -> None:
    """A streamed original serves a plain hit, and a plain original a streamed one (SDK-parsed)."""
    client = cached.openai("acme")
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="openai/gpt-4o", messages=QUESTION, stream=True
        )
    )
    plain = client.chat.completions.create(model="openai/gpt-4o", messages=QUESTION)
    assert plain.choices[0].message.content == streamed
    assert plain.model_extra["xantly_metadata"]["cache_hit"] is True
    assert chat_calls(fake) == 1

    client.chat.completions.create(model="openai/gpt-4o", messages=OTHER)  # plain miss
    chunks = list(
        client.chat.completions.create(
            model="openai/gpt-4o",
            messages=OTHER,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None  # asked for: the usage chunk comes last
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "stop"
    assert finish.model_extra["xantly_metadata"]["cache_hit"] is True
    assert chat_calls(fake) == 2


def test_tenants_never_share_an_entry(cached: Gateway, fake: FakeUpstream) -> None:
    """An identical request of another tenant is a miss and goes upstream."""
    chat(cached, "acme")
    other = chat(cached, "beta")
    assert other.headers["x-byok-cache"] == "miss"
    assert other.json()["xantly_metadata"]["cache_hit"] is False
    assert chat_calls(fake) == 2


def test_the_request_controls(cached: Gateway, fake: FakeUpstream) -> None:
    """skip: no lookup, no store; refresh: no lookup, stores; no-store: looks up only."""
    assert chat(cached, cache="no-store").headers["x-byok-cache"] == "miss"
    assert chat(cached, cache="skip").headers["x-byok-cache"] == "skip"
    assert chat(cached).headers["x-byok-cache"] == "miss"  # neither of the above stored
    assert chat(cached, cache="refresh").headers["x-byok-cache"] == "skip"
    assert chat(cached, cache="no-store").headers["x-byok-cache"] == "hit"
    assert chat_calls(fake) == 4
    bad = chat(cached, cache="sometimes")
    assert bad.status_code == 400 and "x-byok-cache" in bad.json()["error"]["message"]


def test_entries_expire_after_the_ttl(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """Past BYOK_CACHE_TTL on the gateway's clock an entry is gone."""
    clock = FakeClock()
    gateway = start_gateway(cache=_cache(CacheMode.EXACT, ttl_seconds=60), clock=clock)
    chat(gateway)
    assert chat(gateway).headers["x-byok-cache"] == "hit"
    clock.now += timedelta(seconds=61)
    assert chat(gateway).headers["x-byok-cache"] == "miss"
    assert chat_calls(fake) == 2


def test_a_paraphrase_is_a_semantic_hit_and_another_question_a_miss(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """Semantic mode: the paraphrase hits with its similarity; a different question misses;
    the embedding calls are recorded in the ledger like any request."""
    gateway = start_gateway(cache=_cache(CacheMode.SEMANTIC, min_similarity=0.9))
    chat(gateway)
    hit = chat(gateway, messages=PARAPHRASE)
    assert hit.headers["x-byok-cache"] == "hit"
    assert float(hit.headers["x-byok-cache-similarity"]) >= 0.9
    assert chat(gateway, messages=OTHER).headers["x-byok-cache"] == "miss"
    assert chat_calls(fake) == 2
    embedded = [r for r in fake.requests if r.path.endswith("/embeddings")]
    assert embedded and all(r.json and r.json["model"] == "bag-of-words-embed" for r in embedded)
    with gateway.client("acme") as http:
        rows = http.get("/v1/byok/usage", params={"group_by": "model"}).json()["data"]
    assert "bag-of-words-embed" in {row["group"] for row in rows}


def test_tools_bypass_the_semantic_layer(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """A request with tools is only ever an exact hit: its paraphrase goes upstream."""
    gateway = start_gateway(cache=_cache(CacheMode.SEMANTIC, min_similarity=0.9))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    chat(gateway, tools=tools)
    assert chat(gateway, tools=tools, messages=PARAPHRASE).headers["x-byok-cache"] == "miss"
    assert chat(gateway, tools=tools).headers["x-byok-cache"] == "hit"


def test_usage_totals_show_hits_and_savings(cached: Gateway) -> None:
    """Each hit has its own ledger row; /byok/usage totals count hits and the money saved."""
    for _ in range(3):
        chat(cached)
    with cached.client("acme") as http:
        usage = http.get("/v1/byok/usage", params={"group_by": "attribution"}).json()
    assert usage["total"]["requests"] == 3
    assert usage["total"]["cache_hits"] == 2
    assert usage["total"]["saved_usd"] == pytest.approx(2 * GPT4O_COST)
    groups = {row["group"]: row for row in usage["data"]}
    assert groups["cache"]["requests"] == 2 and groups["cache"]["cost_usd"] == 0
    with cached.client("acme") as http:
        rows = http.get("/v1/byok/requests").json()["data"]
    hits = [row for row in rows if row["cache_hit"]]
    # The hit's own row: no upstream attempt, and nothing flagged by the ledger's cleaner.
    assert [(row["attempts"], row["error_type"]) for row in hits] == [(0, None), (0, None)]


def test_embeddings_are_cached_exactly(cached: Gateway, fake: FakeUpstream) -> None:
    """The same embeddings request twice calls upstream once."""
    body = {"model": "openai/text-embedding-3-small", "input": "hello world"}
    with cached.client("acme") as http:
        first = http.post("/v1/embeddings", json=body)
        second = http.post("/v1/embeddings", json=body)
    assert first.headers["x-byok-cache"] == "miss" and second.headers["x-byok-cache"] == "hit"
    assert second.json()["data"] == first.json()["data"]
    assert sum(1 for r in fake.requests if r.path.endswith("/embeddings")) == 1


def test_delete_clears_only_the_callers_entries(cached: Gateway) -> None:
    """DELETE /byok/cache (204) empties the caller's entries, not another tenant's."""
    chat(cached, "acme")
    chat(cached, "beta")
    with cached.client("acme") as http:
        assert http.delete("/v1/byok/cache").status_code == 204
    assert chat(cached, "acme").headers["x-byok-cache"] == "miss"
    assert chat(cached, "beta").headers["x-byok-cache"] == "hit"


def test_two_replicas_share_hits(start_gateway: Callable[..., Gateway], fake: FakeUpstream) -> None:
    """Two gateway servers on one SQLite file: an answer stored by one is a hit on the other
    (written at once with no write-behind delay)."""
    first = start_gateway(cache=_cache(CacheMode.EXACT, store_delay_seconds=0))
    second = start_gateway(
        cache=_cache(CacheMode.EXACT, store_delay_seconds=0), master_key=first.config.master_key
    )
    second.tenants = first.tenants
    chat(first)
    assert chat(second).headers["x-byok-cache"] == "hit"
    assert chat_calls(fake) == 1


def test_a_stored_answer_reaches_another_replica_after_the_write_behind_delay(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """With a write-behind delay the storing replica hits at once (before the write), and the
    other replica hits once the batch was written, within the delay and a margin."""
    settings = _cache(CacheMode.EXACT, store_delay_seconds=0.5)
    first = start_gateway(cache=settings)
    second = start_gateway(cache=settings, master_key=first.config.master_key)
    second.tenants = first.tenants
    started = time.monotonic()
    assert chat(first).headers["x-byok-cache"] == "miss"
    assert chat(first).headers["x-byok-cache"] == "hit"  # from the pending write
    if time.monotonic() - started < 0.4:  # a slow machine may have written it already
        assert chat(second, cache="no-store").headers["x-byok-cache"] == "miss"
    status = "miss"
    while status == "miss" and time.monotonic() - started < 10:
        time.sleep(0.05)
        status = chat(second, cache="no-store").headers["x-byok-cache"]
    assert status == "hit"


def test_no_provider_key_reaches_a_cache_entry(cached: Gateway) -> None:
    """The cache table holds sealed bytes only: no key, no prompt, no answer in clear."""
    from tests.conftest import PLATFORM_OPENAI_KEY

    chat(cached)
    cached.server.stop()
    raw = b"".join(p.read_bytes() for p in cached.db_path.parent.glob("byok.db*") if p.is_file())
    assert PLATFORM_OPENAI_KEY.encode() not in raw
    assert b"capital of France" not in raw
    assert json.dumps("Hello from the fake openai.").encode()[1:-1] not in raw
