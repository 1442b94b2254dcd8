"""Prometheus metrics of the gateway, as an ``Observer``.

Names (all prefixed ``byok_``; label sets in brackets)::

    byok_requests_total                       [route, provider, model, attribution, status_class]
    byok_upstream_attempts_total              [provider, outcome]  outcome: ok | <error class>
    byok_failovers_total                      [provider]  attempts after a request's first
    byok_upstream_errors_total                [provider, error_class]
    byok_cost_usd_total                       [attribution, provider, model]
    byok_tokens_total                         [attribution, provider, model, direction]
    byok_request_duration_seconds (histogram) [route, provider]
    byok_time_to_first_token_seconds (hist.)  [route, provider]
    byok_key_health_events_total              [event, provider]  key.invalid, key.recovered, ...
    byok_budget_refusals_total                [reason]
    byok_cache_hits_total                     [route]
    byok_cost_saved_usd_total                 [provider]

No label holds a tenant unless ``tenant_label=True`` (a ``tenant`` label is then added to
``byok_requests_total`` and ``byok_cost_usd_total``): tenants are unbounded, Prometheus series
are not. Model labels are capped at ``max_models`` distinct values (then ``other``).

Metrics live in ``registry`` (default: a fresh ``CollectorRegistry`` the host can mount). Under
``uvicorn --workers N`` set ``PROMETHEUS_MULTIPROC_DIR`` before the workers start (an empty
directory; prometheus-client writes each worker's values there) and expose with
``metrics_text(multiprocess_dir=...)``, which sums every worker's files.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from byok_middleware.telemetry.observer import AttemptResult, KeyEvent, RequestEnd, RequestStart

__all__ = ["CONTENT_TYPE", "PrometheusObserver", "metrics_text"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


class PrometheusObserver:
    """Counts and times every request into prometheus-client metrics (see the module doc)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        tenant_label: bool = False,
        max_models: int = 200,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._tenant = tenant_label
        self._max_models = max_models
        self._models: set[str] = set()
        reg = self.registry
        extra = ("tenant",) if tenant_label else ()
        self.requests = Counter(
            "byok_requests",
            "Gateway requests by outcome",
            ("route", "provider", "model", "attribution", "status_class", *extra),
            registry=reg,
        )
        self.attempts = Counter(
            "byok_upstream_attempts", "Upstream attempts", ("provider", "outcome"), registry=reg
        )
        self.failovers = Counter(
            "byok_failovers", "Attempts after a request's first one", ("provider",), registry=reg
        )
        self.upstream_errors = Counter(
            "byok_upstream_errors",
            "Failed upstream attempts by class",
            ("provider", "error_class"),
            registry=reg,
        )
        self.cost = Counter(
            "byok_cost_usd",
            "List-price cost in USD",
            ("attribution", "provider", "model", *extra),
            registry=reg,
        )
        self.tokens = Counter(
            "byok_tokens",
            "Tokens by direction",
            ("attribution", "provider", "model", "direction"),
            registry=reg,
        )
        self.latency = Histogram(
            "byok_request_duration_seconds",
            "Gateway request duration",
            ("route", "provider"),
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.ttft = Histogram(
            "byok_time_to_first_token_seconds",
            "Time to the first token of a stream (or first byte)",
            ("route", "provider"),
            buckets=_TTFT_BUCKETS,
            registry=reg,
        )
        self.key_events = Counter(
            "byok_key_health_events", "Key health changes", ("event", "provider"), registry=reg
        )
        self.budget_refusals = Counter(
            "byok_budget_refusals", "Requests refused by a budget", ("reason",), registry=reg
        )
        self.cache_hits = Counter(
            "byok_cache_hits", "Answers served from the response cache", ("route",), registry=reg
        )
        self.saved = Counter(
            "byok_cost_saved_usd", "Cost the cache saved, USD", ("provider",), registry=reg
        )

    def __repr__(self) -> str:
        return f"PrometheusObserver(tenant_label={self._tenant})"

    def _model(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) >= self._max_models:
            return "other"
        self._models.add(model)
        return model

    def request_started(self, start: RequestStart) -> object:
        return (start.route, start.tenant_id)

    def attempt_finished(self, token: object, attempt: AttemptResult) -> None:
        self.attempts.labels(attempt.provider, attempt.error or "ok").inc()
        if attempt.attempt > 1:
            self.failovers.labels(attempt.provider).inc()
        if attempt.error is not None:
            self.upstream_errors.labels(attempt.provider, attempt.error).inc()

    def request_finished(self, token: object, end: RequestEnd) -> None:
        route, tenant = token if isinstance(token, tuple) else ("", "")
        provider = end.provider or "none"
        model = self._model(end.model) if end.model else "none"
        attribution = end.attribution or "none"
        extra = (tenant,) if self._tenant else ()
        self.requests.labels(
            route, provider, model, attribution, _status_class(end.status_code), *extra
        ).inc()
        self.latency.labels(route, provider).observe(end.latency_ms / 1000)
        if end.ttft_ms is not None:
            self.ttft.labels(route, provider).observe(end.ttft_ms / 1000)
        if end.cost_usd:
            self.cost.labels(attribution, provider, model, *extra).inc(float(end.cost_usd))
        if end.prompt_tokens:
            self.tokens.labels(attribution, provider, model, "input").inc(end.prompt_tokens)
        if end.completion_tokens:
            self.tokens.labels(attribution, provider, model, "output").inc(end.completion_tokens)
        if end.cache_hit:
            self.cache_hits.labels(route).inc()
            if end.cost_saved_usd:
                self.saved.labels(provider).inc(float(end.cost_saved_usd))
        if end.refusal == "budget":
            self.budget_refusals.labels(end.error_type or "budget").inc()

    def key_event(self, event: KeyEvent) -> None:
        self.key_events.labels(event.kind, event.provider or "none").inc()


def metrics_text(
    registry: CollectorRegistry | None = None, *, multiprocess_dir: str | None = None
) -> bytes:
    """The exposition text: every worker's values from ``multiprocess_dir`` when given (then
    ``registry`` is ignored: each worker's in-process values are in the directory), else
    ``registry``'s."""
    if multiprocess_dir:
        collected = CollectorRegistry()
        # prometheus-client leaves this constructor unannotated.
        MultiProcessCollector(collected, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(collected)
    if registry is None:
        raise ValueError("metrics_text needs a registry or a multiprocess directory")
    return generate_latest(registry)
