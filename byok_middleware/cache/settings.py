"""The cache's settings and its per-request controls.

``CacheSettings.from_env`` reads the ``BYOK_CACHE*`` variables; ``BYOKConfig.from_env`` (the one
place that reads the environment) calls it. The ``x-byok-cache`` request header is parsed by
:func:`parse_control`, and :func:`status_header` gives the value of the response header.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

from byok_middleware.errors import ConfigurationError, InvalidRequest

__all__ = [
    "CONTROL_HEADER",
    "SIMILARITY_HEADER",
    "CacheControl",
    "CacheMode",
    "CacheSettings",
    "parse_control",
    "status_header",
]

CONTROL_HEADER = "x-byok-cache"
SIMILARITY_HEADER = "x-byok-cache-similarity"


class CacheMode(enum.Enum):
    """How much caching a request gets: ``semantic`` includes ``exact``."""

    OFF = "off"
    EXACT = "exact"
    SEMANTIC = "semantic"

    @classmethod
    def parse(cls, value: str, *, name: str = "BYOK_CACHE") -> CacheMode:
        """Raises ConfigurationError naming ``name`` for anything but off|exact|semantic."""
        try:
            return cls(value.strip().lower() or "off")
        except ValueError:
            raise ConfigurationError(
                f"{name} must be off, exact or semantic, not {value!r}"
            ) from None


class CacheControl(enum.Enum):
    """The client's wish for one request (header ``x-byok-cache``)."""

    DEFAULT = "default"  # no header: look up, and store a good answer
    SKIP = "skip"  # neither look up nor store
    REFRESH = "refresh"  # do not look up; store the new answer over the old one
    NO_STORE = "no-store"  # look up; never store this answer

    @property
    def lookup(self) -> bool:
        return self in (CacheControl.DEFAULT, CacheControl.NO_STORE)

    @property
    def store(self) -> bool:
        return self in (CacheControl.DEFAULT, CacheControl.REFRESH)


def parse_control(value: str | None) -> CacheControl:
    """The control a header value asks for; no header (or an empty one) is ``DEFAULT``.

    Raises:
        InvalidRequest: (400) a value other than skip, refresh or no-store, naming the header.
    """
    if value is None or not value.strip():
        return CacheControl.DEFAULT
    text = value.strip().lower()
    if text != CacheControl.DEFAULT.value:
        for control in CacheControl:
            if control.value == text:
                return control
    raise InvalidRequest(
        f"the {CONTROL_HEADER} header must be skip, refresh or no-store",
        param=CONTROL_HEADER,
        code="invalid_cache_control",
    )


def status_header(mode: CacheMode, control: CacheControl, hit: bool) -> str | None:
    """The ``x-byok-cache`` response value: ``hit``, ``miss`` or ``skip``; None with the cache off.

    ``refresh`` reports ``skip``: the answer did not come from a lookup, even though it is stored.
    """
    if mode is CacheMode.OFF:
        return None
    if not control.lookup:
        return "skip"
    return "hit" if hit else "miss"


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number")
    return value


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Everything the cache is told by the operator.

    ``max_bytes`` bounds the sealed bytes of all tenants together (least recently used first out);
    ``lru_touch_seconds`` is how stale an entry's last-use time may get before a hit rewrites it
    (a hit on a SQL backend is then a read, not a write, in the steady state).

    ``hot_seconds``, ``hot_entries`` and ``hot_bytes`` bound the hot layer (``cache/hot.py``):
    exact entries a lookup opened, kept in this process for at most ``hot_seconds`` (0: none).

    ``store_delay_seconds`` is how long a stored answer may wait in this process before it is
    written (with the others that came meanwhile, in one transaction, after the response was
    sent); this process serves it at once, other replicas after the write. ``store_batch``
    pending answers are written without waiting for the delay.
    """

    mode: CacheMode = CacheMode.OFF
    ttl_seconds: float = 86400.0
    min_similarity: float = 0.95
    embedding_model: str = "openai/text-embedding-3-small"
    max_bytes: int = 256 * 1024 * 1024
    lru_touch_seconds: float = 60.0
    semantic_sync_seconds: float = 1.0
    semantic_candidates: int = 8
    hot_seconds: float = 5.0
    hot_entries: int = 1024
    hot_bytes: int = 16 * 1024 * 1024
    store_delay_seconds: float = 0.05
    store_batch: int = 64

    def __post_init__(self) -> None:
        if self.ttl_seconds <= 0:
            raise ConfigurationError("BYOK_CACHE_TTL must be a positive number of seconds")
        if not 0.0 < self.min_similarity <= 1.0:
            raise ConfigurationError("BYOK_CACHE_MIN_SIMILARITY must be in (0, 1]")
        if "/" not in self.embedding_model.strip("/"):
            raise ConfigurationError(
                "BYOK_CACHE_EMBEDDING_MODEL must be provider/model, "
                "e.g. openai/text-embedding-3-small"
            )
        if self.max_bytes <= 0:
            raise ConfigurationError("BYOK_CACHE_MAX_BYTES must be positive")
        if self.semantic_candidates < 1:
            raise ConfigurationError("semantic_candidates must be at least 1")
        if self.hot_seconds < 0 or self.hot_entries < 0 or self.hot_bytes < 0:
            raise ConfigurationError("hot_seconds, hot_entries and hot_bytes must not be negative")
        if not 0 <= self.store_delay_seconds <= 60:
            raise ConfigurationError("BYOK_CACHE_STORE_DELAY must be 0 to 60 seconds")
        if self.store_batch < 1:
            raise ConfigurationError("store_batch must be at least 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CacheSettings:
        """Read ``BYOK_CACHE``, ``BYOK_CACHE_TTL``, ``BYOK_CACHE_MIN_SIMILARITY``,
        ``BYOK_CACHE_EMBEDDING_MODEL``, ``BYOK_CACHE_MAX_BYTES`` and ``BYOK_CACHE_STORE_DELAY``;
        unset means the default.

        Raises:
            ConfigurationError: a value of the wrong kind or out of range, naming the variable.
        """
        default = cls()
        return cls(
            mode=CacheMode.parse(environ.get("BYOK_CACHE", "")),
            ttl_seconds=_number(environ, "BYOK_CACHE_TTL", default.ttl_seconds),
            min_similarity=_number(environ, "BYOK_CACHE_MIN_SIMILARITY", default.min_similarity),
            embedding_model=environ.get("BYOK_CACHE_EMBEDDING_MODEL", "").strip()
            or default.embedding_model,
            max_bytes=int(_number(environ, "BYOK_CACHE_MAX_BYTES", default.max_bytes)),
            store_delay_seconds=_number(
                environ, "BYOK_CACHE_STORE_DELAY", default.store_delay_seconds
            ),
        )
