"""What makes two requests "the same": the canonical form of a request and the keys made from it.

Sans-I/O. A key is the SHA-256 of the tenant id, the resolved ``provider/model``, the kind of call
and the canonical JSON (sorted keys, no whitespace) of every body field that can change the
answer. Fields that only shape the delivery (``stream``, ``stream_options``) or only label the
caller (``user``, ``metadata``, ...) are left out, so a streamed and a plain request share an entry.

Normalisations are the ones that cannot change an answer: ``max_completion_tokens`` alone is
``max_tokens``, a string ``stop`` is a one-item list, ``n`` absent is ``n: 1``, a float with an
integral value is that integer (JSON does not tell ``1`` and ``1.0`` apart).

For the semantic layer the canonical body is split in two: the conversation's text, which is
embedded, and everything else (roles, model, sampling and format parameters), whose hash a
candidate must match exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = ["CacheKind", "RequestKeys", "canonical_json", "request_keys"]

CacheKind = Literal["chat", "embeddings"]

# Delivery and labelling fields: they never change what the model answers.
IGNORED_FIELDS = frozenset(
    {
        "model",  # replaced by the resolved provider/model
        "stream",
        "stream_options",
        "user",
        "store",
        "metadata",
        "safety_identifier",
        "prompt_cache_key",
    }
)
_TOOL_FIELDS = ("tools", "functions", "tool_choice", "function_call", "parallel_tool_calls")
_VERSION = b"byok-cache-v1\x00"


def _normalise(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def canonical_body(body: Mapping[str, Any], kind: CacheKind) -> dict[str, Any]:
    """The fields of ``body`` that can change the answer, normalised."""
    out = {k: _normalise(v) for k, v in body.items() if k not in IGNORED_FIELDS and v is not None}
    if kind == "chat":
        if "max_completion_tokens" in out and "max_tokens" not in out:
            out["max_tokens"] = out.pop("max_completion_tokens")
        if isinstance(out.get("stop"), str):
            out["stop"] = [out["stop"]]
        out.setdefault("n", 1)
    return out


def canonical_json(value: Any) -> bytes:
    """Sorted-key, whitespace-free JSON: equal values give equal bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256(_VERSION)
    for part in parts:
        # Length-prefixed so that no two part lists share an encoding.
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


@dataclass(frozen=True, slots=True)
class RequestKeys:
    """The keys of one request. ``exact`` names its entry; ``group`` and ``text`` are set only when
    the request may use the semantic layer (``group`` hashes everything but the text)."""

    exact: str
    group: str | None
    text: str | None

    @property
    def semantic(self) -> bool:
        return self.group is not None


def _message_text(content: Any) -> str | None:
    """The text of a message's content, or None when it holds anything but text."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                return None
            texts.append(str(part.get("text", "")))
        return "\n".join(texts)
    return None


def _semantic_split(body: Mapping[str, Any]) -> tuple[dict[str, Any], str] | None:
    """(everything but the text, the text), or None when the request is not eligible: tools,
    tool messages, non-text content, or ``n`` other than 1."""
    if body.get("n", 1) != 1 or any(body.get(name) is not None for name in _TOOL_FIELDS):
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    roles: list[Any] = []
    lines: list[str] = []
    for message in messages:
        if not isinstance(message, dict) or set(message) - {"role", "content", "name"}:
            return None  # tool_calls, function_call, tool_call_id, audio, ...
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            return None
        text = _message_text(message.get("content"))
        if text is None:
            return None
        roles.append([role, message.get("name")])
        lines.append(f"{role}: {text}")
    rest = {k: v for k, v in body.items() if k != "messages"}
    rest["roles"] = roles
    return rest, "\n".join(lines)


def request_keys(
    tenant_id: str,
    provider: str,
    model: str,
    body: Mapping[str, Any],
    *,
    kind: CacheKind = "chat",
    semantic: bool = False,
    embedder: str = "",
) -> RequestKeys:
    """The keys of a request of ``tenant_id`` resolved to ``provider``/``model``.

    With ``semantic``, eligible chat requests also get a ``group`` (which names ``embedder`` too:
    vectors of different embedding models never meet) and the ``text`` to embed.
    """
    canon = canonical_body(body, kind)
    scope = (tenant_id.encode(), provider.encode(), model.encode(), kind.encode())
    exact = _digest(*scope, canonical_json(canon))
    if not semantic or kind != "chat":
        return RequestKeys(exact=exact, group=None, text=None)
    split = _semantic_split(canon)
    if split is None:
        return RequestKeys(exact=exact, group=None, text=None)
    rest, text = split
    group = _digest(*scope, b"semantic", embedder.encode(), canonical_json(rest))
    return RequestKeys(exact=exact, group=group, text=text)
