"""The plain data a call carries through the engine: no behaviour, no I/O, imported by all.

``Call`` is per request (never stored on the middleware); ``Candidate`` is one way to pay for it;
``Forwarded`` is the upstream answer that won; ``KeyUse`` what paying with a key needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from byok_middleware.crypto import SecretStr
from byok_middleware.gateway.budgets import Hold
from byok_middleware.gateway.transport import UpstreamResponse
from byok_middleware.redaction import Redactor
from byok_middleware.storage.base import ProviderKeyRecord

__all__ = ["BuildRequest", "Call", "Candidate", "Forwarded", "KeyUse", "ModelRoute"]


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """One provider that can serve the request, the model name sent to it, and its price.

    ``price`` is the list price of the reference call (1M tokens in + 1M out) used to order
    providers of a bare name; ``None`` when unknown or irrelevant (``provider/model``).
    """

    provider: str
    model: str  # as sent upstream, without the provider prefix
    price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One way to pay for a call: a tenant key (``record`` set) or the platform key.

    ``model`` is the model name sent upstream ("" when the caller already set it on the call).
    """

    provider: str
    secret: SecretStr
    attribution: str
    record: ProviderKeyRecord | None = None
    model: str = ""

    @property
    def key_id(self) -> str | None:
        return self.record.id if self.record is not None else None


@dataclass(slots=True)
class Forwarded:
    """A successful upstream response (still open) and who paid for it."""

    response: UpstreamResponse
    candidate: Candidate


BuildRequest = Callable[[Candidate], tuple[bytes | AsyncIterable[bytes], dict[str, str]]]
"""Builds the upstream body and headers for one candidate (auth headers are added after).

The body may be an async iterable (a multipart upload streamed from memory); ``build`` is called
once per candidate, so it must return a fresh iterable each time."""


_PATTERNS_ONLY = Redactor()


@dataclass(slots=True)
class Call:
    """Per-request facts the proxy handlers share (never stored on the middleware)."""

    tenant_id: str
    request_id: str
    endpoint: str
    started: float  # time.perf_counter() at arrival (uvloop's loop.time() counts whole ms)
    provider: str = ""
    model: str = ""
    attempts: int = 0
    # Until a candidate is chosen: the key-shaped patterns only (immutable, so shared).
    redactor: Redactor = _PATTERNS_ONLY
    # Every provider that may serve the call (a bare model name may have several); empty means
    # just (provider, model). ``forward`` sets provider and model to the one that served.
    routes: tuple[ModelRoute, ...] = ()
    candidate: Candidate | None = None  # the last one tried
    route_reason: str | None = None  # set when model "auto" chose the model (autorouting.py)
    hold: Hold | None = None  # the budget reservation of the current attempt (gateway/spend.py)
    # Telemetry (gateway/observing.py): the observers' token while the request is open (None:
    # not observed, or already ended), when the first frame of a stream went to the client
    # (perf_counter), and why the gateway refused the call itself ("budget", "rate_limit", ...).
    telemetry: object = None
    first_byte: float | None = None
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class KeyUse:
    """Per key: the redactor of its calls and the provider's auth headers carrying it."""

    redactor: Redactor
    auth: Mapping[str, str] = field(repr=False)  # carries the key in clear
