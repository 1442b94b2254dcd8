"""Static facts about the six faked providers: URL prefixes, endpoints, model lists."""

from __future__ import annotations

from typing import Final

#: Every provider the fake speaks for, in a fixed order.
PROVIDERS: Final = ("openai", "anthropic", "groq", "deepseek", "nvidia", "google")

#: The path prefix under the fake's root URL that stands in for each provider's base URL.
PREFIXES: Final[dict[str, str]] = {
    "openai": "/openai/v1",
    "anthropic": "/anthropic",
    "groq": "/groq/openai/v1",
    "deepseek": "/deepseek",
    "nvidia": "/nvidia/v1",
    "google": "/google/v1beta/openai",
}

#: Providers whose errors use OpenAI's `{"error": {...}}` envelope.
OPENAI_ERROR_SHAPE: Final = frozenset({"openai", "groq", "deepseek"})

#: The OpenAI-wire endpoints each provider really offers (providers.md §0); others answer 404.
SUPPORTED_PATHS: Final[dict[str, frozenset[str]]] = {
    "openai": frozenset(
        {
            "/chat/completions",
            "/responses",
            "/embeddings",
            "/models",
            "/moderations",
            "/images/generations",
            "/audio/speech",
            "/audio/transcriptions",
            "/audio/translations",
        }
    ),
    "groq": frozenset(
        {
            "/chat/completions",
            "/models",
            "/audio/speech",
            "/audio/transcriptions",
            "/audio/translations",
        }
    ),
    "deepseek": frozenset({"/chat/completions", "/models"}),
    "nvidia": frozenset({"/chat/completions", "/embeddings", "/models"}),
    "google": frozenset({"/chat/completions", "/embeddings", "/models", "/images/generations"}),
}

#: `GET /models` answers: (id, owned_by) pairs per OpenAI-wire provider.
MODELS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "openai": (
        ("gpt-4o", "system"),
        ("gpt-4o-mini", "system"),
        ("text-embedding-3-small", "system"),
        ("whisper-1", "openai-internal"),
        ("tts-1", "openai-internal"),
        ("dall-e-3", "system"),
        ("omni-moderation-latest", "system"),
    ),
    "groq": (("llama-3.3-70b-versatile", "Meta"), ("whisper-large-v3", "OpenAI")),
    "deepseek": (("deepseek-chat", "deepseek"),),
    "nvidia": (("meta/llama-3.1-8b-instruct", "meta"), ("nvidia/nv-embedqa-e5-v5", "nvidia")),
    "google": (("models/gemini-2.5-flash", "google"),),
}

#: Anthropic `GET /v1/models` answers: (id, display_name, created_at).
ANTHROPIC_MODELS: Final = (
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
)

#: A fixed `created` stamp for model lists, so they are byte-for-byte deterministic.
MODELS_CREATED: Final = 1_715_367_049


def check_provider(provider: str) -> str:
    """Return `provider` unchanged, or raise ValueError naming the allowed set."""
    if provider not in PREFIXES:
        allowed = ", ".join(PROVIDERS)
        raise ValueError(f"unknown provider {provider!r}; expected one of: {allowed}")
    return provider


def split_path(path: str) -> tuple[str | None, str]:
    """Split a request path into (provider, path after its prefix); provider None if no match."""
    # Longest prefix first, so "/groq/openai/v1" is never mistaken for "/openai/v1".
    for provider, prefix in sorted(PREFIXES.items(), key=lambda item: -len(item[1])):
        if path == prefix or path.startswith(prefix + "/"):
            return provider, path[len(prefix) :] or "/"
    return None, path


def route_path(provider: str, path: str) -> str:
    """Normalise a recorded path for routing: no trailing slash; DeepSeek's optional `/v1`."""
    route = path.rstrip("/") or "/"
    if provider == "deepseek" and route.startswith("/v1/"):
        route = route[len("/v1") :]
    return route
