"""The model: "auto" router core: features, filtering, weights, priority, learning, state."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from byok_middleware.autoroute import (
    FEATURE_NAMES,
    AutoRouter,
    LearnerState,
    ModelOption,
    RepeatDetector,
    RequestFeatures,
    cost_weight_for,
    extract_features,
    implicit_reward,
    load_priors,
)

CHEAP = ModelOption("groq", "llama-3.1-8b-instant", 1, 0.05, 0.08, 131_072, 8_192)
MID = ModelOption("openai", "gpt-4o-mini", 1, 0.15, 0.6, 128_000, 16_384, True, True, True)
BEST = ModelOption("google", "gemini-2.5-pro", 1, 1.25, 10.0, 1_048_576, 65_536, True, True, True)
NO_TOOLS = ModelOption("deepseek", "deepseek-reasoner", 1, 0.55, 2.19, 64_000, 8_192, tools=False)


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def features(text: str = "Hello there", **extra: Any) -> RequestFeatures:
    return extract_features(chat(text, **extra))


@pytest.fixture
def router() -> AutoRouter:
    return AutoRouter()


# --- features -------------------------------------------------------------------------------------


def test_features_read_the_request() -> None:
    """Code, tools, images, JSON schema, language and task hints land in the vector."""
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Solve step by step: 2 + 2 = ?\n```py\nx = 1\n```"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                ],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}},
        "max_tokens": 50,
    }
    got = extract_features(body)
    values = dict(zip(FEATURE_NAMES, got.vector, strict=True))
    assert values["code"] == values["tools"] == values["images"] == values["json"] == 1.0
    assert values["math"] == values["reasoning"] == 1.0
    assert values["translate"] == values["summarise"] == values["non_ascii"] == 0.0
    assert got.needs_tools and got.needs_images and got.needs_json_schema
    assert got.max_output_tokens == 50
    assert got.prompt_tokens >= 800  # the image counts
    assert 0.3 < extract_features(chat("Traduis: 東京の天気")).vector[6] < 0.4  # 5 of 14
    assert features("a" * 40_000).vector[1] == 2 / 3  # ~10k tokens: the third bucket
    assert features("Summarise this:\n" + "words " * 5000).task == "summarise"


def test_features_of_a_malformed_body_are_empty() -> None:
    """A body without usable messages gives the bias alone, not an exception."""
    got = extract_features({"messages": "nope", "tools": "x", "max_tokens": True})
    assert got.vector == (1.0,) + (0.0,) * (len(FEATURE_NAMES) - 1)
    assert got.max_output_tokens is None and not got.needs_tools


# --- filtering and weights ------------------------------------------------------------------------


def test_candidates_that_cannot_serve_are_filtered(router: AutoRouter) -> None:
    """Tools, images, JSON schema, the output limit and the context window filter candidates."""
    request = features(
        "hi" * 200_000,  # ~100k tokens
        tools=[{"type": "function", "function": {"name": "f"}}],
        max_tokens=20_000,
    )
    decision = router.decide(request, [CHEAP, MID, BEST, NO_TOOLS], 0.5)
    assert decision.chosen == BEST
    reasons = {option.key: why for option, why in decision.unfit}
    assert reasons["deepseek/deepseek-reasoner"] == "no tool calling"
    assert reasons["openai/gpt-4o-mini"].startswith("max output 16384")
    assert reasons["groq/llama-3.1-8b-instant"].startswith("max output 8192")
    image = extract_features(
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
    )
    assert router.decide(image, [CHEAP, NO_TOOLS], 0.5).chosen is None
    schema = features("x", response_format={"type": "json_schema"})
    decision = router.decide(schema, [CHEAP, NO_TOOLS], 0.5)
    assert decision.chosen is None
    assert decision.reason == "no candidate can serve this request"
    assert {why for _, why in decision.unfit} == {"no JSON schema output"}


def test_cost_weight_moves_the_choice(router: AutoRouter) -> None:
    """auto:best picks the strongest model, auto:cheap the cheapest, when prices and priors
    disagree; the components are reported for every candidate."""
    request = features("Write a short poem about the sea.")
    best = router.decide(request, [CHEAP, MID, BEST], cost_weight_for("auto:best"))
    cheap = router.decide(request, [CHEAP, MID, BEST], cost_weight_for("auto:cheap"))
    assert best.chosen == BEST
    assert cheap.chosen == CHEAP
    shown = best.as_dict()
    assert shown["model"] == "google/gemini-2.5-pro" and shown["cost_weight"] == 0.1
    assert {c["model"] for c in shown["candidates"]} == {CHEAP.key, MID.key, BEST.key}
    for candidate in shown["candidates"]:
        assert candidate["utility"] == pytest.approx(
            candidate["quality"] - 0.1 * candidate["cost"], abs=1e-3
        )


@pytest.mark.parametrize(
    ("model", "header", "expected"),
    [
        ("auto", None, 0.5),
        ("auto:balanced", None, 0.5),
        ("auto:cheap", None, 0.8),
        ("auto:best", None, 0.1),
        ("auto:best", "0.3", 0.3),
        ("auto", "1", 1.0),
    ],
)
def test_cost_weight_for(model: str, header: str | None, expected: float) -> None:
    """Named forms map to their weights; the header overrides them."""
    assert cost_weight_for(model, header) == expected


@pytest.mark.parametrize(("model", "header"), [("auto:fast", None), ("auto", "2"), ("auto", "nan")])
def test_bad_cost_weight_is_refused(model: str, header: str | None) -> None:
    """An unknown auto form or a header outside 0..1 raises ValueError (a 400 upstream)."""
    with pytest.raises(ValueError, match="must be"):
        cost_weight_for(model, header)


def test_key_priority_decides_among_equivalent_candidates(router: AutoRouter) -> None:
    """Candidates within the tolerance go by key priority, whichever scores a hair higher."""
    first = ModelOption("openai", "gpt-4o", 2, 2.5, 10.0)
    second = ModelOption("openai", "gpt-4o-2024-11-20", 1, 2.5, 10.0)  # same prior, same price
    request = features("Hello")
    decision = router.decide(request, [first, second], 0.5)
    assert decision.chosen == second
    assert decision.reason.startswith("key priority")
    flipped = ModelOption("openai", "gpt-4o-2024-11-20", 3, 2.5, 10.0)
    assert router.decide(request, [first, flipped], 0.5).chosen == first


# --- learning -------------------------------------------------------------------------------------


def test_scored_feedback_moves_the_choice(router: AutoRouter) -> None:
    """After low scores for the chosen model and high ones for another, the choice for that
    kind of request moves; another kind of request keeps its choice longer."""
    tenant, shared = LearnerState.empty(), LearnerState.empty()
    request = features("Solve the equation 3x + 5 = 20.")
    before = router.decide(request, [CHEAP, MID, BEST], 0.5, tenant=tenant, shared=shared)
    assert before.chosen is not None
    other = next(option for option in (CHEAP, MID, BEST) if option != before.chosen)
    for _ in range(15):
        router.learn(before.chosen.key, request, 0.05, tenant=tenant, shared=shared)
        router.learn(other.key, request, 0.95, tenant=tenant, shared=shared)
    after = router.decide(request, [CHEAP, MID, BEST], 0.5, tenant=tenant, shared=shared)
    assert after.chosen == other
    learned = {s.option.key: s.learned for s in after.scored}
    assert learned[other.key] > 0 > learned[before.chosen.key]
    # A fresh tenant on the same shared state already leans the same way.
    fresh = router.decide(
        request, [CHEAP, MID, BEST], 0.5, tenant=LearnerState.empty(), shared=shared
    )
    assert {s.option.key: s.learned for s in fresh.scored}[other.key] > 0


def test_decisions_are_deterministic_under_a_seed(router: AutoRouter) -> None:
    """The same seed gives the same sequence of choices, exploration included."""

    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        tenant = LearnerState.empty()
        chosen = []
        for step in range(200):
            request = features(f"Question {step}: explain why the sky is blue")
            decision = router.decide(request, [CHEAP, MID, BEST], 0.5, tenant=tenant, rng=rng)
            assert decision.chosen is not None
            chosen.append(decision.chosen.key)
            router.learn(decision.chosen.key, request, rng.random(), tenant=tenant)
        return chosen

    assert run(7) == run(7)
    assert len(set(run(7))) > 1  # exploration did try more than one model


def test_exploration_stays_near_the_best(router: AutoRouter) -> None:
    """Random exploration only picks candidates within max_bonus of the best utility."""
    eager = AutoRouter(explore_rate=1.0)
    rng = random.Random(1)
    request = features("Write a haiku")
    scored = router.decide(request, [CHEAP, MID, BEST], 0.1).scored
    near = {s.option.key for s in scored if s.utility >= scored[0].utility - eager.max_bonus}
    for _ in range(50):
        decision = eager.decide(request, [CHEAP, MID, BEST], 0.1, rng=rng)
        assert decision.chosen is not None and decision.chosen.key in near


def test_state_round_trips_through_json(router: AutoRouter) -> None:
    """A learned state survives JSON exactly and decides the same; its size is bounded."""
    tenant = LearnerState.empty(max_arms=3)
    rng = random.Random(3)
    models = [CHEAP, MID, BEST, NO_TOOLS]
    for step in range(40):
        option = models[step % 4]
        router.learn(option.key, features(f"task {step} solve"), rng.random(), tenant=tenant)
    assert len(tenant.arms) == 3  # the arm updated longest ago was dropped
    text = json.dumps(tenant.to_json())
    back = LearnerState.from_json(json.loads(text))
    assert json.dumps(back.to_json()) == text
    request = features("solve 1 + 1")
    assert (
        router.decide(request, models[:3], 0.5, tenant=back).as_dict()
        == router.decide(request, models[:3], 0.5, tenant=tenant).as_dict()
    )
    changed = {**json.loads(text), "features": ["bias"]}
    assert LearnerState.from_json(changed).arms == {}  # other features: start from priors


def test_reward_is_checked(router: AutoRouter) -> None:
    """A reward outside 0..1 is refused."""
    with pytest.raises(ValueError, match="between 0 and 1"):
        router.learn(CHEAP.key, features(), 1.5, tenant=LearnerState.empty())


# --- priors and implicit signals ------------------------------------------------------------------


def test_priors_cover_the_catalogue_and_fall_back() -> None:
    """Listed models use their Arena figures (dated ids included); unknown ones the fallback."""
    priors = load_priors()
    assert "arena" in priors.source.lower() and priors.url.startswith("https://")
    assert priors.prior("openai", "gpt-4o-2024-08-06") == priors.prior("openai", "gpt-4o")
    assert priors.prior("openai", "gpt-4o").source == "arena"
    pro = priors.prior("google", "gemini-2.5-pro")
    assert pro.quality > priors.prior("groq", "llama-3.1-8b-instant").quality
    unknown_small = priors.prior("openai", "gpt-9-nano")
    unknown_large = priors.prior("openai", "gpt-9-pro")
    assert unknown_small.source == unknown_large.source == "fallback"
    assert unknown_small.quality < unknown_large.quality
    assert 0 < priors.prior("newcorp", "model-x").quality < 1


def test_implicit_rewards_and_repeats() -> None:
    """Errors and truncation give low rewards; a prompt re-sent in the window names its first."""
    assert implicit_reward(upstream_error=True) == 0.0
    assert implicit_reward(finish_reason="length") == 0.2
    assert implicit_reward(finish_reason="stop") is None
    repeats = RepeatDetector(window_s=60, max_entries=2)
    assert repeats.check("t1", "hello", "r1", now=0.0) is None
    assert repeats.check("t2", "hello", "r2", now=1.0) is None  # another tenant
    assert repeats.check("t1", "hello", "r3", now=30.0) == "r1"
    assert repeats.check("t1", "hello", "r4", now=200.0) is None  # outside the window
    repeats.check("t1", "a", "r5", now=201.0)
    repeats.check("t1", "b", "r6", now=202.0)
    assert repeats.check("t1", "hello", "r7", now=203.0) is None  # evicted: bounded memory
