"""The engine's telemetry builds only the facts some observer reads (``needs()``)."""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from byok_middleware.crypto import SecretStr
from byok_middleware.gateway import Call
from byok_middleware.gateway.calls import Candidate
from byok_middleware.gateway.observing import Telemetry, _Attempt, _End, _Start
from byok_middleware.storage.base import UsageRecord
from byok_middleware.telemetry import (
    NEEDS_ALL,
    NEEDS_END,
    NEEDS_FAILURES,
    AttemptResult,
    KeyEvent,
    Observers,
    RequestEnd,
    RequestStart,
)
from byok_middleware.telemetry.logs import LogObserver

CANDIDATE = Candidate("openai", SecretStr("sk-" + "a" * 40), "byok")


class Recorder:
    """Remembers every call, in order; ``mask`` None: no ``needs`` at all (a host's observer)."""

    def __init__(self, mask: int | None = None) -> None:
        self.calls: list[tuple[str, object]] = []
        if mask is not None:
            self.mask = mask
            self.needs = lambda: self.mask

    def request_started(self, start: RequestStart) -> object:
        self.calls.append(("start", start))
        return start.request_id

    def attempt_finished(self, token: object, attempt: AttemptResult) -> None:
        self.calls.append(("attempt", (token, attempt.status_code, attempt.error)))

    def request_finished(self, token: object, end: RequestEnd) -> None:
        self.calls.append(("end", (token, end.status_code)))

    def key_event(self, event: KeyEvent) -> None:
        self.calls.append(("event", event.kind))


def _request(telemetry: Telemetry, *statuses: int | None) -> Call:
    call = Call("tenant-a", "req_1", "/chat/completions", time.perf_counter())
    telemetry.start(call, model="gpt-4o", headers=[(b"traceparent", b"00-x")])
    for status in statuses:
        call.attempts += 1
        telemetry.attempt(call, CANDIDATE, call.started, status=status)
    telemetry.end(call, statuses[-1] or 502)
    return call


def test_an_observer_without_needs_hears_every_call() -> None:
    """A host's observer (no ``needs``) gets start, each attempt and the end, with one token."""
    host = Recorder()
    _request(Telemetry(Observers([host])), 429, 200)
    assert [kind for kind, _ in host.calls] == ["start", "attempt", "attempt", "end"]
    start = host.calls[0][1]
    assert isinstance(start, RequestStart)
    assert (start.request_id, start.tenant_id, start.route, start.model) == (
        "req_1",
        "tenant-a",
        "/chat/completions",
        "gpt-4o",
    )
    assert host.calls[1][1] == ("req_1", 429, "rate_limited")
    assert host.calls[3][1] == ("req_1", 200)


def test_failures_only_hears_nothing_of_a_served_request() -> None:
    """``NEEDS_FAILURES``: no call for a served request; a failed attempt starts it late."""
    failures = Recorder(NEEDS_FAILURES)
    telemetry = Telemetry(Observers([failures]))
    _request(telemetry, 200)
    assert failures.calls == []
    _request(telemetry, None, 500, 200)
    kinds = [kind for kind, _ in failures.calls]
    assert kinds == ["start", "attempt", "attempt"]  # once started, the same token
    start = failures.calls[0][1]
    assert isinstance(start, RequestStart) and start.model == "gpt-4o"
    assert start.tenant_id == "tenant-a" and start.route == "/chat/completions"
    assert failures.calls[1][1] == ("req_1", None, "connect")
    assert failures.calls[2][1] == ("req_1", 500, "server")


def test_needs_are_asked_per_request_and_key_events_reach_everyone() -> None:
    """An observer needing nothing is skipped until it needs the end; key events always come."""
    quiet = Recorder(0)
    telemetry = Telemetry(Observers([quiet]))
    call = _request(telemetry, 401)
    assert quiet.calls == [] and call.telemetry is None
    telemetry.key_event(KeyEvent("key.invalid", "tenant-a", "openai", "key_1"))
    assert quiet.calls == [("event", "key.invalid")]
    quiet.mask = NEEDS_END
    _request(telemetry, 200)
    assert [kind for kind, _ in quiet.calls[1:]] == ["start", "end"]


def test_each_member_gets_only_what_it_asked_for() -> None:
    """Members side by side: each hears its own share of one request, ended once."""
    everything, ends, failures = Recorder(NEEDS_ALL), Recorder(NEEDS_END), Recorder(NEEDS_FAILURES)
    telemetry = Telemetry(Observers([everything, ends, failures]))
    call = Call("tenant-a", "req_1", "/chat/completions", time.perf_counter())
    telemetry.start(call, model="gpt-4o")
    assert [kind for kind, _ in everything.calls] == ["start"]  # at arrival: it may time it
    call.attempts = 1
    telemetry.attempt(call, CANDIDATE, call.started, status=200)
    telemetry.end(call, 200)
    telemetry.end(call, 200)  # a second end is a no-op
    assert [kind for kind, _ in everything.calls] == ["start", "attempt", "end"]
    assert [kind for kind, _ in ends.calls] == ["start", "end"]
    assert failures.calls == []


def test_the_log_observer_needs_the_end_only_while_info_shows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request line is built only when its logger shows INFO; the WARNINGs always are."""
    requests = logging.getLogger("byok_middleware.requests")
    observer = LogObserver()
    caplog.set_level(logging.WARNING, logger="byok_middleware.requests")
    assert observer.needs() == NEEDS_FAILURES
    caplog.set_level(logging.INFO, logger="byok_middleware.requests")
    assert requests.isEnabledFor(logging.INFO)
    assert observer.needs() == NEEDS_FAILURES | NEEDS_END
    assert LogObserver(request_lines=False).needs() == NEEDS_FAILURES
    telemetry = Telemetry(Observers([observer]))
    call = Call("tenant-a", "req_9", "/chat/completions", time.perf_counter())
    telemetry.start(call, model="gpt-4o")
    call.attempts = 1
    telemetry.attempt(call, CANDIDATE, call.started, status=401)
    telemetry.end(call, 401, "authentication_error")
    messages = [r.getMessage() for r in caplog.records]
    assert any("of tenant tenant-a marked invalid" in m for m in messages)
    assert any(m.startswith("request req_9 tenant=tenant-a") for m in messages)


def test_the_facts_built_on_the_hot_path_are_the_frozen_dataclasses() -> None:
    """The engine's quick builders give real, frozen, equal and hashable facts."""
    end = _End(200, 12.5, attempts=1, provider="openai", cost_usd=Decimal("0.1"))
    same = RequestEnd(200, 12.5, attempts=1, provider="openai", cost_usd=Decimal("0.1"))
    assert type(end) is RequestEnd and end == same and hash(end) == hash(same)
    with pytest.raises(dataclasses.FrozenInstanceError):
        end.status_code = 500  # type: ignore[misc]
    first, second = _Start("req_1", "t", "/embeddings"), _Start("req_2", "t", "/embeddings")
    assert type(first) is RequestStart and first.trace_headers == {}
    assert first.trace_headers is not second.trace_headers  # a fresh default each time
    attempt = _Attempt(1, "openai", "gpt-4o", None, "byok", 200, 3.0)
    assert attempt == AttemptResult(1, "openai", "gpt-4o", None, "byok", 200, 3.0)
    assert dataclasses.replace(attempt, attempt=2).attempt == 2


def test_the_facts_carry_the_call_the_candidate_and_the_row_field_by_field() -> None:
    """Each field of the attempt and of the end comes from where its name says."""
    host = Recorder()
    telemetry = Telemetry(Observers([host]))
    call = Call("tenant-a", "req_1", "/chat/completions", time.perf_counter())
    telemetry.start(call, model="openai/gpt-4o", stream=True)
    call.attempts = 2
    call.model = "gpt-4o-mini"
    call.refusal = "budget"
    candidate = Candidate("openai", SecretStr("sk-" + "b" * 40), "xantly", model="gpt-4o")
    until = datetime(2030, 1, 1, tzinfo=UTC)
    seen: list[AttemptResult] = []
    host.attempt_finished = lambda token, attempt: seen.append(attempt)  # type: ignore[method-assign]
    telemetry.attempt(call, candidate, call.started, status=429, cooldown_until=until)
    attempt = seen[0]
    assert (attempt.attempt, attempt.provider, attempt.model, attempt.key_id) == (
        2,
        "openai",
        "gpt-4o",
        None,
    )
    assert (attempt.attribution, attempt.status_code, attempt.error) == (
        "xantly",
        429,
        "rate_limited",
    )
    assert attempt.cooldown_until == until and 0 <= attempt.duration_ms < 60_000
    row = UsageRecord(
        "req_1", "tenant-a", "key_7", "openai", "gpt-4o-mini", "/chat/completions", "xantly",
        12, 3, 0, Decimal("0.25"), 200, 41.5, datetime.now(UTC), ttft_ms=7.5, cache_hit=True,
        cost_saved_usd=Decimal("0.5"), error_type="none_really",
    )  # fmt: skip
    ended: list[RequestEnd] = []
    host.request_finished = lambda token, end: ended.append(end)  # type: ignore[method-assign]
    telemetry.finish(call, row)
    assert ended == [
        RequestEnd(
            status_code=200,
            latency_ms=41.5,
            attempts=2,
            provider="openai",
            model="gpt-4o-mini",
            response_model=None,
            key_id="key_7",
            attribution="xantly",
            prompt_tokens=12,
            completion_tokens=3,
            cost_usd=Decimal("0.25"),
            ttft_ms=7.5,
            cache_hit=True,
            cost_saved_usd=Decimal("0.5"),
            error_type="none_really",
            refusal="budget",
        )
    ]
