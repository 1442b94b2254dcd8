"""Pricing: usage normalisation, genai-prices lookups, the gaps table and operator overrides."""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices import data_snapshot
from genai_prices import types as genai_types

from byok_middleware.gateway.spend import cost_source
from byok_middleware.pricing import (
    GenaiPrices,
    ModelPrice,
    PriceSource,
    Usage,
    usage_from_chunk,
    usage_from_openai,
)
from byok_middleware.pricing.plan import PricePlan, genai_usage_values
from byok_middleware.pricing.source import _GenaiModel

NOON = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
EVENING = datetime(2026, 11, 2, 20, 0, tzinfo=UTC)
MILLION = 1_000_000


@pytest.fixture
def prices() -> GenaiPrices:
    return GenaiPrices()


@pytest.fixture
def pricing_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="byok_middleware.pricing")
    return caplog


def warnings_for(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "byok_middleware.pricing" and text in record.getMessage()
    ]


# --- reference figures ----------------------------------------------------------------------------

FIGURES = [
    ("openai", "whisper-1", Usage(audio_seconds=60), NOON, "0.006"),
    ("openai", "tts-1", Usage(characters=1000), NOON, "0.015"),
    ("openai", "gpt-4o", Usage(prompt_tokens=1000, completion_tokens=100), NOON, "0.0035"),
    (
        "openai",
        "gpt-4o-2024-08-06",
        Usage(prompt_tokens=1000, completion_tokens=100),
        NOON,
        "0.0035",
    ),
    (
        "openai",
        "gpt-4o-mini",
        Usage(prompt_tokens=MILLION, cached_tokens=500_000),
        NOON,
        "0.1125",
    ),
    (
        "anthropic",
        "claude-sonnet-4-5",
        Usage(prompt_tokens=1000, completion_tokens=1000),
        NOON,
        "0.018",
    ),
    (
        "anthropic",
        "claude-sonnet-4-5",
        Usage(prompt_tokens=300_000, completion_tokens=1000),
        NOON,
        "1.8225",
    ),
    (
        "anthropic",
        "claude-sonnet-4-20250514",
        Usage(prompt_tokens=4740, cache_write_tokens=4735, completion_tokens=255),
        NOON,
        "0.02159625",
    ),
    (
        "deepseek",
        "deepseek-chat",
        Usage(prompt_tokens=MILLION, completion_tokens=MILLION),
        NOON,
        "1.37",
    ),
    (
        "deepseek",
        "deepseek-chat",
        Usage(prompt_tokens=MILLION, completion_tokens=MILLION),
        EVENING,
        "0.685",
    ),
    (
        "groq",
        "llama-3.3-70b-versatile",
        Usage(prompt_tokens=MILLION, completion_tokens=MILLION),
        NOON,
        "1.38",
    ),
    ("google", "gemini-2.5-flash", Usage(prompt_tokens=MILLION), NOON, "0.30"),
    ("google", "models/gemini-2.5-flash", Usage(prompt_tokens=MILLION), NOON, "0.30"),
    ("openai", "text-embedding-3-small", Usage(prompt_tokens=MILLION), NOON, "0.02"),
    ("openai", "omni-moderation-latest", Usage(), NOON, "0"),
    ("openai", "text-moderation-stable", Usage(prompt_tokens=500), NOON, "0"),
]


@pytest.mark.parametrize(("provider", "model", "usage", "when", "expected"), FIGURES)
def test_reference_figures(
    prices: GenaiPrices, provider: str, model: str, usage: Usage, when: datetime, expected: str
) -> None:
    """Each reference call costs the list price computed from genai-prices' bundled data."""
    assert prices.cost(provider, model, usage, when=when) == Decimal(expected)


def test_cost_is_decimal(prices: GenaiPrices) -> None:
    """Costs are Decimal, never float."""
    cost = prices.cost("openai", "gpt-4o", Usage(prompt_tokens=3), when=NOON)
    assert isinstance(cost, Decimal)


@pytest.mark.parametrize("seconds", [0.5, 3, 9.99, 10])
def test_groq_whisper_bills_ten_seconds_minimum(prices: GenaiPrices, seconds: float) -> None:
    """Groq whisper bills at least 10 s per request (applied by genai-prices)."""
    cost = prices.cost("groq", "whisper-large-v3", Usage(audio_seconds=seconds), when=NOON)
    assert cost == Decimal("0.111") * 10 / 3600


def test_groq_whisper_bills_actual_seconds_above_minimum(prices: GenaiPrices) -> None:
    """Above 10 s Groq whisper bills the seconds reported."""
    cost = prices.cost("groq", "whisper-large-v3-turbo", Usage(audio_seconds=90), when=NOON)
    assert cost == Decimal("0.001")


def test_protocol_is_satisfied() -> None:
    """GenaiPrices is a PriceSource."""
    source: PriceSource = GenaiPrices()
    assert source.cost("openai", "gpt-4o", Usage(), when=NOON) == 0


# --- usage extraction -----------------------------------------------------------------------------

USAGE_SHAPES: list[tuple[str, str, Mapping[str, Any] | None, Usage | None]] = [
    ("openai: missing usage", "openai", None, None),
    ("openai: empty usage", "openai", {}, None),
    (
        "openai: chat with details",
        "openai",
        {
            "prompt_tokens": 120,
            "completion_tokens": 40,
            "total_tokens": 160,
            "prompt_tokens_details": {
                "cached_tokens": 64,
                "cache_write_tokens": 16,
                "audio_tokens": 0,
            },
            "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0},
        },
        Usage(120, 40, cached_tokens=64, cache_write_tokens=16, reasoning_tokens=12),
    ),
    (
        "openai: audio tokens",
        "openai",
        {
            "prompt_tokens": 50,
            "completion_tokens": 30,
            "prompt_tokens_details": {"audio_tokens": 20, "image_tokens": 5},
            "completion_tokens_details": {"audio_tokens": 25},
        },
        Usage(50, 30, audio_prompt_tokens=20, image_prompt_tokens=5, audio_completion_tokens=25),
    ),
    (
        "openai: embeddings",
        "openai",
        {"prompt_tokens": 8, "total_tokens": 8},
        Usage(prompt_tokens=8),
    ),
    (
        "deepseek: cache hit without cached_tokens",
        "deepseek",
        {
            "prompt_tokens": 496,
            "completion_tokens": 10,
            "prompt_cache_hit_tokens": 400,
            "prompt_cache_miss_tokens": 96,
        },
        Usage(496, 10, cached_tokens=400),
    ),
    (
        "deepseek: an over-reported hit count is clamped to the prompt",
        "deepseek",
        {"prompt_tokens": 5, "completion_tokens": 1, "prompt_cache_hit_tokens": 9},
        Usage(5, 1, cached_tokens=5),
    ),
    (
        "deepseek: cached_tokens wins over the hit count",
        "deepseek",
        {
            "prompt_tokens": 496,
            "completion_tokens": 1783,
            "total_tokens": 2279,
            "prompt_tokens_details": {"cached_tokens": 128},
            "prompt_cache_hit_tokens": 128,
            "prompt_cache_miss_tokens": 368,
        },
        Usage(496, 1783, cached_tokens=128),
    ),
    (
        "deepseek: cache miss",
        "deepseek",
        {
            "prompt_tokens": 496,
            "completion_tokens": 1783,
            "total_tokens": 2279,
            "prompt_tokens_details": {"cached_tokens": 0},
            "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": 496,
        },
        Usage(496, 1783),
    ),
    (
        "groq: with cached and reasoning tokens",
        "groq",
        {
            "prompt_tokens": 30,
            "completion_tokens": 9,
            "total_tokens": 39,
            "queue_time": 0.01,
            "prompt_tokens_details": {"cached_tokens": 10},
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
        Usage(30, 9, cached_tokens=10, reasoning_tokens=4),
    ),
    (
        "nvidia: plain counts",
        "nvidia",
        {"prompt_tokens": 17, "completion_tokens": 5, "total_tokens": 22},
        Usage(17, 5),
    ),
    (
        "nvidia: null details",
        "nvidia",
        {
            "prompt_tokens": 17,
            "completion_tokens": 5,
            "total_tokens": 22,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
        Usage(17, 5),
    ),
    (
        "google: thinking tokens missing from completion_tokens",
        "google",
        {"prompt_tokens": 20, "completion_tokens": 198, "total_tokens": 623},
        Usage(20, 603, reasoning_tokens=405),
    ),
    (
        "google: consistent counts",
        "google",
        {
            "prompt_tokens": 20,
            "completion_tokens": 603,
            "total_tokens": 623,
            "prompt_tokens_details": {"cached_tokens": 8},
            "completion_tokens_details": {"reasoning_tokens": 405},
        },
        Usage(20, 603, cached_tokens=8, reasoning_tokens=405),
    ),
    (
        "openai: under-counted total changes nothing outside google",
        "openai",
        {"prompt_tokens": 20, "completion_tokens": 198, "total_tokens": 623},
        Usage(20, 198),
    ),
    (
        "openai: transcription billed by duration",
        "openai",
        {"type": "duration", "seconds": 61.5},
        Usage(audio_seconds=61.5),
    ),
    (
        "openai: junk duration is zero seconds",
        "openai",
        {"type": "duration", "seconds": "61"},
        Usage(audio_seconds=0.0),
    ),
    (
        "openai: transcription billed by tokens",
        "openai",
        {
            "type": "tokens",
            "input_tokens": 140,
            "output_tokens": 22,
            "total_tokens": 162,
            "input_token_details": {"audio_tokens": 130, "text_tokens": 10},
        },
        Usage(140, 22, audio_prompt_tokens=130),
    ),
    (
        "openai: gpt-image usage",
        "openai",
        {
            "input_tokens": 50,
            "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
            "output_tokens": 4160,
            "output_tokens_details": {"image_tokens": 4160},
            "total_tokens": 4210,
        },
        Usage(50, 4160, image_prompt_tokens=10, image_completion_tokens=4160),
    ),
    (
        "any: over-reported subsets are clamped to their totals",
        "openai",
        {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 8},
            "completion_tokens_details": {"reasoning_tokens": 9},
        },
        Usage(10, 3, cached_tokens=8, cache_write_tokens=2, reasoning_tokens=3),
    ),
    (
        "any: junk values count as zero",
        "openai",
        {
            "prompt_tokens": "12",
            "completion_tokens": -4,
            "prompt_tokens_details": {"cached_tokens": True},
        },
        Usage(),
    ),
    (
        "any: float counts are truncated",
        "openai",
        {"prompt_tokens": 12.0, "completion_tokens": float("nan")},
        Usage(12),
    ),
]


@pytest.mark.parametrize(
    ("provider", "usage", "expected"),
    [case[1:] for case in USAGE_SHAPES],
    ids=[case[0] for case in USAGE_SHAPES],
)
def test_usage_from_openai(
    provider: str, usage: Mapping[str, Any] | None, expected: Usage | None
) -> None:
    """Each provider's usage dialect normalises to OpenAI's terms."""
    assert usage_from_openai(usage, provider=provider) == expected


CHUNKS: list[tuple[str, str, Mapping[str, Any], Usage | None]] = [
    (
        "openai: usage-only chunk",
        "openai",
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
        Usage(9, 2),
    ),
    (
        "openai: content chunk with null usage",
        "openai",
        {"choices": [{"delta": {"content": "hi"}}], "usage": None},
        None,
    ),
    ("openai: chunk without usage", "openai", {"choices": [{"delta": {}}]}, None),
    (
        "groq: x_groq usage",
        "groq",
        {
            "choices": [{"delta": {}, "finish_reason": "stop"}],
            "x_groq": {
                "id": "req_1",
                "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39},
            },
        },
        Usage(30, 9),
    ),
    (
        "groq: x_groq without usage",
        "groq",
        {"choices": [{"delta": {"content": "x"}}], "x_groq": {"id": "req_1"}},
        None,
    ),
    (
        "groq: top-level usage wins over x_groq",
        "groq",
        {
            "choices": [],
            "usage": {"prompt_tokens": 31, "completion_tokens": 9},
            "x_groq": {"usage": {"prompt_tokens": 30, "completion_tokens": 9}},
        },
        Usage(31, 9),
    ),
    (
        "google: usage on the final content chunk",
        "google",
        {
            "choices": [{"delta": {"content": "."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 198, "total_tokens": 623},
        },
        Usage(20, 603, reasoning_tokens=405),
    ),
    (
        "nvidia: cumulative usage snapshot on a content chunk",
        "nvidia",
        {
            "choices": [{"delta": {"content": "a"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        },
        Usage(5, 1),
    ),
]


@pytest.mark.parametrize(
    ("provider", "chunk", "expected"),
    [case[1:] for case in CHUNKS],
    ids=[case[0] for case in CHUNKS],
)
def test_usage_from_chunk(provider: str, chunk: Mapping[str, Any], expected: Usage | None) -> None:
    """Streamed chunks yield usage from `usage` or Groq's `x_groq.usage`, else None."""
    assert usage_from_chunk(chunk, provider=provider) == expected


def test_total_tokens() -> None:
    """total_tokens is prompt plus completion."""
    assert Usage(prompt_tokens=7, completion_tokens=5, cached_tokens=3).total_tokens == 12


# --- unknown models, warnings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("nvidia", "meta/llama-3.1-8b-instruct"),
        ("openai", "gpt-nonexistent-9"),
        ("anthropic", "claude-unknown"),
        ("mistral-ish", "some-model"),
    ],
)
def test_unknown_model_is_none_with_one_warning(
    prices: GenaiPrices, pricing_log: pytest.LogCaptureFixture, provider: str, model: str
) -> None:
    """An unknown model costs None and logs one warning, however often it is priced."""
    for _ in range(5):
        assert prices.cost(provider, model, Usage(prompt_tokens=10), when=NOON) is None
    assert len(warnings_for(pricing_log, repr(model))) == 1


def test_unpriced_measure_is_none_with_one_warning(
    prices: GenaiPrices, pricing_log: pytest.LogCaptureFixture
) -> None:
    """A call measured in a unit the model is not priced in costs None, never a silent 0."""
    for _ in range(3):
        assert prices.cost("openai", "whisper-1", Usage(prompt_tokens=10), when=NOON) is None
        assert prices.cost("openai", "gpt-4o", Usage(audio_seconds=5), when=NOON) is None
        assert prices.cost("openai", "gpt-4o", Usage(images=1), when=NOON) is None
        assert prices.cost("openai", "gpt-4o-mini-tts", Usage(characters=50), when=NOON) is None
    assert len(warnings_for(pricing_log, "no token price for openai model 'whisper-1'")) == 1
    assert len(warnings_for(pricing_log, "no audio price for openai model 'gpt-4o'")) == 1
    assert len(warnings_for(pricing_log, "no per-image price")) == 1
    assert len(warnings_for(pricing_log, "no character price")) == 1


def test_no_python_warnings_on_the_request_path(prices: GenaiPrices) -> None:
    """Pricing every kind of usage emits no Python warning (only known genai-prices keys)."""
    usages = [
        Usage(1000, 500, cached_tokens=100, cache_write_tokens=50, reasoning_tokens=20),
        Usage(100, 50, audio_prompt_tokens=40, audio_completion_tokens=30),
        Usage(audio_seconds=12.5),
        Usage(characters=300),
        Usage(images=1, image_size="1024x1024"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for usage in usages:
            for provider, model in [
                ("openai", "gpt-4o"),
                ("openai", "whisper-1"),
                ("openai", "dall-e-3"),
            ]:
                prices.cost(provider, model, usage, when=NOON)


def test_inconsistent_usage_does_not_raise(prices: GenaiPrices) -> None:
    """A hand-built usage whose subsets exceed their totals is priced, not rejected."""
    usage = Usage(prompt_tokens=10, cached_tokens=50, cache_write_tokens=50, reasoning_tokens=5)
    assert prices.cost("openai", "gpt-4o-mini", usage, when=NOON) == Decimal("0.075") * 10 / MILLION


# --- gaps table and overrides ---------------------------------------------------------------------

DALLE = [
    ("dall-e-3", "1024x1024", "standard", "0.040"),
    ("dall-e-3", "1024x1792", "standard", "0.080"),
    ("dall-e-3", "1792x1024", "standard", "0.080"),
    ("dall-e-3", "1024x1024", "hd", "0.080"),
    ("dall-e-3", "1024x1792", "hd", "0.120"),
    ("dall-e-3", "1792x1024", "hd", "0.120"),
    ("dall-e-3", None, None, "0.040"),
    ("dall-e-3", "1024x1024", "auto", "0.040"),
    ("DALL-E-3", "1024X1792", "HD", "0.120"),
    ("dall-e-2", "1024x1024", None, "0.020"),
    ("dall-e-2", "512x512", "standard", "0.018"),
    ("dall-e-2", "256x256", None, "0.016"),
]


@pytest.mark.parametrize(("model", "size", "quality", "per_image"), DALLE)
@pytest.mark.parametrize("images", [1, 3])
def test_dalle_per_image_prices(
    prices: GenaiPrices,
    model: str,
    size: str | None,
    quality: str | None,
    per_image: str,
    images: int,
) -> None:
    """DALL·E costs the number of images times the price of its size and quality."""
    usage = Usage(images=images, image_size=size, image_quality=quality)
    assert prices.cost("openai", model, usage, when=NOON) == images * Decimal(per_image)


def test_dalle_unknown_size_is_none(
    prices: GenaiPrices, pricing_log: pytest.LogCaptureFixture
) -> None:
    """A DALL·E size or quality with no listed price costs None."""
    usage = Usage(images=1, image_size="512x512", image_quality="hd")
    assert prices.cost("openai", "dall-e-3", usage, when=NOON) is None
    assert prices.cost("openai", "dall-e-3", usage, when=NOON) is None
    assert len(warnings_for(pricing_log, "no per-image price for openai model 'dall-e-3'")) == 1


NVIDIA_MODEL = "meta/llama-3.1-8b-instruct"
OVERRIDES = {
    ("nvidia", NVIDIA_MODEL): ModelPrice(
        input_per_mtok=Decimal("0.10"), output_per_mtok=Decimal("0.20")
    ),
    ("nvidia", "nvidia/nv-embedqa-e5-v5"): ModelPrice(),
    ("OpenAI", "GPT-4o"): ModelPrice(
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
        cached_input_per_mtok=Decimal("0.5"),
        cache_write_per_mtok=Decimal("1.5"),
    ),
    ("google", "models/gemini-2.5-flash"): ModelPrice(input_per_mtok=Decimal("9")),
    ("groq", "whisper-large-v3"): ModelPrice(per_audio_hour=Decimal("0.36")),
    ("groq", "canopylabs/orpheus-v1-english"): ModelPrice(per_million_characters=Decimal("10")),
    ("openai", "dall-e-3"): ModelPrice(per_image={("1024x1024", "standard"): Decimal("0.05")}),
}

OVERRIDDEN = [
    ("nvidia", NVIDIA_MODEL, Usage(MILLION, MILLION), "0.30"),
    ("nvidia", "META/Llama-3.1-8B-Instruct", Usage(MILLION, 0), "0.10"),
    ("nvidia", "nvidia/nv-embedqa-e5-v5", Usage(MILLION), "0"),
    (
        "openai",
        "gpt-4o",
        Usage(4 * MILLION, MILLION, cached_tokens=MILLION, cache_write_tokens=MILLION),
        "6.0",
    ),
    ("google", "gemini-2.5-flash", Usage(MILLION), "9"),
    ("groq", "whisper-large-v3", Usage(audio_seconds=60), "0.006"),
    ("groq", "canopylabs/orpheus-v1-english", Usage(characters=1000), "0.01"),
    ("openai", "dall-e-3", Usage(images=2), "0.10"),
    ("openai", "gpt-4o-mini", Usage(MILLION), "0.15"),
]


@pytest.mark.parametrize(("provider", "model", "usage", "expected"), OVERRIDDEN)
def test_extra_prices_override(provider: str, model: str, usage: Usage, expected: str) -> None:
    """extra_prices prices any (provider, model), ahead of the built-in table and genai-prices."""
    prices = GenaiPrices(extra_prices=OVERRIDES)
    assert prices.cost(provider, model, usage, when=NOON) == Decimal(expected)


def test_a_cost_names_where_its_price_came_from() -> None:
    """``operator`` for extra_prices (names matched as prices are), ``price_table`` for the
    table, ``unpriced`` without a cost; with no extra prices nothing is the operator's."""
    prices = GenaiPrices(extra_prices=OVERRIDES)
    assert cost_source(prices, "openai", "gpt-4o", Decimal(1)) == "operator"
    assert cost_source(prices, " OpenAI", "GPT-4o ", Decimal(1)) == "operator"
    assert cost_source(prices, "openai", "gpt-4.1", Decimal(1)) == "price_table"
    assert cost_source(prices, "openai", "gpt-4o", None) == "unpriced"
    assert cost_source(GenaiPrices(), "openai", "gpt-4o", Decimal(1)) == "price_table"


@pytest.mark.parametrize(
    ("price", "usage"),
    [
        (ModelPrice(input_per_mtok=Decimal(1)), Usage(audio_seconds=3)),
        (ModelPrice(per_audio_hour=Decimal(1)), Usage(prompt_tokens=3)),
        (ModelPrice(per_image={("1024x1024", "standard"): Decimal(1)}), Usage(characters=3)),
        (ModelPrice(per_million_characters=Decimal(1)), Usage(images=1)),
    ],
)
def test_model_price_without_matching_measure_is_none(price: ModelPrice, usage: Usage) -> None:
    """A table price for other measures than the call's yields None, not 0."""
    assert price.cost(usage) is None


def test_cache_size_must_be_positive() -> None:
    """A zero-sized cache is refused."""
    with pytest.raises(ValueError, match="cache_size"):
        GenaiPrices(cache_size=0)


# --- the cached path agrees with genai-prices -----------------------------------------------------

SAMPLE_MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-2024-11-20"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1"),
    ("openai", "o3-mini"),
    ("openai", "text-embedding-3-large"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-opus-4-1"),
    ("groq", "llama-3.3-70b-versatile"),
    ("groq", "llama-3.1-8b-instant"),
    ("groq", "openai/gpt-oss-120b"),
    ("deepseek", "deepseek-chat"),
    ("deepseek", "deepseek-reasoner"),
    ("google", "gemini-2.5-flash"),
    ("google", "gemini-2.5-pro"),
    ("google", "claude-sonnet-4-5"),
]
SAMPLE_TIMES = [
    datetime(2025, 3, 1, 3, 0, tzinfo=UTC),
    datetime(2026, 10, 13, 16, 29, tzinfo=UTC),
    datetime(2026, 10, 14, 16, 31, tzinfo=UTC),
    NOON,
    EVENING,
]


def sample_usages(rng: random.Random) -> Iterator[Usage]:
    """Token usages across sizes (incl. above the 200k cliff tiers) with consistent subsets."""
    for top in (0, 2_000, 250_000):
        prompt = rng.randint(0, top) if top else 0
        cached = rng.randint(0, prompt // 2)
        written = rng.randint(0, (prompt - cached) // 2)
        completion = rng.randint(0, 30_000)
        yield Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            cache_write_tokens=written,
            reasoning_tokens=rng.randint(0, completion),
        )


def genai_cost(provider: str, model: str, usage: Usage, when: datetime) -> Decimal:
    model_ref = model.removeprefix("models/")
    genai_usage = genai_prices.Usage(**genai_usage_values(usage))
    calculation = genai_prices.calc_price(
        genai_usage, model_ref, provider_id=provider, genai_request_timestamp=when
    )
    return calculation.total_price


def test_cached_path_matches_calc_price(prices: GenaiPrices) -> None:
    """The cached path equals genai_prices.calc_price over sampled models, usages and times."""
    rng = random.Random(20261102)
    compared = 0
    for provider, model in SAMPLE_MODELS:
        for when in SAMPLE_TIMES:
            for usage in sample_usages(rng):
                expected = genai_cost(provider, model, usage, when)
                assert prices.cost(provider, model, usage, when=when) == expected, (
                    provider,
                    model,
                    usage,
                    when,
                )
                compared += 1
    assert compared == len(SAMPLE_MODELS) * len(SAMPLE_TIMES) * 3


def test_token_fast_path_matches_calc_price(prices: GenaiPrices) -> None:
    """Chat usage (tokens, cache reads, reasoning) takes the plan's fast path, and it equals
    genai_prices.calc_price, per-request prices and over-reported cache reads included."""
    rng = random.Random(20261128)
    fast = 0
    for provider, model in SAMPLE_MODELS:
        for when in SAMPLE_TIMES:
            prompt = rng.randint(1, 3_000)
            completion = rng.randint(0, 900)
            for usage in (
                Usage(prompt_tokens=prompt, completion_tokens=completion),
                Usage(prompt, completion, cached_tokens=rng.randint(1, prompt)),
                Usage(prompt, completion, reasoning_tokens=completion // 2),
                Usage(prompt, completion, cached_tokens=prompt + 5),  # hand-built, inconsistent
            ):
                expected = genai_cost(provider, model, usage, when)
                assert prices.cost(provider, model, usage, when=when) == expected, (model, usage)
                entry = prices._entry(provider, model)
                assert isinstance(entry, _GenaiModel)
                fast += entry.plan_at(when).token_cost(usage) is not None
    assert fast > len(SAMPLE_MODELS) * len(SAMPLE_TIMES) * 2  # most of them took the fast path
    per_request = PricePlan(
        genai_types.ModelPrice(input_mtok=Decimal("3"), requests_kcount=Decimal("7"))
    )
    usage = Usage(prompt_tokens=1000, completion_tokens=10, cached_tokens=400)
    values = genai_usage_values(usage)
    assert per_request.token_cost(usage) == per_request.cost(values) == Decimal("0.010")
    # Breakdowns the plan prices apart, and tiers, take the general path.
    audio = PricePlan(
        genai_types.ModelPrice(input_mtok=Decimal("2"), input_audio_mtok=Decimal("40"))
    )
    assert audio.token_cost(Usage(100, 1, audio_prompt_tokens=60)) is None
    assert audio.token_cost(Usage(100, 1, image_prompt_tokens=60)) == Decimal("0.0002")
    tiered = genai_types.TieredPrices(base=Decimal("1"), tiers=[genai_types.Tier(10, Decimal("2"))])
    assert PricePlan(genai_types.ModelPrice(input_mtok=tiered)).token_cost(usage) is None


MULTIMODAL = [
    ("openai", "gpt-4o-transcribe", Usage(140, 22, audio_prompt_tokens=130)),
    ("openai", "gpt-4o-mini-transcribe", Usage(1400, 220, audio_prompt_tokens=1300)),
    (
        "openai",
        "gpt-image-1",
        Usage(50, 4160, image_prompt_tokens=10, image_completion_tokens=4160),
    ),
    (
        "openai",
        "gpt-image-1.5",
        Usage(50, 4160, image_prompt_tokens=10, image_completion_tokens=4000),
    ),
    ("openai", "gpt-audio", Usage(500, 900, audio_prompt_tokens=300, audio_completion_tokens=800)),
    ("google", "gemini-2.5-flash", Usage(1000, 10, audio_prompt_tokens=600)),
    ("openai", "whisper-1", Usage(audio_seconds=61.5)),
    ("groq", "whisper-large-v3", Usage(audio_seconds=4.2)),
    ("openai", "tts-1-hd", Usage(characters=4321)),
    ("groq", "canopylabs/orpheus-arabic-saudi", Usage(characters=77)),
]


@pytest.mark.parametrize(("provider", "model", "usage"), MULTIMODAL)
def test_multimodal_matches_calc_price(
    prices: GenaiPrices, provider: str, model: str, usage: Usage
) -> None:
    """Audio, image and character usage is priced exactly as genai-prices prices it."""
    for when in (NOON, EVENING):
        expected = genai_cost(provider, model, usage, when)
        assert expected > 0
        assert prices.cost(provider, model, usage, when=when) == expected


# --- caching --------------------------------------------------------------------------------------


def test_each_model_is_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """genai-prices resolves a (provider, model) once, however many calls and times follow."""
    calls: list[str] = []
    original = data_snapshot.DataSnapshot.find_provider_model

    def counting(self: data_snapshot.DataSnapshot, model_ref: str, *args: Any) -> Any:
        calls.append(model_ref)
        return original(self, model_ref, *args)

    monkeypatch.setattr(data_snapshot.DataSnapshot, "find_provider_model", counting)
    prices = GenaiPrices()
    for when in SAMPLE_TIMES:
        for _ in range(3):
            prices.cost("deepseek", "deepseek-chat", Usage(10, 10), when=when)
            prices.cost("openai", "gpt-4o", Usage(10, 10), when=when)
            prices.cost("openai", "no-such-model", Usage(10, 10), when=when)
    assert sorted(calls) == ["deepseek-chat", "gpt-4o", "no-such-model"]


def test_lru_eviction_keeps_results_right() -> None:
    """A tiny cache evicts and re-resolves without changing any figure."""
    prices = GenaiPrices(cache_size=2)
    usage = Usage(prompt_tokens=MILLION, completion_tokens=MILLION)
    for _ in range(3):
        assert prices.cost("openai", "gpt-4o", usage, when=NOON) == Decimal("12.5")
        assert prices.cost("groq", "llama-3.3-70b-versatile", usage, when=NOON) == Decimal("1.38")
        assert prices.cost("deepseek", "deepseek-chat", usage, when=EVENING) == Decimal("0.685")


def test_replaced_price_data_drops_the_cache(prices: GenaiPrices) -> None:
    """When genai-prices' data is replaced (UpdatePrices), cached lookups are rebuilt from it."""
    usage = Usage(prompt_tokens=MILLION)
    assert prices.cost("openai", "gpt-4o", usage, when=NOON) == Decimal("2.5")
    empty = data_snapshot.DataSnapshot(providers=[], from_auto_update=True)
    data_snapshot.set_custom_snapshot(empty)
    try:
        assert prices.cost("openai", "gpt-4o", usage, when=NOON) is None
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert prices.cost("openai", "gpt-4o", usage, when=NOON) == Decimal("2.5")


# --- the compiled plan ----------------------------------------------------------------------------


def test_plan_prices_per_request_and_tiers_like_genai_prices() -> None:
    """A plan with per-request and tiered prices equals genai-prices' own ModelPrice.calc_price."""
    model_price = genai_types.ModelPrice(
        input_mtok=genai_types.TieredPrices(
            base=Decimal("1"),
            tiers=[genai_types.Tier(100, Decimal("3")), genai_types.Tier(10, Decimal("2"))],
        ),
        output_mtok=Decimal("4"),
        cache_read_mtok=Decimal("0.5"),
        requests_kcount=Decimal("7"),
    )
    plan = PricePlan(model_price)
    for prompt in (0, 5, 10, 11, 100, 101, 5000):
        usage = Usage(prompt_tokens=prompt, completion_tokens=3, cached_tokens=prompt // 3)
        values = genai_usage_values(usage)
        expected = model_price.calc_price(genai_prices.Usage(**values))["total_price"]
        assert plan.cost(values) == expected


def test_plan_ignores_unknown_price_keys() -> None:
    """A price key genai-prices does not know is skipped, as genai-prices skips it."""
    plan = PricePlan(genai_types.ModelPrice(input_mtok=Decimal("2"), teleport_mtok=Decimal("9")))
    assert plan.cost({"input_tokens": MILLION}) == Decimal("2")
    assert plan.families == frozenset({"tokens"})


def test_audio_falls_back_to_the_plan_when_genai_prices_rejects_it(
    prices: GenaiPrices, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If genai-prices refuses an audio usage, the compiled plan still prices it."""

    def refuse(*args: object, **kwargs: object) -> Any:
        raise ValueError("refused")

    monkeypatch.setattr(genai_types.ModelInfo, "calc_price", refuse)
    assert prices.cost("openai", "whisper-1", Usage(audio_seconds=60), when=NOON) == Decimal(
        "0.006"
    )


def test_warning_memory_is_bounded(
    pricing_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set of already-warned models is bounded; past the bound it starts afresh."""
    monkeypatch.setattr("byok_middleware.pricing.source._WARNED_LIMIT", 2)
    prices = GenaiPrices(cache_size=1)
    for model in ("m1", "m2", "m3", "m1"):
        assert prices.cost("nvidia", model, Usage(1), when=NOON) is None
    assert len(warnings_for(pricing_log, "no price known for nvidia model")) == 4


# --- the compiled plan over genai-prices' whole table ---------------------------------------------

# Usage shapes a gateway reports: plain chat, cache reads/writes with reasoning, a prompt above
# the 200k cliff tiers, audio and image tokens, speech seconds, TTS characters.
TABLE_USAGES = (
    Usage(prompt_tokens=1234, completion_tokens=567),
    Usage(1500, 800, cached_tokens=600, cache_write_tokens=300, reasoning_tokens=200),
    Usage(250_000, 4_000, cached_tokens=100_000),
    Usage(2000, 900, audio_prompt_tokens=700, image_prompt_tokens=500, audio_completion_tokens=300),
    Usage(50, 4160, image_prompt_tokens=10, image_completion_tokens=4000),
    Usage(audio_seconds=61.5),
    Usage(characters=4321),
)


def price_times(model: genai_types.ModelInfo) -> list[datetime]:
    """Request times that select each of a model's conditional prices at least once."""
    times = [NOON]
    if isinstance(model.prices, list):
        times.append(EVENING)  # off-peak windows
        for conditional in model.prices:
            constraint = conditional.constraint
            if isinstance(constraint, genai_types.StartDateConstraint):
                start = constraint.start_date
                times.append(datetime(start.year, start.month, start.day, 12, tzinfo=UTC))
            elif isinstance(constraint, genai_types.TimeOfDateConstraint):
                times.append(datetime.combine(NOON.date(), constraint.start_time, tzinfo=UTC))
    return times


def test_plan_matches_calc_price_over_the_whole_table() -> None:
    """Every priced model of every genai-prices provider, at every price period, in every usage
    shape: the compiled plan (and its token fast path) equals genai-prices' own calc_price.

    This pins down our reading of genai-prices' internal unit registry (``data_units``): an
    upgrade that changes it fails here, not in a tenant's ``cost_usd``."""
    snapshot = data_snapshot.get_snapshot()
    compared = models = 0
    for provider in snapshot.providers:
        for model in provider.models:
            models += 1
            for when in price_times(model):
                plan = PricePlan(model.get_prices(when))
                for usage in TABLE_USAGES:
                    values = genai_usage_values(usage)
                    with warnings.catch_warnings():
                        # genai-prices warns about a price key it does not know, then skips it.
                        warnings.simplefilter("ignore", UserWarning)
                        expected = model.calc_price(
                            genai_prices.Usage(**values), provider, genai_request_timestamp=when
                        ).total_price
                    where = (provider.id, model.id, when, usage)
                    assert plan.cost(values) == expected, where
                    fast = plan.token_cost(usage)
                    assert fast is None or fast == expected, where
                    compared += 1
    assert models > 1000  # the whole bundled table, not a sample
    assert compared >= models * len(TABLE_USAGES)
