"""The feature vector of a chat request: what the router knows about "this kind of request".

Computed once per request from the OpenAI-shaped body (``messages``, ``tools``,
``response_format``, ``max_tokens``), in one pass over the text, with no I/O. The vector
(``RequestFeatures.vector``, ``FEATURE_NAMES`` in order) is what the bandit learns over:

=============  ===============================================================================
bias           always 1.0 (the model's offset for every request)
length         prompt length bucket / 3: <256 tokens 0, <2k 1/3, <16k 2/3, else 1
code           1.0 when the prompt holds code (a fence, or lines that read like source)
tools          1.0 when the request declares tools
images         1.0 when a message carries an image part
json           1.0 when ``response_format`` asks for a JSON schema or a JSON object
non_ascii      share of non-ASCII characters in the text sample (0..1): a language signal
math           1.0 on math hints in the last user turn (solve, equation, integral, …)
summarise      1.0 on summary hints (summarise, tl;dr, key points, …)
translate      1.0 on translation hints (translate, "in French", …)
reasoning      1.0 on reasoning hints (step by step, prove, why, puzzle, …)
=============  ===============================================================================

Tokens are estimated as characters / 4 plus 800 per image: cheap, and only used for the length
bucket, the context-window filter and the expected cost. Hints are English words and phrases,
read from the head and tail of the last user turn; code and language from the head and tail of
the whole text, so a long prompt costs no more to read than a short one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FEATURE_NAMES", "RequestFeatures", "extract_features"]

FEATURE_NAMES = (
    "bias",
    "length",
    "code",
    "tools",
    "images",
    "json",
    "non_ascii",
    "math",
    "summarise",
    "translate",
    "reasoning",
)
_CHARS_PER_TOKEN = 4
_TOKENS_PER_IMAGE = 800
_LENGTH_BUCKETS = (256, 2_048, 16_384)  # token bounds of buckets 0, 1, 2; above: bucket 3
# Bounded scans keep the cost flat on long prompts: regular expressions cost ~10 ns a character
# here, so task hints are read from the head and tail of the last user turn (where instructions
# sit) and code and language from the head and tail of the whole text.
_HINT_HEAD, _HINT_TAIL = 400, 200
_SAMPLE_HEAD, _SAMPLE_TAIL = 800, 400
_FENCE_WINDOW = 20_000  # characters searched for a code fence (a plain substring search)

_CODE_STARTS = (
    "def ", "class ", "import ", "from ", "#include", "public ", "function ", "const ", "let ",
    "SELECT ", "for (", "if (", "return ", "}",
)  # fmt: skip
_CODE_ENDS = (";", "{", "}")
_ARITHMETIC = re.compile(r"\d[ \t]*[-+*/^=][ \t]*\d")
_PUNCTUATION = str.maketrans({c: " " for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"})
_LANGUAGES = frozenset(
    (
        "english",
        "french",
        "german",
        "spanish",
        "italian",
        "chinese",
        "japanese",
        "korean",
        "portuguese",
        "russian",
        "arabic",
        "hindi",
        "dutch",
    )
)
# Task -> (single words, phrases); words are matched whole, phrases as substrings.
_HINTS: Mapping[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "math": (
        frozenset(
            (
                "solve",
                "equation",
                "integral",
                "derivative",
                "calculate",
                "compute",
                "probability",
                "algebra",
                "matrix",
                "theorem",
                "arithmetic",
            )
        ),
        ("prove that",),
    ),
    "summarise": (
        frozenset(["summarise", "summarize", "summary", "tldr", "condense", "abstract"]),
        ("tl;dr", "key points", "in short"),
    ),
    "translate": (frozenset(["translate", "translation"]), ()),
    "reasoning": (
        frozenset(["reason", "reasoning", "prove", "puzzle", "logic", "deduce"]),
        ("step by step", "explain why", "why does", "think carefully"),
    ),
}


def _ends(text: str, head: int, tail: int) -> str:
    """The head and tail of ``text`` (all of it when short)."""
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n" + text[-tail:]


def _reads_like_code(sample: str) -> bool:
    """Two lines or more that start or end the way source code does."""
    lines = 0
    for line in sample.splitlines():
        stripped = line.strip()
        if stripped.startswith(_CODE_STARTS) or stripped.endswith(_CODE_ENDS):
            lines += 1
            if lines >= 2:
                return True
    return False


def _hints(text: str) -> tuple[float, ...]:
    """math, summarise, translate, reasoning: 1.0 where the text carries the task's hints."""
    words = set(text.translate(_PUNCTUATION).split())
    found = []
    for name, (keywords, phrases) in _HINTS.items():
        hit = not words.isdisjoint(keywords) or any(phrase in text for phrase in phrases)
        if name == "math" and not hit:
            hit = _ARITHMETIC.search(text) is not None
        elif name == "translate" and not hit:
            hit = "in" in words and not words.isdisjoint(_LANGUAGES)
        found.append(1.0 if hit else 0.0)
    return tuple(found)


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """What the router knows about one request: its needs (hard filters) and its vector."""

    prompt_tokens: int  # estimated
    max_output_tokens: int | None  # what the request asks for (max_tokens / max_completion_tokens)
    needs_tools: bool
    needs_images: bool
    needs_json_schema: bool
    vector: tuple[float, ...]  # FEATURE_NAMES, in order

    @property
    def task(self) -> str:
        """The dominant task label (``code``, a hint name, or ``general``), for priors/reasons."""
        values = dict(zip(FEATURE_NAMES, self.vector, strict=True))
        if values["code"]:
            return "code"
        for name in ("math", "translate", "summarise", "reasoning"):
            if values[name]:
                return name
        return "general"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for ``GET /byok/route`` and for keeping with a request id."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "max_output_tokens": self.max_output_tokens,
            "task": self.task,
            "vector": dict(zip(FEATURE_NAMES, self.vector, strict=True)),
        }

    @classmethod
    def from_vector(
        cls,
        vector: Sequence[float],
        *,
        prompt_tokens: int = 0,
        max_output_tokens: int | None = None,
    ) -> RequestFeatures:
        """Rebuild features from a stored vector (feedback arrives after the request)."""
        if len(vector) != len(FEATURE_NAMES):
            raise ValueError(f"a feature vector has {len(FEATURE_NAMES)} values")
        values = tuple(float(v) for v in vector)
        names = dict(zip(FEATURE_NAMES, values, strict=True))
        return cls(
            prompt_tokens,
            max_output_tokens,
            bool(names["tools"]),
            bool(names["images"]),
            bool(names["json"]),
            values,
        )


def _texts(messages: object) -> tuple[list[str], int, str]:
    """All text parts, the number of image parts, and the last user turn's text."""
    texts: list[str] = []
    images = 0
    last_user = ""
    if not isinstance(messages, list):
        return texts, images, last_user
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        own: list[str] = []
        if isinstance(content, str):
            own.append(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, Mapping):
                    continue
                kind = part.get("type")
                if kind in ("image_url", "input_image", "image"):
                    images += 1
                text = part.get("text")
                if isinstance(text, str):
                    own.append(text)
        texts.extend(own)
        if message.get("role") == "user" and own:
            last_user = "\n".join(own)
    return texts, images, last_user


def _length_bucket(tokens: int) -> int:
    for bucket, bound in enumerate(_LENGTH_BUCKETS):
        if tokens < bound:
            return bucket
    return len(_LENGTH_BUCKETS)


def _non_ascii_share(sample: str) -> float:
    if not sample or sample.isascii():
        return 0.0
    # Extra UTF-8 bytes over characters: 1-3 per non-ASCII character, a cheap proxy.
    extra = len(sample.encode("utf-8", "surrogatepass")) - len(sample)
    return min(1.0, extra / (2 * len(sample)))


def _wants_json(response_format: object) -> bool:
    return isinstance(response_format, Mapping) and response_format.get("type") in (
        "json_schema",
        "json_object",
    )


def _max_output(body: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def extract_features(body: Mapping[str, Any]) -> RequestFeatures:
    """The features of an OpenAI chat-completions body (unknown shapes count as empty)."""
    texts, images, last_user = _texts(body.get("messages"))
    chars = sum(len(text) for text in texts)
    prompt_tokens = chars // _CHARS_PER_TOKEN + images * _TOKENS_PER_IMAGE
    whole = "\n".join(texts)
    sample = _ends(whole, _SAMPLE_HEAD, _SAMPLE_TAIL)
    has_code = "```" in whole[:_FENCE_WINDOW] or _reads_like_code(sample)
    hints = _hints(_ends(last_user, _HINT_HEAD, _HINT_TAIL).lower())
    tools = body.get("tools")
    needs_tools = isinstance(tools, list) and bool(tools)
    needs_json = _wants_json(body.get("response_format"))
    vector = (
        1.0,
        _length_bucket(prompt_tokens) / len(_LENGTH_BUCKETS),
        1.0 if has_code else 0.0,
        1.0 if needs_tools else 0.0,
        1.0 if images else 0.0,
        1.0 if needs_json else 0.0,
        _non_ascii_share(sample),
        *hints,
    )
    return RequestFeatures(
        prompt_tokens, _max_output(body), needs_tools, images > 0, needs_json, vector
    )
