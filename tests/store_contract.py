"""The behaviour every ``KeyStore`` promises, as one suite that each backend's tests inherit.

A backend's test module subclasses :class:`StoreContract` as ``Test<Backend>`` and provides an async
``store`` fixture that yields an opened store and closes it afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from byok_middleware.storage import (
    KeyStatus,
    KeyStore,
    ProviderKeyRecord,
    Tenant,
    TooManyKeys,
    UsageBatchError,
    UsageRecord,
    UsageTotal,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def tenant(name: str, *, id: str | None = None, at: datetime = T0) -> Tenant:
    return Tenant(id=id or f"t-{name}", name=name, created_at=at)


def key(
    key_id: str,
    tenant_id: str = "t-acme",
    *,
    provider: str = "openai",
    priority: int = 1,
    at: datetime = T0,
    **extra: Any,
) -> ProviderKeyRecord:
    """A provider key record; ``extra`` sets any other field."""
    record = ProviderKeyRecord(
        id=key_id,
        tenant_id=tenant_id,
        provider=provider,
        ciphertext=b"\x01envelope-" + key_id.encode(),
        is_active=True,
        priority=priority,
        label=None,
        always_use=False,
        status=KeyStatus.ACTIVE,
        created_at=at,
        updated_at=at,
    )
    return dataclasses.replace(record, **extra)


def usage(
    request_id: str,
    tenant_id: str = "t-acme",
    *,
    cost: str | None = "0.01",
    at: datetime = T0,
    **extra: Any,
) -> UsageRecord:
    """A ledger row of 10 prompt and 5 completion tokens; ``extra`` sets any other field."""
    row = UsageRecord(
        request_id=request_id,
        tenant_id=tenant_id,
        key_id="k1",
        provider="openai",
        model="gpt-4o",
        endpoint="/chat/completions",
        attribution="byok",
        prompt_tokens=10,
        completion_tokens=5,
        cached_tokens=0,
        cost_usd=None if cost is None else Decimal(cost),
        status_code=200,
        latency_ms=12.5,
        created_at=at,
    )
    return dataclasses.replace(row, **extra)


def total(group: str | None, requests: int, cost: str, unpriced: int = 0) -> UsageTotal:
    """The total of ``requests`` rows made by ``usage()``."""
    return UsageTotal(group, requests, 10 * requests, 5 * requests, Decimal(cost), unpriced)


class StoreContract:
    """Subclasses provide the ``store`` fixture; every test here runs against each backend."""

    # Tenants and gateway keys

    async def test_tenant_create_list_revoke(self, store: KeyStore) -> None:
        """A created tenant is listed; revoking it stamps revoked_at and only works once."""
        await store.create_tenant(tenant("acme"), "hash-acme")
        assert await store.list_tenants() == [tenant("acme")]
        assert await store.revoke_tenant("acme", T0 + timedelta(days=1))
        assert not await store.revoke_tenant("acme", T0 + timedelta(days=2))
        assert not await store.revoke_tenant("nobody", T0)
        [revoked] = await store.list_tenants()
        assert revoked.revoked_at == T0 + timedelta(days=1)

    async def test_active_name_is_unique_and_reusable_after_revoke(self, store: KeyStore) -> None:
        """A name is taken while its tenant is active and free again once it is revoked."""
        await store.create_tenant(tenant("acme", id="t1"), "h1")
        with pytest.raises(ValueError, match="acme"):
            await store.create_tenant(tenant("acme", id="t2", at=T0 + timedelta(1)), "h2")
        await store.revoke_tenant("acme", T0 + timedelta(days=1))
        await store.create_tenant(tenant("acme", id="t2", at=T0 + timedelta(days=2)), "h2")
        assert [t.id for t in await store.list_tenants()] == ["t1", "t2"]
        assert await store.tenant_for_key_hash("h2") == "t2"
        # Revoking at the very same instant as the first must still hit the second.
        assert await store.revoke_tenant("acme", T0 + timedelta(days=1))
        assert await store.tenant_for_key_hash("h2") is None

    async def test_duplicate_key_hash_stores_nothing(self, store: KeyStore) -> None:
        """A tenant whose gateway key hash exists is refused whole, the tenant row included."""
        await store.create_tenant(tenant("acme"), "same")
        with pytest.raises(ValueError, match="exists"):
            await store.create_tenant(tenant("globex"), "same")
        assert [t.name for t in await store.list_tenants()] == ["acme"]

    async def test_gateway_key_lookup(self, store: KeyStore) -> None:
        """Active keys resolve to their tenant; unknown and revoked ones resolve to None."""
        await store.create_tenant(tenant("acme"), "first")
        await store.add_gateway_key("t-acme", "second", T0)
        assert await store.tenant_for_key_hash("first") == "t-acme"
        assert await store.tenant_for_key_hash("second") == "t-acme"
        assert await store.tenant_for_key_hash("unknown") is None
        await store.revoke_tenant("acme", T0)
        assert await store.tenant_for_key_hash("first") is None
        assert await store.tenant_for_key_hash("second") is None

    async def test_gateway_key_of_revoked_tenant_never_resolves(self, store: KeyStore) -> None:
        """A key added after its tenant was revoked still does not authenticate."""
        await store.create_tenant(tenant("acme"), "first")
        await store.revoke_tenant("acme", T0)
        await store.add_gateway_key("t-acme", "late", T0)
        assert await store.tenant_for_key_hash("late") is None

    async def test_add_gateway_key_refuses_unknown_tenant_and_duplicates(
        self, store: KeyStore
    ) -> None:
        """A gateway key needs an existing tenant and a hash not stored yet."""
        await store.create_tenant(tenant("acme"), "first")
        with pytest.raises(ValueError, match="no tenant"):
            await store.add_gateway_key("t-nobody", "other", T0)
        with pytest.raises(ValueError, match="exists"):
            await store.add_gateway_key("t-acme", "first", T0)
        assert await store.tenant_for_key_hash("other") is None

    async def test_naive_datetimes_are_refused(self, store: KeyStore) -> None:
        """A datetime without a zone is a ValueError, not a guess."""
        naive = datetime(2025, 1, 1)
        with pytest.raises(ValueError, match="timezone"):
            await store.create_tenant(tenant("acme", at=naive), "h")
        with pytest.raises(ValueError, match="timezone"):
            await store.insert_key(key("k1", at=naive))
        with pytest.raises(ValueError, match="timezone"):
            await store.record_usage([usage("r1"), usage("r2", at=naive)])
        with pytest.raises(ValueError, match="timezone"):
            await store.usage_totals("t-acme", since=naive)
        assert await store.list_tenants() == []
        assert await store.get_key("t-acme", "k1") is None
        assert await store.list_usage("t-acme") == []

    # Provider keys

    async def test_key_round_trip(self, store: KeyStore) -> None:
        """Every field comes back as written, datetimes in UTC."""
        record = key(
            "k1",
            at=T0.astimezone(PLUS_TWO),
            label="prod",
            always_use=True,
            last_used_at=T0,
            last_error="429",
            cooldown_until=T0 + timedelta(minutes=1),
            rpm=60,
            tpm=1000,
            monthly_budget_usd=Decimal("12.345678"),
        )
        await store.insert_key(record)
        stored = await store.get_key("t-acme", "k1")
        assert stored == record
        assert stored is not None
        assert stored.created_at.utcoffset() == timedelta(0)
        with pytest.raises(ValueError, match="exists"):
            await store.insert_key(key("k1", "t-other"))

    async def test_list_order_filter_and_count(self, store: KeyStore) -> None:
        """Keys list by provider, priority, created_at; the provider filter narrows it."""
        for record in (
            key("k-o2", priority=2),
            key("k-a1", provider="anthropic"),
            key("k-o1-late", at=T0 + timedelta(seconds=1)),
            key("k-o1", at=T0),
            key("k-x", "t-other"),
        ):
            await store.insert_key(record)
        assert [k.id for k in await store.list_keys("t-acme")] == [
            "k-a1",
            "k-o1",
            "k-o1-late",
            "k-o2",
        ]
        assert [k.id for k in await store.list_keys("t-acme", "openai")] == [
            "k-o1",
            "k-o1-late",
            "k-o2",
        ]
        assert await store.list_keys("t-acme", "groq") == []
        assert await store.count_keys("t-acme") == 4
        assert await store.count_keys("t-nobody") == 0

    async def test_update_applies_changes_and_stamps_updated_at(self, store: KeyStore) -> None:
        """update_key changes the named fields, sets updated_at and returns the stored record."""
        await store.insert_key(key("k1"))
        later = T0 + timedelta(hours=1)
        changes = {
            "priority": 3,
            "label": "backup",
            "is_active": False,
            "status": "invalid",
            "cooldown_until": later.astimezone(PLUS_TWO),
            "monthly_budget_usd": Decimal("0.10"),
            "ciphertext": b"new",
        }
        updated = await store.update_key("t-acme", "k1", changes, later)
        expected = dataclasses.replace(
            key("k1"),
            priority=3,
            label="backup",
            is_active=False,
            status=KeyStatus.INVALID,
            cooldown_until=later,
            monthly_budget_usd=Decimal("0.10"),
            ciphertext=b"new",
            updated_at=later,
        )
        assert updated == expected
        assert updated is not None
        assert updated.status is KeyStatus.INVALID
        assert await store.get_key("t-acme", "k1") == expected
        cleared = await store.update_key("t-acme", "k1", {"label": None}, later)
        assert cleared is not None
        assert cleared.label is None

    @pytest.mark.parametrize(
        ("changes", "error"),
        [
            ({"tenant_id": "t-other"}, "unknown key fields"),
            ({"label": "ok", "created_at": T0}, "unknown key fields"),
            ({"priority": "1"}, "wrong type"),
            ({"priority": True}, "wrong type"),
            ({"is_active": 1}, "wrong type"),
            ({"status": "sleeping"}, "KeyStatus"),
            ({"last_used_at": datetime(2025, 1, 1)}, "timezone"),  # naive
        ],
    )
    async def test_update_refuses_bad_changes(
        self, store: KeyStore, changes: dict[str, object], error: str
    ) -> None:
        """Unknown fields, wrong types and bad values are a ValueError and change nothing."""
        await store.insert_key(key("k1"))
        with pytest.raises(ValueError, match=error):
            await store.update_key("t-acme", "k1", changes, T0 + timedelta(1))
        assert await store.get_key("t-acme", "k1") == key("k1")

    async def test_delete(self, store: KeyStore) -> None:
        """A deleted key is gone; deleting it again reports False."""
        await store.insert_key(key("k1"))
        assert await store.delete_key("t-acme", "k1")
        assert await store.get_key("t-acme", "k1") is None
        assert not await store.delete_key("t-acme", "k1")
        assert await store.count_keys("t-acme") == 0

    async def test_tenant_isolation_on_every_key_method(self, store: KeyStore) -> None:
        """Another tenant's key id behaves as unknown, and nothing about the key changes."""
        await store.insert_key(key("k1", "t-acme"))
        assert await store.get_key("t-evil", "k1") is None
        assert await store.update_key("t-evil", "k1", {"priority": 9}, T0) is None
        assert not await store.delete_key("t-evil", "k1")
        assert await store.list_keys("t-evil") == []
        assert await store.list_keys("t-evil", "openai") == []
        assert await store.count_keys("t-evil") == 0
        assert await store.get_key("t-acme", "k1") == key("k1", "t-acme")

    async def test_replace_ciphertext_is_compare_and_swap(self, store: KeyStore) -> None:
        """The envelope changes only if it still is the expected one; updated_at stays."""
        record = key("k1")
        await store.insert_key(record)
        assert not await store.replace_ciphertext("k1", b"stale", b"new")
        assert not await store.replace_ciphertext("k-unknown", record.ciphertext, b"new")
        assert await store.get_key("t-acme", "k1") == record
        assert await store.replace_ciphertext("k1", record.ciphertext, b"new")
        assert await store.get_key("t-acme", "k1") == dataclasses.replace(record, ciphertext=b"new")
        assert not await store.replace_ciphertext("k1", record.ciphertext, b"newer")

    async def test_iter_key_batch_covers_every_row_once(self, store: KeyStore) -> None:
        """Paging by id across tenants yields each key exactly once, in id order."""
        ids = [f"k{n:02d}" for n in range(11)]
        for n, key_id in enumerate(reversed(ids)):
            await store.insert_key(key(key_id, f"t{n % 3}"))
        seen: list[str] = []
        after: str | None = None
        while batch := await store.iter_key_batch(after, 4):
            assert len(batch) <= 4
            seen += [k.id for k in batch]
            after = batch[-1].id
        assert seen == ids
        with pytest.raises(ValueError, match="limit"):
            await store.iter_key_batch(None, 0)

    # Usage ledger

    async def test_record_usage_ignores_duplicate_request_ids(self, store: KeyStore) -> None:
        """The first row of a request id wins, within a batch and across batches."""
        r2_at, r3_at = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
        await store.record_usage(
            [usage("r1", cost="1"), usage("r1", cost="2"), usage("r2", at=r2_at)]
        )
        await store.record_usage([usage("r2", cost="3", at=r2_at), usage("r3", at=r3_at)])
        await store.record_usage([])
        rows = await store.list_usage("t-acme")
        assert [(r.request_id, r.cost_usd) for r in rows] == [
            ("r3", Decimal("0.01")),
            ("r2", Decimal("0.01")),
            ("r1", Decimal("1")),
        ]

    async def test_usage_round_trip(self, store: KeyStore) -> None:
        """Every ledger field comes back as written."""
        row = usage(
            "r1",
            key_id=None,
            cost="0.000123456789",
            at=T0.astimezone(PLUS_TWO),
            attempts=2,
            cache_hit=True,
            error_type="rate_limit",
            latency_ms=0.25,
        )
        await store.record_usage([row])
        assert await store.list_usage("t-acme") == [row]

    async def test_totals_over_a_half_open_window(self, store: KeyStore) -> None:
        """since is inclusive, until exclusive, other tenants never count; empty is zeros."""
        await store.record_usage(
            [
                usage("before", at=T0 - timedelta(microseconds=1)),
                usage("at-since", at=T0, cost="0.1"),
                usage("inside", at=T0 + timedelta(hours=1), cost="0.2"),
                usage("at-until", at=T0 + timedelta(days=1)),
                usage("other", "t-other", at=T0 + timedelta(hours=1)),
            ]
        )
        until = T0 + timedelta(days=1)
        assert await store.usage_totals("t-acme", since=T0, until=until) == [total(None, 2, "0.3")]
        assert await store.usage_totals("t-acme") == [total(None, 4, "0.32")]
        assert await store.usage_totals("t-nobody") == [total(None, 0, "0")]
        assert await store.usage_totals("t-acme", group_by="model", since=T0 + timedelta(9)) == []

    async def test_totals_are_exact_decimals(self, store: KeyStore) -> None:
        """Costs add up exactly: 0.1 + 0.2 is 0.3, and a thousand micro-dollars one milli."""
        await store.record_usage([usage("a", cost="0.1"), usage("b", cost="0.2")])
        [grand] = await store.usage_totals("t-acme")
        assert grand.cost_usd == Decimal("0.3")
        assert isinstance(grand.cost_usd, Decimal)
        await store.record_usage([usage(f"m{n}", "t-m", cost="0.000001") for n in range(1000)])
        [many] = await store.usage_totals("t-m")
        assert many.cost_usd == Decimal("0.001")

    async def test_a_large_batch_is_stored_whole_and_once(self, store: KeyStore) -> None:
        """A batch of hundreds of rows keeps every row and every field, and a request id repeated
        at the end of the batch counts once (the first row wins)."""
        batch = [usage(f"big{n}", "t-big", cost=f"0.00{n % 10}") for n in range(200)]
        batch.append(usage("big3", "t-big", cost="9"))  # a duplicate, 197 rows later
        await store.record_usage(batch)
        rows = await store.list_usage("t-big", limit=500)
        assert sorted(row.request_id for row in rows) == sorted(f"big{n}" for n in range(200))
        by_id = {row.request_id: row for row in rows}
        assert by_id["big3"].cost_usd == Decimal("0.003")
        assert by_id["big157"] == batch[157]

    async def test_unpriced_rows_are_counted_not_summed(self, store: KeyStore) -> None:
        """Rows without a price count as requests and unpriced_requests, never as cost 0."""
        await store.record_usage([usage("a", cost="0.5"), usage("b", cost=None)])
        await store.record_usage([usage("c", cost=None, model="mystery")])
        assert await store.usage_totals("t-acme") == [total(None, 3, "0.5", unpriced=2)]
        assert await store.usage_totals("t-acme", group_by="model") == [
            total("gpt-4o", 2, "0.5", unpriced=1),
            total("mystery", 1, "0", unpriced=1),
        ]

    @pytest.mark.parametrize(
        ("group_by", "expected"),
        [
            ("provider", [("anthropic", 1, "0.4"), ("openai", 3, "0.6")]),
            ("model", [("claude", 1, "0.4"), ("gpt-4o", 2, "0.3"), ("gpt-4o-mini", 1, "0.3")]),
            ("attribution", [("byok", 3, "0.7"), ("xantly", 1, "0.3")]),
            ("day", [("2025-03-01", 2, "0.3"), ("2025-03-02", 2, "0.7")]),
        ],
    )
    async def test_totals_per_group(
        self, store: KeyStore, group_by: str, expected: list[tuple[str, int, str]]
    ) -> None:
        """Each grouping splits the window's rows by its value, groups in ascending order."""
        late_local = datetime(2025, 3, 2, 1, 30, tzinfo=PLUS_TWO)  # 2025-03-01 23:30 UTC
        await store.record_usage(
            [
                usage("a", cost="0.1", at=T0),
                usage("b", cost="0.2", at=late_local),
                usage("c", cost="0.3", at=T0 + timedelta(days=1), model="gpt-4o-mini",
                      attribution="xantly"),
                usage("d", cost="0.4", at=T0 + timedelta(days=1), provider="anthropic",
                      model="claude"),
                usage("late", cost="9", at=T0 + timedelta(days=3)),
                usage("x", "t-other", cost="9", at=T0),
            ]
        )  # fmt: skip
        totals = await store.usage_totals(
            "t-acme", since=T0, until=T0 + timedelta(days=2), group_by=group_by
        )
        assert [(t.group, t.requests, t.cost_usd) for t in totals] == [
            (group, requests, Decimal(cost)) for group, requests, cost in expected
        ]
        assert sum(t.prompt_tokens for t in totals) == 40

    async def test_totals_refuse_unknown_group_by(self, store: KeyStore) -> None:
        """group_by outside GROUP_BY is a ValueError (it never reaches SQL)."""
        with pytest.raises(ValueError, match="group_by"):
            await store.usage_totals("t-acme", group_by="tenant_id; DROP TABLE usage")

    async def test_key_spend(self, store: KeyStore) -> None:
        """A key's spend sums its own priced rows at or after since."""
        assert await store.key_spend("k1", T0) == Decimal(0)
        await store.record_usage(
            [
                usage("old", cost="5", at=T0 - timedelta(seconds=1)),
                usage("a", cost="0.1", at=T0),
                usage("b", cost="0.2", at=T0 + timedelta(days=2)),
                usage("free", cost=None, at=T0),
                usage("other-key", cost="7", key_id="k2"),
                usage("platform", cost="7", key_id=None),
            ]
        )
        assert await store.key_spend("k1", T0) == Decimal("0.3")
        assert await store.key_spend("k2", T0) == Decimal("7")

    async def test_list_usage_order_limit_and_since(self, store: KeyStore) -> None:
        """Newest first, at most limit rows, none before since, only the tenant's own."""
        await store.record_usage(
            [usage(f"r{n}", at=T0 + timedelta(minutes=n)) for n in (3, 1, 4, 2, 0)]
            + [usage("other", "t-other", at=T0 + timedelta(hours=1))]
        )
        ids = [r.request_id for r in await store.list_usage("t-acme")]
        assert ids == ["r4", "r3", "r2", "r1", "r0"]
        assert [r.request_id for r in await store.list_usage("t-acme", limit=2)] == ["r4", "r3"]
        since = T0 + timedelta(minutes=2)
        assert [r.request_id for r in await store.list_usage("t-acme", since=since)] == [
            "r4",
            "r3",
            "r2",
        ]
        with pytest.raises(ValueError, match="limit"):
            await store.list_usage("t-acme", limit=0)

    async def test_concurrent_coroutines(self, store: KeyStore) -> None:
        """Many coroutines writing at once lose nothing and see consistent results."""
        await store.insert_key(key("k1"))

        async def work(n: int) -> None:
            await store.record_usage([usage(f"r{n}", cost="0.01")])
            await store.update_key("t-acme", "k1", {"priority": n + 1}, T0)
            await store.insert_key(key(f"k-{n:02d}"))

        await asyncio.gather(*(work(n) for n in range(40)))
        assert await store.usage_totals("t-acme") == [total(None, 40, "0.40")]
        assert await store.count_keys("t-acme") == 41

    # Atomic limits and whole batches (issue 18, items 11 and 1)

    async def test_max_keys_holds_under_concurrent_inserts(self, store: KeyStore) -> None:
        """30 racing inserts against a limit of 50 leave a tenant of 45 keys with exactly 50."""
        for n in range(45):
            await store.insert_key(key(f"k-old-{n:02d}"))
        await store.insert_key(key("k-other", "t-other"))

        async def insert(n: int) -> int | None:
            try:
                await store.insert_key(key(f"k-new-{n:02d}"), max_keys=50)
            except TooManyKeys as exc:
                return exc.max_keys
            return None

        results = await asyncio.gather(*(insert(n) for n in range(30)))
        assert sorted(results, key=str) == [50] * 25 + [None] * 5
        assert await store.count_keys("t-acme") == 50
        await store.insert_key(key("k-other-2", "t-other"), max_keys=2)  # per tenant
        with pytest.raises(TooManyKeys, match="at most 2"):
            await store.insert_key(key("k-other-3", "t-other"), max_keys=2)
        assert await store.count_keys("t-other") == 2

    async def test_a_row_with_a_naive_time_is_named_and_stores_nothing(
        self, store: KeyStore
    ) -> None:
        """A batch with a naive datetime in row 1 raises UsageBatchError naming row 1, and none
        of the batch is stored; the good rows then store one by one."""
        batch = [usage("r0"), usage("r1", at=datetime(2025, 1, 1)), usage("r2")]
        with pytest.raises(UsageBatchError, match="timezone") as caught:
            await store.record_usage(batch)
        assert caught.value.bad_rows == (1,)
        assert await store.usage_totals("t-acme") == [total(None, 0, "0")]
        await store.record_usage([batch[0]])
        await store.record_usage([batch[2]])
        assert await store.usage_totals("t-acme") == [total(None, 2, "0.02")]

    async def test_a_nul_character_never_loses_the_other_rows(self, store: KeyStore) -> None:
        """A row with NUL in its text is either stored whole, or the batch is refused whole with
        that row named (never a silent drop): then row by row, every other row stores."""
        batch = [usage("r0"), usage("r1", model="gpt\x00evil"), usage("r2")]
        refused: UsageBatchError | None = None
        try:
            await store.record_usage(batch)
        except UsageBatchError as exc:
            refused = exc
        if refused is not None:
            assert refused.bad_rows == (1,)
            assert await store.usage_totals("t-acme") == [total(None, 0, "0")]
            for index, row in enumerate(batch):
                if index != 1:
                    await store.record_usage([row])
            with pytest.raises(UsageBatchError):
                await store.record_usage([batch[1]])
            assert [r.request_id for r in await store.list_usage("t-acme")] == ["r2", "r0"]
        else:
            stored = {r.request_id: r for r in await store.list_usage("t-acme")}
            assert stored.keys() == {"r0", "r1", "r2"}
            assert stored["r1"].model == "gpt\x00evil"
