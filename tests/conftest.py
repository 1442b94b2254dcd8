"""Shared fixtures: the fake upstream, a real uvicorn gateway, tenants on a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from byok_middleware import BYOKConfig, SQLiteStore, create_tenant, generate_master_key
from byok_middleware.testing import FakeUpstream
from examples.fastapi_app.app import create_app
from tests.servers import ServerThread

# Its last four characters are echoed-fragment redacted in logs: not a word a log line holds.
PLATFORM_OPENAI_KEY = "sk-platform-0000000000000000PLATF9Q7"


@pytest.fixture(scope="session")
def fake_session() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(fake_session: FakeUpstream) -> Iterator[FakeUpstream]:
    """The fake upstream, reset for each test."""
    fake_session.clear()
    anthropic_usage = dict(fake_session.anthropic_usage)  # a test may change it: put it back
    fake_session.chunk_delay = 0.0
    fake_session.stream_chunks = 5
    fake_session.default_usage = {"prompt_tokens": 100, "completion_tokens": 20}
    yield fake_session
    fake_session.clear()
    fake_session.anthropic_usage = anthropic_usage


def make_tenant(db_path: Path, name: str) -> str:
    """Create a tenant on the SQLite file and return its gateway API key."""

    async def create() -> str:
        store = SQLiteStore(db_path)
        await store.open()
        try:
            return (await create_tenant(store, name))[1]
        finally:
            await store.close()

    return asyncio.run(create())


@dataclass
class Gateway:
    """A running FastAPI example app with the middleware, and helpers to call it."""

    url: str
    db_path: Path
    config: BYOKConfig
    server: ServerThread
    tenants: dict[str, str] = field(default_factory=dict)
    sdk_clients: list[Any] = field(default_factory=list)

    def tenant(self, name: str) -> str:
        if name not in self.tenants:
            self.tenants[name] = make_tenant(self.db_path, name)
        return self.tenants[name]

    def client(self, tenant: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.tenant(tenant)}"} if tenant else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def openai(self, tenant: str) -> Any:
        """An openai SDK client for ``tenant``, closed when the gateway stops."""
        import openai

        client = openai.OpenAI(
            base_url=self.url + "/v1", api_key=self.tenant(tenant), max_retries=0, timeout=30
        )
        self.sdk_clients.append(client)
        return client

    def stop(self) -> None:
        for client in self.sdk_clients:
            client.close()
        self.server.stop()

    def add_key(self, tenant: str, provider: str, api_key: str, **extra: Any) -> dict[str, Any]:
        with self.client(tenant) as client:
            response = client.post(
                "/v1/byok/providers", json={"provider": provider, "api_key": api_key, **extra}
            )
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture
def start_gateway(fake: FakeUpstream, tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start the FastAPI example with a config pointed at the fake upstream (overridable)."""
    started: list[Gateway] = []

    def start(**overrides: Any) -> Gateway:
        db_path = tmp_path / "byok.db"
        options: dict[str, Any] = {
            "master_key": generate_master_key(),
            "database_url": f"sqlite:///{db_path}",
            "base_urls": fake.base_urls(),
            "platform_keys": {"openai": PLATFORM_OPENAI_KEY},
            "upstream_timeout": 10.0,
            "key_cache_ttl": 30.0,
        }
        options.update(overrides)
        server_options = options.pop("server_options", {})
        # Middleware options beyond the config (e.g. clock=) go to BYOKMiddleware itself.
        middleware = {k: options.pop(k) for k in ("clock", "observer") if k in options}
        config = BYOKConfig(**options)
        server = ServerThread(create_app(config=config, **middleware), **server_options).start()
        gateway = Gateway(url=server.url, db_path=db_path, config=config, server=server)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway()


@pytest.fixture
def sdk(gateway: Gateway) -> Iterator[Any]:
    """The official openai SDK as the tenant "acme", closed after the test."""
    with gateway.openai("acme") as client:
        yield client


def metadata(result: Any) -> dict[str, Any]:
    """The gateway's metadata object on an openai SDK result."""
    return dict(result.model_extra["xantly_metadata"])
