"""The learning part: per-model ridge regressions over the feature vector (LinUCB arms).

After BaRP (arXiv:2510.07429): only the chosen model's reward is observed (bandit feedback), and
the cost preference is an input at decision time, not something learned. So an arm learns the
*quality* of its model for a kind of request, as a correction to the model's prior:

    quality(m, x) = prior(m, task(x)) + shared_m . x + tenant_m . x

``shared_m`` is learned from every tenant's feedback, ``tenant_m`` from one tenant's, on what
the shared part leaves; both are ridge regressions (``A = lam*I + sum x x^T``, ``b = sum
residual * x``) kept as ``A^-1`` (Sherman-Morrison updates, no inversions) and ``theta = A^-1 b``.
The exploration bonus is the tenant arm's LinUCB width ``alpha * sqrt(x^T A^-1 x)``, capped at
``max_bonus``: exploration only ever prefers a model whose utility is within that cap of the
best, and only among the candidates the request may use (so never outside the tenant's policy
or budget), and it shrinks as a model is observed for that kind of request.

State is plain data: ``LearnerState.to_json()`` / ``from_json()`` round-trip exactly (floats
as JSON numbers; ``A^-1`` as its upper triangle). A state holds at most ``max_arms`` models;
past that, the arm updated longest ago is dropped (the model falls back to its prior), so a
tenant's state stays under about ``max_arms * 1.6`` KB of JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from byok_middleware.autoroute.features import FEATURE_NAMES

__all__ = ["Arm", "LearnerState", "sparse"]

DIM = len(FEATURE_NAMES)
_FORMAT = 1


def sparse(x: Sequence[float]) -> tuple[tuple[int, float], ...]:
    """The non-zero entries of ``x`` as ``(index, value)``: most features are 0 on a request,
    so the arm maths runs over a handful of entries instead of all of them."""
    return tuple((i, v) for i, v in enumerate(x) if v)


class Arm:
    """One model's ridge regression: ``A^-1`` (DIM x DIM), ``b``, ``theta`` and counters."""

    __slots__ = ("a_inv", "b", "last", "n", "theta")

    def __init__(self, lam: float) -> None:
        self.a_inv = [[(1.0 / lam if i == j else 0.0) for j in range(DIM)] for i in range(DIM)]
        self.b = [0.0] * DIM
        self.theta = [0.0] * DIM
        self.n = 0
        self.last = 0  # the state's update counter when this arm was last updated

    def mean(self, nonzero: Sequence[tuple[int, float]]) -> float:
        """``theta . x``, with ``x`` given by its non-zero entries (``sparse(x)``)."""
        theta = self.theta
        total = 0.0
        for i, v in nonzero:
            total += theta[i] * v
        return total

    def width(self, nonzero: Sequence[tuple[int, float]]) -> float:
        """``sqrt(x^T A^-1 x)``: how little this arm knows about ``x`` (``sparse(x)``)."""
        total = 0.0
        a_inv = self.a_inv
        # Plain loops: this runs per candidate per request (the router's CPU budget).
        for i, xi in nonzero:
            row = a_inv[i]
            for j, xj in nonzero:
                total += xi * row[j] * xj
        return math.sqrt(total) if total > 0.0 else 0.0

    def update(self, x: Sequence[float], target: float, weight: float = 1.0) -> None:
        """Add one observation ``target`` at ``x`` (``weight`` scales ``x x^T`` and ``b``)."""
        a_inv = self.a_inv
        ax = [sum(r * v for r, v in zip(row, x, strict=True)) for row in a_inv]
        denominator = 1.0 / weight + sum(a * v for a, v in zip(ax, x, strict=True))
        # Upper triangle computed once and mirrored, so A^-1 stays exactly symmetric (its JSON
        # form is the upper triangle) and equal to what a round trip rebuilds.
        for i in range(DIM):
            axi = ax[i]
            if not axi:
                continue
            row = a_inv[i]
            for j in range(i, DIM):
                row[j] = a_inv[j][i] = row[j] - axi * ax[j] / denominator
        for i in range(DIM):
            self.b[i] += weight * target * x[i]
        self.theta = [sum(r * v for r, v in zip(row, self.b, strict=True)) for row in a_inv]
        self.n += 1

    def to_json(self) -> dict[str, Any]:
        upper = [self.a_inv[i][j] for i in range(DIM) for j in range(i, DIM)]
        return {"a_inv": upper, "b": list(self.b), "n": self.n, "last": self.last}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], lam: float) -> Arm:
        arm = cls(lam)
        upper = [float(v) for v in data["a_inv"]]
        b = [float(v) for v in data["b"]]
        if len(upper) != DIM * (DIM + 1) // 2 or len(b) != DIM:
            raise ValueError("arm state has the wrong dimensions")
        values = iter(upper)
        for i in range(DIM):
            for j in range(i, DIM):
                arm.a_inv[i][j] = arm.a_inv[j][i] = next(values)
        arm.b = b
        arm.theta = [sum(r * v for r, v in zip(row, b, strict=True)) for row in arm.a_inv]
        arm.n = int(data.get("n", 0))
        arm.last = int(data.get("last", 0))
        return arm


@dataclass(slots=True)
class LearnerState:
    """A set of arms keyed by ``provider/model``: one tenant's, or the shared one."""

    arms: dict[str, Arm]
    updates: int = 0
    max_arms: int = 24
    lam: float = 4.0  # ridge strength: how many observations the prior is worth

    @classmethod
    def empty(cls, *, max_arms: int = 24, lam: float = 4.0) -> LearnerState:
        if max_arms < 1 or lam <= 0:
            raise ValueError("max_arms must be >= 1 and lam > 0")
        return cls({}, 0, max_arms, lam)

    def arm(self, key: str) -> Arm | None:
        return self.arms.get(key)

    def observe(self, key: str, x: Sequence[float], target: float, weight: float = 1.0) -> None:
        """Learn ``target`` (a quality residual) for model ``key`` at ``x``; bounded in size."""
        arm = self.arms.get(key)
        if arm is None:
            if len(self.arms) >= self.max_arms:
                oldest = min(self.arms, key=lambda k: self.arms[k].last)
                del self.arms[oldest]
            arm = self.arms[key] = Arm(self.lam)
        self.updates += 1
        arm.last = self.updates
        arm.update(x, target, weight)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "features": list(FEATURE_NAMES),
            "lam": self.lam,
            "max_arms": self.max_arms,
            "updates": self.updates,
            "arms": {key: arm.to_json() for key, arm in sorted(self.arms.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LearnerState:
        """A state from ``to_json()``'s output; a state of other features starts empty."""
        lam = float(data.get("lam", 4.0))
        max_arms = int(data.get("max_arms", 24))
        if data.get("format") != _FORMAT or list(data.get("features", ())) != list(FEATURE_NAMES):
            # The feature vector changed since this state was learned: start again from priors.
            return cls.empty(max_arms=max_arms, lam=lam)
        arms = {str(k): Arm.from_json(v, lam) for k, v in dict(data.get("arms", {})).items()}
        state = cls(arms, int(data.get("updates", 0)), max_arms, lam)
        while len(state.arms) > max_arms:
            del state.arms[min(state.arms, key=lambda k: state.arms[k].last)]
        return state
