"""Mission Control in a real browser: Debian's chromium driven by Playwright against a real
uvicorn with two tenants' traffic. Screenshots go to tests/artifacts/ (ignored); with
BYOK_UPDATE_SCREENSHOTS=1 they also replace the README's under docs/img/."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_mission_seed import ADMIN_KEY, Mission, mission

__all__ = ["mission"]  # the fixture, imported for pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
README_IMAGES = ROOT / "docs" / "img"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/test-services.sh start)"
)

# Every visible element inside a card must lie within the card's box (1 px of rounding).
OVERFLOWS = """
() => {
  const bad = [];
  for (const card of document.querySelectorAll('.card')) {
    if (card.offsetParent === null) continue;
    const box = card.getBoundingClientRect();
    for (const el of card.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      if (el.offsetParent === null && el.tagName !== 'TR') continue;
      const outside = r.left < box.left - 1 || r.right > box.right + 1
        || r.top < box.top - 1 || r.bottom > box.bottom + 1;
      if (outside) {
        bad.push(`${card.querySelector('h2') ? card.querySelector('h2').textContent : card.id}: ` +
          `${el.tagName}#${el.id}.${el.className} ${Math.round(r.left)}-${Math.round(r.right)} ` +
          `outside ${Math.round(box.left)}-${Math.round(box.right)}`);
      }
    }
  }
  const root = document.documentElement;
  if (root.scrollWidth > window.innerWidth + 1) bad.push('page scrolls sideways');
  return bad;
}
"""

# For each chart: drawn pixels on its canvas and how many data points are above zero.
CHARTS = """
() => [...document.querySelectorAll('canvas[data-chart]')].map((canvas) => {
  const ctx = canvas.getContext('2d');
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted++;
  const chart = Chart.getChart(canvas);
  const points = chart ? chart.data.datasets.reduce(
    (n, d) => n + d.data.filter((v) => typeof v === 'number' && v > 0).length, 0) : 0;
  return { id: canvas.id, width: canvas.width, painted, points };
})
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def _open(browser: Any, mission: Mission, key: str, view: str, width: int) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(mission.url + "/v1/byok/dashboard")
    page.fill("#key", key)
    page.select_option("#view", view)
    page.click("#load")
    page.wait_for_function("() => document.body.dataset.loaded", timeout=30_000)
    expected = view == "operator" and key != ADMIN_KEY  # the refused operator view logs its 401
    assert expected or errors == [], errors
    return page


def _screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("BYOK_UPDATE_SCREENSHOTS") == "1" and not name.endswith("-420"):
        README_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_IMAGES / f"{name}.png")


def _check_board(page: Any) -> None:
    charts = page.evaluate(CHARTS)
    assert len(charts) == 7
    for chart in charts:
        assert chart["painted"] > 500, f"{chart['id']} is blank"
        assert chart["points"] > 0, f"{chart['id']} has no data points"
    for table in ("#table-provider", "#table-model", "#table-third"):
        assert page.locator(f"{table} tbody tr").count() >= 2
    text = page.inner_text("main")
    assert not re.search(r"\$0\.0+(?![0-9])", text), "a cost shown as a misleading zero"
    assert "NaN" not in text and "undefined" not in text


def test_tenant_view_draws_every_chart_and_fits_its_cards(browser: Any, mission: Mission) -> None:
    """With a tenant key the page draws every chart, fills the tables, pages the request log,
    drills into a request, and nothing overflows its card at 1400 px or 420 px."""
    page = _open(browser, mission, mission.gateway_keys["acme"], "tenant", 1400)
    assert page.get_attribute("body", "data-loaded") == "tenant", page.inner_text("#error")
    _check_board(page)
    assert page.locator("#table-keys tbody tr").count() == 3
    assert page.locator("#table-log tbody tr").count() == 25
    assert page.evaluate(OVERFLOWS) == []
    _screenshot(page, "mission-control-tenant")

    first_page = page.locator("#table-log tbody tr").first.inner_text()
    page.click("#next")
    page.wait_for_function(
        "() => document.getElementById('page-info').textContent.startsWith('page 2')"
    )
    assert page.locator("#table-log tbody tr").first.inner_text() != first_page
    page.click("#prev")
    page.wait_for_function(
        "() => document.getElementById('page-info').textContent.startsWith('page 1')"
    )
    assert page.locator("#table-log tbody tr").first.inner_text() == first_page

    page.locator("#table-log tbody tr").nth(2).click()
    assert page.is_visible("#detail")
    assert page.inner_text("#detail-id").startswith(("seed-acme-", "req_"))

    page.set_viewport_size({"width": 420, "height": 900})
    page.wait_for_timeout(300)  # Chart.js resizes on the next animation frame
    assert page.evaluate(OVERFLOWS) == []
    _check_board(page)
    _screenshot(page, "mission-control-tenant-420")
    page.close()


def test_operator_view_needs_the_admin_key(browser: Any, mission: Mission) -> None:
    """The operator view refuses a tenant key with a clear message; with the operator key it
    shows every tenant and fits its cards at both widths."""
    refused = _open(browser, mission, mission.gateway_keys["acme"], "operator", 1400)
    assert refused.get_attribute("body", "data-loaded") == "error"
    assert "operator key" in refused.inner_text("#error")
    refused.close()

    page = _open(browser, mission, ADMIN_KEY, "operator", 1400)
    assert page.get_attribute("body", "data-loaded") == "operator", page.inner_text("#error")
    _check_board(page)
    assert page.text_content("#title-third") == "Spend by tenant"
    assert page.locator("#table-third tbody tr").count() == 2
    assert not page.is_visible("#keys-card")
    assert page.evaluate(OVERFLOWS) == []
    _screenshot(page, "mission-control-operator")
    page.set_viewport_size({"width": 420, "height": 900})
    page.wait_for_timeout(300)
    assert page.evaluate(OVERFLOWS) == []
    page.close()
