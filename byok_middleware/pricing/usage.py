"""Usage of one upstream call in OpenAI's terms, and its extraction from OpenAI-wire bodies."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["Usage", "usage_from_chunk", "usage_from_openai"]


@dataclass(slots=True)
class Usage:
    """Normalised usage of one call, in OpenAI's terms. Treat it as immutable.

    Not ``frozen``: one is built for every call, and a frozen dataclass costs about three times as
    much to construct in CPython (each field goes through ``object.__setattr__``), which
    callgrind showed at ~6% of the gateway's instructions per request.

    ``prompt_tokens`` is the TOTAL input including cache reads and writes; ``cached_tokens``,
    ``cache_write_tokens`` and the ``*_prompt_tokens`` breakdowns are subsets of it, and
    ``reasoning_tokens`` and the ``*_completion_tokens`` breakdowns are subsets of
    ``completion_tokens``. The non-token measures (``audio_seconds`` for speech-to-text,
    ``characters`` for text-to-speech, ``images`` for per-image models) are ``None`` when the call
    is not measured that way.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    audio_seconds: float | None = None
    characters: int | None = None
    images: int | None = None
    image_size: str | None = None
    image_quality: str | None = None
    # Multimodal breakdowns: models such as gpt-4o-transcribe or gpt-image-1 price these apart.
    audio_prompt_tokens: int = 0
    image_prompt_tokens: int = 0
    audio_completion_tokens: int = 0
    image_completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def has_tokens(self) -> bool:
        """Whether any token count is non-zero."""
        return self.prompt_tokens > 0 or self.completion_tokens > 0


def usage_from_openai(usage: Mapping[str, Any] | None, *, provider: str) -> Usage | None:
    """Normalise an OpenAI-wire ``usage`` object (chat, embeddings, images, transcriptions).

    Handles the dialects of openai, groq, deepseek, nvidia and google: DeepSeek's
    ``prompt_cache_hit_tokens`` stands in when ``prompt_tokens_details.cached_tokens`` is
    absent, and for google the thinking tokens its compat layer may leave out of
    ``completion_tokens`` are recovered from ``total_tokens`` (billed as output). The
    ``input_tokens``/``output_tokens`` shape (images, token-billed transcriptions) and
    ``{"type": "duration", "seconds": …}`` are accepted too. Returns ``None`` for a missing or
    empty usage. Subset counts are clamped to their totals, so the result is always consistent.
    """
    if not usage or not (type(usage) is dict or isinstance(usage, Mapping)):
        return None
    if usage.get("type") == "duration" or ("seconds" in usage and "prompt_tokens" not in usage):
        return Usage(audio_seconds=_seconds(usage.get("seconds")))
    if "prompt_tokens" not in usage and "input_tokens" in usage:
        return _from_input_output(usage)

    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    if not prompt_details and not completion_details and provider != "google":
        # No breakdown at all (Groq, NVIDIA, many compat layers): only DeepSeek's cache field.
        hits = usage.get("prompt_cache_hit_tokens")
        cached = 0 if hits is None else _count(hits)
        return Usage(prompt, completion, cached if cached <= prompt else prompt)
    prompt_details = _mapping(prompt_details)
    completion_details = _mapping(completion_details)
    cached_raw = prompt_details.get("cached_tokens")
    if cached_raw is None:
        # DeepSeek reports cache hits at the top level (prompt_tokens = hit + miss).
        cached_raw = usage.get("prompt_cache_hit_tokens")
    reasoning = _count(completion_details.get("reasoning_tokens"))
    if provider == "google":
        # Gemini's compat layer can leave thinking tokens out of completion_tokens while
        # total_tokens still counts them; they are billed as output (providers.md §6.1).
        thoughts = _count(usage.get("total_tokens")) - prompt - completion
        if thoughts > 0:
            completion += thoughts
            reasoning = max(reasoning, thoughts)
    return _consistent(
        prompt,
        completion,
        _count(cached_raw),
        _count(prompt_details.get("cache_write_tokens")),
        reasoning,
        _count(prompt_details.get("audio_tokens")),
        _count(prompt_details.get("image_tokens")),
        _count(completion_details.get("audio_tokens")),
        _count(completion_details.get("image_tokens")),
    )


def usage_from_chunk(chunk: Mapping[str, Any], *, provider: str) -> Usage | None:
    """Usage carried by one streamed chunk: a non-null ``usage`` or Groq's ``x_groq.usage``."""
    usage = chunk.get("usage")
    if isinstance(usage, Mapping) and usage:
        return usage_from_openai(usage, provider=provider)
    x_groq = chunk.get("x_groq")
    if isinstance(x_groq, Mapping):
        return usage_from_openai(_mapping(x_groq.get("usage")), provider=provider)
    return None


def _from_input_output(usage: Mapping[str, Any]) -> Usage:
    # Transcriptions spell it "input_token_details"; images and Responses "input_tokens_details".
    input_details = _mapping(usage.get("input_tokens_details") or usage.get("input_token_details"))
    output_details = _mapping(
        usage.get("output_tokens_details") or usage.get("output_token_details")
    )
    return _consistent(
        _count(usage.get("input_tokens")),
        _count(usage.get("output_tokens")),
        _count(input_details.get("cached_tokens")),
        _count(input_details.get("cache_write_tokens")),
        _count(output_details.get("reasoning_tokens")),
        _count(input_details.get("audio_tokens")),
        _count(input_details.get("image_tokens")),
        _count(output_details.get("audio_tokens")),
        _count(output_details.get("image_tokens")),
    )


def _consistent(
    prompt: int,
    completion: int,
    cached: int,
    cache_write: int,
    reasoning: int,
    audio_prompt: int,
    image_prompt: int,
    audio_completion: int,
    image_completion: int,
) -> Usage:
    """A ``Usage`` whose subsets never exceed their totals (upstreams occasionally over-report).

    Every call is metered through here, so it compares instead of calling ``min``.
    """
    if cached > prompt:
        cached = prompt
    uncached = prompt - cached
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        cache_write_tokens=cache_write if cache_write <= uncached else uncached,
        reasoning_tokens=reasoning if reasoning <= completion else completion,
        audio_prompt_tokens=audio_prompt if audio_prompt <= prompt else prompt,
        image_prompt_tokens=image_prompt if image_prompt <= prompt else prompt,
        audio_completion_tokens=audio_completion if audio_completion <= completion else completion,
        image_completion_tokens=image_completion if image_completion <= completion else completion,
    )


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _mapping(value: object) -> Mapping[str, Any]:
    if type(value) is dict:  # JSON objects: no ABC check
        return value
    return value if value is not None and isinstance(value, Mapping) else _EMPTY


def _count(value: object) -> int:
    """A token count from JSON: non-negative int; anything else (null, bool, text, NaN) is 0."""
    if type(value) is int:  # nearly every count: one type check, not four
        return value if value > 0 else 0
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and math.isfinite(value):
        return max(int(value), 0)
    return 0


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    seconds = float(value)
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0
