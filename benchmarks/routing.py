"""``python -m benchmarks.routing``: the ``model: "auto"`` router on a simulated workload.

The workload (documented in RESULTS.md's ``routing`` section when run):
- Nine models of five providers, priced from the package's price table (genai-prices via
  ``GenaiPrices``; list prices per 1M input and output tokens at a fixed date).
- Eight task classes, each a chat request shape that ``extract_features`` reads as it would a
  real one: general chat, code, math, reasoning, summary of a long text, translation (non-ASCII),
  JSON extraction (``response_format: json_schema``) and a tool call.
- Ground-truth quality of a model on a class = its prior for the class (Arena Elo, as the router
  sees it) plus a per-(model, class) offset the router does not know: a fixed part (small models
  weaker at math and reasoning, DeepSeek stronger at math, Claude at code, ...) and a seeded
  uniform part in [-0.12, 0.12]. A feedback score = truth + N(0, 0.1), clipped to 0..1, only for
  the model chosen (bandit feedback).
- Utility of a choice = truth - w x normalised expected cost (the router's own cost scale).
  Policies: always-cheapest, always-best (the highest Arena Elo), random, the oracle (highest true
  utility per request), the router with priors alone, and the router after N feedback events
  (default 2,000, seeded exploration on) on one tenant. Each is scored on the same 2,000
  evaluation requests, at w = 0.1, 0.5, 0.8, for three seeds.

It also times the router's decision (``extract_features`` + ``decide`` over the nine candidates,
with learned states): CPU per request, the best of five batches. The results replace the
``routing`` section of ``benchmarks/RESULTS.md`` (``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from benchmarks.results import replace_section
from byok_middleware.autoroute import (
    AutoRouter,
    LearnerState,
    ModelOption,
    RequestFeatures,
    extract_features,
    normalised_costs,
    unfit,
)
from byok_middleware.pricing import GenaiPrices, Usage

WEIGHTS = (0.1, 0.5, 0.8)
SEEDS = (1, 2, 3)
PRICE_DATE = datetime(2026, 11, 2, 12, tzinfo=UTC)
# provider, model, context window, max output, tools, images, JSON schema
MODELS = (
    ("openai", "gpt-4o", 128_000, 16_384, True, True, True),
    ("openai", "gpt-4o-mini", 128_000, 16_384, True, True, True),
    ("openai", "o3", 200_000, 100_000, True, True, True),
    ("anthropic", "claude-sonnet-4-5", 200_000, 64_000, True, True, False),
    ("groq", "llama-3.1-8b-instant", 131_072, 8_192, True, False, False),
    ("groq", "llama-3.3-70b-versatile", 131_072, 32_768, True, False, False),
    ("deepseek", "deepseek-chat", 64_000, 8_192, True, False, True),
    ("google", "gemini-2.5-flash", 1_048_576, 65_536, True, True, True),
    ("google", "gemini-2.5-pro", 1_048_576, 65_536, True, True, True),
)
# Offsets the priors do not know: (model substring, task) -> quality offset.
KNOWN_OFFSETS: Mapping[tuple[str, str], float] = {
    ("llama-3.1-8b", "math"): -0.15,
    ("llama-3.1-8b", "reasoning"): -0.15,
    ("gpt-4o-mini", "reasoning"): -0.08,
    ("deepseek-chat", "math"): 0.12,
    ("claude-sonnet", "code"): 0.12,
    ("o3", "reasoning"): 0.1,
    ("gemini-2.5-flash", "translate"): 0.08,
    ("llama-3.3-70b", "summarise"): 0.08,
}
_LOREM = "The committee met on Tuesday to review the quarterly figures and the hiring plan. "
TASKS: Mapping[str, Callable[[random.Random], dict[str, Any]]] = {
    "general": lambda r: _chat(f"What is a good name for a {r.choice(['cat', 'boat', 'cafe'])}?"),
    "code": lambda r: _chat(
        f"Fix this function:\n```python\ndef add(a, b):\n    return a - b  # {r.random()}\n```"
    ),
    "math": lambda r: _chat(f"Solve the equation {r.randint(2, 9)}x + 5 = {r.randint(20, 99)}."),
    "reasoning": lambda r: _chat(
        f"Think step by step: which of {r.randint(3, 9)} boxes holds the key if ...?"
    ),
    "summarise": lambda r: _chat("Summarise this report:\n" + _LOREM * r.randint(200, 600)),
    "translate": lambda r: _chat(f"Translate in English: 東京の天気は{r.randint(1, 30)}度です。"),
    "json": lambda r: {
        **_chat(f"Extract the name and age: Ana is {r.randint(20, 60)}."),
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {}}},
    },
    "tools": lambda r: {
        **_chat(f"Book a table for {r.randint(2, 8)} tonight."),
        "tools": [{"type": "function", "function": {"name": "book", "parameters": {}}}],
    },
}


def _chat(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 500}


def model_options() -> list[ModelOption]:
    """The nine candidates, with list prices per 1M tokens from the price table."""
    prices = GenaiPrices()
    options = []
    for provider, model, context, output, tools, images, schema in MODELS:
        mtok_in = prices.cost(provider, model, Usage(prompt_tokens=10**6), when=PRICE_DATE)
        mtok_out = prices.cost(provider, model, Usage(completion_tokens=10**6), when=PRICE_DATE)
        options.append(
            ModelOption(
                provider,
                model,
                1,
                float(mtok_in) if mtok_in is not None else None,
                float(mtok_out) if mtok_out is not None else None,
                context,
                output,
                tools,
                images,
                schema,
            )
        )
    return options


@dataclass(frozen=True, slots=True)
class Request:
    task: str
    features: RequestFeatures
    fit: tuple[int, ...]  # indexes of options that can serve it
    costs: Mapping[int, float]  # normalised cost per fit option


class World:
    """Options, ground truth and a request generator for one seed."""

    def __init__(self, seed: int, router: AutoRouter, options: Sequence[ModelOption]) -> None:
        self.rng = random.Random(seed)
        self.options = list(options)
        self.truth: dict[tuple[int, str], float] = {}
        for index, option in enumerate(self.options):
            prior = router.priors.prior(option.provider, option.model)
            for task in TASKS:
                known = sum(
                    v for (m, t), v in KNOWN_OFFSETS.items() if m in option.model and t == task
                )
                base = prior.for_task("code" if task == "code" else "general")
                value = base + known + self.rng.uniform(-0.12, 0.12)
                self.truth[index, task] = min(0.95, max(0.05, value))

    def request(self, rng: random.Random) -> Request:
        task = rng.choice(list(TASKS))
        features = extract_features(TASKS[task](rng))
        decision_fit = [i for i, o in enumerate(self.options) if _serves(o, features)]
        _, normalised = normalised_costs([self.options[i] for i in decision_fit], features)
        return Request(
            task, features, tuple(decision_fit), dict(zip(decision_fit, normalised, strict=True))
        )

    def utility(self, request: Request, index: int, weight: float) -> float:
        return self.truth[index, request.task] - weight * request.costs[index]


def _serves(option: ModelOption, features: RequestFeatures) -> bool:
    return unfit(option, features) is None


def run_seed(
    seed: int, events: int, router: AutoRouter, options: Sequence[ModelOption]
) -> dict[float, dict[str, float]]:
    """Every policy's mean utility on one seed's evaluation requests, per cost weight."""
    world = World(seed, router, options)
    eval_rng = random.Random(seed * 1000 + 1)
    evaluation = [world.request(eval_rng) for _ in range(2000)]
    return {w: run_weight(world, evaluation, w, seed, events, router) for w in WEIGHTS}


def _pick(router: AutoRouter, world: World, request: Request, weight: float, **kw: Any) -> int:
    fit = [world.options[i] for i in request.fit]
    decision = router.decide(request.features, fit, weight, **kw)
    if decision.chosen is None:
        raise RuntimeError("no candidate in the benchmark workload")
    return next(i for i in request.fit if world.options[i] is decision.chosen)


def run_weight(
    world: World,
    evaluation: Sequence[Request],
    weight: float,
    seed: int,
    events: int,
    router: AutoRouter,
) -> dict[str, float]:
    """Train one tenant on ``events`` feedback events, then score every policy."""
    tenant, shared = LearnerState.empty(), LearnerState.empty()
    train_rng = random.Random(seed * 31 + int(weight * 10))
    noise = random.Random(seed * 17)
    for _ in range(events):
        request = world.request(train_rng)
        chosen = _pick(router, world, request, weight, tenant=tenant, shared=shared, rng=train_rng)
        score = min(1.0, max(0.0, world.truth[chosen, request.task] + noise.gauss(0, 0.1)))
        key = world.options[chosen].key
        router.learn(key, request.features, score, tenant=tenant, shared=shared)
    pick_rng = random.Random(seed * 7 + int(weight * 10))
    priors = router.priors
    best = max(
        range(len(world.options)),
        key=lambda i: priors.prior(world.options[i].provider, world.options[i].model).quality,
    )
    policies: dict[str, Callable[[Request], int]] = {
        "oracle": lambda r: max(r.fit, key=lambda i: world.utility(r, i, weight)),
        "always-cheapest": lambda r: min(r.fit, key=lambda i: (r.costs[i], i)),
        # The highest-Elo model, or the best by Elo that can serve the request.
        "always-best": lambda r: max(
            r.fit,
            key=lambda i: (
                i == best,
                priors.prior(world.options[i].provider, world.options[i].model).quality,
            ),
        ),
        "random": lambda r: pick_rng.choice(r.fit),
        "router, priors only": lambda r: _pick(router, world, r, weight),
        f"router after {events:,} feedback events": lambda r: _pick(
            router, world, r, weight, tenant=tenant, shared=shared
        ),
    }
    return {
        name: statistics.fmean(world.utility(r, policy(r), weight) for r in evaluation)
        for name, policy in policies.items()
    }


def decision_cpu_us(router: AutoRouter, options: Sequence[ModelOption], events: int) -> float:
    """CPU per decision (features + decide), best of five batches, with learned states."""
    rng = random.Random(5)
    bodies = [TASKS[rng.choice(list(TASKS))](rng) for _ in range(500)]
    tenant, shared = LearnerState.empty(), LearnerState.empty()
    for body in bodies[: min(events, 500)]:
        features = extract_features(body)
        for option in options:
            router.learn(option.key, features, rng.random(), tenant=tenant, shared=shared)
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for body in bodies:
            router.decide(extract_features(body), options, 0.5, tenant=tenant, shared=shared)
        best = min(best, (time.process_time() - started) / len(bodies))
    return best * 1e6


def report(
    results: Mapping[int, Mapping[float, Mapping[str, float]]],
    events: int,
    cpu_us: float,
    options: Sequence[ModelOption],
) -> tuple[list[str], bool]:
    """RESULTS.md lines and whether every target is met."""
    learned = f"router after {events:,} feedback events"
    names = list(next(iter(results.values()))[WEIGHTS[0]])
    lines = [
        '## The `model: "auto"` router: `python -m benchmarks.routing`',
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; seeds {', '.join(map(str, results))}; "
        f"{events:,} feedback events per seed and weight; 2,000 evaluation requests.",
        "- Workload: 8 task classes (chat, code, math, reasoning, long summary, translation, "
        "JSON schema, tools) x 9 models; ground truth = the router's prior plus offsets it does "
        "not know (see `benchmarks/routing.py`); feedback = truth + N(0, 0.1) for the chosen "
        "model only. Utility = truth - w x normalised cost.",
        "- Prices (USD per 1M input / output tokens, genai-prices): "
        + "; ".join(f"{o.key} {o.input_per_mtok:g}/{o.output_per_mtok:g}" for o in options),
        "",
        "Mean utility per request (mean over seeds; the share of the oracle's in brackets):",
        "",
        "| policy | " + " | ".join(f"w = {w}" for w in WEIGHTS) + " |",
        "|---|" + "---:|" * len(WEIGHTS),
    ]
    mean: dict[float, dict[str, float]] = {
        w: {n: statistics.fmean(results[s][w][n] for s in results) for n in names} for w in WEIGHTS
    }
    for name in names:
        cells = [f"{mean[w][name]:.3f} ({mean[w][name] / mean[w]['oracle']:.0%})" for w in WEIGHTS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    checks = []
    for w in WEIGHTS:
        worst = min(results[s][w][learned] / results[s][w]["oracle"] for s in results)
        checks.append(
            (
                f">= 90% of the oracle after {events:,} events at w = {w} (worst seed {worst:.1%})",
                worst >= 0.9,
            )
        )
        priors_ok = all(
            results[s][w]["router, priors only"] > results[s][w]["random"] for s in results
        )
        checks.append((f"priors alone better than random at w = {w}, every seed", priors_ok))
    fixed = ("always-cheapest", "always-best", "random")
    beats = all(results[s][0.5][learned] > results[s][0.5][f] for s in results for f in fixed)
    checks.append(("better than every fixed policy at w = 0.5, every seed", beats))
    checks.append(
        (
            f"decision CPU {cpu_us:.0f} µs per request (features + decide, 9 candidates) < 200 µs",
            cpu_us < 200,
        )
    )
    lines += ["", "Targets:", ""]
    lines += [f"- {'✓' if ok else '✗'} {text}" for text, ok in checks]
    return lines, all(ok for _, ok in checks)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000, help="feedback events per seed/weight")
    parser.add_argument("--no-write", action="store_true", help="print only; keep RESULTS.md")
    args = parser.parse_args()
    router = AutoRouter()
    options = model_options()
    results = {seed: run_seed(seed, args.events, router, options) for seed in SEEDS}
    cpu_us = decision_cpu_us(router, options, args.events)
    lines, met = report(results, args.events, cpu_us, options)
    print("\n".join(lines))
    if not args.no_write:
        replace_section("routing", lines)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
