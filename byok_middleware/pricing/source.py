"""Price sources: the ``PriceSource`` Protocol and its default, ``GenaiPrices``."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol, cast

import genai_prices
from genai_prices import Usage as GenaiUsage
from genai_prices import data_snapshot
from genai_prices import types as genai_types

from byok_middleware.pricing.plan import PricePlan, genai_usage_values
from byok_middleware.pricing.table import BUILTIN_PRICES, ModelPrice
from byok_middleware.pricing.usage import Usage

__all__ = ["GENAI_PROVIDER_IDS", "PRICE_TABLE", "GenaiPrices", "PriceSource"]

# The price table's name and version, for ``cost_source: price_table`` in metadata.
PRICE_TABLE = f"genai-prices {genai_prices.__version__}"

logger = logging.getLogger("byok_middleware.pricing")

# Our provider ids -> genai-prices provider ids; None: genai-prices has no data for it.
GENAI_PROVIDER_IDS: Mapping[str, str | None] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "groq": "groq",
    "deepseek": "deepseek",
    "google": "google",
    "nvidia": None,
}
_WARNED_LIMIT = 4096
_UNRESOLVED = object()  # not looked up yet (None is a real entry: no price known)


class PriceSource(Protocol):
    """Where ``cost_usd`` comes from."""

    def cost(self, provider: str, model: str, usage: Usage, *, when: datetime) -> Decimal | None:
        """USD list price of one call made at ``when``; ``None`` only when no price is known."""
        ...


@dataclass(slots=True)
class _GenaiModel:
    """A model resolved in genai-prices, with a compiled plan per price object it has used."""

    provider: genai_types.Provider
    model: genai_types.ModelInfo
    # id(price object) -> (price object, plan); holding the object pins its id.
    plans: dict[int, tuple[genai_types.ModelPrice, PricePlan]] = field(default_factory=dict)

    def plan_at(self, when: datetime) -> PricePlan:
        model_price = self.model.get_prices(when)
        cached = self.plans.get(id(model_price))
        if cached is not None:
            return cached[1]
        plan = PricePlan(model_price)
        self.plans[id(model_price)] = (model_price, plan)
        return plan


_Entry = _GenaiModel | ModelPrice | None


class GenaiPrices:
    """``PriceSource`` backed by genai-prices' bundled data, plus a table for its gaps.

    Lookup order per ``(provider, model)``: ``extra_prices`` (the operator's overrides, for any
    provider and model), then the built-in table (per-image DALL·E prices), then genai-prices.
    genai-prices has no NVIDIA prices and none are invented here: NVIDIA models cost ``None``
    (``cost_usd: null``) unless the operator prices them through ``extra_prices``
    (``ModelPrice()`` declares a model free). Model names match case-insensitively; google's
    ``models/`` prefix is ignored; genai-prices resolves dated ids (``gpt-4o-2024-08-06``).

    Each ``(provider, model)`` is resolved once and kept in a cache of ``cache_size`` entries; each
    genai-prices price object is compiled once into a ``PricePlan``. The request time still picks
    the price (DeepSeek off-peak hours, dated price changes). An unknown model logs one warning
    on ``byok_middleware.pricing``, not one per request. If genai-prices' data is replaced at
    run time (``genai_prices.UpdatePrices``), the caches are dropped and rebuilt from the new data.
    """

    def __init__(
        self,
        *,
        extra_prices: Mapping[tuple[str, str], ModelPrice] | None = None,
        cache_size: int = 4096,
    ) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        overrides = {**BUILTIN_PRICES, **(extra_prices or {})}
        self._operator = {_lookup_key(p, m) for p, m in (extra_prices or {})}
        self._overrides = {
            _lookup_key(provider, model): price for (provider, model), price in overrides.items()
        }
        self._cache_size = cache_size
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._snapshot: data_snapshot.DataSnapshot | None = None
        self._warned: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def is_operator_price(self, provider: str, model: str) -> bool:
        """Whether the operator's ``extra_prices`` price this model (``cost_source``)."""
        # Asked for every priced call; most deployments have no extra prices to look in.
        return bool(self._operator) and _lookup_key(provider, model) in self._operator

    def cost(self, provider: str, model: str, usage: Usage, *, when: datetime) -> Decimal | None:
        """USD list price of this call; ``None`` (and one warning) when no price is known."""
        entry = self._entry(provider, model)
        if entry is None:
            return None
        if isinstance(entry, ModelPrice):
            price = entry.cost(usage)
        else:
            price = _genai_cost(entry, usage, when)
        if price is None:
            self._warn_once(
                (provider, model, _measure(usage)),
                "no %s price for %s model %r; cost_usd will be null",
                _measure(usage),
                provider,
                model,
            )
        return price

    def _entry(self, provider: str, model: str) -> _Entry:
        key = (provider, model)
        snapshot = data_snapshot.get_snapshot()
        if snapshot is self._snapshot:
            # The hot path, without the lock (one dict lookup is atomic). Hits do not refresh
            # recency, so the cache drops its oldest entry first: fine at this size.
            found = self._entries.get(key, _UNRESOLVED)
            if found is not _UNRESOLVED:
                return cast(_Entry, found)
        with self._lock:
            if snapshot is not self._snapshot:
                self._entries.clear()
                self._snapshot = snapshot
            elif key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        entry = self._resolve(snapshot, provider, model)
        with self._lock:
            self._entries[key] = entry
            if len(self._entries) > self._cache_size:
                self._entries.popitem(last=False)
        return entry

    def _resolve(self, snapshot: data_snapshot.DataSnapshot, provider: str, model: str) -> _Entry:
        lookup = _lookup_key(provider, model)
        override = self._overrides.get(lookup)
        if override is not None:
            return override
        genai_provider = GENAI_PROVIDER_IDS.get(lookup[0], lookup[0])
        if genai_provider is not None:
            try:
                found_provider, found_model = snapshot.find_provider_model(
                    lookup[1], None, genai_provider, None
                )
            except LookupError:
                pass
            else:
                return _GenaiModel(found_provider, found_model)
        self._warn_once(
            (provider, model),
            "no price known for %s model %r; cost_usd will be null "
            "(price it with GenaiPrices(extra_prices=...))",
            provider,
            model,
        )
        return None

    def _warn_once(self, key: tuple[str, ...], message: str, *args: object) -> None:
        with self._lock:
            if key in self._warned:
                return
            if len(self._warned) >= _WARNED_LIMIT:
                self._warned.clear()
            self._warned.add(key)
        logger.warning(message, *args)


def _genai_cost(entry: _GenaiModel, usage: Usage, when: datetime) -> Decimal | None:
    plan = entry.plan_at(when)
    fast = plan.token_cost(usage)
    if fast is not None:
        return fast
    if plan.is_free:
        # e.g. OpenAI moderation: listed with an empty price set, i.e. free.
        return Decimal(0)
    if _measure_family(usage) not in plan.families:
        return None
    values = genai_usage_values(usage)
    if usage.audio_seconds is not None:
        # Audio is rare and genai-prices applies per-model billing rules to it (Groq whisper's
        # 10 s minimum), so it takes the full path.
        try:
            calculation = entry.model.calc_price(
                GenaiUsage(**values), entry.provider, genai_request_timestamp=when
            )
        except ValueError:
            logger.debug("genai-prices rejected the usage of %s; using the plan", entry.model.id)
        else:
            return calculation.total_price
    return plan.cost(values)


_MEASURES = {
    "durations": "audio",
    "characters": "character",
    "images": "per-image",
    "tokens": "token",
}


def _measure(usage: Usage) -> str:
    """How the call is measured, in words, for the missing-price warning."""
    return _MEASURES[_measure_family(usage)]


def _measure_family(usage: Usage) -> str:
    """The genai-prices unit family a call must be priced in."""
    if usage.audio_seconds is not None:
        return "durations"
    if usage.characters is not None:
        return "characters"
    if usage.images is not None and not usage.has_tokens:
        return "images"
    return "tokens"


def _lookup_key(provider: str, model: str) -> tuple[str, str]:
    provider = provider.strip().lower()
    model = model.strip().lower()
    if provider == "google":
        model = model.removeprefix("models/")
    return provider, model
