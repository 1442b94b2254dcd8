"""Mission Control: the static page and the JSON it reads."""

from __future__ import annotations

import httpx

from tests.conftest import Gateway


def test_dashboard_page_is_served_without_secrets(gateway: Gateway) -> None:
    """The page loads without auth, holds no tenant data, and locks itself down with a CSP."""
    gateway.add_key("acme", "openai", "sk-dashboard-00000000000000000000")
    with httpx.Client(base_url=gateway.url) as http:
        response = http.get("/v1/byok/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert '<meta name="byok-prefix" content="/v1">' in response.text
    assert "sk-dashboard" not in response.text and "innerHTML" not in response.text


def test_dashboard_data_is_the_callers_own(gateway: Gateway) -> None:
    """The grouped usage the page shows belongs to the key's tenant only."""
    gateway.add_key("acme", "openai", "sk-dashboard-00000000000000000000")
    gateway.openai("acme").chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    with gateway.client("acme") as acme, gateway.client("other") as other:
        mine = acme.get("/v1/byok/usage", params={"group_by": "day"}).json()
        theirs = other.get("/v1/byok/usage", params={"group_by": "day"}).json()
    assert mine["total"]["requests"] == 1 and len(mine["data"]) == 1
    assert theirs["total"]["requests"] == 0 and theirs["data"] == []
