"""``POST /embeddings`` for openai, google and nvidia, priced on ``usage.prompt_tokens``.

Two provider differences are smoothed over (providers.md §1.6, §5, §11.15):

* the openai SDK asks for ``encoding_format: "base64"`` unless told otherwise. OpenAI gets the
  request as sent. For the other providers, which may reject the parameter, it is removed and,
  when the client asked for base64, the returned float vectors are re-encoded as base64 of
  little-endian float32, exactly OpenAI's encoding, so every client gets what it asked for;
* NVIDIA's retrieval models refuse a request without ``input_type``: it defaults to ``"query"``.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call
from byok_middleware.providers.specs import Endpoint
from byok_middleware.proxy.pipeline import JsonEndpoint, optional_str

__all__ = ["EMBEDDINGS", "encode_float32_base64", "upstream_payload"]

_ENCODING_FORMATS = frozenset({"float", "base64"})


def _is_token_list(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, int) and not isinstance(item, bool) for item in value)
    )


def _validate(body: dict[str, Any]) -> None:
    raw = body.get("input")
    valid = (isinstance(raw, str) and raw != "") or _is_token_list(raw)
    if isinstance(raw, list) and raw and not valid:
        valid = all(isinstance(item, str) for item in raw) or all(map(_is_token_list, raw))
    if not valid:
        raise InvalidRequest(
            "'input' must be a non-empty string, an array of strings, or token arrays",
            param="input",
        )
    encoding = optional_str(body, "encoding_format")
    if encoding is not None and encoding not in _ENCODING_FORMATS:
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise InvalidRequest("'dimensions' must be a positive integer", param="dimensions")
    optional_str(body, "input_type")
    optional_str(body, "user")


def upstream_payload(body: dict[str, Any], provider: str, model: str) -> dict[str, Any]:
    """The body sent to ``provider``: model without prefix, provider-specific defaults."""
    payload = dict(body)
    payload["model"] = model
    if provider != "openai":
        payload.pop("encoding_format", None)
    if provider == "nvidia":
        payload.setdefault("input_type", "query")
    return payload


def encode_float32_base64(vector: list[Any]) -> str | None:
    """A float vector as OpenAI's base64 of little-endian float32; None if it is not one."""
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in vector
    ):
        return None
    try:
        packed = struct.pack(f"<{len(vector)}f", *vector)
    except (OverflowError, struct.error):
        return None  # a value outside float32's range: leave the floats as they are
    return base64.b64encode(packed).decode("ascii")


def _reencode_base64(data: dict[str, Any]) -> None:
    items = data.get("data")
    if not isinstance(items, list):
        return
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("embedding"), list):
            encoded = encode_float32_base64(item["embedding"])
            if encoded is not None:
                item["embedding"] = encoded


def _payload(body: dict[str, Any], call: Call) -> dict[str, Any]:
    return upstream_payload(body, call.provider, call.model)


def _rewrite(body: dict[str, Any], data: dict[str, Any], call: Call) -> bool:
    if body.get("encoding_format") == "base64" and call.provider != "openai":
        _reencode_base64(data)  # the float vectors the provider sent, as the client asked
        return True
    return False  # vectors are most of the answer: splice the metadata, don't re-encode


EMBEDDINGS = JsonEndpoint(
    Endpoint.EMBEDDINGS, validate=_validate, payload=_payload, rewrite=_rewrite, cacheable=True
)
