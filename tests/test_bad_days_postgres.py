"""Bad days on PostgreSQL (issue 18, items 1-3): one tenant's hostile row or a database outage
never costs another tenant's rows. Real uvicorn, the real PostgreSQL of the test run, a fresh
database per test (the schema is whatever the store migrates to)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from byok_middleware import create_tenant
from byok_middleware.gateway.journal import Journal
from byok_middleware.gateway.ledger import Ledger
from byok_middleware.gateway.ledger_rows import MAX_TOKENS
from byok_middleware.storage.postgres import PostgresStore
from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import Gateway
from tests.services import fresh_database, service_url
from tests.test_bad_days_ledger import row

CHAT = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with fresh_database(service_url("postgres")) as url:
        yield url


async def _tenants(url: str, *names: str) -> dict[str, str]:
    store = PostgresStore(url, min_size=1, max_size=1)
    await store.open()
    try:
        return {name: (await create_tenant(store, name))[1] for name in names}
    finally:
        await store.close()


async def _rows(url: str) -> dict[str, int]:
    connection = await asyncpg.connect(url)
    try:
        found = await connection.fetch("SELECT tenant_id, count(*) FROM usage GROUP BY 1")
        tenants = {r["id"]: r["name"] for r in await connection.fetch("SELECT * FROM tenants")}
    finally:
        await connection.close()
    return {tenants.get(r["tenant_id"], r["tenant_id"]): r["count"] for r in found}


async def _post(gateway: Gateway, tenant: str, body: object, times: int = 1) -> list[int]:
    def call() -> list[int]:
        with gateway.client(tenant) as client:
            return [
                client.post("/v1/chat/completions", json=body).status_code for _ in range(times)
            ]

    return await asyncio.to_thread(call)


async def test_absurd_usage_and_a_nul_model_never_cost_another_tenant_a_row(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream, database: str, tmp_path: Path
) -> None:
    """The attacker's NUL model is a 400; its 2^63-token answer is stored clamped and flagged;
    the victim's 30 rows are all there."""
    gateway = await asyncio.to_thread(
        start_gateway, database_url=database, journal_dir=str(tmp_path / "journal")
    )
    gateway.tenants.update(await _tenants(database, "victim", "attacker"))
    assert await _post(gateway, "attacker", {**CHAT, "model": "openai/gpt-4o\u0000"}) == [400]
    huge = {"prompt_tokens": 2**63, "completion_tokens": 2**64, "total_tokens": 2**65}
    answer = {
        "id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o", "usage": huge,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
    }  # fmt: skip
    fake.script("openai", Scripted(json=answer))
    statuses = await _post(gateway, "attacker", CHAT)
    statuses += await _post(gateway, "victim", CHAT, times=30)
    assert statuses[1:] == [200] * 30
    await asyncio.to_thread(gateway.server.stop)  # the shutdown flushes the ledger
    counts = await _rows(database)
    assert counts["victim"] == 30
    connection = await asyncpg.connect(database)
    try:
        tokens, flags = await connection.fetchrow(
            "SELECT prompt_tokens, error_type FROM usage WHERE prompt_tokens > 1000"
        )
    finally:
        await connection.close()
    assert statuses[0] in (200, 502)  # served (clamped) or refused as malformed: either way
    assert tokens == MAX_TOKENS and "usage_clamped" in flags


async def test_a_nul_in_a_row_does_not_sink_the_batch_on_postgresql(
    database: str, tmp_path: Path
) -> None:
    """A row with NUL in its model and tenant id (past the edge) is escaped; 30 others stored."""
    store = PostgresStore(database, min_size=1, max_size=2)
    await store.open()
    ledger = Ledger(store, interval=60, journal=Journal(tmp_path / "journal"))
    ledger.start()
    for index in range(30):
        ledger.record(row(f"v{index}"))
        if index == 10:
            ledger.record(row("evil", tenant="att\x00acker", model="gpt\x00"))
    await ledger.close()
    assert len(await store.list_usage("victim", limit=100)) == 30
    (evil,) = await store.list_usage("att\\x00acker")
    assert evil.model == "gpt\\x00" and evil.error_type == "text_escaped"
    await store.close()


async def test_rows_answered_during_a_database_outage_are_stored_when_it_is_back(
    start_gateway: Callable[..., Gateway], database: str, tmp_path: Path
) -> None:
    """Connections to the database refused and cut for a while: every answered request's row
    arrives once it accepts connections again."""
    gateway = await asyncio.to_thread(
        start_gateway, database_url=database, journal_dir=str(tmp_path / "journal")
    )
    gateway.tenants.update(await _tenants(database, "victim"))
    assert await _post(gateway, "victim", CHAT, times=3) == [200] * 3  # warm: keys cached
    name = database.rsplit("/", 1)[1]
    admin = await asyncpg.connect(service_url("postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        statuses = await _post(gateway, "victim", CHAT, times=20)
        await asyncio.sleep(1.0)  # the writer fails and backs off meanwhile
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    answered = statuses.count(200)
    assert answered == 20
    deadline = time.monotonic() + 20
    while (await _rows(database)).get("victim", 0) < 23 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    assert (await _rows(database)).get("victim", 0) == 23
