"""The operator API end to end: real uvicorn, a real SQLite file, the fake upstream."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal

import httpx

from byok_middleware import SQLiteStore
from byok_middleware.testing import FakeUpstream
from tests.conftest import Gateway
from tests.test_spend_e2e import ADMIN_KEY, CHAT, admin


def _as(gateway: Gateway, key: str) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {key}"})


def test_without_an_admin_key_the_routes_do_not_exist(gateway: Gateway) -> None:
    """No BYOK_ADMIN_KEY: /byok/admin/... is the host's 404, whatever the header."""
    with _as(gateway, ADMIN_KEY) as http:
        assert http.get("/v1/byok/admin/tenants").status_code == 404


def test_the_admin_key_is_required_and_never_a_tenant_key(
    start_gateway: Callable[..., Gateway],
) -> None:
    """A wrong key gets 401 on admin routes; the admin key gets 401 on tenant routes."""
    gateway = start_gateway(admin_key=ADMIN_KEY)
    with _as(gateway, "not-the-admin-key") as http:
        assert http.get("/v1/byok/admin/tenants").status_code == 401
    with _as(gateway, ADMIN_KEY) as http:
        assert http.get("/v1/byok/providers").status_code == 401
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 401
        assert http.get("/v1/byok/admin/tenants").status_code == 200


def test_tenants_and_gateway_keys_through_their_whole_life(
    start_gateway: Callable[..., Gateway],
) -> None:
    """Create (key shown once), list, issue a second key, revoke one (at once), revoke all."""
    gateway = start_gateway(admin_key=ADMIN_KEY)
    with admin(gateway) as http:
        created = http.post("/tenants", json={"name": "acme"})
        assert created.status_code == 201, created.text
        tenant = created.json()
        first_key = tenant["gateway_key"]
        assert http.post("/tenants", json={"name": "acme"}).status_code == 409
        assert http.post("/tenants", json={}).status_code == 400
        listed = http.get("/tenants").json()["data"]
        assert [t["id"] for t in listed] == [tenant["id"]]
        assert "gateway_key" not in listed[0]
        issued = http.post(f"/tenants/{tenant['id']}/gateway-keys")
        assert issued.status_code == 201
        second_key = issued.json()["gateway_key"]
        keys = http.get(f"/tenants/{tenant['id']}/gateway-keys").json()["data"]
        assert [k["status"] for k in keys] == ["active", "active"]
        assert all(first_key not in str(k) and second_key not in str(k) for k in keys)
        for key in (first_key, second_key):
            with _as(gateway, key) as tenant_http:
                assert tenant_http.get("/v1/byok/providers").status_code == 200
        revoked = http.delete(f"/tenants/{tenant['id']}/gateway-keys/{issued.json()['id']}")
        assert revoked.status_code == 204
        with _as(gateway, second_key) as tenant_http:
            assert tenant_http.get("/v1/byok/providers").status_code == 401
        with _as(gateway, first_key) as tenant_http:
            assert tenant_http.get("/v1/byok/providers").status_code == 200
        shown = http.get(f"/tenants/{tenant['id']}").json()
        assert shown["policy"]["budget_usd"] is None and shown["spend_usd"] == 0
        assert http.delete(f"/tenants/{tenant['id']}").status_code == 204
        with _as(gateway, first_key) as tenant_http:
            assert tenant_http.get("/v1/byok/providers").status_code == 401
        assert http.get("/tenants/nope").status_code == 404


def test_policy_round_trip_and_validation(start_gateway: Callable[..., Gateway]) -> None:
    """PUT sets the fields it names (others keep their value); bad values get 422; a tenant id
    from a host's identify works without a tenant row."""
    gateway = start_gateway(admin_key=ADMIN_KEY)
    with admin(gateway) as http:
        url = "/tenants/host-user-42/policy"
        assert http.get(url).json()["platform_fallback"] == "always"
        put = http.put(
            url,
            json={
                "budget_usd": 50,
                "platform_budget_usd": 5,
                "platform_fallback": "on_failure",
                "platform_models": ["openai/gpt-4o-mini", "groq/*"],
                "unpriced": "block",
            },
        )
        assert put.status_code == 200, put.text
        assert http.put(url, json={"budget_period": "day"}).json()["budget_usd"] == 50
        for bad in (
            {"budget_usd": -1},
            {"budget_period": "week"},
            {"platform_fallback": "sometimes"},
            {"platform_models": ["gpt-4o"]},
            {"surprise": True},
        ):
            response = http.put(url, json=bad)
            assert response.status_code == 422, bad
        shown = http.get("/tenants/host-user-42").json()
        assert shown["policy"]["platform_models"] == ["openai/gpt-4o-mini", "groq/*"]
        assert shown["policy"]["budget_period"] == "day"


def test_the_csv_export_matches_the_ledger(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """usage?group_by=tenant,attribution&format=csv: a header row and per-group totals equal to
    the ledger's rows summed by hand."""
    gateway = start_gateway(admin_key=ADMIN_KEY)
    for name in ("acme", "globex"):
        with gateway.client(name) as http:
            for _ in range(2 if name == "acme" else 3):
                assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
    with admin(gateway) as http:
        response = http.get("/usage", params={"group_by": "tenant,attribution", "format": "csv"})
        assert http.get("/usage", params={"group_by": "tenant,week"}).status_code == 400
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert list(table[0]) == [
        "tenant", "attribution", "requests", "input_tokens", "output_tokens", "cost_usd",
    ]  # fmt: skip

    async def read() -> dict[tuple[str, str], list[Decimal]]:
        store = SQLiteStore(gateway.db_path)
        await store.open()
        try:
            rows = await store.usage_rows(None)
        finally:
            await store.close()
        sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 4)
        for row in rows:
            total = sums[(row.tenant_id, row.attribution)]
            total[0] += 1
            total[1] += row.prompt_tokens
            total[2] += row.completion_tokens
            total[3] += row.cost_usd or 0
        return sums

    expected = asyncio.run(read())
    got = {
        (r["tenant"], r["attribution"]): [
            Decimal(r["requests"]),
            Decimal(r["input_tokens"]),
            Decimal(r["output_tokens"]),
            Decimal(r["cost_usd"]),
        ]
        for r in table
    }
    assert got == dict(expected)
    assert sorted(v[0] for v in got.values()) == [2, 3]


def test_the_served_document_lists_the_operator_api_only_with_an_admin_key(
    start_gateway: Callable[..., Gateway], gateway: Gateway
) -> None:
    """With BYOK_ADMIN_KEY the OpenAPI document describes the operator routes (loadable by
    schemathesis); without it, it names none of them."""
    import schemathesis

    operator = start_gateway(admin_key=ADMIN_KEY)
    with operator.client() as http:
        served = http.get("/v1/byok/openapi.json").json()
    admin_paths = {path for path in served["paths"] if path.startswith("/byok/admin/")}
    assert {
        "/byok/admin/tenants",
        "/byok/admin/tenants/{tenant_id}/gateway-keys/{key_id}",
        "/byok/admin/tenants/{tenant_id}/policy",
        "/byok/admin/usage",
    } <= admin_paths
    assert "adminKey" in served["components"]["securitySchemes"]
    loaded = schemathesis.openapi.from_dict(served)
    assert any("/byok/admin/usage" in r.ok().path for r in loaded.get_all_operations())
    with gateway.client() as http:
        plain = http.get("/v1/byok/openapi.json").json()
    assert not [path for path in plain["paths"] if path.startswith("/byok/admin/")]
