"""The ``AdminStore`` half of the store contract (the STORAGE_API.md additions), inherited by each
backend's test class next to :class:`tests.store_contract.StoreContract`."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from byok_middleware.storage import (
    AdminStore,
    AdminUsageRow,
    GatewayKeyInfo,
    TenantPolicy,
    WebhookConfig,
    WebhookDelivery,
)
from byok_middleware.storage.migrations import MIGRATIONS, latest_version
from tests.store_contract import PLUS_TWO, T0, tenant, usage


def delivery(delivery_id: str, at: datetime, tenant_id: str = "t-acme") -> WebhookDelivery:
    return WebhookDelivery(delivery_id, tenant_id, "budget.exceeded", 200, 1, None, at)


class AdminContract:
    """Subclasses provide the ``store`` fixture (an opened ``AdminStore``)."""

    async def test_is_an_admin_store_at_the_latest_schema(self, store: AdminStore) -> None:
        """Every backend implements AdminStore and reports the latest schema version."""
        assert isinstance(store, AdminStore)
        assert await store.schema_version() == latest_version(MIGRATIONS)

    # Tenants and gateway keys

    async def test_tenant_by_id_and_revoke_by_id(self, store: AdminStore) -> None:
        """get_tenant finds revoked and active tenants; revoke_tenant_by_id works once."""
        await store.create_tenant(tenant("acme"), "h1")
        assert await store.get_tenant("t-acme") == tenant("acme")
        assert await store.get_tenant("t-nobody") is None
        assert await store.revoke_tenant_by_id("t-acme", T0 + timedelta(1))
        assert not await store.revoke_tenant_by_id("t-acme", T0 + timedelta(2))
        assert not await store.revoke_tenant_by_id("t-nobody", T0)
        revoked = await store.get_tenant("t-acme")
        assert revoked is not None
        assert revoked.revoked_at == T0 + timedelta(1)
        assert await store.tenant_for_key_hash("h1") is None

    async def test_gateway_keys_listed_revoked_and_touched(self, store: AdminStore) -> None:
        """Keys list oldest first with prefix and status, never a hash; revoking one key stops
        only it; last_used_at only moves forward."""
        await store.create_tenant(tenant("acme"), "h1", prefix="byok_aa")
        later = T0 + timedelta(hours=1)
        info = await store.add_gateway_key("t-acme", "h2", later.astimezone(PLUS_TWO), prefix="b")
        assert info == GatewayKeyInfo(info.id, "t-acme", "b", later, None, "active")
        first, second = await store.list_gateway_keys("t-acme")
        assert (first.prefix, first.created_at, first.status) == ("byok_aa", T0, "active")
        assert second == info
        assert first.id != second.id
        assert not await store.revoke_gateway_key("t-other", first.id, later)
        assert await store.revoke_gateway_key("t-acme", first.id, later)
        assert not await store.revoke_gateway_key("t-acme", first.id, later)
        assert await store.tenant_for_key_hash("h1") is None
        assert await store.tenant_for_key_hash("h2") == "t-acme"
        await store.touch_gateway_key("h2", later + timedelta(minutes=5))
        await store.touch_gateway_key("h2", later)  # older: ignored
        await store.touch_gateway_key("unknown", later)
        keys = await store.list_gateway_keys("t-acme")
        assert [(k.status, k.last_used_at) for k in keys] == [
            ("revoked", None),
            ("active", later + timedelta(minutes=5)),
        ]
        assert await store.list_gateway_keys("t-nobody") == []

    # Ledger

    async def test_new_ledger_fields_and_cache_totals(self, store: AdminStore) -> None:
        """ttft_ms, cost_source and cost_saved_usd round-trip; totals count cache hits and sum
        what they saved."""
        hit = usage("hit", cost="0", cache_hit=True, cost_source="cache", ttft_ms=1.5,
                    cost_saved_usd=Decimal("0.000123"))  # fmt: skip
        await store.record_usage([usage("miss", cost_source="price_table"), hit])
        assert (await store.list_usage("t-acme"))[0] == hit
        [grand] = await store.usage_totals("t-acme")
        assert (grand.cache_hits, grand.saved_usd) == (1, Decimal("0.000123"))
        [model] = await store.usage_totals("t-acme", group_by="model")
        assert (model.cache_hits, model.saved_usd, model.requests) == (1, Decimal("0.000123"), 2)

    async def test_list_requests_pages_newest_first(self, store: AdminStore) -> None:
        """Pages follow (created_at, request_id) downwards without gaps or repeats, filters
        narrow them, None is every tenant, and rows written later never shift a cursor."""
        rows = [usage(f"r{n}", at=T0 + timedelta(minutes=n // 2)) for n in range(7)]
        rows.append(usage("x", "t-other", at=T0, status_code=500, model="m2"))
        await store.record_usage(rows)
        seen, cursor, pages = [], None, 0
        while True:
            page, cursor = await store.list_requests("t-acme", limit=3, cursor=cursor)
            seen += [r.request_id for r in page]
            pages += 1
            if cursor is None:
                break
            await store.record_usage([usage(f"new{pages}", at=T0 + timedelta(days=1))])
        assert seen == ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]
        assert pages == 3
        everyone, _ = await store.list_requests(None, until=T0 + timedelta(minutes=1))
        assert [r.request_id for r in everyone] == ["x", "r1", "r0"]
        failed, more = await store.list_requests(None, status=500, provider="openai", model="m2")
        assert ([r.request_id for r in failed], more) == (["x"], None)
        assert await store.list_requests("t-acme", since=T0 + timedelta(days=9)) == ([], None)
        with pytest.raises(ValueError, match="cursor"):
            await store.list_requests("t-acme", cursor="not-a-cursor")
        with pytest.raises(ValueError, match="limit"):
            await store.list_requests("t-acme", limit=0)

    async def test_usage_rows_oldest_first_and_bounded(self, store: AdminStore) -> None:
        """usage_rows returns the window's rows oldest first, of one tenant or all, at most
        limit."""
        await store.record_usage(
            [usage(f"r{n}", at=T0 + timedelta(minutes=n)) for n in (2, 0, 1)]
            + [usage("o", "t-other", at=T0 + timedelta(minutes=3))]
        )
        ids = [r.request_id for r in await store.usage_rows("t-acme", since=T0, until=None)]
        assert ids == ["r0", "r1", "r2"]
        everyone = await store.usage_rows(None, since=T0 + timedelta(minutes=1), until=None)
        assert [r.request_id for r in everyone] == ["r1", "r2", "o"]
        assert [r.request_id for r in await store.usage_rows(None, limit=1)] == ["r0"]

    async def test_admin_usage_groups_across_tenants(self, store: AdminStore) -> None:
        """admin_usage totals every tenant's rows per combination of group keys, in order."""
        await store.record_usage(
            [
                usage("a", cost="0.1"),
                usage("b", cost="0.2", at=T0 + timedelta(days=1)),
                usage("c", "t-beta", cost=None, attribution="xantly"),
                usage("late", cost="9", at=T0 + timedelta(days=5)),
            ]
        )
        until = T0 + timedelta(days=2)
        rows = await store.admin_usage(until=until, group_by=["tenant", "day"])
        assert rows == [
            AdminUsageRow({"tenant": "t-acme", "day": "2025-03-01"}, 1, 10, 5, Decimal("0.1")),
            AdminUsageRow({"tenant": "t-acme", "day": "2025-03-02"}, 1, 10, 5, Decimal("0.2")),
            AdminUsageRow({"tenant": "t-beta", "day": "2025-03-01"}, 1, 10, 5, Decimal(0)),
        ]
        by_attribution = await store.admin_usage(until=until, group_by=("attribution",))
        assert [(r.groups["attribution"], r.requests) for r in by_attribution] == [
            ("byok", 2),
            ("xantly", 1),
        ]
        [grand] = await store.admin_usage(group_by=[])
        assert (grand.groups, grand.requests, grand.cost_usd) == ({}, 4, Decimal("9.3"))
        for bad in (["tenant_id"], ["day", "day"]):
            with pytest.raises(ValueError, match="group_by"):
                await store.admin_usage(group_by=bad)

    async def test_spend_since_splits_platform_spend(self, store: AdminStore) -> None:
        """spend_since sums the tenant's priced rows since then, and apart the non-BYOK ones."""
        assert await store.spend_since("t-acme", T0) == (Decimal(0), Decimal(0))
        await store.record_usage(
            [
                usage("old", cost="5", at=T0 - timedelta(seconds=1)),
                usage("own", cost="0.1"),
                usage("platform", cost="0.25", attribution="xantly"),
                usage("unpriced", cost=None, attribution="xantly"),
                usage("other", "t-other", cost="7"),
            ]
        )
        assert await store.spend_since("t-acme", T0) == (Decimal("0.35"), Decimal("0.25"))

    # Policies and webhooks

    async def test_policy_put_get_replace_and_list(self, store: AdminStore) -> None:
        """A policy reads back as put (models as a tuple), a second put replaces it, and
        list_policies orders by tenant id."""
        assert await store.get_policy("t-acme") is None
        policy = TenantPolicy(
            "t-acme",
            budget_usd=Decimal("12.50"),
            platform_budget_usd=Decimal("0"),
            budget_period="day",
            platform_fallback="on_failure",
            platform_models=("gpt-4o-mini", "claude-haiku"),
            unpriced="block",
            clamp_max_tokens=True,
            cache="semantic",
            updated_at=T0.astimezone(PLUS_TWO),
        )
        await store.put_policy(policy)
        assert await store.get_policy("t-acme") == policy
        replaced = TenantPolicy("t-acme", platform_models=())
        await store.put_policy(replaced)
        await store.put_policy(TenantPolicy("t-a"))
        assert await store.get_policy("t-acme") == replaced
        assert await store.list_policies() == [TenantPolicy("t-a"), replaced]

    @pytest.mark.parametrize(
        ("policy", "error"),
        [
            (TenantPolicy("t", budget_period="week"), "budget_period"),
            (TenantPolicy("t", platform_fallback="sometimes"), "platform_fallback"),
            (TenantPolicy("t", unpriced="maybe"), "unpriced"),
            (TenantPolicy("t", cache="lru"), "cache"),
            (TenantPolicy("t", budget_usd=Decimal("-1")), "budget"),
            (TenantPolicy("t", platform_models=["gpt-4o"]), "platform_models"),  # type: ignore[arg-type]
            (TenantPolicy("t", updated_at=datetime(2025, 1, 1)), "timezone"),  # naive
        ],
    )
    async def test_policy_refuses_bad_values(
        self, store: AdminStore, policy: TenantPolicy, error: str
    ) -> None:
        """A value outside its documented set is a ValueError and stores nothing."""
        with pytest.raises(ValueError, match=error):
            await store.put_policy(policy)
        assert await store.list_policies() == []

    async def test_webhook_put_get_replace_delete(self, store: AdminStore) -> None:
        """A webhook reads back as put, a second put replaces it, delete removes it once."""
        hook = WebhookConfig("t-acme", "https://example.test/h", ("budget.exceeded",),
                             b"\x01sealed", T0.astimezone(PLUS_TWO))  # fmt: skip
        assert await store.get_webhook("t-acme") is None
        await store.put_webhook(hook)
        assert await store.get_webhook("t-acme") == hook
        newer = WebhookConfig("t-acme", "https://example.test/2", (), b"\x02", T0 + timedelta(1))
        await store.put_webhook(newer)
        assert await store.get_webhook("t-acme") == newer
        assert await store.get_webhook("t-other") is None
        assert await store.delete_webhook("t-acme")
        assert not await store.delete_webhook("t-acme")
        assert await store.get_webhook("t-acme") is None

    async def test_deliveries_newest_first_per_tenant(self, store: AdminStore) -> None:
        """Deliveries list newest first, only the tenant's, at most limit; ids are unique."""
        failed = WebhookDelivery("d0", "t-acme", "key.invalid", None, 2, "timeout", T0)
        await store.record_delivery(failed)
        for n in range(1, 4):
            await store.record_delivery(delivery(f"d{n}", T0 + timedelta(minutes=n)))
        await store.record_delivery(delivery("x", T0, "t-other"))
        listed = await store.list_deliveries("t-acme")
        assert [d.id for d in listed] == ["d3", "d2", "d1", "d0"]
        assert listed[-1] == failed
        assert [d.id for d in await store.list_deliveries("t-acme", limit=2)] == ["d3", "d2"]
        with pytest.raises(ValueError, match="exists"):
            await store.record_delivery(delivery("d1", T0))
        with pytest.raises(ValueError, match="limit"):
            await store.list_deliveries("t-acme", limit=0)
