"""The models ``model: "auto"`` may choose, per provider, and what each can serve.

A provider's models are candidates for a tenant only when the tenant can reach the provider now
(``gateway/autorouting.py`` asks the key plan). The table is the project's choice of each
provider's current general-purpose chat models that accept a plain chat body as sent (reasoning
models that refuse ``max_tokens`` or ``temperature`` are left out), with the providers'
documented limits and features; an operator replaces it with ``AutoRouting(models=...)``.
Prices are list prices from the price source (genai-prices), per 1M tokens, looked up once per
model and day; ``None`` when unknown (the router then treats the model as the dearest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from byok_middleware.autoroute import ModelOption
from byok_middleware.pricing import PriceSource, Usage

__all__ = ["AUTO_MODELS", "AutoModel", "ModelPrices"]


@dataclass(frozen=True, slots=True)
class AutoModel:
    """A model ``auto`` may route to, with its limits (tokens) and features."""

    provider: str
    model: str
    context_window: int
    max_output: int
    tools: bool = True
    images: bool = False
    json_schema: bool = False

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


# provider, model, context window, max output, tools, images, JSON schema (response_format).
# Anthropic's JSON schema goes through the chat translation's forced tool, so it counts.
AUTO_MODELS: tuple[AutoModel, ...] = (
    AutoModel("openai", "gpt-4.1", 1_047_576, 32_768, True, True, True),
    AutoModel("openai", "gpt-4.1-mini", 1_047_576, 32_768, True, True, True),
    AutoModel("openai", "gpt-4o", 128_000, 16_384, True, True, True),
    AutoModel("openai", "gpt-4o-mini", 128_000, 16_384, True, True, True),
    AutoModel("anthropic", "claude-sonnet-4-5", 200_000, 64_000, True, True, True),
    AutoModel("anthropic", "claude-haiku-4-5", 200_000, 64_000, True, True, True),
    AutoModel("google", "gemini-2.5-pro", 1_048_576, 65_536, True, True, True),
    AutoModel("google", "gemini-2.5-flash", 1_048_576, 65_536, True, True, True),
    AutoModel("google", "gemini-2.5-flash-lite", 1_048_576, 65_536, True, True, True),
    AutoModel("deepseek", "deepseek-chat", 128_000, 8_192, True, False, False),
    AutoModel("groq", "llama-3.3-70b-versatile", 131_072, 32_768, True, False, False),
    AutoModel("groq", "llama-3.1-8b-instant", 131_072, 131_072, True, False, False),
    AutoModel("nvidia", "meta/llama-3.3-70b-instruct", 128_000, 4_096, True, False, False),
    AutoModel("nvidia", "meta/llama-3.1-8b-instruct", 128_000, 4_096, True, False, False),
)

# Priced on 10k tokens and scaled: a 1M-token reference would hit long-context price tiers.
_SAMPLE_TOKENS = 10_000
_SCALE = 1_000_000 / _SAMPLE_TOKENS


class ModelPrices:
    """List prices per 1M input and output tokens of ``AutoModel`` s, cached per day."""

    def __init__(self, prices: PriceSource, *, max_entries: int = 1024) -> None:
        self._prices = prices
        self._max_entries = max_entries
        self._cache: dict[tuple[str, str, object], tuple[float | None, float | None]] = {}

    def per_mtok(self, provider: str, model: str, when: datetime) -> tuple[float | None, ...]:
        key = (provider, model, when.date())
        found = self._cache.get(key)
        if found is None:
            found = (
                self._price(provider, model, Usage(prompt_tokens=_SAMPLE_TOKENS), when),
                self._price(provider, model, Usage(completion_tokens=_SAMPLE_TOKENS), when),
            )
            if len(self._cache) >= self._max_entries:
                self._cache.clear()  # a new day, or a large operator table: start again
            self._cache[key] = found
        return found

    def _price(self, provider: str, model: str, usage: Usage, when: datetime) -> float | None:
        cost = self._prices.cost(provider, model, usage, when=when)
        return float(cost) * _SCALE if cost is not None else None

    def options(
        self, models: Sequence[AutoModel], priority: int, when: datetime
    ) -> list[ModelOption]:
        """``ModelOption`` s of ``models`` (one provider's), at the provider's key priority."""
        found = []
        for m in models:
            mtok_in, mtok_out = self.per_mtok(m.provider, m.model, when)
            found.append(
                ModelOption(
                    m.provider,
                    m.model,
                    priority,
                    mtok_in,
                    mtok_out,
                    m.context_window,
                    m.max_output,
                    m.tools,
                    m.images,
                    m.json_schema,
                )
            )
        return found
