"""The budget path's per-call shortcuts keep its figures: worst case, lines, hold ids.

``tests/test_spend_e2e.py`` drives budgets end to end; these pin what the shortcuts must not
change (``gateway/policy.py``'s worst case without a parse, ``gateway/spend.py``'s cached lines,
``gateway/budgets.py``'s hold ids).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from byok_middleware.crypto import SecretStr
from byok_middleware.gateway.budgets import Hold, Line, MemoryBudgets, _Figure
from byok_middleware.gateway.calls import Candidate
from byok_middleware.gateway.policy import max_output, worst_case
from byok_middleware.gateway.spend import SpendControl
from byok_middleware.pricing import GenaiPrices
from byok_middleware.storage.base import TenantPolicy

CHAT = "/chat/completions"
PLATFORM = Candidate("openai", SecretStr("sk-platform-0123456789"), "platform")


def test_a_body_without_limits_is_reckoned_at_the_models_maximum_output() -> None:
    """No output field and no n: the whole body as input, the model's maximum as output."""
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"a \\"max_tokens\\" talk"}]}'
    found = worst_case(CHAT, body, "openai", "gpt-4o")
    assert found.usage.prompt_tokens == len(body)
    assert found.output == max_output("openai", "gpt-4o") == 16_384
    assert found.usage.completion_tokens == 16_384 and found.choices == 1


def test_limits_and_n_are_read_however_the_keys_are_written() -> None:
    """A limit and n, plainly or with \\u escapes in their keys, bound the output."""
    plain = b'{"model":"gpt-4o","messages":[],"max_tokens":10,"n":3}'
    escaped = b'{"model":"gpt-4o","messages":[],"max\\u005ftokens":10,"\\u006e":3}'
    for body in (plain, escaped):
        found = worst_case(CHAT, body, "openai", "gpt-4o")
        assert (found.output, found.choices, found.field) == (10, 3, "max_tokens")
        assert found.usage.completion_tokens == 30


def test_images_by_url_count_without_a_parse_too() -> None:
    """Each image_url part adds IMAGE_TOKENS to the input of a body the parse is skipped for."""
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"image_url"}]}]}'
    assert worst_case(CHAT, body, "openai", "gpt-4o").usage.prompt_tokens == len(body) + 8_000


def test_a_tenants_lines_are_reused_until_its_policy_or_period_changes() -> None:
    """The same lines for every call of a policy read in one period; new ones when the policy
    is re-read (a new object) or the day rolls over."""
    spend = SpendControl(cast(Any, None), cast(Any, None), GenaiPrices(), lambda: now)
    now = datetime(2025, 3, 4, 23, 59, tzinfo=UTC)
    policy = TenantPolicy("t1", budget_usd=Decimal(5), budget_period="day")
    first = spend.lines(policy, "t1", PLATFORM, now)
    assert [line.kind for line in first] == ["tenant", "platform"]
    assert first[0].key == "tenant:t1:day:2025-03-04"
    assert spend.lines(policy, "t1", PLATFORM, now + timedelta(seconds=30)) is first
    reread = TenantPolicy("t1", budget_usd=Decimal(7), budget_period="day")
    assert spend.lines(reread, "t1", PLATFORM, now)[0].limit == Decimal(7)
    tomorrow = spend.lines(reread, "t1", PLATFORM, now + timedelta(minutes=2))
    assert tomorrow[0].key == "tenant:t1:day:2025-03-05"
    assert tomorrow[0].reset == datetime(2025, 3, 6, tzinfo=UTC)


def test_hold_ids_are_unique_and_settle_only_their_own_reservation() -> None:
    """Ids from the process prefix and a counter never repeat; settling one hold of a figure
    leaves the other's reservation in place."""
    start = datetime(2025, 3, 1, tzinfo=UTC)
    line = Line("tenant", "t1", Decimal(10), "month", start, datetime(2025, 4, 1, tzinfo=UTC))
    holds = [Hold([line], Decimal(1)) for _ in range(1_000)]
    assert len({hold.id for hold in holds}) == 1_000
    assert len({hold.id[:16] for hold in holds}) == 1  # one random prefix per process
    budgets = MemoryBudgets()
    budgets._figures[line.key] = _Figure(Decimal(0), line.reset)  # seeded: nothing spent
    first, second = holds[0], holds[1]
    assert budgets.reserve_now(first, [line]) == Decimal(9)
    assert budgets.reserve_now(second, [line]) == Decimal(8)
    budgets.settle_now(first, Decimal("0.5"))
    figure = budgets._figures[line.key]
    assert (figure.spent, figure.reserved, list(figure.holds)) == (
        Decimal("0.5"),
        Decimal(1),
        [second.id],
    )
