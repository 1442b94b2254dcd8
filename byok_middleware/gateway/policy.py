"""A tenant's spend policy applied to one call: pure functions, no I/O.

* ``platform_refusal``: may the platform key serve this candidate (``platform_fallback``,
  ``platform_models``)?
* ``worst_case``: the most a call can cost, from the body the gateway is about to send:

  - input: the UTF-8 bytes of the whole upstream body, read as tokens. Every tokenizer in use
    (byte-level BPE for OpenAI, Anthropic, Llama, DeepSeek; SentencePiece with byte fallback for
    Gemini) spends at least one byte of text per token, and the JSON around the text (roles,
    quotes, field names) outweighs the few tokens of a chat template, so for text this is never
    below what the provider counts. Images sent by URL are the exception (a short URL, hundreds
    of tokens): each ``image_url`` part adds ``IMAGE_TOKENS``.
  - output: the request's limit (``max_tokens``, ``max_completion_tokens``,
    ``max_output_tokens``) times ``n``; without one, the model's maximum output from
    ``MAX_OUTPUT`` (the providers' documented limits), else genai-prices' context window (an
    answer never outgrows it), else ``FALLBACK_MAX_OUTPUT``.
  - embeddings and moderations: input only; images: ``n`` images at the size and quality asked;
    speech: the input's characters; a multipart upload (transcription): ``AUDIO_SECONDS``.
* ``clamp_body``: the body with its output limit lowered (``clamp_max_tokens``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from genai_prices import data_snapshot

from byok_middleware.gateway.calls import Candidate
from byok_middleware.gateway.health import Outcome
from byok_middleware.gateway.planning import RoutePlan, Skip
from byok_middleware.jsoncodec import dumps, loads
from byok_middleware.pricing import GENAI_PROVIDER_IDS, Usage
from byok_middleware.storage.base import TenantPolicy

__all__ = [
    "AUDIO_SECONDS",
    "FALLBACK_MAX_OUTPUT",
    "IMAGE_TOKENS",
    "MAX_OUTPUT",
    "OUTPUT_FIELDS",
    "WorstCase",
    "clamp_body",
    "max_output",
    "platform_refusal",
    "unpriced_blocked",
    "worst_case",
]

OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
IMAGE_TOKENS = 8_000  # an image by URL: above any provider's count for one high-detail image
AUDIO_SECONDS = 1_500.0  # a 25 MB upload (OpenAI's limit) of 128 kbit/s audio plays ~26 min
FALLBACK_MAX_OUTPUT = 32_768
# Documented maximum output tokens, by provider and model-name prefix (longest prefix wins).
MAX_OUTPUT: Mapping[str, Mapping[str, int]] = {
    "openai": {
        "gpt-4o": 16_384,
        "gpt-4.1": 32_768,
        "gpt-5": 128_000,
        "o1": 100_000,
        "o3": 100_000,
        "o4": 100_000,
        "gpt-4-turbo": 4_096,
        "gpt-3.5": 4_096,
    },
    "anthropic": {
        "claude-opus-4": 32_000,
        "claude-sonnet-4": 64_000,
        "claude-haiku-4": 64_000,
        "claude-3-7": 64_000,
        "claude-3-5": 8_192,
        "claude-3": 4_096,
    },
    "google": {"gemini-2.5": 65_536, "gemini-2.0": 8_192, "gemini-1.5": 8_192},
    "deepseek": {"deepseek-chat": 8_192, "deepseek-reasoner": 65_536},
}


# max_output's answers for the genai-prices snapshot they were read from (a new snapshot,
# which may know other context windows, starts afresh); bounded, as model names come from
# requests.
_MAX_OUTPUTS: dict[tuple[str, str], int] = {}
_MAX_OUTPUTS_OF: list[object] = [None]
_MAX_OUTPUTS_KEPT = 4_096


def max_output(provider: str, model: str) -> int:
    """The most tokens ``model`` may answer with (see the module docstring for the sources)."""
    snapshot = data_snapshot.get_snapshot()
    if _MAX_OUTPUTS_OF[0] is not snapshot or len(_MAX_OUTPUTS) >= _MAX_OUTPUTS_KEPT:
        _MAX_OUTPUTS.clear()
        _MAX_OUTPUTS_OF[0] = snapshot
    found = _MAX_OUTPUTS.get((provider, model))
    if found is None:
        found = _MAX_OUTPUTS[provider, model] = _max_output(snapshot, provider, model)
    return found


def _max_output(snapshot: data_snapshot.DataSnapshot, provider: str, model: str) -> int:
    name = model.lower().removeprefix("models/")
    table = MAX_OUTPUT.get(provider, {})
    matches = [prefix for prefix in table if name.startswith(prefix)]
    if matches:
        return table[max(matches, key=len)]
    genai_provider = GENAI_PROVIDER_IDS.get(provider, provider)
    if genai_provider is not None:
        try:
            _, info = snapshot.find_provider_model(name, None, genai_provider, None)
        except LookupError:
            pass
        else:
            if info.context_window:
                return int(info.context_window)
    return FALLBACK_MAX_OUTPUT


@dataclass(slots=True)
class WorstCase:
    """The usage a call can reach at most; ``output`` is its output-token bound (0: none),
    ``field`` the body field that sets it (None: the body sets none). Treat it as immutable
    (not ``frozen``: one is built per budgeted call, and frozen costs twice as much to build)."""

    usage: Usage
    output: int = 0
    field: str | None = None
    choices: int = 1


_OTHER_MEASURES = ("/images/generations", "/audio/speech")  # bodies read for more than limits


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


# The keys the worst case of a chat-like body reads, as they appear in JSON text. A key can be
# written otherwise only with a \u escape, so a body holding none of these and no "\u" has
# none of the keys: its worst case needs no parse (the common body sets no output limit).
_KEYS_READ = tuple(f'"{name}"'.encode() for name in (*OUTPUT_FIELDS, "n"))


def _reads_nothing(content: bytes) -> bool:
    """Whether ``content`` (text opening a JSON object) certainly holds none of the keys
    ``worst_case`` reads (``_KEYS_READ``); False when it may hold one: then it is parsed."""
    if content[:1] != b"{" or content.find(b"\\u") >= 0:
        return False
    for key in _KEYS_READ:  # noqa: SIM110 (a loop: no generator built per budgeted call)
        if content.find(key) >= 0:  # not ``in``, which first tries ``key`` as an integer
            return False
    return True


def worst_case(endpoint: str, content: object, provider: str, model: str) -> WorstCase:
    """The worst-case usage of a call whose upstream body is ``content``."""
    if not isinstance(content, bytes):
        return WorstCase(Usage(audio_seconds=AUDIO_SECONDS))  # a multipart upload
    size = len(content)
    if endpoint in ("/embeddings", "/moderations"):
        return WorstCase(Usage(prompt_tokens=size))  # input only, whatever the body holds
    images = content.count(b'"image_url"') + content.count(b'"type":"image"')
    prompt = size + images * IMAGE_TOKENS
    if endpoint not in _OTHER_MEASURES and _reads_nothing(content):
        output = max_output(provider, model)
        return WorstCase(Usage(prompt_tokens=prompt, completion_tokens=output), output)
    try:
        body = loads(content)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return WorstCase(Usage(prompt_tokens=size))
    if endpoint == "/images/generations":
        images = _count(body.get("n")) or 1
        size_asked = body.get("size") if isinstance(body.get("size"), str) else None
        quality = body.get("quality") if isinstance(body.get("quality"), str) else None
        return WorstCase(
            Usage(images=images, image_size=size_asked, image_quality=quality, prompt_tokens=size)
        )
    if endpoint == "/audio/speech":
        text = body.get("input")
        characters = len(text) if isinstance(text, str) else size
        return WorstCase(Usage(characters=characters))
    field: str | None = None
    limit: int | None = None
    for name in OUTPUT_FIELDS:  # the first that is a count sets the limit
        limit = _count(body.get(name))
        if limit is not None:
            field = name
            break
    n = body.get("n")
    choices = 1 if n is None else max(_count(n) or 1, 1)
    output = limit if limit is not None else max_output(provider, model)
    return WorstCase(
        Usage(prompt_tokens=prompt, completion_tokens=output * choices), output, field, choices
    )


def clamp_body(content: bytes, field: str | None, provider: str, tokens: int) -> bytes:
    """``content`` (a JSON object) with its output limit set to ``tokens``; ValueError when
    ``content`` is not a JSON object."""
    body = loads(content)
    if not isinstance(body, dict):
        raise ValueError("the body is not a JSON object")
    if field is None:
        # OpenAI's reasoning models refuse max_tokens; the others know max_tokens only.
        field = "max_completion_tokens" if provider == "openai" else "max_tokens"
    body[field] = tokens
    return dumps(body)


def unpriced_blocked(policy: TenantPolicy | None, budgeted: bool) -> bool:
    """Whether a model without a price is refused: ``unpriced`` if set, else when budgeted."""
    mode = policy.unpriced if policy is not None else None
    return mode == "block" or (mode is None and budgeted)


def _own_keys_failed_over(plan: RoutePlan, provider: str, outcomes: Sequence[Outcome]) -> bool:
    """Whether the tenant has keys for ``provider`` and every one failed in a way that lets the
    platform key serve (connection error, timeout, 5xx, 429; a key cooling down counts as a
    429, an invalid one as a 401)."""
    verdicts = [o in (Outcome.PROVIDER_FAILED, Outcome.RATE_LIMITED) for o in outcomes]
    for decision in plan.keys:
        if decision.record.provider != provider or decision.skip is None:
            continue
        if decision.skip is Skip.COOLING_DOWN:
            verdicts.append(True)
        elif decision.skip in (Skip.INVALID, Skip.LIMIT):
            verdicts.append(False)
    return bool(verdicts) and all(verdicts)


def platform_refusal(
    policy: TenantPolicy | None,
    candidate: Candidate,
    model: str,
    plan: RoutePlan,
    outcomes: Mapping[str, Sequence[Outcome]],
) -> str | None:
    """Why the platform ``candidate`` may not serve this tenant's call; None when it may.

    ``outcomes`` are the failures of the tenant's own keys so far in this call, by provider.
    """
    if policy is None or candidate.record is not None:
        return None
    name = f"{candidate.provider}/{model}"
    if policy.platform_fallback == "never":
        return "the tenant's policy sets platform_fallback to never"
    if policy.platform_fallback == "on_failure" and not _own_keys_failed_over(
        plan, candidate.provider, outcomes.get(candidate.provider, ())
    ):
        return (
            f"the tenant's policy sets platform_fallback to on_failure, and its own "
            f"{candidate.provider} keys did not fail with a connection error, timeout, 5xx or 429"
        )
    patterns = policy.platform_models
    if patterns is not None and not any(fnmatchcase(name, p) for p in patterns):
        return f"the tenant's policy platform_models does not include {name}"
    return None
