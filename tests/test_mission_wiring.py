"""Telemetry wired into the gateway: what the engine reports on real traffic through a real
uvicorn and the fake upstream (events, metrics text, log lines, ttft, alerts, budgets)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from byok_middleware import BYOKConfig
from byok_middleware.crypto import generate_master_key
from byok_middleware.gateway import Gateway as Engine
from byok_middleware.telemetry import AttemptResult, KeyEvent, RequestEnd, RequestStart
from byok_middleware.telemetry.webhooks import verify_signature
from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import PLATFORM_OPENAI_KEY, Gateway
from tests.servers import ServerThread
from tests.test_webhooks import Receiver

ADMIN_KEY = "admin-wiring-key-000000000000000000000"
K1 = "sk-tenant-first-111111111111111111111"
K2 = "sk-tenant-second-22222222222222222222"
CHAT: dict[str, Any] = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


class Recorder:
    """An ``Observer`` keeping what the engine told it (from the server's thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[RequestStart] = []
        self.attempts: list[AttemptResult] = []
        self.ended: list[RequestEnd] = []
        self.events: list[KeyEvent] = []

    def request_started(self, start: RequestStart) -> object:
        with self.lock:
            self.started.append(start)
        return start.request_id

    def attempt_finished(self, token: object, attempt: AttemptResult) -> None:
        with self.lock:
            self.attempts.append(attempt)

    def request_finished(self, token: object, end: RequestEnd) -> None:
        with self.lock:
            self.ended.append(end)

    def key_event(self, event: KeyEvent) -> None:
        with self.lock:
            self.events.append(event)

    def wait_for(self, kind: str, seconds: float = 10.0) -> list[KeyEvent]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                found = [e for e in self.events if e.kind == kind]
            if found:
                return found
            time.sleep(0.02)
        return []


def chat(gateway: Gateway, body: dict[str, Any] | None = None) -> httpx.Response:
    with gateway.client("acme") as http:
        return http.post("/v1/chat/completions", json=body or CHAT)


def admin(gateway: Gateway) -> httpx.Client:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.Client(base_url=gateway.url + "/v1", headers=headers, timeout=30)


@pytest.fixture
def recorded(start_gateway: Callable[..., Gateway]) -> tuple[Gateway, Recorder]:
    recorder = Recorder()
    return start_gateway(observer=recorder, admin_key=ADMIN_KEY), recorder


def test_a_401_and_a_429_from_the_upstream_reach_the_observers(
    recorded: tuple[Gateway, Recorder], fake: FakeUpstream
) -> None:
    """401: an ``auth`` attempt and key.invalid; 429: a ``rate_limited`` attempt with its
    cooldown, key.cooling_down, and the platform key's fallback announced; each request ends
    once with its status and attempts."""
    gateway, recorder = recorded
    first = gateway.add_key("acme", "openai", K1, priority=1)
    second = gateway.add_key("acme", "openai", K2, priority=2)
    fake.script("openai", Scripted.invalid_key("openai"))
    assert chat(gateway).status_code == 200
    fake.script("openai", Scripted.rate_limited("openai", retry_after=30))
    served = chat(gateway)
    assert served.status_code == 200
    assert served.json()["xantly_metadata"]["cost_attribution"] == "xantly"  # the platform key

    outcomes = [(a.attempt, a.key_id, a.status_code, a.error) for a in recorder.attempts]
    assert outcomes == [
        (1, first["id"], 401, "auth"),
        (2, second["id"], 200, None),
        (1, second["id"], 429, "rate_limited"),
        (2, None, 200, None),
    ]
    assert recorder.attempts[2].cooldown_until is not None
    assert all(a.duration_ms >= 0 for a in recorder.attempts)
    kinds = [(e.kind, e.key_id) for e in recorder.events]
    assert kinds == [
        ("key.invalid", first["id"]),
        ("key.cooling_down", second["id"]),
        ("platform_fallback.used", None),
    ]
    assert recorder.events[0].reason == "the provider answered 401"
    assert "rate_limited" in recorder.events[2].reason
    assert [(s.route, s.model) for s in recorder.started] == [
        ("/chat/completions", "openai/gpt-4o")
    ] * 2
    assert [(e.status_code, e.attempts, e.attribution) for e in recorder.ended] == [
        (200, 2, "byok"),
        (200, 2, "xantly"),
    ]
    text = repr(recorder.__dict__)
    assert K1 not in text and K2 not in text and PLATFORM_OPENAI_KEY not in text


def test_refusals_before_any_attempt_end_the_request_too(
    recorded: tuple[Gateway, Recorder],
) -> None:
    """A 400 for a provider without a key, and a malformed request, end their telemetry with
    no attempt (they write no ledger row)."""
    gateway, recorder = recorded
    refused = chat(gateway, {**CHAT, "model": "anthropic/claude-3-5-haiku-latest"})
    assert refused.status_code == 400
    with gateway.client("acme") as http:
        assert http.post("/v1/embeddings", json={"model": 5}).status_code == 400
    ends = [(e.status_code, e.attempts, e.refusal) for e in recorder.ended]
    assert ends == [(400, 0, "no_key"), (400, 0, None)]
    assert recorder.attempts == []


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_metrics_text_after_known_traffic(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """BYOK_METRICS: after 2 served calls (one failed over past a 401) and 1 refusal, the text
    counts them by route, provider, model, attribution and status class, with tokens, cost,
    attempts, upstream errors, latency and key events; no tenant label; operator key only."""
    gateway = start_gateway(metrics=True, admin_key=ADMIN_KEY)
    gateway.add_key("acme", "openai", K1, priority=1)
    gateway.add_key("acme", "openai", K2, priority=2)
    fake.script("openai", Scripted.invalid_key("openai"))
    assert chat(gateway).status_code == 200
    assert chat(gateway, {**CHAT, "stream": True}).status_code == 200
    assert chat(gateway, {**CHAT, "model": "anthropic/claude-3-5-haiku-latest"}).status_code == 400
    with gateway.client("acme") as http:
        assert http.get("/v1/byok/metrics").status_code == 401
    with admin(gateway) as http:
        response = http.get("/byok/metrics")
    assert response.status_code == 200
    text = response.text
    served = {"route": "/chat/completions", "provider": "openai", "model": "gpt-4o"}
    assert metric(text, "byok_requests_total", **served, status_class="2xx") == 2
    assert metric(text, "byok_requests_total", provider="anthropic", status_class="4xx") == 1
    assert metric(text, "byok_upstream_attempts_total", provider="openai", outcome="ok") == 2
    assert metric(text, "byok_upstream_errors_total", provider="openai", error_class="auth") == 1
    assert metric(text, "byok_failovers_total", provider="openai") == 1
    assert metric(text, "byok_tokens_total", direction="input", attribution="byok") == 200
    assert metric(text, "byok_tokens_total", direction="output", attribution="byok") == 40
    cost = metric(text, "byok_cost_usd_total", attribution="byok", provider="openai")
    assert cost == pytest.approx(2 * (100 * 2.5e-6 + 20 * 1e-5))
    assert metric(text, "byok_request_duration_seconds_count", route="/chat/completions") == 3
    assert metric(text, "byok_time_to_first_token_seconds_count", provider="openai") == 1
    assert metric(text, "byok_key_health_events_total", event="key.invalid") == 1
    assert "tenant=" not in text and K1 not in text


def test_the_request_log_line_and_the_health_warning(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """One INFO line per request with id, tenant, route, provider, model, status, attempts,
    cost and latency; a WARNING naming the reason when a key is marked invalid; no key text."""
    caplog.set_level(logging.INFO, logger="byok_middleware")
    gateway = start_gateway()
    gateway.add_key("acme", "openai", K1, priority=1)
    gateway.add_key("acme", "openai", K2, priority=2)
    fake.script("openai", Scripted.invalid_key("openai"))
    response = chat(gateway)
    assert response.status_code == 200
    request_id = response.json()["xantly_metadata"]["request_id"]
    lines = [r.getMessage() for r in caplog.records if r.name == "byok_middleware.requests"]
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(f"request {request_id} tenant=")
    for part in (
        "route=/chat/completions",
        "provider=openai",
        "model=gpt-4o",
        "attribution=byok",
        "status=200",
        "attempts=2",
        "cost_usd=0.00045",
        "latency_ms=",
    ):
        assert part in line
    warnings = [r for r in caplog.records if r.name == "byok_middleware.health"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "marked invalid: the provider answered 401" in warnings[0].getMessage()
    assert K1 not in caplog.text and K1[-4:] not in caplog.text


@pytest.mark.parametrize("settings", [{"log_format": "json"}, {"request_log": False}])
def test_the_json_request_log_and_turning_the_line_off(
    start_gateway: Callable[..., Gateway],
    fake: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    settings: dict[str, Any],
) -> None:
    """BYOK_LOG_FORMAT=json: the line is one JSON object; BYOK_REQUEST_LOG=false: no line."""
    caplog.set_level(logging.INFO, logger="byok_middleware")
    gateway = start_gateway(**settings)
    gateway.add_key("acme", "openai", K1)
    assert chat(gateway).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "byok_middleware.requests"]
    if settings.get("request_log") is False:
        assert lines == []
        return
    [line] = lines
    fields = json.loads(line)
    assert (fields["event"], fields["status"], fields["provider"]) == ("request", 200, "openai")


def test_the_ledger_keeps_time_to_first_token_for_streams(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """A stream's row has ttft_ms (not after its latency); a whole JSON answer's has none."""
    fake.chunk_delay = 0.02
    gateway = start_gateway()
    gateway.add_key("acme", "openai", K1)
    assert chat(gateway, {**CHAT, "stream": True}).status_code == 200
    assert chat(gateway).status_code == 200
    with gateway.client("acme") as http:
        rows = http.get("/v1/byok/requests").json()["data"]
    plain, streamed = rows  # newest first
    assert plain["ttft_ms"] is None
    assert streamed["ttft_ms"] is not None
    assert 0 < streamed["ttft_ms"] < streamed["latency_ms"]


def test_a_key_owner_gets_a_signed_webhook_when_its_key_fails(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """The tenant's webhook (a local receiver, allowed by BYOK_WEBHOOK_ALLOW_PRIVATE) gets a
    signed key.invalid naming the key after a real 401, and the delivery is listed."""
    app = Receiver()
    server = ServerThread(app).start()
    try:
        gateway = start_gateway(webhook_allow_private=True)
        first = gateway.add_key("acme", "openai", K1, priority=1)
        gateway.add_key("acme", "openai", K2, priority=2)
        with gateway.client("acme") as http:
            made = http.put("/v1/byok/webhooks", json={"url": server.url + "/hook"}).json()
        fake.script("openai", Scripted.invalid_key("openai"))
        assert chat(gateway).status_code == 200
        deadline = time.monotonic() + 10
        while not app.received and time.monotonic() < deadline:
            time.sleep(0.02)
        with gateway.client("acme") as http:
            deliveries = http.get("/v1/byok/webhooks/deliveries").json()["data"]
    finally:
        server.stop()
    [(headers, body)] = app.received
    assert verify_signature(made["secret"], body, headers)
    payload = json.loads(body)
    assert (payload["type"], payload["data"]["key_id"]) == ("key.invalid", first["id"])
    assert K1 not in body.decode()
    assert [(d["event"], d["status_code"]) for d in deliveries] == [("key.invalid", 200)]


def test_budget_thresholds_at_80_and_100_percent(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """A $0.00068 budget (a call reserves $0.000395, costs $0.000275): the second
    call passes 80% (budget.threshold 0.8), the third is
    refused (budget.threshold 1.0, a budget refusal in the request's end)."""
    fake.default_usage = {"prompt_tokens": 30, "completion_tokens": 20}  # $0.000275 a call
    recorder = Recorder()
    gateway = start_gateway(admin_key=ADMIN_KEY, observer=recorder)
    gateway.add_key("acme", "openai", K1)
    with admin(gateway) as http:
        tenant = next(t for t in http.get("/byok/admin/tenants").json()["data"])
        policy = http.put(
            f"/byok/admin/tenants/{tenant['id']}/policy", json={"budget_usd": "0.00068"}
        )
        assert policy.status_code == 200, policy.text
    body = {**CHAT, "max_tokens": 20}
    assert chat(gateway, body).status_code == 200
    assert not recorder.wait_for("budget.threshold", seconds=0.3)
    second = chat(gateway, body)
    assert second.status_code == 200, second.text
    [eighty] = recorder.wait_for("budget.threshold")
    assert (eighty.threshold, eighty.budget_usd) == (0.8, Decimal("0.00068"))
    assert eighty.spent_usd == Decimal("0.00055")
    assert chat(gateway, body).status_code == 429
    thresholds = [e.threshold for e in recorder.events if e.kind == "budget.threshold"]
    assert thresholds == [0.8, 1.0]
    assert recorder.ended[-1].refusal == "budget"


def test_the_engine_composes_its_observers_from_the_config() -> None:
    """Default: traces (a no-op without an SDK), logs and webhooks; metrics only when asked."""
    config = BYOKConfig(master_key=generate_master_key(), database_url="memory://")
    default = Engine(config)
    assert default.telemetry is not None
    shown = repr(default.telemetry)
    assert "TracingObserver" in shown and "LogObserver" in shown and "WebhookNotifier" in shown
    assert default.telemetry.registry is None
    measured = Engine(config.with_changes(metrics=True, tracing=False))
    assert measured.telemetry is not None and measured.telemetry.registry is not None
    assert "TracingObserver" not in repr(measured.telemetry)
    with pytest.raises(Exception, match="BYOK_LOG_FORMAT"):
        config.with_changes(log_format="xml")
