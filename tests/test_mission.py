"""Mission Control's data routes: usage series and the request log, tenant and operator."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from byok_middleware.mission.series import bucket_starts, percentile, series_view
from byok_middleware.storage.base import UsageRecord
from byok_middleware.testing import FakeUpstream
from tests.test_mission_seed import SEEDED_PER_TENANT, Mission, mission, start_mission

__all__ = ["mission"]  # the fixture, imported for pytest

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def _row(
    minute: int, *, latency: float, status: int = 200, ttft: float | None = None, **kw: object
) -> UsageRecord:
    values: dict[str, object] = {
        "request_id": f"r{minute}-{latency}",
        "tenant_id": "t",
        "key_id": None,
        "provider": "openai",
        "model": "gpt-4o",
        "endpoint": "/chat/completions",
        "attribution": "byok",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 0,
        "cost_usd": Decimal("0.001"),
        "status_code": status,
        "latency_ms": latency,
        "created_at": T0 + timedelta(minutes=minute),
        "ttft_ms": ttft,
    }
    values.update(kw)
    return UsageRecord(**values)  # type: ignore[arg-type]


def test_percentile_interpolates_between_ranks() -> None:
    """p50 of an even count is the midpoint; p95 lies between the two highest values."""
    assert percentile([], 0.5) is None
    assert percentile([4.0], 0.95) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile(list(map(float, range(1, 101))), 0.95) == pytest.approx(95.05)


def test_bucket_starts_cover_the_range_densely() -> None:
    """Every hour from the one holding ``since`` up to ``until`` is listed, none after."""
    starts = bucket_starts(T0 + timedelta(minutes=30), T0 + timedelta(hours=3), "hour")
    assert starts == [T0 + timedelta(hours=h) for h in range(3)]
    assert bucket_starts(T0, T0 + timedelta(days=2), "day")[0] == T0.replace(hour=0)


def test_series_aggregates_per_bucket_and_group() -> None:
    """Counts, errors, cost and percentiles land in the right bucket; unpriced rows are counted
    apart from the cost; the platform key shows as its own ``key`` group."""
    rows = [
        _row(1, latency=100, ttft=10),
        _row(2, latency=300, ttft=30),
        _row(3, latency=200, status=429, cost_usd=Decimal(0)),
        _row(70, latency=50, cost_usd=None, key_id="k1"),
    ]
    view = series_view(rows, since=T0, until=T0 + timedelta(hours=2), bucket="hour", group_by=None)
    first, second = view["data"]
    assert view["buckets"] == [T0.isoformat(), (T0 + timedelta(hours=1)).isoformat()]
    assert (first["requests"], first["errors"], first["cost_usd"]) == (3, 1, 0.002)
    assert (first["latency_p50_ms"], first["ttft_p50_ms"]) == (200, 20)
    assert (second["unpriced_requests"], second["cost_usd"], second["ttft_p50_ms"]) == (1, 0, None)
    by_key = series_view(
        rows, since=T0, until=T0 + timedelta(hours=2), bucket="hour", group_by="key"
    )
    assert by_key["groups"] == ["k1", "platform"]


def test_series_totals_match_the_tenants_ledger_only(mission: Mission) -> None:
    """Hourly series over the seeded day and a half hold every row of the caller and none of
    the other tenant's."""
    since = (mission.now - timedelta(hours=40)).isoformat()
    with mission.client("acme") as acme, mission.client("globex") as globex:
        mine = acme.get("/byok/usage/series", params={"since": since, "bucket": "hour"}).json()
        theirs = globex.get("/byok/usage/series", params={"since": since}).json()
        paid = acme.get("/byok/usage/series", params={"since": since, "group_by": "attribution"})
    assert sum(e["requests"] for e in mine["data"]) == SEEDED_PER_TENANT["acme"] + 1
    assert sum(e["requests"] for e in theirs["data"]) == SEEDED_PER_TENANT["globex"] + 1
    assert len(mine["buckets"]) in (40, 41) and mine["truncated"] is False
    assert sum(e["errors"] for e in mine["data"]) > 0
    assert any(e["ttft_p50_ms"] for e in mine["data"])
    assert set(paid.json()["groups"]) == {"byok", "xantly"}


def test_request_log_pages_newest_first_without_gaps(mission: Mission) -> None:
    """Walking ``next_cursor`` visits each of the tenant's rows once, newest first, and no row
    holds prompt or answer text."""
    seen: list[dict[str, object]] = []
    cursor = None
    with mission.client("acme") as acme:
        for _ in range(20):
            params = {"limit": "25", **({"cursor": cursor} if cursor else {})}
            page = acme.get("/byok/requests", params=params).json()
            seen.extend(page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert len(seen) == SEEDED_PER_TENANT["acme"] + 1
    assert len({r["request_id"] for r in seen}) == len(seen)
    times = [str(r["created_at"]) for r in seen]
    assert times == sorted(times, reverse=True)
    assert {r["key_id"] for r in seen} - {None} <= set(mission.key_ids["acme"])
    assert "messages" not in seen[0] and "hi" not in [str(v) for r in seen for v in r.values()]
    tiny = next(r for r in seen if r["request_id"] == "seed-acme-0000")
    assert Decimal(str(tiny["cost_usd"])) == Decimal("0.00000004")


def test_request_log_filters(mission: Mission) -> None:
    """status, provider and model narrow the page to matching rows."""
    with mission.client("acme") as acme:
        limited = acme.get("/byok/requests", params={"status": "429", "limit": "500"}).json()
        groq = acme.get("/byok/requests", params={"provider": "groq", "limit": "500"}).json()
    assert limited["data"] and {r["status_code"] for r in limited["data"]} == {429}
    assert groq["data"] and {r["provider"] for r in groq["data"]} == {"groq"}


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/byok/usage/series", {"bucket": "week"}, "bucket"),
        ("/byok/usage/series", {"group_by": "tenant"}, "group_by"),
        ("/byok/usage/series", {"since": "yesterday"}, "since"),
        ("/byok/usage/series", {"since": "2025-01-02", "until": "2025-01-01"}, "since"),
        ("/byok/usage/series", {"since": "2000-01-01", "bucket": "hour"}, "bucket"),
        ("/byok/requests", {"limit": "0"}, "limit"),
        ("/byok/requests", {"status": "abc"}, "status"),
        ("/byok/requests", {"cursor": "not-a-cursor"}, "cursor"),
        ("/byok/requests", {"format": "xml"}, "format"),
    ],
)
def test_bad_query_parameters_are_400s(
    mission: Mission, path: str, params: dict[str, str], param: str
) -> None:
    """A malformed parameter is a 400 in OpenAI's error shape naming the parameter."""
    with mission.client("acme") as acme:
        response = acme.get(path, params=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_operator_routes_need_the_admin_key(mission: Mission) -> None:
    """Without the operator key (or with a tenant's key) the operator routes are 401s; with it
    they span every tenant and can group by tenant."""
    with mission.client() as anonymous, mission.client("acme") as tenant:
        assert anonymous.get("/byok/admin/requests").status_code == 401
        assert tenant.get("/byok/admin/usage/series").status_code == 401
    with mission.client(admin=True) as admin:
        page = admin.get("/byok/admin/requests", params={"limit": "500"}).json()
        series = admin.get(
            "/byok/admin/usage/series", params={"group_by": "tenant", "bucket": "day"}
        )
        assert admin.get("/byok/requests").status_code == 401  # not a tenant key
    assert len(page["data"]) == sum(SEEDED_PER_TENANT.values()) + 2
    assert len({r["tenant_id"] for r in page["data"]}) == 2
    assert len(series.json()["groups"]) == 2


def test_request_log_exports_csv(mission: Mission) -> None:
    """``format=csv`` answers the page as CSV with a header row and the next cursor in a header."""
    with mission.client("globex") as globex:
        response = globex.get("/byok/requests", params={"format": "csv", "limit": "10"})
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["x-byok-next-cursor"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 10 and rows[0]["request_id"] and rows[0]["tenant_id"] == ""


def test_dashboard_assets_are_local_hashed_and_locked_down(mission: Mission) -> None:
    """The page links only its own hashed assets (no CDN, no inline script), under a CSP that
    allows scripts from the gateway's origin only; the assets are served from the package."""
    with mission.client() as http:
        page = http.get("/byok/dashboard")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert "<script>" not in page.text and "https://" not in page.text
        links = re.findall(r'(?:src|href)="(/v1/byok/dashboard/static/[^"]+)"', page.text)
        assert len(links) == 3
        for link in links:
            asset = http.get(link.removeprefix("/v1"))
            assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
        stale = http.get("/byok/dashboard/static/app.js", params={"v": "old"})
        assert stale.headers["cache-control"] == "no-cache"
        assert http.get("/byok/dashboard/static/page.html").status_code == 404
    chart = next(link for link in links if "chart.umd" in link)
    assert "Chart.js v4.5.1" in http_text(mission, chart)


def http_text(mission: Mission, link: str) -> str:
    with mission.client() as http:
        return http.get(link.removeprefix("/v1")).text


def test_metrics_route_needs_the_admin_key(fake: FakeUpstream, tmp_path: Path) -> None:
    """With BYOK_METRICS, ``/byok/metrics`` answers the gateway's own counts to the operator
    key only (the seeding sent one chat per tenant through the gateway)."""
    with start_mission(fake, tmp_path, metrics=True) as running:
        with running.client("acme") as tenant:
            assert tenant.get("/byok/metrics").status_code == 401
        with running.client(admin=True) as admin:
            response = admin.get("/byok/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    line = (
        'byok_requests_total{attribution="byok",model="gpt-4o-mini",provider="openai",'
        'route="/chat/completions",status_class="2xx"} 2.0'
    )
    assert line in response.text
