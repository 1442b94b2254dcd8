"""A tenant budget shared by two gateway processes over one PostgreSQL and one Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from byok_middleware import create_tenant, generate_master_key
from byok_middleware.storage.postgres import PostgresStore
from byok_middleware.testing import FakeUpstream
from tests.conftest import PLATFORM_OPENAI_KEY
from tests.services import fresh_database, service_url
from tests.test_replicas import Replica, _environment, _start, _wait_ready
from tests.test_spend_e2e import ADMIN_KEY, CHAT, REAL_COST, REAL_USAGE


@pytest.fixture
async def replicas(fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[tuple[str, list[Replica]]]:
    postgres_url, redis_url = service_url("postgres"), service_url("redis")
    async with fresh_database(postgres_url) as database_url:
        env = _environment(
            BYOK_MASTER_KEY=generate_master_key(),
            BYOK_DATABASE_URL=database_url,
            BYOK_REDIS_URL=redis_url,
            BYOK_PLATFORM_KEY_OPENAI=PLATFORM_OPENAI_KEY,
            BYOK_ADMIN_KEY=ADMIN_KEY,
            BYOK_UPSTREAM_TIMEOUT="10",
            **{f"BYOK_BASE_URL_{p.upper()}": url for p, url in fake.base_urls().items()},
        )
        started = [_start(name, env, tmp_path) for name in ("a", "b")]
        try:
            for replica in started:
                await asyncio.to_thread(_wait_ready, replica)
            yield database_url, started
        finally:
            for replica in started:
                replica.stop()


async def test_two_replicas_share_one_budget_without_overshoot(
    replicas: tuple[str, list[Replica]], fake: FakeUpstream
) -> None:
    """30 concurrent calls split over two replicas on a budget for ~14: the ledger in
    PostgreSQL stays within it, the refused get 429 budget_exceeded, at least 7 are served."""
    database_url, (a, b) = replicas
    fake.default_usage = dict(REAL_USAGE)
    fake.chunk_delay = 0.02
    store = PostgresStore(database_url, min_size=1, max_size=1)
    try:
        tenant, api_key = await create_tenant(store, "acme")
    finally:
        await store.close()
    budget = Decimal("0.004")
    admin_headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=a.url, headers=admin_headers, timeout=30) as http:
        put = await http.put(
            f"/v1/byok/admin/tenants/{tenant.id}/policy", json={"budget_usd": str(budget)}
        )
        assert put.status_code == 200, put.text

    headers = {"authorization": f"Bearer {api_key}"}
    async with (
        httpx.AsyncClient(base_url=a.url, headers=headers, timeout=30) as client_a,
        httpx.AsyncClient(base_url=b.url, headers=headers, timeout=30) as client_b,
    ):

        async def one(index: int) -> int:
            client = client_a if index % 2 else client_b
            body = {**CHAT, "stream": index % 3 == 0}
            response = await client.post("/v1/chat/completions", json=body)
            if response.status_code == 429:
                assert response.json()["error"]["code"] == "budget_exceeded"
            return response.status_code

        statuses = await asyncio.gather(*(one(i) for i in range(30)))
    assert set(statuses) == {200, 429}
    async with httpx.AsyncClient(base_url=b.url, headers=admin_headers, timeout=30) as http:
        await http.get("/v1/byok/admin/usage")  # flushes B's ledger queue
        async with httpx.AsyncClient(base_url=a.url, headers=admin_headers, timeout=30) as http_a:
            await http_a.get("/v1/byok/admin/usage")
        shown = (await http.get(f"/v1/byok/admin/tenants/{tenant.id}")).json()
    store = PostgresStore(database_url, min_size=1, max_size=1)
    await store.open()
    try:
        spent, _ = await store.spend_since(tenant.id, shown_start(shown))
        rows = await store.usage_rows(tenant.id)
    finally:
        await store.close()
    served = statuses.count(200)
    assert spent <= budget
    assert len([r for r in rows if r.status_code == 200]) == served
    assert served >= int(budget / REAL_COST) / 2
    assert Decimal(str(shown["spend_usd"])) == spent
    assert shown["reserved_usd"] == 0


def shown_start(shown: dict[str, object]) -> datetime:
    """The period start the operator API reports for the tenant."""
    period = shown["period"]
    assert isinstance(period, dict)
    return datetime.fromisoformat(str(period["start"]))
