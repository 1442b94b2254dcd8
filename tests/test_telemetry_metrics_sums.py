"""The Prometheus observer sums request ends per label set and keeps no fact between flushes."""

from __future__ import annotations

import sys
from decimal import Decimal

from prometheus_client.parser import text_string_to_metric_families

from byok_middleware.telemetry import AttemptResult, RequestEnd, RequestStart
from byok_middleware.telemetry.metrics import PrometheusObserver, metrics_text


def _samples(observer: PrometheusObserver) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics_text(observer.registry).decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _serve(observer: PrometheusObserver, tenant: str, end: RequestEnd) -> None:
    token = observer.request_started(RequestStart("req", tenant, "/chat/completions"))
    observer.attempt_finished(token, AttemptResult(1, "openai", "gpt-4o", None, "byok", 200, 1.0))
    observer.request_finished(token, end)


def test_ends_sharing_labels_add_up_and_others_stay_apart() -> None:
    """Three ends with one label set and one with another: counts, costs, tokens and the
    histogram each add up per series, whichever tenant sent them (no tenant label)."""
    observer = PrometheusObserver()
    served = RequestEnd(200, 300.0, 1, "openai", "gpt-4o", attribution="byok", prompt_tokens=10,
                        completion_tokens=2, cost_usd=Decimal("0.001"), ttft_ms=50.0)  # fmt: skip
    for tenant in ("a", "b", "c"):
        _serve(observer, tenant, served)
    _serve(observer, "a", RequestEnd(502, 20.0, 1, "openai", "gpt-4o", attribution="byok"))
    samples = _samples(observer)
    labels = {"route": "/chat/completions", "provider": "openai", "model": "gpt-4o"}
    ok = frozenset({**labels, "attribution": "byok", "status_class": "2xx"}.items())
    failed = frozenset({**labels, "attribution": "byok", "status_class": "5xx"}.items())
    assert samples[("byok_requests_total", ok)] == 3
    assert samples[("byok_requests_total", failed)] == 1
    cost = frozenset({"attribution": "byok", "provider": "openai", "model": "gpt-4o"}.items())
    assert abs(samples[("byok_cost_usd_total", cost)] - 0.003) < 1e-12
    tokens = dict(cost) | {"direction": "output"}
    assert samples[("byok_tokens_total", frozenset(tokens.items()))] == 6
    timed = frozenset({"route": "/chat/completions", "provider": "openai"}.items())
    assert samples[("byok_request_duration_seconds_count", timed)] == 4
    assert samples[("byok_time_to_first_token_seconds_count", timed)] == 3
    attempts = frozenset({"provider": "openai", "outcome": "ok"}.items())
    assert samples[("byok_upstream_attempts_total", attempts)] == 4


def test_the_observer_keeps_no_fact_it_was_given() -> None:
    """Ends and attempts are summed as they come: the observer holds no reference to them."""
    observer = PrometheusObserver()
    end = RequestEnd(200, 30.0, 1, "openai", "gpt-4o", cost_usd=Decimal("0.5"))
    attempt = AttemptResult(1, "openai", "gpt-4o", None, "byok", 200, 1.0)
    before = sys.getrefcount(end), sys.getrefcount(attempt)
    token = observer.request_started(RequestStart("req", "t", "/embeddings"))
    observer.attempt_finished(token, attempt)
    observer.request_finished(token, end)
    assert (sys.getrefcount(end), sys.getrefcount(attempt)) == before
