"""Litestar support end to end: the example app and ``BYOKPlugin`` / ``wrap`` on real uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
    DefineMiddleware,
)

from byok_middleware import BYOKConfig, ConfigurationError, SQLiteStore, generate_master_key
from byok_middleware.contrib.litestar import BYOKPlugin, wrap
from byok_middleware.testing import FakeUpstream
from examples.litestar_app.app import create_app
from tests.conftest import Gateway, make_tenant
from tests.servers import ServerThread, serve

TENANT_KEY = "sk-tenant-acme-2222222222222222222222"
MESSAGES = [{"role": "user", "content": "Hello"}]


def assert_openai_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]


@pytest.fixture
def config(tmp_path: Path, fake: FakeUpstream) -> BYOKConfig:
    return BYOKConfig(
        master_key=generate_master_key(),
        database_url=f"sqlite:///{tmp_path / 'byok.db'}",
        base_urls=fake.base_urls(),
        upstream_timeout=10.0,
    )


@pytest.fixture
def litestar_gateway(config: BYOKConfig, tmp_path: Path) -> Iterator[Gateway]:
    """The Litestar example app (with the plugin) on uvicorn, pointed at the fake upstream."""
    server = ServerThread(create_app(config=config)).start()
    try:
        yield Gateway(url=server.url, db_path=tmp_path / "byok.db", config=config, server=server)
    finally:
        server.stop()


def test_host_routes_answer(litestar_gateway: Gateway) -> None:
    """The example's own routes keep working next to the gateway."""
    with litestar_gateway.client() as client:
        home = client.get("/")
        notes = client.get("/notes")
    assert home.status_code == 200
    assert home.json()["app"] == "acme-notes"
    assert notes.status_code == 200
    assert notes.json()[0]["id"] == "1"


def test_gateway_route_without_auth_is_openai_401(litestar_gateway: Gateway) -> None:
    """A gateway route answers under Litestar, refusing a missing key in OpenAI's error shape."""
    with litestar_gateway.client() as client:
        assert_openai_error(client.get("/v1/byok/providers"), 401)


def test_tenant_registers_and_lists_a_key(litestar_gateway: Gateway) -> None:
    """POST of an openai key is 201; GET lists it without the key."""
    key = litestar_gateway.add_key("acme", "openai", TENANT_KEY)
    assert key["provider"] == "openai"
    with litestar_gateway.client("acme") as client:
        listed = client.get("/v1/byok/providers")
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["data"]] == [key["id"]]
    assert TENANT_KEY not in listed.text
    assert TENANT_KEY[-8:] not in listed.text


def test_chat_completion_with_the_openai_sdk(litestar_gateway: Gateway, fake: FakeUpstream) -> None:
    """The openai SDK against the Litestar app is served with the tenant's own key."""
    litestar_gateway.add_key("acme", "openai", TENANT_KEY)
    completion = litestar_gateway.openai("acme").chat.completions.create(
        model="openai/gpt-4o", messages=MESSAGES
    )
    assert completion.choices[0].message.content
    assert completion.model_extra is not None
    assert completion.model_extra["xantly_metadata"]["cost_attribution"] == "byok"
    (received,) = fake.requests_for("openai")
    assert received.api_key == TENANT_KEY


def test_streamed_chat_passes_the_mount(litestar_gateway: Gateway, fake: FakeUpstream) -> None:
    """A streamed completion arrives as several chunks through Litestar's mount."""
    litestar_gateway.add_key("acme", "openai", TENANT_KEY)
    stream = litestar_gateway.openai("acme").chat.completions.create(
        model="openai/gpt-4o", messages=MESSAGES, stream=True
    )
    chunks = list(stream)
    assert len(chunks) > 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert fake.requests_for("openai")[0].api_key == TENANT_KEY


@get("/v1/health")
async def v1_health() -> dict[str, str]:
    return {"status": "host"}


def test_unserved_paths_under_the_prefix_stay_the_hosts(config: BYOKConfig) -> None:
    """A host route below the prefix answers; other unserved paths get Litestar's own 404."""
    app = Litestar(route_handlers=[v1_health], plugins=[BYOKPlugin(config=config)])
    with serve(app) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/v1/health").json() == {"status": "host"}
        assert client.post("/v1/health").status_code == 405
        for path in ("/v1/nope", "/v1", "/v1/", "/v1byok/providers", "/v1/byok/providers/"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.json() == {"status_code": 404, "detail": "Not Found"}, path
        assert_openai_error(client.get("/v1/byok/providers"), 401)


def test_store_opens_at_startup_and_closes_at_shutdown(config: BYOKConfig, tmp_path: Path) -> None:
    """Litestar's startup opens the gateway's store before any request; shutdown closes it."""
    store = SQLiteStore(tmp_path / "byok.db")
    server = ServerThread(create_app(config=config, store=store)).start()
    try:
        assert "open" in repr(store)
    finally:
        server.stop()
    assert "closed" in repr(store)


def test_missing_master_key_fails_startup_not_import(tmp_path: Path) -> None:
    """Building the app needs no master key; starting it names the missing variable."""
    config = BYOKConfig(database_url=f"sqlite:///{tmp_path / 'byok.db'}")
    app = create_app(config=config)

    async def start() -> None:
        async with app.lifespan():
            pass

    errors: list[BaseException] = []
    try:
        asyncio.run(start())
    except* ConfigurationError as group:  # Litestar's lifespan may wrap it in a group
        errors.extend(group.exceptions)
    assert len(errors) == 1
    assert "BYOK_MASTER_KEY" in str(errors[0])


def test_empty_prefix_is_refused(config: BYOKConfig) -> None:
    """A mount at '/' would hide the host's routes, so the plugin says to use wrap()."""
    with pytest.raises(ConfigurationError, match="wrap"):
        Litestar(plugins=[BYOKPlugin(config=config.with_changes(prefix=""))])


class HeaderAuth(AbstractAuthenticationMiddleware):
    """The host's own auth: ``x-user: alice`` is user alice of tenant t-alice."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
        if connection.headers.get("x-user") != "alice":
            raise NotAuthorizedException()
        return AuthenticationResult(user={"name": "alice", "tenant": "t-alice"}, auth=None)


@get("/me")
async def me() -> str:
    return "alice"


def tenant_of(scope: Any) -> str | None:
    user = scope.get("user")
    return None if user is None else str(user["tenant"])


def host_with_auth(config: BYOKConfig, identify: Callable[[Any], str | None] | None) -> Litestar:
    return Litestar(
        route_handlers=[me],
        middleware=[DefineMiddleware(HeaderAuth)],
        plugins=[BYOKPlugin(config=config, identify=identify)],
    )


def test_identify_reads_the_user_of_the_hosts_auth(config: BYOKConfig) -> None:
    """With identify=, the host's auth middleware runs first and scope['user'] names the tenant."""
    with serve(host_with_auth(config, tenant_of)) as server:
        with httpx.Client(base_url=server.url) as anonymous:
            assert anonymous.get("/v1/byok/providers").status_code == 401
        with httpx.Client(base_url=server.url, headers={"x-user": "alice"}) as alice:
            assert alice.get("/me").text == "alice"
            created = alice.post(
                "/v1/byok/providers", json={"provider": "openai", "api_key": TENANT_KEY}
            )
            assert created.status_code == 201, created.text
            assert alice.get("/v1/byok/providers").json()["data"][0]["id"] == created.json()["id"]


def test_default_identity_bypasses_the_hosts_auth(config: BYOKConfig, tmp_path: Path) -> None:
    """Without identify=, gateway keys authenticate gateway routes; host routes keep host auth."""
    gateway_key = make_tenant(tmp_path / "byok.db", "acme")
    with serve(host_with_auth(config, None)) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/me").status_code == 401
        assert_openai_error(client.get("/v1/byok/providers"), 401)
        listed = client.get(
            "/v1/byok/providers", headers={"authorization": f"Bearer {gateway_key}"}
        )
        assert listed.status_code == 200
        assert listed.json() == {"object": "list", "data": []}


def test_wrap_serves_the_gateway_in_front_of_litestar(config: BYOKConfig, tmp_path: Path) -> None:
    """wrap() answers gateway paths before Litestar, passes the rest and the lifespan through."""
    store = SQLiteStore(tmp_path / "byok.db")
    host = Litestar(route_handlers=[v1_health, me])
    gateway_key = make_tenant(tmp_path / "byok.db", "acme")
    with serve(wrap(host, config=config, store=store)) as server:
        assert "open" in repr(store)
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/me").text == "alice"
            assert client.get("/v1/health").json() == {"status": "host"}
            assert client.get("/v1/nope").status_code == 404
            assert_openai_error(client.get("/v1/byok/providers"), 401)
            listed = client.get(
                "/v1/byok/providers", headers={"authorization": f"Bearer {gateway_key}"}
            )
            assert listed.status_code == 200
    assert "closed" in repr(store)
