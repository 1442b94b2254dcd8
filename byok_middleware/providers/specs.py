"""The table of upstream providers: where they live, how they authenticate, what they serve."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["PROVIDERS", "Endpoint", "ProviderSpec", "WireFormat", "split_model"]


class WireFormat(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class Endpoint(StrEnum):
    """The proxied endpoints, named by their path below the prefix."""

    CHAT = "/chat/completions"
    EMBEDDINGS = "/embeddings"
    TRANSCRIPTIONS = "/audio/transcriptions"
    TRANSLATIONS = "/audio/translations"
    SPEECH = "/audio/speech"
    IMAGES = "/images/generations"
    MODERATIONS = "/moderations"
    MODELS = "/models"


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    base_url: str
    wire: WireFormat
    endpoints: frozenset[Endpoint]


_ALL_CHAT = frozenset({Endpoint.CHAT, Endpoint.MODELS})

PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            "openai",
            "https://api.openai.com/v1",
            WireFormat.OPENAI,
            frozenset(Endpoint),
        ),
        ProviderSpec("anthropic", "https://api.anthropic.com", WireFormat.ANTHROPIC, _ALL_CHAT),
        ProviderSpec(
            "groq",
            "https://api.groq.com/openai/v1",
            WireFormat.OPENAI,
            _ALL_CHAT | {Endpoint.TRANSCRIPTIONS, Endpoint.TRANSLATIONS, Endpoint.SPEECH},
        ),
        ProviderSpec("deepseek", "https://api.deepseek.com", WireFormat.OPENAI, _ALL_CHAT),
        ProviderSpec(
            "nvidia",
            "https://integrate.api.nvidia.com/v1",
            WireFormat.OPENAI,
            _ALL_CHAT | {Endpoint.EMBEDDINGS},
        ),
        ProviderSpec(
            "google",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            WireFormat.OPENAI,
            _ALL_CHAT | {Endpoint.EMBEDDINGS, Endpoint.IMAGES},
        ),
    )
}


def split_model(model: str) -> tuple[str | None, str]:
    """``"openai/gpt-4o"`` -> ``("openai", "gpt-4o")``; a bare name -> ``(None, model)``.

    Only the part before the first ``/`` names the provider, so
    ``nvidia/meta/llama-3.1-8b-instruct`` goes upstream as ``meta/llama-3.1-8b-instruct``.
    """
    provider, sep, rest = model.partition("/")
    if sep and provider in PROVIDERS and rest:
        return provider, rest
    return None, model
