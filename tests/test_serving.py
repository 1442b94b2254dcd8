"""The app `byok-middleware serve` runs: built by a uvicorn factory, heap frozen after start-up."""

from __future__ import annotations

import base64
import gc
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from byok_middleware.asgi import Message, Receive, Scope, Send
from byok_middleware.serving import YOUNG_THRESHOLD, FreezeAfterStartup, create_app
from tests.servers import serve


@pytest.fixture
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test run keeps its usual collector
    gc.set_threshold(*thresholds)


async def test_the_heap_is_frozen_when_start_up_completes_not_before(unfrozen: None) -> None:
    """FreezeAfterStartup freezes once the wrapped app reports start-up complete, then passes
    the message on; other scopes go through untouched."""
    seen: list[tuple[str, int]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            seen.append(("before", gc.get_freeze_count()))
            await send({"type": "lifespan.startup.complete"})
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        seen.append((message["type"], gc.get_freeze_count()))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    wrapped = FreezeAfterStartup(app)
    await wrapped({"type": "lifespan"}, receive, send)
    assert seen[0] == ("before", 0)
    assert seen[1][0] == "lifespan.startup.complete" and seen[1][1] > 1000
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD  # young collections only past 50,000
    await wrapped({"type": "http"}, receive, send)
    assert sent[-1]["status"] == 204


def test_create_app_serves_the_gateway_and_freezes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    """create_app() reads BYOK_*, answers the gateway's routes over a real uvicorn, and its
    start-up leaves the start-up objects frozen."""
    monkeypatch.setenv("BYOK_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("BYOK_DATABASE_URL", f"sqlite:///{tmp_path / 'serve.db'}")
    with serve(create_app()) as server:
        assert gc.get_freeze_count() > 10_000
        answer = httpx.get(f"{server.url}/v1/models", timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["type"]
