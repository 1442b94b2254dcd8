"""Candidates as plain data, which of them can serve a request, and what it would cost.

The engine builds one ``ModelOption`` per model the tenant can reach now (its usable keys, and
platform keys where its policy allows, after health and limits): this module never looks keys
up. Prices are list prices in USD per 1M tokens (``None``: unknown, e.g. NVIDIA without an
operator price); ``context_window`` / ``max_output`` ``None``: unknown, not checked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from byok_middleware.autoroute.features import RequestFeatures

__all__ = ["COST_DECADES", "DEFAULT_OUTPUT_TOKENS", "ModelOption", "normalised_costs", "unfit"]

# Expected output when the request sets no limit, for the expected cost only.
DEFAULT_OUTPUT_TOKENS = 400
# Cost is normalised on a log scale: 0 for the cheapest candidate, 1 for one 1000x dearer (or
# more). A ratio of prices then weighs the same whatever the request's size, and two candidates
# 10% apart differ by 0.014, not by the whole scale as a min-max normalisation would make them.
COST_DECADES = 3.0
_FLOOR_USD = 1e-9  # free models: a finite logarithm


@dataclass(frozen=True, slots=True)
class ModelOption:
    """One model the tenant can reach now, with what the router needs to know about it."""

    provider: str
    model: str
    priority: int = 1  # the tenant's key priority (1 first); platform keys after the tenant's
    input_per_mtok: float | None = None
    output_per_mtok: float | None = None
    context_window: int | None = None
    max_output: int | None = None
    tools: bool = True
    images: bool = False
    json_schema: bool = False

    @property
    def key(self) -> str:
        """``provider/model``: the name arms, priors and route output use."""
        return f"{self.provider}/{self.model}"

    def expected_cost(self, features: RequestFeatures) -> float | None:
        """USD list price of this request on this model; ``None`` when a price is unknown."""
        if self.input_per_mtok is None or self.output_per_mtok is None:
            return None
        output = features.max_output_tokens or DEFAULT_OUTPUT_TOKENS
        return (features.prompt_tokens * self.input_per_mtok + output * self.output_per_mtok) / 1e6


def unfit(option: ModelOption, features: RequestFeatures) -> str | None:
    """Why ``option`` cannot serve the request (a short reason), or ``None`` if it can."""
    if features.needs_tools and not option.tools:
        return "no tool calling"
    if features.needs_images and not option.images:
        return "no image input"
    if features.needs_json_schema and not option.json_schema:
        return "no JSON schema output"
    wanted = features.max_output_tokens
    if wanted is not None and option.max_output is not None and wanted > option.max_output:
        return f"max output {option.max_output} < {wanted} requested"
    if option.context_window is not None:
        needed = features.prompt_tokens + (wanted or 0)
        if needed > option.context_window:
            return f"context window {option.context_window} < ~{needed} tokens"
    return None


def normalised_costs(
    options: Sequence[ModelOption], features: RequestFeatures
) -> tuple[list[float | None], list[float]]:
    """Each option's expected cost (USD) and its normalised cost (0..1, log scale).

    An option of unknown price is normalised at 1.0 (as dear as the scale goes), so it is chosen
    only on quality; when no price at all is known, cost does not count (all 0.0).
    """
    costs = [option.expected_cost(features) for option in options]
    known = [max(cost, _FLOOR_USD) for cost in costs if cost is not None]
    if not known:
        return costs, [0.0] * len(options)
    floor = math.log10(min(known))
    normalised = []
    for cost in costs:
        if cost is None:
            normalised.append(1.0)
        else:
            scaled = (math.log10(max(cost, _FLOOR_USD)) - floor) / COST_DECADES
            normalised.append(min(1.0, scaled))
    return costs, normalised
