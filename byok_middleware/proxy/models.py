"""Model names: ``provider/model`` routing."""

from __future__ import annotations

from dataclasses import dataclass

from byok_middleware.errors import InvalidRequest
from byok_middleware.providers.specs import PROVIDERS, split_model

__all__ = ["ModelRoute", "resolve_model"]


@dataclass(frozen=True, slots=True)
class ModelRoute:
    provider: str
    model: str  # as sent upstream, without the provider prefix


def resolve_model(value: object) -> ModelRoute:
    """Route ``provider/model``; a missing, non-string or unroutable model is a 400."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("'model' is required and must be a string", param="model")
    if len(value) > 256:
        raise InvalidRequest("'model' is too long", param="model")
    provider, model = split_model(value)
    if provider is None:
        raise InvalidRequest(
            f"cannot tell which provider serves {value!r}: name it as provider/model, "
            f"with provider one of {', '.join(PROVIDERS)} (e.g. openai/gpt-4o)",
            param="model",
            code="model_not_found",
        )
    return ModelRoute(provider, model)
