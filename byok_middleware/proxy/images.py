"""``POST /images/generations``: DALL·E priced per image, gpt-image models by their usage.

The images response names no model (providers.md §1.9, §11.11), so the call is always priced with
the model of the request. A response with ``usage`` (gpt-image-*) is priced by tokens; one
without is priced per image from the request's ``size`` and ``quality`` (defaults 1024x1024,
standard) and the number of images returned.
"""

from __future__ import annotations

from typing import Any

from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call
from byok_middleware.pricing import Usage, usage_from_openai
from byok_middleware.providers.specs import Endpoint
from byok_middleware.proxy.pipeline import JsonEndpoint, optional_str

__all__ = ["IMAGES", "image_usage"]

MAX_IMAGES = 10


def _validate(body: dict[str, Any]) -> int:
    """Check the request; returns ``n``, the number of images asked for."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequest("'prompt' is required and must be a non-empty string", param="prompt")
    count = body.get("n", 1)
    if count is None:
        count = 1
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_IMAGES:
        raise InvalidRequest(f"'n' must be an integer from 1 to {MAX_IMAGES}", param="n")
    for name in ("size", "quality", "response_format", "style", "user"):
        optional_str(body, name)
    if body.get("stream") is True:
        raise InvalidRequest(
            "streamed image generation is not supported by the gateway", param="stream"
        )
    return count


def image_usage(body: dict[str, Any], data: Any, *, provider: str, requested: int) -> Usage | None:
    """Usage of an images call: the response's token usage, else the images it returned."""
    if not isinstance(data, dict):
        return None
    usage = usage_from_openai(data.get("usage"), provider=provider)
    if usage is not None and usage.has_tokens:
        return usage
    images = data.get("data")
    return Usage(
        images=len(images) if isinstance(images, list) else requested,
        image_size=optional_str(body, "size"),
        image_quality=optional_str(body, "quality"),
    )


def _usage(body: dict[str, Any], data: dict[str, Any], call: Call) -> Usage | None:
    return image_usage(body, data, provider=call.provider, requested=_validate(body))


IMAGES = JsonEndpoint(Endpoint.IMAGES, validate=_validate, usage=_usage)
