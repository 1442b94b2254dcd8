"""Bad days for keys (issue 18, item 5 and the edge): a key this server cannot open fails
closed, and control characters never reach a store or a log. Real uvicorn, real SQLite."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from byok_middleware import generate_master_key
from byok_middleware.testing import FakeUpstream
from tests.conftest import PLATFORM_OPENAI_KEY, Gateway

CHAT = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _restart_without_k1(start_gateway: Callable[..., Gateway], first: Gateway) -> Gateway:
    """The same database served by a replica whose keyring lacks master key k1."""
    first.stop()
    second = start_gateway(master_key=f"k2:{generate_master_key()}")
    second.tenants.update(first.tenants)
    return second


@pytest.mark.parametrize("fallback", [True, False])
def test_an_always_use_key_that_cannot_be_opened_never_moves_spend_to_the_platform(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream, fallback: bool
) -> None:
    """always_use (or fallback off) with an unopenable key: a 503 naming the missing master-key
    id, the platform key untouched, and the key view and dry run saying why."""
    first = start_gateway(
        master_key=f"k1:{generate_master_key()}", allow_platform_fallback=fallback
    )
    view = first.add_key("acme", "openai", "sk-tenant-aaaaaaaaaaaaaaaa", always_use=fallback)
    gateway = _restart_without_k1(
        lambda **o: start_gateway(allow_platform_fallback=fallback, **o), first
    )
    with gateway.client("acme") as client:
        response = client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "key_unopenable" and "'k1'" in error["message"]
        assert view["id"] in error["message"]
        shown = client.get(f"/v1/byok/providers/{view['id']}").json()
        assert "'k1'" in shown["last_error"]
        listed = client.get("/v1/byok/providers").json()["data"]
        assert "'k1'" in listed[0]["last_error"]
        route = client.get("/v1/byok/route", params={"model": "openai/gpt-4o"}).json()
        assert "'k1'" in str(route) and route["error"]["status"] == 503
        verify = client.post(f"/v1/byok/providers/{view['id']}/verify")
        assert verify.status_code == 503 and "'k1'" in verify.json()["error"]["message"]
    assert not [r for r in fake.requests_for("openai") if r.api_key == PLATFORM_OPENAI_KEY]


def test_an_unopenable_key_without_always_use_falls_back_like_an_invalid_one(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """Without always_use the tenant allows the platform key: it serves, the key is skipped."""
    first = start_gateway(master_key=f"k1:{generate_master_key()}")
    first.add_key("acme", "openai", "sk-tenant-bbbbbbbbbbbbbbbb")
    gateway = _restart_without_k1(start_gateway, first)
    with gateway.client("acme") as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200, response.text
    assert response.json()["xantly_metadata"]["cost_attribution"] == "xantly"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/chat/completions", {**CHAT, "model": "openai/gpt-4o\u0000"}, 400),
        ("POST", "/v1/chat/completions", {**CHAT, "model": "openai/gpt\n4o"}, 400),
        ("POST", "/v1/byok/providers", {"provider": "openai", "api_key": "sk-x" * 5,
                                         "label": "a\u0000b"}, 400),
        ("GET", "/v1/byok/providers/key_%00", None, 404),
        ("DELETE", "/v1/byok/providers/key_%0a", None, 404),
        ("POST", "/v1/byok/providers/key_%00/verify", None, 404),
    ],
)  # fmt: skip
def test_control_characters_are_refused_at_the_edge(
    gateway: Gateway, method: str, path: str, body: Any, status: int
) -> None:
    """NUL or a newline in a model, a label or a path id: a 4xx in OpenAI's shape."""
    with gateway.client("acme") as client:
        response = client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_newline_in_a_path_cannot_forge_a_log_line(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The unhandled-error log line escapes the request path."""
    from byok_middleware.router import escape_for_log

    assert escape_for_log("/v1/x\nFORGED 200 OK\r\x00") == "/v1/x\\nFORGED 200 OK\\r\\x00"
    with caplog.at_level(logging.INFO), gateway.client("acme") as client:
        client.get("/v1/byok/providers/a%0aFORGED%20line")
    assert not any(
        line.startswith("FORGED") for r in caplog.records for line in r.getMessage().splitlines()
    )
