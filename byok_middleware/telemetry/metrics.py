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

import bisect
import collections
import threading
import time
import weakref
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from byok_middleware.telemetry.observer import (
    NEEDS_ATTEMPTS,
    NEEDS_END,
    AttemptResult,
    KeyEvent,
    RequestEnd,
    RequestStart,
)

__all__ = ["CONTENT_TYPE", "PrometheusObserver", "metrics_text"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLUSH_INTERVAL = 1.0  # seconds: how far behind the metrics may be (multiprocess mode)
FLUSH_SIZE = 10_000  # requests kept at most between flushes
_MAX_CHILDREN = 20_000  # remembered labelled series (tenants and models are capped besides)


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
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        # Summed as they come, counted into the metrics by ``flush``: no fact is kept.
        self._groups: dict[_Labels, _Group] = {}
        self._ended = 0  # request ends in ``_groups``
        self._tries: dict[tuple[str, str | None, bool], int] = {}  # provider, error, failover
        self._events: list[KeyEvent] = []
        self._lock = threading.Lock()  # a scrape may flush from another thread
        self._flushed = time.monotonic()
        reg = self.registry
        reg.register(_Flush(self))  # first: a read of the registry flushes before the metrics
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

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: prometheus-client checks and locks on every
        ``labels`` call, which was most of the metrics' cost per request."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= _MAX_CHILDREN:
                self._children.clear()  # bounded; the series themselves stay in the registry
            child = self._children[key] = metric.labels(*labels)
        return child

    def _model(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) >= self._max_models:
            return "other"
        self._models.add(model)
        return model

    def needs(self) -> int:
        return NEEDS_ATTEMPTS | NEEDS_END  # nothing timed at arrival: the start may come late

    def request_started(self, start: RequestStart) -> object:
        return (start.route, start.tenant_id)

    def attempt_finished(self, token: object, attempt: AttemptResult) -> None:
        key = (attempt.provider, attempt.error, attempt.attempt > 1)
        with self._lock:
            self._tries[key] = self._tries.get(key, 0) + 1

    def request_finished(self, token: object, end: RequestEnd) -> None:
        # Summed per label set now, counted in ``flush`` a second at most later: a
        # prometheus-client ``inc`` or ``observe`` checks and locks on its own (~1-2 us each,
        # 7 per request), and facts kept for a second only burden the garbage collector.
        route, tenant = token if isinstance(token, tuple) else ("", "")
        key = (
            route,
            tenant if self._tenant else "",
            end.provider,
            end.model,
            end.attribution,
            end.status_code // 100,
            end.cache_hit,
            end.refusal,
            end.error_type,
        )
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group()
            group.latencies.append(end.latency_ms)
            if end.ttft_ms is not None:
                group.ttfts.append(end.ttft_ms)
            if end.cost_usd:
                group.cost += end.cost_usd
            if end.prompt_tokens:
                group.prompt_tokens += end.prompt_tokens
            if end.completion_tokens:
                group.completion_tokens += end.completion_tokens
            if end.cost_saved_usd:
                group.saved += end.cost_saved_usd
            self._ended += 1
        if time.monotonic() - self._flushed >= FLUSH_INTERVAL or self._ended >= FLUSH_SIZE:
            self.flush()

    def key_event(self, event: KeyEvent) -> None:
        with self._lock:
            self._events.append(event)

    def flush(self) -> None:
        """Count what was observed since the last flush into the metrics: at least once a
        second while requests come, before every read of the registry, and at shutdown."""
        with self._lock:
            groups, self._groups, self._ended = self._groups, {}, 0
            tries, self._tries = self._tries, {}
            events, self._events = self._events, []
            self._flushed = time.monotonic()
        counts: dict[tuple[Any, tuple[str, ...]], float] = {}

        def add(metric: Any, labels: tuple[str, ...], amount: float = 1.0) -> None:
            key = (metric, labels)
            counts[key] = counts.get(key, 0.0) + amount

        timings: dict[tuple[Any, tuple[str, ...]], list[float]] = {}
        for (provider, error, failover), tried in tries.items():
            add(self.attempts, (provider, error or "ok"), tried)
            if failover:
                add(self.failovers, (provider,), tried)
            if error is not None:
                add(self.upstream_errors, (provider, error), tried)
        for key, group in groups.items():
            self._count(key, group, add, timings)
        for event in events:
            add(self.key_events, (event.kind, event.provider or "none"))
        for (metric, labels), amount in counts.items():
            self._child(metric, *labels).inc(amount)
        for (metric, labels), values in timings.items():
            _observe_all(self._child(metric, *labels), values)

    def _count(
        self,
        key: _Labels,
        group: _Group,
        add: Callable[..., None],
        timings: dict[tuple[Any, tuple[str, ...]], list[float]],
    ) -> None:
        """Count one group of ends that share every label."""
        route, tenant, provider, model, attribution, status, cache_hit, refusal, error_type = key
        provider = provider or "none"
        model = self._model(model) if model else "none"
        attribution = attribution or "none"
        extra = (tenant,) if self._tenant else ()
        add(
            self.requests,
            (route, provider, model, attribution, f"{status}xx", *extra),
            len(group.latencies),
        )
        timings.setdefault((self.latency, (route, provider)), []).extend(
            latency / 1000 for latency in group.latencies
        )
        if group.ttfts:
            timings.setdefault((self.ttft, (route, provider)), []).extend(
                ttft / 1000 for ttft in group.ttfts
            )
        if group.cost:
            add(self.cost, (attribution, provider, model, *extra), float(group.cost))
        if group.prompt_tokens:
            add(self.tokens, (attribution, provider, model, "input"), group.prompt_tokens)
        if group.completion_tokens:
            add(self.tokens, (attribution, provider, model, "output"), group.completion_tokens)
        if cache_hit:
            add(self.cache_hits, (route,), len(group.latencies))
            if group.saved:
                add(self.saved, (provider,), float(group.saved))
        if refusal == "budget":
            add(self.budget_refusals, (error_type or "budget",), len(group.latencies))


# route, tenant, provider, model, attribution, status // 100, cache_hit, refusal, error_type
_Labels = tuple[str, str, str, str, str | None, int, bool, str | None, str | None]


class _Group:
    """The request ends between two flushes that share every label: summed, their timings
    listed (most requests of a second share their labels)."""

    __slots__ = ("completion_tokens", "cost", "latencies", "prompt_tokens", "saved", "ttfts")

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.cost = Decimal(0)
        self.saved = Decimal(0)
        self.prompt_tokens = 0
        self.completion_tokens = 0


def _observe_all(child: Any, values: list[float]) -> None:
    """``child.observe(v)`` for every value, with one increment per bucket: the histogram's
    own attributes (stable across prometheus-client releases), else one ``observe`` each."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for value in values:
            child.observe(value)
        return
    per_bucket = [0] * len(bounds)
    for value in values:
        per_bucket[bisect.bisect_left(bounds, value)] += 1  # the first bound >= value
    for index, count in enumerate(per_bucket):
        if count:
            buckets[index].inc(count)
    total.inc(sum(values))


class _Flush:
    """Registered before the metrics: every read of the registry flushes the observer first."""

    def __init__(self, observer: PrometheusObserver) -> None:
        self._observer = weakref.ref(observer)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        observer = self._observer()
        if observer is not None:
            observer.flush()
        return []


def metrics_text(
    registry: CollectorRegistry | None = None, *, multiprocess_dir: str | None = None
) -> bytes:
    """The exposition text: every worker's values from ``multiprocess_dir`` when given (then
    ``registry`` is ignored: each worker's in-process values are in the directory), else
    ``registry``'s."""
    if multiprocess_dir:
        if registry is not None:
            # Reading the registry flushes this worker's last counts into its files.
            collections.deque(registry.collect(), maxlen=0)
        collected = CollectorRegistry()
        # prometheus-client leaves this constructor unannotated.
        MultiProcessCollector(collected, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(collected)
    if registry is None:
        raise ValueError("metrics_text needs a registry or a multiprocess directory")
    return generate_latest(registry)
