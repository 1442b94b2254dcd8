"""Default answers for embeddings, models, moderations and images on the OpenAI wire."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from typing import Any, Final

from byok_middleware.fake.providers import MODELS, MODELS_CREATED
from byok_middleware.fake.wire import Call, Reply, dumps, error_reply, json_reply, word_count

#: Embedding width unless the request asks for `dimensions`.
EMBEDDING_DIM: Final = 8
#: A valid 1x1 PNG, the content of every generated image.
PNG_1X1_BASE64: Final = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"
    "AAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
#: Output tokens per gpt-image-* image (providers.md §1.9's example).
IMAGE_OUTPUT_TOKENS: Final = 4160
_MODERATION_CATEGORIES: Final = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def embedding_vector(item: Any, dim: int = EMBEDDING_DIM) -> list[float]:
    """A deterministic unit-range vector for one input, every value exactly a float32."""
    seed = hashlib.sha256(dumps(item)).digest()
    raw = b"".join(
        hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        for counter in range((dim * 4 + 31) // 32)
    )
    values = (int.from_bytes(raw[i * 4 : i * 4 + 4], "big") / 2**32 * 2 - 1 for i in range(dim))
    # Round through float32 so the float and base64 encodings carry identical numbers.
    return [struct.unpack("<f", struct.pack("<f", value))[0] for value in values]


_STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "can",
        "could",
        "do",
        "does",
        "for",
        "give",
        "i",
        "is",
        "it",
        "me",
        "of",
        "on",
        "please",
        "tell",
        "the",
        "to",
        "what",
        "whats",
        "which",
        "who",
        "why",
        "you",
        "your",
    ]
)


def bag_of_words_vector(item: Any, dim: int = EMBEDDING_DIM) -> list[float]:
    """A unit vector of the content words of ``item`` (each word hashed to a signed dimension):
    texts that share their content words are close, others are not. Models named with
    ``bag-of-words`` answer with these, so semantic-cache tests get paraphrases that match."""
    words = re.findall(r"[a-z0-9]+", str(item).lower())
    vector = [0.0] * dim
    for word in words:
        if word in _STOP_WORDS:
            continue
        digest = hashlib.sha256(word.encode()).digest()
        index = int.from_bytes(digest[:4], "big") % dim
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in vector]


def encode_base64(vector: list[float]) -> str:
    """A vector as base64 of little-endian float32, as OpenAI sends with encoding_format=base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def embeddings(call: Call) -> Reply:
    """`POST /embeddings`: one vector per input; usage counts whitespace words (at least 1)."""
    body = call.body_object() or {}
    model = body.get("model")
    inputs = _embedding_inputs(body.get("input"))
    if not isinstance(model, str) or not model or not inputs:
        return error_reply(call, 400, "'input' and 'model' are required properties")
    if call.provider == "nvidia" and "embedqa" in model and "input_type" not in body:
        # NVIDIA's asymmetric retrieval models insist on input_type (providers.md §5).
        return error_reply(call, 400, "'input_type' parameter is required for asymmetric models")
    dimensions = body.get("dimensions")
    dim = dimensions if isinstance(dimensions, int) and 0 < dimensions <= 4096 else EMBEDDING_DIM
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        embed = bag_of_words_vector if "bag-of-words" in model else embedding_vector
        vector = embed(item, dim)
        encoded: Any = encode_base64(vector) if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = max(1, word_count(inputs))
    result = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json_reply(call, result)


def models(call: Call) -> Reply:
    """`GET /models`: the provider's small fixed model list."""
    data = [
        {"id": model, "object": "model", "created": MODELS_CREATED, "owned_by": owner}
        for model, owner in MODELS[call.provider]
    ]
    return json_reply(call, {"object": "list", "data": data})


def moderations(call: Call) -> Reply:
    """`POST /moderations`: one unflagged result per input."""
    body = call.body_object() or {}
    raw = body.get("input")
    inputs = raw if isinstance(raw, list) else [raw]
    if raw is None or not inputs:
        return error_reply(call, 400, "'input' is a required property")
    model = body.get("model")
    result = {
        "id": f"modr-fake{call.seq:06d}",
        "model": model if isinstance(model, str) and model else "omni-moderation-latest",
        "results": [_moderation_result() for _ in inputs],
    }
    return json_reply(call, result)


def images(call: Call) -> Reply:
    """`POST /images/generations`: `n` images as url or b64_json; gpt-image-* adds usage."""
    body = call.body_object() or {}
    prompt = body.get("prompt")
    count = body.get("n", 1)
    if not isinstance(prompt, str) or not prompt:
        return error_reply(call, 400, "'prompt' is a required property")
    if not isinstance(count, int) or not 1 <= count <= 10:
        return error_reply(call, 400, "'n' must be between 1 and 10")
    model = body.get("model")
    model = model if isinstance(model, str) and model else "dall-e-2"
    token_model = model.startswith("gpt-image")
    as_base64 = token_model or body.get("response_format") == "b64_json"
    data = [_image(call, index, prompt, model, as_base64) for index in range(count)]
    result: dict[str, Any] = {"created": call.created, "data": data}
    if token_model:
        result |= _image_usage(body, prompt, count)
    return json_reply(call, result)


def _embedding_inputs(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        return []
    # A flat list of ints is ONE tokenised input; anything else is a batch.
    return [raw] if all(isinstance(item, int) for item in raw) else raw


def _moderation_result() -> dict[str, Any]:
    return {
        "flagged": False,
        "categories": dict.fromkeys(_MODERATION_CATEGORIES, False),
        "category_scores": dict.fromkeys(_MODERATION_CATEGORIES, 1e-06),
        "category_applied_input_types": {name: ["text"] for name in _MODERATION_CATEGORIES},
    }


def _image(call: Call, index: int, prompt: str, model: str, as_base64: bool) -> dict[str, Any]:
    item: dict[str, Any] = (
        {"b64_json": PNG_1X1_BASE64}
        if as_base64
        else {"url": f"https://fake-upstream.invalid/images/img-fake{call.seq:06d}-{index}.png"}
    )
    if model == "dall-e-3":
        item["revised_prompt"] = prompt
    return item


def _image_usage(body: dict[str, Any], prompt: str, count: int) -> dict[str, Any]:
    text_tokens = max(1, word_count(prompt))
    output = IMAGE_OUTPUT_TOKENS * count
    return {
        "background": "opaque",
        "output_format": "png",
        "quality": body.get("quality", "high"),
        "size": body.get("size", "1024x1024"),
        "usage": {
            "input_tokens": text_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"text_tokens": 0, "image_tokens": output},
            "total_tokens": text_tokens + output,
        },
    }
