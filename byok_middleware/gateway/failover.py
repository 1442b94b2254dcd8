"""Failover: the attempt loop behind ``Gateway.forward``: try candidates in order, learn key health.

* 2xx: served (a stream once its first SSE event arrived). The key's ``last_used_at`` is
  noted (throttled) and an expired cooldown ends (status back to ``active``). A 3xx is no
  answer: the provider moved or a proxy intercepted, so it counts as a provider failure (502).
* connect error, timeout (connect, headers or first event), a 2xx stream that ends or dies
  before its first event, 408, 5xx, 529: next candidate; the key stays usable, ``last_error``
  notes it (throttled). The provider is sick, not the key.
* 401 / 403 (also Gemini's 400 for a bad key): next candidate; the key becomes ``invalid``.
* 429 (also Gemini's RESOURCE_EXHAUSTED): next candidate; the key is ``cooling_down`` until
  ``retry-after`` (or a bounded backoff).
* any other 4xx: no failover; the error is relayed (the request is wrong, not the key).

When every candidate failed the client gets the last error (OpenAI shape, redacted).

Spend control (``gateway/spend.py``), when the tenant has a policy or a key has a budget: before
each attempt the platform key is checked against the tenant's policy (``platform_fallback``:
``on_failure`` lets it serve only after the tenant's own keys of that provider failed with a
connection error, timeout, 5xx or 429 in this call, never after a 401/403 and never when the
tenant has no key of the provider; ``never``; ``platform_models``), then the attempt's worst
case is reserved on every budget that applies. A budget that cannot cover it moves on to the
next candidate (429 ``budget_exceeded`` if none is left); a failed attempt frees its
reservation; a served one keeps it until ``Gateway.record`` settles it.
"""

from __future__ import annotations

import time

import httpx

from byok_middleware.clock import Clock
from byok_middleware.errors import BYOKError, NoProviderKey, UpstreamUnavailable
from byok_middleware.gateway.budgets import BudgetExceeded
from byok_middleware.gateway.calls import BuildRequest, Call, Candidate, Forwarded
from byok_middleware.gateway.health import HealthRecorder, Outcome, classify, retry_after_seconds
from byok_middleware.gateway.limits import LimitTracker
from byok_middleware.gateway.observing import Telemetry
from byok_middleware.gateway.planning import RoutePlan
from byok_middleware.gateway.policy import platform_refusal
from byok_middleware.gateway.spend import SpendControl
from byok_middleware.gateway.transport import UpstreamClient, UpstreamResponse
from byok_middleware.gateway.upstream import (
    EmptyStream,
    Upstreams,
    await_first_event,
    normalize_error,
)
from byok_middleware.redaction import bind_call_redactor
from byok_middleware.storage.base import TenantPolicy
from byok_middleware.telemetry.observer import KeyEvent

__all__ = ["Failover"]


class Failover:
    """Tries a plan's candidates in order and learns each key's health on the way.

    Built from what the loop needs and nothing more: the upstream client, the directory of URLs
    and auth headers, the health recorder, the limit counters and the clock.
    """

    def __init__(
        self,
        client: UpstreamClient,
        upstreams: Upstreams,
        *,
        health: HealthRecorder,
        limits: LimitTracker,
        clock: Clock,
        spend: SpendControl | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._client = client
        self._upstreams = upstreams
        self._health = health
        self._limits = limits
        self._clock = clock
        self._spend = spend
        self._telemetry = telemetry  # told of every attempt (gateway/observing.py)

    async def attempt(
        self,
        call: Call,
        plan: RoutePlan,
        *,
        path: str,
        build: BuildRequest,
        method: str = "POST",
        stream: bool = False,
        policy: TenantPolicy | None = None,
    ) -> Forwarded:
        """The first 2xx answer of ``plan``'s candidates (the module docstring says when the
        next one is tried); raises the last candidate's error when none succeeds."""
        last_error: BYOKError | None = None
        refused: list[str] = []  # platform candidates the tenant's policy ruled out
        outcomes: dict[str, list[Outcome]] = {}  # failures of the tenant's own keys, by provider
        spend = self._spend
        for candidate in plan.candidates:
            if policy is not None:
                why = platform_refusal(
                    policy, candidate, candidate.model or call.model, plan, outcomes
                )
                if why is not None:
                    refused.append(why)
                    continue
            call.candidate = candidate
            call.provider = candidate.provider
            if candidate.model:
                call.model = candidate.model
            use = self._upstreams.key_use(candidate)
            call.redactor = use.redactor
            bind_call_redactor(use.redactor)
            content, headers = build(candidate)
            if spend is not None:
                try:
                    content = await spend.admit(call, candidate, content, policy)
                except BudgetExceeded as exc:
                    last_error = exc  # another candidate may be under other budgets
                    continue
            call.attempts += 1
            headers.update(use.auth)
            url = self._upstreams.url(candidate.provider, path)
            await self._limits.attempted(candidate.record)
            telemetry = self._telemetry
            began = time.perf_counter() if telemetry is not None else 0.0
            try:
                response = await self._client.send(method, url, headers=headers, content=content)
                if stream and response.status_code < 300:
                    wait = self._upstreams.first_event_timeout
                    response = await await_first_event(response, limit=wait)
            except httpx.TimeoutException:
                last_error = UpstreamUnavailable(
                    f"{candidate.provider} did not answer in time", status_code=504, code="timeout"
                )
                self._health.provider_failed(candidate.record, "timeout")
                self._attempt_failed(call, candidate, Outcome.PROVIDER_FAILED, outcomes)
                if telemetry is not None:
                    telemetry.attempt(call, candidate, began, status=None, timeout=True)
                continue
            except (httpx.HTTPError, EmptyStream):
                last_error = UpstreamUnavailable(
                    f"{candidate.provider} could not be reached or ended the answer before it began"
                )
                self._health.provider_failed(candidate.record, "connection error")
                self._attempt_failed(call, candidate, Outcome.PROVIDER_FAILED, outcomes)
                if telemetry is not None:
                    telemetry.attempt(call, candidate, began, status=None)
                continue
            except BaseException:
                self._attempt_failed(call, candidate, Outcome.REQUEST_FAILED, outcomes)
                raise  # cancelled: the reservation goes with the call
            if response.status_code < 300:
                await self._health.succeeded(candidate.record)
                if telemetry is not None:
                    telemetry.attempt(call, candidate, began, status=response.status_code)
                    if candidate.record is None and outcomes:
                        _platform_fallback(telemetry, call, candidate, outcomes)
                return Forwarded(response, candidate)
            last_error, outcome = await self._failed(call, candidate, response, began)
            self._attempt_failed(call, candidate, outcome, outcomes)
            if not outcome.fails_over:
                break
        if last_error is None:
            if refused:
                raise NoProviderKey(
                    f"no key may serve {call.provider}/{call.model} for this tenant: "
                    + "; ".join(dict.fromkeys(refused)),
                    param="model",
                )
            raise RuntimeError("no attempt was made")  # the caller checked for candidates
        raise last_error

    def _attempt_failed(
        self,
        call: Call,
        candidate: Candidate,
        outcome: Outcome,
        outcomes: dict[str, list[Outcome]],
    ) -> None:
        """Free the attempt's reservation (a failed call is not billed) and note how the
        tenant's own key failed, for ``platform_fallback: on_failure``."""
        if self._spend is not None:
            self._spend.release(call)
        if candidate.record is not None:
            outcomes.setdefault(candidate.provider, []).append(outcome)

    async def _failed(
        self, call: Call, candidate: Candidate, response: UpstreamResponse, began: float
    ) -> tuple[BYOKError, Outcome]:
        """Read and close an error answer; note what it says about the key."""
        try:
            body = await response.aread()
        except httpx.HTTPError:
            body = b""
        finally:
            await response.aclose()
        error = normalize_error(
            candidate.provider,
            response.status_code,
            body,
            redactor=call.redactor,
            attribution=candidate.attribution,
            retry_after=response.headers.get("retry-after"),
        )
        outcome = classify(error.status_code)
        record = candidate.record
        until = None
        if record is not None and outcome is Outcome.KEY_REJECTED:
            await self._health.rejected(record, response.status_code)
        elif record is not None and outcome is Outcome.RATE_LIMITED:
            wait = retry_after_seconds(response.headers, body, self._clock())
            until = await self._health.rate_limited(record, response.status_code, wait)
        elif outcome is Outcome.PROVIDER_FAILED:
            self._health.provider_failed(record, str(response.status_code))
        if self._telemetry is not None:
            # The status as the gateway reads it (a 3xx is a provider failure, 502).
            status = error.status_code
            self._telemetry.attempt(call, candidate, began, status=status, cooldown_until=until)
        return error, outcome


def _platform_fallback(
    telemetry: Telemetry, call: Call, candidate: Candidate, outcomes: dict[str, list[Outcome]]
) -> None:
    """The platform key served after the tenant's own keys failed in this call."""
    failed = sorted({outcome.value for found in outcomes.values() for outcome in found})
    event = KeyEvent(
        "platform_fallback.used",
        call.tenant_id,
        provider=candidate.provider,
        reason=f"the tenant's own keys failed ({', '.join(failed)})",
    )
    telemetry.key_event(event)
