"""Telemetry in the engine: which observers the config turns on, and the facts handed to them.

``build_telemetry`` composes the ``Observer``s (``byok_middleware.telemetry``) the settings ask
for: Prometheus metrics (``BYOK_METRICS``), OpenTelemetry spans (``BYOK_TRACING``: a no-op
unless the host configured an SDK), the log lines (the INFO line per request unless
``BYOK_REQUEST_LOG=false``; the health WARNINGs always), the tenants' webhook alerts (when the
store keeps webhooks) and a host's own observer. ``Gateway.telemetry`` holds the result; set to
``None`` (the benchmark's baseline) the engine skips every call site on one ``is None`` check.

The engine reports through ``Telemetry``: ``start`` when a proxied request's ``Call`` is made,
``attempt`` after each upstream attempt (``gateway/failover.py``), ``finish`` with the ledger
row (``Gateway.record``; the cache's rows too) and ``end`` for a request that wrote no row (a
refusal before any upstream attempt, a crash). Each request ends once: the token on the
``Call`` is cleared at the first end. Only the members that need a fact (their ``needs()``,
asked once per request) hear of it, and a fact nobody needs is not built: by default (the INFO
line hidden, no SDK) a served request makes no ``RequestStart``, ``AttemptResult`` or
``RequestEnd`` at all.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from byok_middleware.errors import ConfigurationError
from byok_middleware.storage.base import AdminStore, UsageRecord
from byok_middleware.telemetry.logs import LogObserver
from byok_middleware.telemetry.observer import (
    NEEDS_ALL,
    NEEDS_ATTEMPTS,
    NEEDS_END,
    NEEDS_FAILURES,
    NEEDS_START,
    AttemptResult,
    KeyEvent,
    Observer,
    Observers,
    RequestEnd,
    RequestStart,
    error_class,
)

if TYPE_CHECKING:
    from byok_middleware.config import BYOKConfig
    from byok_middleware.crypto import Keyring
    from byok_middleware.gateway.calls import Call, Candidate
    from byok_middleware.storage.base import KeyStore
    from byok_middleware.telemetry.alerts import WebhookNotifier
    from byok_middleware.telemetry.metrics import PrometheusObserver
    from byok_middleware.telemetry.tracing import TracingObserver

__all__ = ["Telemetry", "build_telemetry"]

_TRACE_HEADERS = (b"traceparent", b"tracestate", b"baggage")
_Fact = TypeVar("_Fact")


def _quick(cls: type[_Fact]) -> type[_Fact]:
    """What builds ``cls`` (a frozen slotted dataclass) at the cost of an unfrozen one.

    A frozen ``__init__`` stores each field through ``object.__setattr__``: 2-6 us for these
    facts on a slow core, most of what telemetry cost per request with metrics on. The twin is
    the same fields, unfrozen, with the same slots (so the same memory layout); each instance
    then becomes a ``cls`` (``__class__`` assignment), frozen, equal and hashable as any other.
    Where the layouts differ (another interpreter), ``cls`` itself."""
    specs: list[tuple[str, Any, Any]] = []
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        if spec.default is not dataclasses.MISSING:
            specs.append((spec.name, spec.type, dataclasses.field(default=spec.default)))
        elif spec.default_factory is not dataclasses.MISSING:
            factory = spec.default_factory
            specs.append((spec.name, spec.type, dataclasses.field(default_factory=factory)))
        else:
            specs.append((spec.name, spec.type, dataclasses.field()))

    def become(self: Any) -> None:
        self.__class__ = cls

    twin = dataclasses.make_dataclass(
        "_Quick" + cls.__name__,
        specs,
        slots=True,
        eq=False,
        repr=False,
        namespace={"__post_init__": become},
    )
    try:
        become(object.__new__(twin))
    except TypeError:
        return cls
    return cast("type[_Fact]", twin)


_Start = _quick(RequestStart)
_Attempt = _quick(AttemptResult)
_End = _quick(RequestEnd)


class _Plan:
    """Which members hear what, for one combination of their needs (indices into members)."""

    __slots__ = ("attempts", "eager", "ends", "failures", "idle")

    def __init__(self, masks: Sequence[int]) -> None:
        def having(flags: int) -> tuple[int, ...]:
            return tuple(i for i, mask in enumerate(masks) if mask & flags)

        self.eager = having(NEEDS_START)
        self.attempts = having(NEEDS_ATTEMPTS)
        self.failures = having(NEEDS_ATTEMPTS | NEEDS_FAILURES)
        self.ends = having(NEEDS_END)
        self.idle = not (self.eager or self.failures or self.ends)


class _Observed:
    """``Call.telemetry`` while a request is observed: its plan, what is known of its start,
    and the members' tokens (a member's ``request_started`` runs when first needed)."""

    __slots__ = ("model", "plan", "start", "stream", "tokens")

    def __init__(self, plan: _Plan, model: str, stream: bool) -> None:
        self.plan = plan
        self.model = model
        self.stream = stream
        self.start: RequestStart | None = None
        self.tokens: dict[int, object] | None = None


def _everything() -> int:
    return NEEDS_ALL


class Telemetry:
    """The engine's observers as one, with the registry and notifier they own.

    Each request asks every member's ``needs()`` once (members without one need everything)
    and builds only the facts some member reads: with the defaults and no SDK, a served request
    costs one small object and no dataclass (the WARNINGs still see every failed attempt)."""

    __slots__ = (
        "_asks",
        "_members",
        "_plans",
        "metrics",
        "notifier",
        "observer",
        "registry",
        "tracer",
    )

    def __init__(
        self,
        observer: Observer,
        *,
        metrics: PrometheusObserver | None = None,
        notifier: WebhookNotifier | None = None,
        tracer: TracingObserver | None = None,
    ) -> None:
        self.observer = observer
        members = observer.members if isinstance(observer, Observers) else (observer,)
        self._members: tuple[Observer, ...] = members
        asks: list[Callable[[], int]] = []
        for member in members:
            needs = getattr(member, "needs", None)
            asks.append(needs if callable(needs) else _everything)
        self._asks = tuple(asks)
        self._plans: dict[tuple[int, ...], _Plan] = {}
        self.metrics = metrics
        # prometheus_client.CollectorRegistry when BYOK_METRICS is on (``/byok/metrics``).
        self.registry = metrics.registry if metrics is not None else None
        self.notifier = notifier
        self.tracer = tracer  # its ``active``: whether a client's trace headers are worth reading

    def __repr__(self) -> str:
        return f"Telemetry({self.observer!r})"

    @property
    def tracing(self) -> bool:
        """Whether BYOK_TRACING put a tracing observer in (active or not: see its ``active``)."""
        return self.tracer is not None

    def start(
        self,
        call: Call,
        *,
        model: object = "",
        stream: bool = False,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """A proxied request arrived (``model`` as requested, when the body is already read)."""
        masks = tuple([ask() for ask in self._asks])
        plan = self._plans.get(masks)
        if plan is None:
            plan = self._plans[masks] = _Plan(masks)  # at most 16 per member: bounded
        if plan.idle:
            return  # nobody reads this request: the other calls stop at ``call.telemetry``
        observed = _Observed(plan, model if isinstance(model, str) else "", stream)
        call.telemetry = observed
        if not plan.eager:
            return
        trace: dict[str, str] = {}
        if self.tracer is not None and self.tracer.active:
            for name, value in headers:
                if name in _TRACE_HEADERS:
                    trace[name.decode("latin-1")] = value.decode("latin-1")
        start = observed.start = _Start(
            call.request_id, call.tenant_id, call.endpoint, observed.model, stream, trace
        )
        tokens = observed.tokens = {}
        for index in plan.eager:
            tokens[index] = self._members[index].request_started(start)

    def _token(self, call: Call, observed: _Observed, index: int) -> object:
        """The member's token, starting it now if it did not need the arrival itself."""
        tokens = observed.tokens
        if tokens is None:
            tokens = observed.tokens = {}
        elif index in tokens:
            return tokens[index]
        start = observed.start
        if start is None:
            start = observed.start = _Start(
                call.request_id, call.tenant_id, call.endpoint, observed.model, observed.stream
            )
        token = tokens[index] = self._members[index].request_started(start)
        return token

    def attempt(
        self,
        call: Call,
        candidate: Candidate,
        began: float,
        *,
        status: int | None,
        timeout: bool = False,
        cooldown_until: datetime | None = None,
    ) -> None:
        """One upstream attempt ended (``status`` None: no answer came; ``began``: perf_counter)."""
        observed = call.telemetry
        if not isinstance(observed, _Observed):
            return
        if status is not None and status < 400 and not timeout:
            error = None
            targets = observed.plan.attempts
        else:
            error = error_class(status, timeout=timeout)
            targets = observed.plan.failures if error is not None else observed.plan.attempts
        if not targets:
            return
        # Positional, in field order: keyword arguments cost 3x here (CPython binds them by name).
        result = _Attempt(
            call.attempts,  # attempt
            candidate.provider,
            candidate.model or call.model,  # model
            candidate.key_id,
            candidate.attribution,
            status,  # status_code
            (time.perf_counter() - began) * 1000,  # duration_ms
            error,
            cooldown_until,
        )
        for index in targets:
            self._members[index].attempt_finished(self._token(call, observed, index), result)

    def finish(self, call: Call, row: UsageRecord) -> None:
        """The request ended with ``row`` in the ledger."""
        observed = call.telemetry
        if observed is None:
            return
        call.telemetry = None
        if not isinstance(observed, _Observed) or not observed.plan.ends:
            return
        end = _End(  # positional, in field order (see ``attempt``)
            row.status_code,
            row.latency_ms,
            call.attempts,  # attempts
            row.provider,
            row.model,
            None,  # response_model
            row.key_id,
            row.attribution,
            row.prompt_tokens,
            row.completion_tokens,
            row.cost_usd,
            row.ttft_ms,
            row.cache_hit,
            row.cost_saved_usd,
            row.error_type,
            call.refusal,  # refusal
        )
        self._ended(call, observed, end)

    def end(self, call: Call, status: int, error_type: str | None = None) -> None:
        """The request ended without a ledger row (refused before any upstream attempt)."""
        observed = call.telemetry
        if observed is None:
            return
        call.telemetry = None
        if not isinstance(observed, _Observed) or not observed.plan.ends:
            return
        end = _End(
            status_code=status,
            latency_ms=(time.perf_counter() - call.started) * 1000,
            attempts=call.attempts,
            provider=call.provider,
            model=call.model,
            error_type=error_type,
            refusal=call.refusal,
        )
        self._ended(call, observed, end)

    def _ended(self, call: Call, observed: _Observed, end: RequestEnd) -> None:
        for index in observed.plan.ends:
            self._members[index].request_finished(self._token(call, observed, index), end)

    def key_event(self, event: KeyEvent) -> None:
        self.observer.key_event(event)

    async def aclose(self) -> None:
        """Flush the metrics' last counts; let webhook deliveries in flight finish (a few
        seconds at most)."""
        if self.metrics is not None:
            self.metrics.flush()
        if self.notifier is not None:
            await self.notifier.aclose()


def build_telemetry(
    config: BYOKConfig, store: KeyStore, keyring: Keyring, extra: Observer | None = None
) -> Telemetry:
    """The observers ``config`` turns on, plus ``extra`` (a host's own)."""
    members: list[Observer] = []
    metrics = tracer = None
    if config.metrics:
        try:
            from byok_middleware.telemetry.metrics import PrometheusObserver
        except ImportError:
            raise ConfigurationError(
                "BYOK_METRICS is on but prometheus-client is not installed; install it with "
                "`pip install 'byok_middleware[telemetry]'`"
            ) from None
        metrics = PrometheusObserver(tenant_label=config.metrics_tenant_label)
        members.append(metrics)
    if config.tracing:
        try:
            from byok_middleware.telemetry.tracing import TracingObserver
        except ImportError:
            pass  # no opentelemetry-api means no SDK either: the spans would go nowhere
        else:
            tracer = TracingObserver()
            members.append(tracer)
    # The health WARNINGs are what an operator acts on: always on; the INFO line is optional.
    members.append(LogObserver(json=config.log_format == "json", request_lines=config.request_log))
    notifier = None
    if isinstance(store, AdminStore):
        from byok_middleware.telemetry.alerts import WebhookNotifier

        notifier = WebhookNotifier(store, keyring, allow_private=config.webhook_allow_private)
        members.append(notifier)
    if extra is not None:
        members.append(extra)
    return Telemetry(Observers(members), metrics=metrics, notifier=notifier, tracer=tracer)
