"""Telemetry observers: Prometheus metrics text, OpenTelemetry spans and the log lines."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from byok_middleware.telemetry import (
    AttemptResult,
    KeyEvent,
    Observers,
    RequestEnd,
    RequestStart,
    error_class,
)
from byok_middleware.telemetry.logs import LogObserver
from byok_middleware.telemetry.metrics import PrometheusObserver, metrics_text
from byok_middleware.telemetry.tracing import TracingObserver

CANARY = "sk-canary-telemetry-0000000000000000"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
START = RequestStart(
    request_id="req_1",
    tenant_id="tenant-a",
    route="/chat/completions",
    model="gpt-4o",
    stream=True,
    trace_headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
)
RATE_LIMITED = AttemptResult(
    attempt=1,
    provider="openai",
    model="gpt-4o",
    key_id="key_1",
    attribution="byok",
    status_code=429,
    duration_ms=12.0,
    error="rate_limited",
    cooldown_until=datetime(2030, 1, 1, tzinfo=UTC),
)
SERVED = AttemptResult(2, "openai", "gpt-4o", None, "xantly", 200, 300.0)
END = RequestEnd(
    status_code=200,
    latency_ms=350.0,
    attempts=2,
    provider="openai",
    model="gpt-4o",
    response_model="gpt-4o-2024-08-06",
    attribution="xantly",
    prompt_tokens=100,
    completion_tokens=20,
    cost_usd=Decimal("0.00045"),
    ttft_ms=80.0,
)


def _run(observer: object) -> None:
    token = observer.request_started(START)  # type: ignore[attr-defined]
    observer.attempt_finished(token, RATE_LIMITED)  # type: ignore[attr-defined]
    observer.attempt_finished(token, SERVED)  # type: ignore[attr-defined]
    observer.request_finished(token, END)  # type: ignore[attr-defined]


def _samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_error_classes() -> None:
    """Attempt outcomes map to the classes metrics and logs use."""
    assert [error_class(s) for s in (None, 401, 403, 429, 503, 404, 200)] == [
        "connect",
        "auth",
        "auth",
        "rate_limited",
        "server",
        "client",
        None,
    ]
    assert error_class(None, timeout=True) == "timeout"


def test_metrics_count_a_failed_over_request() -> None:
    """After one request served on its second attempt, the text holds its count, attempt
    outcomes, the failover, the upstream error class, cost, tokens and both histograms; no
    tenant label by default."""
    observer = PrometheusObserver()
    _run(observer)
    observer.key_event(KeyEvent("key.cooling_down", "tenant-a", "openai", "key_1"))
    text = metrics_text(observer.registry)
    samples = _samples(text)
    labels = {"route": "/chat/completions", "provider": "openai", "model": "gpt-4o"}
    assert (
        _value(samples, "byok_requests_total", **labels, attribution="xantly", status_class="2xx")
        == 1
    )
    assert (
        _value(samples, "byok_upstream_attempts_total", provider="openai", outcome="rate_limited")
        == 1
    )
    assert _value(samples, "byok_upstream_attempts_total", provider="openai", outcome="ok") == 1
    assert _value(samples, "byok_failovers_total", provider="openai") == 1
    assert (
        _value(samples, "byok_upstream_errors_total", provider="openai", error_class="rate_limited")
        == 1
    )
    cost = _value(
        samples, "byok_cost_usd_total", attribution="xantly", provider="openai", model="gpt-4o"
    )
    assert cost == pytest.approx(0.00045)
    tokens = {"attribution": "xantly", "provider": "openai", "model": "gpt-4o"}
    assert _value(samples, "byok_tokens_total", **tokens, direction="input") == 100
    assert _value(samples, "byok_tokens_total", **tokens, direction="output") == 20
    hist = {"route": "/chat/completions", "provider": "openai"}
    assert _value(samples, "byok_request_duration_seconds_count", **hist) == 1
    assert _value(samples, "byok_request_duration_seconds_bucket", **hist, le="0.5") == 1
    assert _value(samples, "byok_time_to_first_token_seconds_bucket", **hist, le="0.1") == 1
    assert (
        _value(samples, "byok_key_health_events_total", event="key.cooling_down", provider="openai")
        == 1
    )
    assert b"tenant" not in text and CANARY.encode() not in text


def test_metrics_tenant_label_is_opt_in_and_models_are_capped() -> None:
    """``tenant_label=True`` adds the tenant to requests and cost; model labels stop growing
    at ``max_models`` (then ``other``)."""
    observer = PrometheusObserver(tenant_label=True, max_models=1)
    _run(observer)
    token = observer.request_started(START)
    observer.request_finished(token, RequestEnd(200, 10.0, 1, "openai", "gpt-4.1-nano-custom"))
    samples = _samples(metrics_text(observer.registry))
    assert any(
        dict(labels).get("tenant") == "tenant-a"
        for (name, labels) in samples
        if name == "byok_requests_total"
    )
    models = {dict(labels)["model"] for (name, labels) in samples if name == "byok_requests_total"}
    assert models == {"gpt-4o", "other"}


def test_metrics_sum_across_worker_processes(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, two worker processes' counts add up in one text."""
    script = textwrap.dedent(
        """
        from decimal import Decimal
        from byok_middleware.telemetry import RequestEnd, RequestStart
        from byok_middleware.telemetry.metrics import PrometheusObserver
        observer = PrometheusObserver()
        start = RequestStart("r", "t", "/embeddings", "m")
        for _ in range(3):
            token = observer.request_started(start)
            end = RequestEnd(200, 5.0, 1, "openai", "m", cost_usd=Decimal("0.5"))
            observer.request_finished(token, end)
        observer.flush()  # what a gateway does at shutdown
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        # The interpreter running the tests, with a script written above: no outside input.
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)  # noqa: S603
    samples = _samples(metrics_text(multiprocess_dir=str(tmp_path)))
    requests = [v for (name, _), v in samples.items() if name == "byok_requests_total"]
    costs = [v for (name, _), v in samples.items() if name == "byok_cost_usd_total"]
    assert requests == [6] and costs == [pytest.approx(3.0)]


def test_spans_continue_the_callers_trace_with_genai_attributes() -> None:
    """One INTERNAL span per request in the caller's trace, a CLIENT child per attempt, GenAI
    and byok attributes set, and no key or prompt anywhere in them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _run(TracingObserver(provider))
    spans = exporter.get_finished_spans()
    request = next(s for s in spans if s.kind is trace.SpanKind.INTERNAL)
    attempts = [s for s in spans if s.kind is trace.SpanKind.CLIENT]
    assert len(spans) == 3 and len(attempts) == 2
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert all(
        a.parent is not None and a.parent.span_id == request.context.span_id for a in attempts
    )
    attributes = dict(request.attributes or {})
    assert request.name == "chat gpt-4o"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    assert attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (
        100,
        20,
    )
    assert attributes["byok.cost_usd"] == pytest.approx(0.00045)
    assert (attributes["byok.cost_attribution"], attributes["byok.attempts"]) == ("xantly", 2)
    first = next(s for s in attempts if dict(s.attributes or {})["byok.attempt"] == 1)
    assert dict(first.attributes or {})["error.type"] == "rate_limited"
    assert dict(first.attributes or {})["byok.key_id"] == "key_1"
    dumped = json.dumps([dict(s.attributes or {}) for s in spans])
    assert CANARY not in dumped and "hello" not in dumped


def test_tracing_without_an_sdk_is_a_no_op() -> None:
    """With only the API installed (no provider set), observing a request records nothing and
    raises nothing."""
    observer = TracingObserver(trace.NoOpTracerProvider())
    _run(observer)
    assert observer.request_started(START) is None  # nothing to carry: no child spans either


def test_log_lines_name_the_request_and_the_reasons(caplog: pytest.LogCaptureFixture) -> None:
    """One INFO line per request with its facts, WARNINGs for a cooling key, an unreachable
    upstream, an invalid key and the platform fallback."""
    caplog.set_level(logging.INFO, logger="byok_middleware")
    observer = LogObserver()
    token = observer.request_started(START)
    observer.attempt_finished(token, RATE_LIMITED)
    observer.attempt_finished(
        token, AttemptResult(2, "groq", "llama", "key_2", "byok", None, 10000.0, "timeout")
    )
    observer.attempt_finished(
        token, AttemptResult(3, "openai", "gpt-4o", "key_3", "byok", 401, 5.0, "auth")
    )
    observer.key_event(
        KeyEvent("platform_fallback.used", "tenant-a", "openai", reason="key_3 invalid")
    )
    observer.request_finished(token, END)
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    info = [m for (n, level, m) in lines if level == "INFO"]
    warnings = [m for (n, level, m) in lines if level == "WARNING"]
    assert info == [
        "request req_1 tenant=tenant-a route=/chat/completions provider=openai model=gpt-4o "
        "attribution=xantly status=200 attempts=2 cost_usd=0.00045 latency_ms=350.0 cache_hit=False"
    ]
    assert "cooling down until 2030-01-01T00:00:00+00:00" in warnings[0]
    assert "upstream groq timed out" in warnings[1]
    assert "key key_3 of tenant tenant-a marked invalid: the provider answered 401" in warnings[2]
    assert "platform key served openai for tenant tenant-a" in warnings[3]


def test_json_log_lines_parse(caplog: pytest.LogCaptureFixture) -> None:
    """With ``json=True`` every line is one JSON object with the same fields."""
    caplog.set_level(logging.INFO, logger="byok_middleware")
    observer = Observers([LogObserver(json=True)])
    _run(observer)
    parsed = [json.loads(r.getMessage()) for r in caplog.records]
    assert parsed[0]["event"] == "key.cooling_down" and parsed[0]["key_id"] == "key_1"
    assert parsed[-1]["event"] == "request" and parsed[-1]["cost_usd"] == "0.00045"
    assert parsed[-1]["request_id"] == "req_1" and parsed[-1]["status"] == 200
