"""OpenTelemetry traces of the gateway through ``opentelemetry-api`` only, as an ``Observer``.

Without an SDK configured by the host, the API's tracer is a no-op. With one, every gateway
request is a span (INTERNAL, named ``"{gen_ai.operation.name} {gen_ai.request.model}"``) and
every upstream attempt a CLIENT child span. The parent is the span already current in the
host (its own ASGI instrumentation), else the client's ``traceparent`` (W3C trace context).

Attributes: GenAI semantic conventions (``gen_ai.operation.name``, ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``), ``http.response.status_code``, ``error.type``, and the
gateway's own ``byok.request_id``, ``byok.route``, ``byok.cost_usd``, ``byok.cost_attribution``,
``byok.attempts``, ``byok.attempt``, ``byok.key_id``, ``byok.cache_hit``, ``byok.ttft_ms``.
They come only from the observer's dataclasses, which hold no key and no prompt text.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from byok_middleware.telemetry.observer import (
    NEEDS_ALL,
    AttemptResult,
    KeyEvent,
    RequestEnd,
    RequestStart,
)

__all__ = ["OPERATIONS", "TracingObserver"]

# gen_ai.operation.name per gateway route (semantic conventions' well-known values).
OPERATIONS = {
    "/chat/completions": "chat",
    "/responses": "chat",
    "/messages": "chat",
    "/embeddings": "embeddings",
    "/images/generations": "generate_content",
    "/audio/speech": "generate_content",
    "/audio/transcriptions": "generate_content",
    "/audio/translations": "generate_content",
    "/moderations": "moderations",
}


class TracingObserver:
    """Spans per request and per upstream attempt (see the module doc)."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        # A provider given is used as is; else the host's global one, once it is an SDK's.
        self._active = tracer_provider is not None
        self._recheck = 0.0
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self._tracer = provider.get_tracer("byok_middleware")

    def __repr__(self) -> str:
        return "TracingObserver()"

    @property
    def active(self) -> bool:
        """False while no SDK is set up (the API's proxy provider): spans would go nowhere.
        Re-checked at most once a second (the API's check reads the environment), so an SDK
        the host installs after start-up is used from then on."""
        if self._active:
            return True
        now = time.monotonic()
        if now >= self._recheck:
            self._recheck = now + 1.0
            provider = trace.get_tracer_provider()
            self._active = not isinstance(provider, trace.ProxyTracerProvider)
        return self._active

    def needs(self) -> int:
        """Everything while an SDK records; nothing otherwise (the engine then skips us)."""
        return NEEDS_ALL if self.active else 0

    def request_started(self, start: RequestStart) -> object:
        if not self.active:
            return None  # the cost of tracing without an SDK: this check
        operation = OPERATIONS.get(start.route, start.route.strip("/").replace("/", "."))
        context = None
        if not trace.get_current_span().get_span_context().is_valid and start.trace_headers:
            context = propagate.extract(dict(start.trace_headers))
        span = self._tracer.start_span(
            f"{operation} {start.model}".strip(),
            context=context,
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": start.model,
                "byok.request_id": start.request_id,
                "byok.route": start.route,
            },
        )
        if not span.is_recording():
            # No SDK (or a sampler that dropped the trace): no child spans, no attributes.
            return None
        return (span, operation, start.model)

    def attempt_finished(self, token: object, attempt: AttemptResult) -> None:
        if not isinstance(token, tuple):
            return
        parent, operation, _ = token
        end = time.time_ns()
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": attempt.provider,
            "gen_ai.request.model": attempt.model,
            "byok.attempt": attempt.attempt,
            "byok.cost_attribution": attempt.attribution,
        }
        if attempt.key_id:
            attributes["byok.key_id"] = attempt.key_id
        if attempt.status_code is not None:
            attributes["http.response.status_code"] = attempt.status_code
        if attempt.error:
            attributes["error.type"] = attempt.error
        span = self._tracer.start_span(
            f"{operation} {attempt.model}",
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=end - int(attempt.duration_ms * 1_000_000),
        )
        if attempt.error:
            span.set_status(Status(StatusCode.ERROR, attempt.error))
        span.end(end_time=end)

    def request_finished(self, token: object, end: RequestEnd) -> None:
        if not isinstance(token, tuple):
            return
        span: trace.Span = token[0]
        if not token[2] and end.model:
            # The route started the span before reading the body: name it now the model is known.
            span.update_name(f"{token[1]} {end.model}")
            span.set_attribute("gen_ai.request.model", end.model)
        attributes: dict[str, Any] = {
            "http.response.status_code": end.status_code,
            "byok.attempts": end.attempts,
            "byok.cache_hit": end.cache_hit,
            "gen_ai.usage.input_tokens": end.prompt_tokens,
            "gen_ai.usage.output_tokens": end.completion_tokens,
        }
        optional: dict[str, Any] = {
            "gen_ai.provider.name": end.provider or None,
            "gen_ai.response.model": end.response_model or end.model or None,
            "byok.cost_usd": float(end.cost_usd) if end.cost_usd is not None else None,
            "byok.cost_attribution": end.attribution,
            "byok.key_id": end.key_id,
            "byok.ttft_ms": end.ttft_ms,
            "error.type": end.error_type,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        span.set_attributes(attributes)
        if end.status_code >= 400:
            span.set_status(Status(StatusCode.ERROR, end.error_type or str(end.status_code)))
        span.end()

    def key_event(self, event: KeyEvent) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(event.kind, {"byok.provider": event.provider})
