"""Prior quality of a model before any feedback: public Arena Elo, from ``priors.json``.

``priors.json`` (kept in the repository) records its source, URL and the leaderboard snapshot
of every figure. A model's prior quality for a request is its Elo mapped to the expected score
against a 1300-Elo model, ``1 / (1 + 10 ** ((1300 - elo) / 400))``: Gemini 2.5 Pro (1473) is
0.73, GPT-4o mini (1273) 0.46, Llama 3.1 8B (1175) 0.33. Code requests use the Coding Elo where
the leaderboard gives one.

Fallback for a model the file does not list (documented in the file too): dated suffixes
(``-2024-08-06``, ``-20250514``), ``-latest`` and google's ``models/`` are ignored first; a
model still unknown gets the median Elo of its provider's listed models (or the file's default
Elo for a provider with none), plus the file's tier adjustment when its name reads small
(``mini``, ``nano``, ``8b``, ...) or large (``opus``, ``pro``, ...). Unknown models are marked
``prior: "fallback"`` in the route's transparency output.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["Prior", "Priors", "elo_quality", "load_priors"]

_REFERENCE_ELO = 1300.0
_DATED = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|-latest|-\d{4})$")


def elo_quality(elo: float) -> float:
    """Expected score against a reference model of 1300 Elo (0..1)."""
    return 1.0 / (1.0 + float(10.0 ** ((_REFERENCE_ELO - elo) / 400.0)))


@dataclass(frozen=True, slots=True)
class Prior:
    """A model's prior: overall and coding quality, and where it came from."""

    quality: float
    coding: float
    source: str  # "arena" (listed) or "fallback"

    def for_task(self, task: str) -> float:
        return self.coding if task == "code" else self.quality


class Priors:
    """Prior quality per ``provider/model``, with the documented fallback for unknown models."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        models = data.get("models")
        fallback = data.get("fallback")
        if not isinstance(models, Mapping) or not isinstance(fallback, Mapping):
            raise ValueError("priors need 'models' and 'fallback' objects")
        self.source = str(data.get("source", ""))
        self.url = str(data.get("url", ""))
        self._listed: dict[str, Prior] = {}
        by_provider: dict[str, list[float]] = {}
        for key, entry in models.items():
            elo = float(entry["elo"])
            coding = float(entry.get("coding", elo))
            self._listed[key.lower()] = Prior(elo_quality(elo), elo_quality(coding), "arena")
            by_provider.setdefault(key.split("/", 1)[0], []).append(elo)
        self._provider_elo = {p: statistics.median(elos) for p, elos in by_provider.items()}
        self._default_elo = float(fallback["elo"])
        tiers = fallback.get("tiers", {})
        self._small = float(tiers.get("small", 0)), tuple(fallback.get("small_words", ()))
        self._large = float(tiers.get("large", 0)), tuple(fallback.get("large_words", ()))
        self._cache: dict[str, Prior] = {}

    def prior(self, provider: str, model: str) -> Prior:
        """The prior of ``provider``'s ``model`` (listed, or by the fallback rule)."""
        key = f"{provider}/{model}".lower()
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        name = model.lower().removeprefix("models/")
        found = self._listed.get(f"{provider.lower()}/{name}")
        if found is None:
            found = self._listed.get(f"{provider.lower()}/{_DATED.sub('', name)}")
        if found is None:
            found = self._fallback(provider.lower(), name)
        if len(self._cache) < 4096:  # bounded: model names come from tenants' catalogues
            self._cache[key] = found
        return found

    def _fallback(self, provider: str, name: str) -> Prior:
        elo = self._provider_elo.get(provider, self._default_elo)
        small, small_words = self._small
        large, large_words = self._large
        if any(word in name for word in small_words):
            elo += small
        elif any(word in name for word in large_words):
            elo += large
        quality = elo_quality(elo)
        return Prior(quality, quality, "fallback")


def load_priors() -> Priors:
    """The priors bundled with the package (``byok_middleware/autoroute/priors.json``)."""
    text = resources.files("byok_middleware.autoroute").joinpath("priors.json").read_text("utf-8")
    return Priors(json.loads(text))
