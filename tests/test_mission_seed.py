"""Shared set-up for Mission Control tests: a real uvicorn gateway with seeded traffic.

Two tenants ("acme", "globex") each get provider keys through the API, a few real calls through
the fake upstream, and a deterministic ledger history over the last 30 hours (seeded through
the store, as the ledger writer would). No tests here; other modules import ``mission``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from byok_middleware import BYOKConfig, BYOKMiddleware, SQLiteStore, create_tenant
from byok_middleware.asgi import Receive, Scope, Send
from byok_middleware.crypto import generate_master_key
from byok_middleware.storage.base import UsageRecord
from byok_middleware.testing import FakeUpstream
from tests.servers import ServerThread

ADMIN_KEY = "admin-test-key-0000000000000000000000"
LONG_MODEL = "claude-sonnet-4-5-20250929-extended-context-preview-with-a-very-long-name"
SEEDED_PER_TENANT = {"acme": 90, "globex": 40}


async def _host(scope: Scope, receive: Receive, send: Send) -> None:
    """The host app: answers 404 to anything the gateway passes through."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@dataclass
class Mission:
    url: str
    db_path: Path
    gateway_keys: dict[str, str]
    key_ids: dict[str, list[str]] = field(default_factory=dict)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def client(self, tenant: str | None = None, *, admin: bool = False) -> httpx.Client:
        headers = {}
        if admin:
            headers["authorization"] = f"Bearer {ADMIN_KEY}"
        elif tenant:
            headers["authorization"] = f"Bearer {self.gateway_keys[tenant]}"
        return httpx.Client(base_url=self.url + "/v1", headers=headers, timeout=30)


def _rows(tenant: str, tenant_id: str, key_ids: list[str], count: int, now: datetime) -> list[Any]:
    rng = random.Random(f"seed-{tenant}")
    providers = [("openai", "gpt-4o-mini"), ("anthropic", LONG_MODEL), ("groq", "llama-3.3-70b")]
    rows = []
    for i in range(count):
        provider, model = providers[i % len(providers)]
        byok = i % 3 != 2
        status = 200 if i % 11 != 10 else (429 if i % 2 else 502)
        prompt, completion = rng.randint(20, 4000), rng.randint(5, 800)
        cost = None if i % 17 == 16 else Decimal(prompt * 3 + completion * 12) / Decimal(10**7)
        if i == 0:
            cost = Decimal("0.00000004")  # a real, tiny cost the page must not show as $0
        rows.append(
            UsageRecord(
                request_id=f"seed-{tenant}-{i:04d}",
                tenant_id=tenant_id,
                key_id=key_ids[i % len(key_ids)] if byok and key_ids else None,
                provider=provider,
                model=model,
                endpoint="/chat/completions" if i % 5 else "/embeddings",
                attribution="byok" if byok else "xantly",
                prompt_tokens=prompt,
                completion_tokens=completion if status == 200 else 0,
                cached_tokens=0,
                cost_usd=cost if status == 200 else Decimal(0),
                status_code=status,
                latency_ms=rng.uniform(80, 2500),
                created_at=now - timedelta(minutes=rng.randint(1, 30 * 60)),
                attempts=1 if status == 200 else 2,
                cache_hit=i % 13 == 0,
                error_type=None if status == 200 else "upstream_error",
                ttft_ms=rng.uniform(40, 400) if i % 2 else None,
                cost_source="price_table" if cost is not None else "unpriced",
            )
        )
    return rows


def _on_store(db_path: Path, action: Any) -> Any:
    async def run() -> Any:
        store = SQLiteStore(db_path)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    # A thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(run())).result(timeout=60)


@pytest.fixture
def mission(fake: FakeUpstream, tmp_path: Path) -> Iterator[Mission]:
    """A running gateway with Mission Control mounted and two tenants' traffic."""
    with start_mission(fake, tmp_path) as state:
        yield state


@contextmanager
def start_mission(
    fake: FakeUpstream,
    tmp_path: Path,
    *,
    webhook_allow_private: bool = False,
    metrics: bool = False,
) -> Iterator[Mission]:
    db_path = tmp_path / "mission.db"
    # The routes as a deployment mounts them: BYOK_ADMIN_KEY turns the operator view on.
    config = BYOKConfig(
        master_key=generate_master_key(),
        database_url=f"sqlite:///{db_path}",
        base_urls=fake.base_urls(),
        platform_keys={"openai": "sk-platform-mission-000000000000000"},
        upstream_timeout=10.0,
        admin_key=ADMIN_KEY,
        webhook_allow_private=webhook_allow_private,
        metrics=metrics,
    )

    async def tenants(store: SQLiteStore) -> dict[str, tuple[str, str]]:
        made = {}
        for name in SEEDED_PER_TENANT:
            tenant, key = await create_tenant(store, name)
            made[name] = (tenant.id, key)
        return made

    made = _on_store(db_path, tenants)
    middleware = BYOKMiddleware(_host, config=config)
    server = ServerThread(middleware).start()
    state = Mission(server.url, db_path, {name: key for name, (_, key) in made.items()})
    try:
        for name in SEEDED_PER_TENANT:
            with state.client(name) as http:
                ids = []
                for provider, priority in (("openai", 1), ("anthropic", 1), ("groq", 1)):
                    created = http.post(
                        "/byok/providers",
                        json={
                            "provider": provider,
                            "api_key": f"sk-{name}-{provider}-0000000000000000000000",
                            "priority": priority,
                            "label": f"{name} {provider} production key with a long label",
                        },
                    )
                    assert created.status_code == 201, created.text
                    ids.append(created.json()["id"])
                state.key_ids[name] = ids
                answer = http.post(
                    "/chat/completions",
                    json={
                        "model": "openai/gpt-4o-mini",
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                )
                assert answer.status_code == 200, answer.text
        rows = [
            row
            for name, (tenant_id, _) in made.items()
            for row in _rows(
                name, tenant_id, state.key_ids[name], SEEDED_PER_TENANT[name], state.now
            )
        ]

        async def seed(store: SQLiteStore) -> None:
            await store.record_usage(rows)

        _on_store(db_path, seed)
        yield state
    finally:
        server.stop()
