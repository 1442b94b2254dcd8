"""Our own price table: the gaps genai-prices leaves (per-image DALL·E) and operator overrides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal

from byok_middleware.pricing.usage import Usage

__all__ = ["BUILTIN_PRICES", "DEFAULT_IMAGE_QUALITY", "DEFAULT_IMAGE_SIZE", "ModelPrice"]

DEFAULT_IMAGE_SIZE = "1024x1024"
DEFAULT_IMAGE_QUALITY = "standard"

_MILLION = Decimal(1_000_000)
_SECONDS_PER_HOUR = Decimal(3600)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """List prices of one model in USD; a field left ``None`` means "not priced that way".

    Token prices are per 1M tokens. ``cached_input_per_mtok`` and ``cache_write_per_mtok`` default
    to the input price. ``per_image`` maps ``(size, quality)`` (e.g. ``("1024x1024", "hd")``) to
    the price of one image. ``ModelPrice()`` with nothing set declares a model free (cost 0);
    a model priced only by some measures has no price (``None``) for a call measured otherwise.
    """

    input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    per_image: Mapping[tuple[str, str], Decimal] | None = None
    per_audio_hour: Decimal | None = None
    per_million_characters: Decimal | None = None

    def cost(self, usage: Usage) -> Decimal | None:
        """The cost of ``usage`` here, or ``None`` when none of its measures is priced."""
        is_free = all(getattr(self, field.name) is None for field in fields(self))
        if is_free:
            return Decimal(0)
        parts = [
            self._image_cost(usage),
            self._audio_cost(usage),
            self._characters_cost(usage),
            self._token_cost(usage),
        ]
        priced = [part for part in parts if part is not None]
        if not priced:
            return None
        return sum(priced, start=Decimal(0))

    def _token_cost(self, usage: Usage) -> Decimal | None:
        if self.input_per_mtok is None and self.output_per_mtok is None:
            return None
        if not usage.has_tokens and _has_other_measure(usage):
            return None
        input_price = self.input_per_mtok or Decimal(0)
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
        uncached = usage.prompt_tokens - cached - written
        total = (
            uncached * input_price
            + cached * _or(self.cached_input_per_mtok, input_price)
            + written * _or(self.cache_write_per_mtok, input_price)
            + usage.completion_tokens * (self.output_per_mtok or Decimal(0))
        )
        return total / _MILLION

    def _image_cost(self, usage: Usage) -> Decimal | None:
        if self.per_image is None or usage.images is None:
            return None
        size = (usage.image_size or DEFAULT_IMAGE_SIZE).lower()
        quality = (usage.image_quality or DEFAULT_IMAGE_QUALITY).lower()
        if quality == "auto":
            quality = DEFAULT_IMAGE_QUALITY
        price = self.per_image.get((size, quality))
        return None if price is None else usage.images * price

    def _audio_cost(self, usage: Usage) -> Decimal | None:
        if self.per_audio_hour is None or usage.audio_seconds is None:
            return None
        return Decimal(repr(usage.audio_seconds)) * self.per_audio_hour / _SECONDS_PER_HOUR

    def _characters_cost(self, usage: Usage) -> Decimal | None:
        if self.per_million_characters is None or usage.characters is None:
            return None
        return usage.characters * self.per_million_characters / _MILLION


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value


def _has_other_measure(usage: Usage) -> bool:
    return (
        usage.audio_seconds is not None or usage.characters is not None or usage.images is not None
    )


def _dalle(prices: Mapping[tuple[str, str], str]) -> ModelPrice:
    return ModelPrice(per_image={key: Decimal(value) for key, value in prices.items()})


# genai-prices has no per-image DALL·E prices (providers.md §1.9; openai.com/pricing).
BUILTIN_PRICES: Mapping[tuple[str, str], ModelPrice] = {
    ("openai", "dall-e-3"): _dalle(
        {
            ("1024x1024", "standard"): "0.040",
            ("1024x1792", "standard"): "0.080",
            ("1792x1024", "standard"): "0.080",
            ("1024x1024", "hd"): "0.080",
            ("1024x1792", "hd"): "0.120",
            ("1792x1024", "hd"): "0.120",
        }
    ),
    ("openai", "dall-e-2"): _dalle(
        {
            ("1024x1024", "standard"): "0.020",
            ("512x512", "standard"): "0.018",
            ("256x256", "standard"): "0.016",
        }
    ),
}
