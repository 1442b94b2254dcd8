"""Model names: ``provider/model`` routing, and bare names resolved through a catalogue."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime

from genai_prices import data_snapshot

from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway.calls import ModelRoute
from byok_middleware.pricing import GENAI_PROVIDER_IDS, PriceSource, Usage
from byok_middleware.providers.specs import PROVIDERS, split_model

__all__ = [
    "EXTRA_MODELS",
    "ModelCatalogue",
    "ModelRoute",
    "providers_serving",
    "resolve_model",
    "resolve_routes",
]

# Bare names genai-prices does not list for a provider that serves them (it has no NVIDIA data).
EXTRA_MODELS: Mapping[str, tuple[str, ...]] = {
    "meta/llama-3.1-8b-instruct": ("nvidia",),
    "meta/llama-3.1-70b-instruct": ("nvidia",),
    "meta/llama-3.1-405b-instruct": ("nvidia",),
    "meta/llama-3.3-70b-instruct": ("nvidia",),
    "deepseek-ai/deepseek-r1": ("nvidia",),
    "mistralai/mixtral-8x7b-instruct-v0.1": ("nvidia",),
}

# genai-prices lists models a provider bills for on other platforms (Claude on Vertex under
# google); our google endpoint is the Gemini API, which does not serve them.
_NOT_SERVED: Mapping[str, tuple[str, ...]] = {"google": ("claude",)}

# The reference call used to compare providers' prices for one model: 1M tokens in, 1M out.
_REFERENCE_USAGE = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)


def _validated(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("'model' is required and must be a string", param="model")
    if len(value) > 256:
        raise InvalidRequest("'model' is too long", param="model")
    if not value.isprintable():
        # NUL, newlines and other control characters: the name reaches the ledger and logs.
        raise InvalidRequest("'model' must not contain control characters", param="model")
    return value


def _unknown(value: str) -> InvalidRequest:
    return InvalidRequest(
        f"cannot tell which provider serves {value!r}: name it as provider/model, "
        f"with provider one of {', '.join(PROVIDERS)} (e.g. openai/gpt-4o)",
        param="model",
        code="model_not_found",
    )


def _is_dated_alias(name: str, model_id: str) -> bool:
    """``gpt-4o-2024-08-06`` is ``gpt-4o``; ``gpt-4o-mini`` is not."""
    if name == model_id:
        return True
    rest = name.removeprefix(model_id + "-")
    return rest != name and rest.replace("-", "").isdigit()


def providers_serving(name: str) -> tuple[str, ...]:
    """Our providers that serve the bare model ``name``, from genai-prices plus ``EXTRA_MODELS``.

    genai-prices matches loosely (``deepseek-r1-distill-llama-70b`` "contains" deepseek's
    reasoner), so only its exact model ids and their dated aliases count here.
    """
    lowered = name.strip().lower()
    found: list[str] = list(EXTRA_MODELS.get(lowered, ()))
    snapshot = data_snapshot.get_snapshot()
    for provider, genai_id in GENAI_PROVIDER_IDS.items():
        if genai_id is None or provider in found:
            continue
        if any(lowered.startswith(p) for p in _NOT_SERVED.get(provider, ())):
            continue
        try:
            found_provider, model = snapshot.find_provider_model(lowered, None, genai_id, None)
        except LookupError:
            continue
        if found_provider.id == genai_id and _is_dated_alias(lowered, model.id.lower()):
            found.append(provider)
    return tuple(found)


class ModelCatalogue:
    """Bare model names -> the providers serving them, priced for ordering; cached per name."""

    def __init__(self, prices: PriceSource, *, cache_size: int = 2048) -> None:
        self._prices = prices
        self._cache_size = cache_size
        self._cache: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ModelCatalogue(cached={len(self._cache)})"

    def providers(self, name: str) -> tuple[str, ...]:
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None:
            return cached
        found = providers_serving(name)
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()  # names are client input: bound the cache
            self._cache[name] = found
        return found

    def routes(self, name: str, when: datetime) -> tuple[ModelRoute, ...]:
        """The providers of ``name`` with their reference price (price source is cached)."""
        return tuple(
            ModelRoute(p, name, self._prices.cost(p, name, _REFERENCE_USAGE, when=when))
            for p in self.providers(name)
        )


def resolve_model(
    value: object, catalogue: ModelCatalogue | None = None, *, when: datetime | None = None
) -> ModelRoute:
    """Route ``provider/model``; a bare name through ``catalogue`` (its cheapest provider).

    A missing, non-string or unroutable model is a 400. Without a catalogue a bare name is
    unroutable (the historical behaviour); ``resolve_routes`` gives every provider of a bare name.
    """
    return resolve_routes(value, catalogue, when=when)[0]


def resolve_routes(
    value: object, catalogue: ModelCatalogue | None = None, *, when: datetime | None = None
) -> tuple[ModelRoute, ...]:
    """Every provider that may serve ``value``: one for ``provider/model``, several for a bare
    name served by several providers (cheapest first, unknown prices last)."""
    name = _validated(value)
    provider, model = split_model(name)
    if provider is not None:
        return (ModelRoute(provider, model),)
    if catalogue is None or when is None:
        raise _unknown(name)
    routes = catalogue.routes(name, when)
    if not routes:
        raise _unknown(name)
    return tuple(sorted(routes, key=lambda r: (r.price is None, r.price or 0)))
