"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) over the
scripted history: every panel drawn, no text outside its panel on a desktop or a
phone, Chinese titles drawn with a CJK font (not boxes), presets and a custom range
reload the numbers, no request leaves the machine, and a screenshot is kept."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.analytics.conftest import envelope
from tests.analytics.integration import history
from tests.analytics.integration.test_history import feed, start
from tools.testing import wait_for

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("SHOP_TEST_ARTIFACTS", ROOT / ".run" / "artifacts"))
TITLES = {"p1": "羊毛大衣（冬季加厚款）", "p2": "保湿精华液 50ml", "p3": "北欧风陶瓷茶具套装"}


def browser_missing() -> str | None:
    if not os.path.exists("/usr/bin/chromium"):
        return "Debian's chromium is not installed (apt-get install -y chromium fonts-noto-cjk)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright==1.65.2)"
    return None


def extra_events(publish) -> int:
    """Chinese product titles, a paid channel's traffic, shipments and ticket deadlines."""
    events = [envelope("catalog", "product_created", {
        "product_id": p, "sku": p.upper(), "title": title, "category": "home", "price": 10000,
        "currency": "CNY", "merchant_id": None, "status": "published"}, history.at(48))
        for p, title in TITLES.items()]
    events.append(envelope("fulfillment", "shipment_created", {
        "shipment_id": "sh1", "order_id": "o1", "warehouse_id": "w1"}, history.at(2)))
    events.append(envelope("fulfillment", "shipment_late", {"shipment_id": "sh1", "order_id": "o1"},
                           history.at(30)))
    events.append(envelope("fulfillment", "ticket_opened", {
        "ticket_id": "t2", "member_id": "m2", "order_id": "o2", "category": "refund",
        "first_response_due_at": "2026-11-21T12:00:00Z", "resolution_due_at": "2026-11-22T12:00:00Z"},
        history.at(7)))
    events.append(envelope("fulfillment", "ticket_replied", {
        "ticket_id": "t2", "member_id": "m2", "order_id": "o2", "category": "refund"}, history.at(8)))
    for env in events:
        publish(env)
    return len(events)


@pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")
def test_dashboard_in_chromium(start_service, settings_for, publish):
    settings, containers = start(start_service, settings_for)
    broker, track, db = feed([settings], containers, publish)
    stored = db.raw.count_documents({})
    count = extra_events(publish)
    wait_for(lambda: db.raw.count_documents({}) == stored + count, timeout=30, what="extra events")
    base = f"http://127.0.0.1:{settings.http_port}"
    page = requests.get(f"{base}/dashboard?preset=30d", timeout=15)
    assert page.status_code == 200
    assert 'src="http' not in page.text and 'href="http' not in page.text  # no CDN
    assert requests.get(f"{base}/dashboard/vendor/chart.umd.min.js", timeout=15).content.startswith(
        b"/*!\n * Chart.js v4.6.1")
    bad = requests.get(f"{base}/dashboard/data", params={"from": "2026-11-22", "to": "2026-11-21"},
                       timeout=15)
    assert bad.status_code == 400 and "to" in bad.json()["details"]["fields"]
    assert requests.get(f"{base}/dashboard/data", params={"preset": "year"},
                        timeout=15).json()["details"]["fields"].keys() == {"preset"}

    done = subprocess.run([sys.executable, "-m", "tests.analytics.integration.browser",
                           f"{base}/dashboard?preset=30d", str(ARTIFACTS), "2026-11-21", "2026-11-21"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout)
    print(f"\ndashboard screenshot: {seen['screenshot']}")
    assert Path(seen["screenshot"]).stat().st_size > 10_000

    assert seen["external_requests"] == [] and seen["console_errors"] == []
    assert seen["chart_drawn"] is True
    assert {"gmv", "funnel", "channels", "roi", "top-products", "slow-products", "cohorts",
            "experiments", "slas"} <= set(seen["charts"])
    assert seen["overflow_desktop"] == [] and seen["overflow_custom"] == [] and seen["overflow_mobile"] == []
    assert "T" not in seen["heading"].split("·")[0]  # local, formatted times, not raw ISO stamps

    # Chinese titles are drawn with a CJK font: distinct glyphs, none like a missing one
    assert TITLES["p1"] in seen["top_titles"][0]
    assert any("CJK" in f["familyName"] and f["glyphCount"] > 0 for f in seen["platform_fonts"]), \
        seen["platform_fonts"]
    glyphs = seen["glyphs"]
    assert glyphs["like_missing"] == 0 and glyphs["distinct"] == len(set(glyphs["text"])), glyphs

    # the shop's locale: ¥ and thousands separators
    assert seen["formats"]["money"] == "¥1,234,567.50"
    assert seen["tiles_initial"]["gmv"]["value"] == "¥280.00"
    assert seen["tiles_initial"]["gmv"]["delta"].startswith("▲")  # nothing in the period before
    # paid channels have their row, with their ad spend
    assert "douyin" in seen["channels"] and "email" in seen["channels"]
    assert seen["cohort_cells"] > 0

    # range changes reload the numbers: 7 days hold none of the history, one day holds o1 and o2
    assert seen["range_7d"] != seen["range_initial"] and "preset=7d" in seen["url_7d"]
    assert seen["tiles_7d"]["orders"]["value"] == "0"
    day = requests.get(f"{base}/kpis", params={"start": "2026-11-20T16:00:00Z",
                                               "end": "2026-11-21T16:00:00Z"}, timeout=15).json()
    assert seen["range_custom"].replace(".000", "") == "2026-11-20T16:00:00Z/2026-11-21T16:00:00Z"
    assert seen["tiles_custom"]["orders"]["value"] == str(day["orders"]) == "2"
    assert seen["tiles_custom"]["gmv"]["value"] == f"¥{day['gmv'] / 100:,.2f}"

