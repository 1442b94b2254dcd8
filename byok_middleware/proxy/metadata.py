"""What every proxied response tells: who paid, which provider served it, what it cost."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from byok_middleware.gateway import Call, Forwarded

__all__ = ["CallMetadata", "call_metadata", "format_cost"]


def format_cost(cost: Decimal | None) -> float | None:
    """USD as a JSON number (exact to the provider's list-price precision), or None if unknown."""
    return None if cost is None else float(cost)


@dataclass(slots=True)
class CallMetadata:
    request_id: str
    attribution: str
    provider: str
    model: str
    key_id: str | None
    attempts: int = 1
    cost_usd: Decimal | None = None
    cache_hit: bool = False
    route_reason: str | None = None  # model "auto" only: why it chose this model
    cost_source: str | None = None  # price_table | operator | unpriced (README "Controlling spend")

    def as_dict(self) -> dict[str, Any]:
        found = {
            "cost_attribution": self.attribution,
            "provider_used": self.provider,
            "model_used": self.model,
            "cost_usd": format_cost(self.cost_usd),
            "key_id": self.key_id,
            "cache_hit": self.cache_hit,
            "request_id": self.request_id,
            "attempts": self.attempts,
        }
        if self.cost_source is not None:
            found["cost_source"] = self.cost_source
        if self.route_reason is not None:
            found["routed"] = "auto"
            found["route_reason"] = self.route_reason
        return found

    def headers(self, *, with_cost: bool) -> list[tuple[bytes, bytes]]:
        raw = [
            (b"x-byok-request-id", self.request_id.encode()),
            (b"x-byok-cost-attribution", self.attribution.encode()),
            (b"x-byok-provider-used", self.provider.encode()),
            (b"x-byok-attempts", str(self.attempts).encode()),
        ]
        if self.key_id:
            raw.append((b"x-byok-key-id", self.key_id.encode()))
        if with_cost and self.cost_usd is not None:
            raw.append((b"x-byok-cost-usd", format(self.cost_usd.normalize(), "f").encode()))
        return raw


def call_metadata(call: Call, forwarded: Forwarded) -> CallMetadata:
    """The metadata of a call served by ``forwarded.candidate`` (cost filled in later)."""
    candidate = forwarded.candidate
    return CallMetadata(
        call.request_id,
        candidate.attribution,
        call.provider,
        call.model,
        candidate.key_id,
        call.attempts,
        route_reason=call.route_reason,
    )
