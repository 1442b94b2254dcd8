"""A genai-prices model price compiled once into a fast evaluator.

``genai_prices.calc_price`` spends ~0.1 ms per call re-deriving, from the unit registry, which
priced units nest inside which (cache reads inside input tokens, …) before it multiplies anything.
That derivation depends only on the model's price object, so a ``PricePlan`` does it once and a
call is then a handful of subtractions and ``Decimal`` multiplications, in the same order and with
the same arithmetic as genai-prices (``ModelPrice.calc_price`` / ``calc_unit_price``), so the
results are equal in value (terms that are exactly zero are skipped). Where genai-prices would
reject an inconsistent breakdown (a subset larger than its total, or an overlap it cannot split),
the plan clamps that remainder at zero instead of failing the request.

The plan reads genai-prices' unit registry (``data_units.unit_data``), which is not public API:
pyproject.toml pins genai-prices to one minor range, and ``tests/test_pricing.py`` checks the
plan against ``calc_price`` over genai-prices' whole bundled price table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from genai_prices import types as genai_types
from genai_prices.data_units import unit_data

from byok_middleware.pricing.usage import Usage

__all__ = ["PricePlan", "UsageValues", "genai_usage_values"]

UsageValues = Mapping[str, int | float]


@dataclass(frozen=True, slots=True)
class _Unit:
    usage_key: str
    per: int
    family: str
    dimensions: frozenset[tuple[str, str]]


def _units_by_price_key(raw: Mapping[str, Mapping[str, Any]]) -> Mapping[str, _Unit]:
    units = {}
    for usage_key, spec in raw.items():
        dimensions: Mapping[str, str] = spec.get("dimensions", {})
        unit = _Unit(
            usage_key, int(spec["per"]), dimensions.get("family", ""), frozenset(dimensions.items())
        )
        units[str(spec.get("price_key", usage_key))] = unit
    return MappingProxyType(units)


# genai-prices' own unit registry data (data_units.unit_data), indexed by price key.
_UNITS = _units_by_price_key(unit_data)
_REQUESTS = "requests"
_ZERO = Decimal(0)
# Subsets of the prompt and of the completion: genai-prices usage key -> ``Usage`` field. One
# table for both ``genai_usage_values`` and the token fast path, which must see every field a
# plan may price apart (usage keys no ``Usage`` field feeds are always zero, so never matter).
_CACHE_WRITE = ("cache_write_tokens", "cache_write_tokens")
_PROMPT_SUBSETS = (
    ("input_audio_tokens", "audio_prompt_tokens"),
    ("input_image_tokens", "image_prompt_tokens"),
)
_COMPLETION_SUBSETS = (
    ("output_reasoning_tokens", "reasoning_tokens"),
    ("output_audio_tokens", "audio_completion_tokens"),
    ("output_image_tokens", "image_completion_tokens"),
)
_FAST_KEYS = ("input_tokens", "cache_read_tokens", "output_tokens")
_USAGE_FIELDS = dict((_CACHE_WRITE, *_PROMPT_SUBSETS, *_COMPLETION_SUBSETS))


def genai_usage_values(usage: Usage) -> dict[str, int | float]:
    """``usage`` under genai-prices usage keys: only registered keys, only positive values.

    Subsets are clamped to their totals first, so an inconsistent hand-built ``Usage`` is billed
    for no more tokens than it reports in total.
    """
    values: dict[str, int | float] = {}
    prompt = usage.prompt_tokens
    if prompt > 0:
        values["input_tokens"] = prompt
        # Each subset is looked at only when reported (most calls report none of them).
        cached = usage.cached_tokens
        if cached > 0:
            cached = values["cache_read_tokens"] = min(cached, prompt)
        else:
            cached = 0
        key, name = _CACHE_WRITE
        _put(values, key, getattr(usage, name), prompt - cached)
        for key, name in _PROMPT_SUBSETS:
            _put(values, key, getattr(usage, name), prompt)
    completion = usage.completion_tokens
    if completion > 0:
        values["output_tokens"] = completion
        for key, name in _COMPLETION_SUBSETS:
            _put(values, key, getattr(usage, name), completion)
    if usage.audio_seconds is not None and usage.audio_seconds > 0:
        # Speech-to-text audio is input audio; genai-prices does the same for Groq whisper.
        values["audio_seconds"] = values["input_audio_seconds"] = usage.audio_seconds
    if usage.characters is not None and usage.characters > 0:
        values["input_characters"] = usage.characters
    return values


def _put(values: dict[str, int | float], key: str, count: int, total: int) -> None:
    """``values[key] = min(count, total)`` when that is positive."""
    if count > 0 and total > 0:
        values[key] = min(count, total)


class PricePlan:
    """The compiled form of one genai-prices ``ModelPrice``."""

    __slots__ = ("_decompose", "_fast", "_prices", "_tiered", "families", "is_free")

    def __init__(self, model_price: genai_types.ModelPrice) -> None:
        priced: list[tuple[str, Decimal | genai_types.TieredPrices, _Unit]] = []
        for price_key, price in vars(model_price).items():
            unit = _UNITS.get(price_key)
            # genai-prices skips unknown price keys too (after a UserWarning we must not raise).
            if unit is not None and isinstance(price, Decimal | genai_types.TieredPrices):
                priced.append((price_key, price, unit))
        units = [unit for _, _, unit in priced if unit.usage_key != _REQUESTS]
        # Most specific units first, so each unit's leaf is its value minus its descendants' leaves.
        units.sort(key=lambda unit: (-len(unit.dimensions), unit.usage_key))
        slots = {unit.usage_key: index for index, unit in enumerate(units)}
        self._decompose = tuple(
            (
                unit.usage_key,
                tuple(
                    slots[other.usage_key]
                    for other in units
                    if other is not unit and unit.dimensions <= other.dimensions
                ),
            )
            for unit in units
        )
        self._prices = tuple(
            (slots.get(unit.usage_key, -1), _fixed(price), _tiers(price), unit.per)
            for _, price, unit in priced
        )
        self._tiered = any(isinstance(price, genai_types.TieredPrices) for _, price, _ in priced)
        self.families = frozenset(unit.family for _, _, unit in priced)
        self.is_free = not priced
        self._fast = _fast_tokens(priced) if "tokens" in self.families else None

    def token_cost(self, usage: Usage) -> Decimal | None:
        """The price of a token-only ``usage`` whose only breakdown is cache reads (nearly every
        chat call), without the general decomposition; ``None`` when it does not apply.

        Equal in value to ``cost(genai_usage_values(usage))``: with every other breakdown zero
        (or unpriced), the leaves are the cache reads, the rest of the input, and the output.
        """
        fast = self._fast
        if fast is None or not (usage.audio_seconds is usage.characters is usage.images is None):
            return None
        for name in fast.zero_fields:
            if getattr(usage, name):
                return None
        total = fast.per_call
        prompt = usage.prompt_tokens
        if prompt > 0:
            cached = usage.cached_tokens
            if cached > 0 and fast.cache_read is not None:
                if cached > prompt:
                    cached = prompt
                total += fast.cache_read * cached
                prompt -= cached
            if prompt and fast.input is not None:
                total += fast.input * prompt
        completion = usage.completion_tokens
        if completion > 0 and fast.output is not None:
            total += fast.output * completion
        return total

    def cost(self, values: UsageValues) -> Decimal:
        """The total price of ``values`` (genai-prices usage keys) in USD."""
        leaves: list[int | float] = []
        for usage_key, descendants in self._decompose:
            leaf = values.get(usage_key, 0)
            for index in descendants:
                leaf -= leaves[index]
            leaves.append(leaf if leaf > 0 else 0)
        total_input = values.get("input_tokens", 0) if self._tiered else 0
        total = _ZERO
        for slot, fixed, tiers, per in self._prices:
            # slot -1 is the per-request unit: one request per call.
            count = leaves[slot] if slot >= 0 else 1
            if not count:
                # Adds exactly zero; skipping it is most of the speed on rich price sheets.
                continue
            price = fixed
            if price is None:
                price = next((price for start, price in tiers if total_input > start), tiers[-1][1])
            # Decimal * int converts the int exactly, as Decimal(count) would, without the call.
            total += price * (count if type(count) is int else _decimal(count)) / per
        return total


@dataclass(frozen=True, slots=True)
class _FastTokens:
    """A plan's flat prices per token (``price / per``, exact) for ``PricePlan.token_cost``."""

    input: Decimal | None
    cache_read: Decimal | None
    output: Decimal | None
    per_call: Decimal
    zero_fields: tuple[str, ...]  # priced apart by the plan: the fast path needs them zero


def _fast_tokens(
    priced: list[tuple[str, Decimal | genai_types.TieredPrices, _Unit]],
) -> _FastTokens | None:
    """The fast path's prices; None for tiered prices, or a price that ``per`` divides inexactly
    (``price * count / per`` would then round differently from ``price / per * count``)."""
    per_token: dict[str, Decimal] = {}
    per_call = _ZERO
    zero_fields = []
    for _, price, unit in priced:
        if not isinstance(price, Decimal):
            return None
        each = price / unit.per
        if each * unit.per != price:
            return None
        if unit.usage_key == _REQUESTS:
            per_call += each
        elif unit.usage_key in _FAST_KEYS:
            per_token[unit.usage_key] = each
        elif unit.usage_key in _USAGE_FIELDS:
            zero_fields.append(_USAGE_FIELDS[unit.usage_key])
    return _FastTokens(
        per_token.get("input_tokens"),
        per_token.get("cache_read_tokens"),
        per_token.get("output_tokens"),
        per_call,
        tuple(zero_fields),
    )


def _fixed(price: Decimal | genai_types.TieredPrices) -> Decimal | None:
    return price if isinstance(price, Decimal) else None


def _tiers(price: Decimal | genai_types.TieredPrices) -> tuple[tuple[int, Decimal], ...]:
    """Cliff tiers, highest threshold first, ending with the base price at threshold -1."""
    if isinstance(price, Decimal):
        return ((-1, price),)
    tiers = sorted(((tier.start, tier.price) for tier in price.tiers), reverse=True)
    return (*tiers, (-1, price.base))


def _decimal(count: int | float) -> Decimal:
    # genai-prices converts floats through repr (usage_value_as_decimal).
    return Decimal(count) if isinstance(count, int) else Decimal(repr(count))
