"""Webhook alerts: signatures, URL safety, bounded retries, the notifier and the routes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from byok_middleware.crypto import Keyring, generate_master_key
from byok_middleware.storage import MemoryStore
from byok_middleware.storage.base import WebhookConfig
from byok_middleware.telemetry import KeyEvent
from byok_middleware.telemetry.alerts import WebhookNotifier, webhook_aad
from byok_middleware.telemetry.webhooks import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    UnsafeWebhookURL,
    check_webhook_url,
    deliver,
    sign,
    verify_signature,
)
from byok_middleware.testing import FakeUpstream
from tests.servers import ServerThread, free_port
from tests.test_mission_seed import start_mission

SECRET = "whsec_test_secret_0123456789"


@dataclass
class Receiver:
    """A real HTTP receiver on 127.0.0.1 answering scripted statuses, then 200."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append((headers, body))
        status = self.statuses.pop(0) if self.statuses else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    server = ServerThread(app).start()
    try:
        yield app, server.url + "/hook"
    finally:
        server.stop()


async def _no_sleep(_: float) -> None:
    return None


def test_signature_round_trip_and_replay_window() -> None:
    """A signature verifies for its body within the window, and fails for another body, an
    old timestamp or another secret."""
    body, now = b'{"type":"key.invalid"}', int(time.time())
    headers = {HEADER_TIMESTAMP: str(now), HEADER_SIGNATURE: sign(SECRET, now, body)}
    assert verify_signature(SECRET, body, headers)
    assert not verify_signature(SECRET, body + b" ", headers)
    assert not verify_signature("whsec_other_secret_000000", body, headers)
    assert not verify_signature(SECRET, body, headers, now=now + 301)
    assert headers[HEADER_SIGNATURE].startswith("v1=") and len(headers[HEADER_SIGNATURE]) == 67


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
        "http://100.64.0.1/hook",
        "http://localhost/hook",
        "ftp://93.184.216.34/hook",
        "https://user:pass@93.184.216.34/hook",
        "not a url",
    ],
)
async def test_private_and_malformed_urls_are_refused(url: str) -> None:
    """Loopback, private, link-local, shared, IPv4-mapped, non-http and credentialed URLs are
    refused unless private addresses are allowed (malformed ones always are)."""
    with pytest.raises(UnsafeWebhookURL):
        await check_webhook_url(url)


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    """A public-looking name is judged by what it resolves to (DNS rebinding)."""

    async def rebinding(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(UnsafeWebhookURL, match="BYOK_WEBHOOK_ALLOW_PRIVATE"):
        await check_webhook_url("https://hooks.example.com/x", resolve=rebinding)
    await check_webhook_url("https://93.184.216.34/x")  # a global literal passes
    await check_webhook_url("http://127.0.0.1:9/hook", allow_private=True)


async def test_delivery_retries_server_errors_with_fresh_signatures(
    receiver: tuple[Receiver, str],
) -> None:
    """Two 503s then a 200: three signed attempts with the same event id, each logged."""
    app, url = receiver
    app.statuses = [503, 503]
    log: list[tuple[int, int | None, str | None]] = []

    async def record(attempt: int, status: int | None, error: str | None) -> None:
        log.append((attempt, status, error))

    async with httpx.AsyncClient() as client:
        ok = await deliver(
            client, url, b'{"a":1}', SECRET, event_id="evt_1", log_attempt=record, sleep=_no_sleep
        )
    assert ok and log == [(1, 503, "HTTP 503"), (2, 503, "HTTP 503"), (3, 200, None)]
    assert len(app.received) == 3
    for headers, body in app.received:
        assert headers[HEADER_ID.lower()] == "evt_1" and body == b'{"a":1}'
        assert verify_signature(SECRET, body, headers)


async def test_delivery_stops_on_refusal_and_bounds_retries(
    receiver: tuple[Receiver, str],
) -> None:
    """A 400 is not retried; an unreachable receiver is tried ``max_attempts`` times only."""
    app, url = receiver
    app.statuses = [400]
    async with httpx.AsyncClient() as client:
        assert not await deliver(client, url, b"{}", SECRET, event_id="e", sleep=_no_sleep)
        assert len(app.received) == 1
        errors: list[str | None] = []

        async def record(attempt: int, status: int | None, error: str | None) -> None:
            errors.append(error)

        dead = f"http://127.0.0.1:{free_port()}/hook"
        assert not await deliver(
            client,
            dead,
            b"{}",
            SECRET,
            event_id="e",
            max_attempts=3,
            log_attempt=record,
            sleep=_no_sleep,
        )
    assert errors == ["ConnectError"] * 3


async def test_notifier_delivers_subscribed_events_once(receiver: tuple[Receiver, str]) -> None:
    """A subscribed key event reaches the tenant's URL signed with its secret and is logged;
    an unsubscribed one is not sent, and a repeat within the interval is dropped."""
    app, url = receiver
    keyring = Keyring.parse(generate_master_key())
    store = MemoryStore()
    await store.open()
    await store.put_webhook(
        WebhookConfig(
            "t1",
            url,
            ("key.invalid",),
            keyring.encrypt(SECRET, webhook_aad("t1")),
            datetime.now(UTC),
        )
    )
    notifier = WebhookNotifier(store, keyring, allow_private=True, backoff=0.01)
    event = KeyEvent("key.invalid", "t1", "openai", "key_9", reason="the provider answered 401")
    notifier.key_event(event)
    notifier.key_event(event)  # a repeat within min_interval
    notifier.key_event(KeyEvent("key.recovered", "t1", "openai", "key_9"))
    await notifier.drain(10)
    await notifier.aclose()
    assert len(app.received) == 1
    headers, body = app.received[0]
    assert verify_signature(SECRET, body, headers)
    payload = json.loads(body)
    assert payload["type"] == "key.invalid" and payload["data"]["key_id"] == "key_9"
    deliveries = await store.list_deliveries("t1")
    assert [(d.event, d.status_code, d.attempt) for d in deliveries] == [("key.invalid", 200, 1)]


def test_webhook_routes(fake: FakeUpstream, tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    """PUT stores a webhook (a generated secret shown once), GET never shows the secret,
    deliveries list, DELETE removes it; bad events and (by default) private URLs are 400s."""
    _, url = receiver
    with (
        start_mission(fake, tmp_path, webhook_allow_private=True) as mission,
        mission.client("acme") as acme,
    ):
        assert acme.get("/byok/webhooks").status_code == 404
        bad = acme.put("/byok/webhooks", json={"url": url, "events": ["key.exploded"]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "events"
        made = acme.put("/byok/webhooks", json={"url": url, "events": ["key.invalid"]})
        assert made.status_code == 200 and made.json()["secret"].startswith("whsec_")
        shown = acme.get("/byok/webhooks").json()
        assert shown["url"] == url and "secret" not in shown
        again = acme.put("/byok/webhooks", json={"url": url})
        assert "secret" not in again.json() and len(again.json()["events"]) == 5
        assert acme.get("/byok/webhooks/deliveries").json()["data"] == []
        assert acme.delete("/byok/webhooks").status_code == 204
    (tmp_path / "strict").mkdir()
    with start_mission(fake, tmp_path / "strict") as strict, strict.client("acme") as acme:
        refused = acme.put("/byok/webhooks", json={"url": url})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "unsafe_url"


def test_asyncio_is_not_left_running() -> None:
    """The notifier refuses to schedule outside a loop instead of raising."""
    notifier = WebhookNotifier(MemoryStore(), Keyring.parse(generate_master_key()))
    notifier.key_event(KeyEvent("key.invalid", "t", "openai"))
    asyncio.run(notifier.aclose())
