"""Drives the dashboard in Debian's Chromium with Playwright and prints what it saw as
JSON: `python -m tests.analytics.integration.browser URL ARTIFACTS [FROM TO]`.

Run as its own process: Playwright's sync API needs the standard library's threads
and sockets, and the test process runs under eventlet's monkey patching."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Every text node's rectangles must lie inside its panel (1 px of rounding allowed).
OVERFLOWS = """() => {
  const bad = [];
  document.querySelectorAll("section, .tile, header").forEach(panel => {
    const box = panel.getBoundingClientRect();
    const walk = document.createTreeWalker(panel, NodeFilter.SHOW_TEXT);
    let node;
    while ((node = walk.nextNode())) {
      if (!node.textContent.trim()) continue;
      const range = document.createRange();
      range.selectNodeContents(node);
      for (const r of range.getClientRects()) {
        if (r.width === 0 && r.height === 0) continue;
        if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1
            || r.bottom > box.bottom + 1) {
          bad.push({panel: panel.dataset.panel || panel.className || panel.tagName,
                    text: node.textContent.slice(0, 60), right: r.right, panel_right: box.right});
        }
      }
    }
  });
  return bad;
}"""

# Draws each character with the element's own font: real glyphs differ from each
# other and from a code point no font has (which every missing glyph draws alike).
GLYPHS = """([selector, missing]) => {
  const el = document.querySelector(selector);
  const style = getComputedStyle(el);
  const text = el.firstChild.textContent.replace(/[^\\u3400-\\u9fff]/g, "");
  const draw = ch => {
    const c = document.createElement("canvas");
    c.width = 48; c.height = 48;
    const ctx = c.getContext("2d");
    ctx.font = "32px " + style.fontFamily;
    ctx.fillText(ch, 4, 36);
    return Array.from(ctx.getImageData(0, 0, 48, 48).data).join(",");
  };
  const tofu = draw(missing);
  const images = Array.from(text).map(draw);
  return {text, family: style.fontFamily, distinct: new Set(images).size,
          like_missing: images.filter(i => i === tofu).length};
}"""

TILES = """() => Object.fromEntries(Array.from(document.querySelectorAll("[data-kpi]")).map(
  t => [t.dataset.kpi, {value: t.querySelector(".value").textContent,
                        delta: t.querySelector(".delta").textContent}]))"""


def main(url: str, artifacts: Path, first: str, last: str) -> dict:
    out: dict = {"external_requests": [], "console_errors": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")

        def route(request_route):  # no network but the service: the page must not need it
            target = request_route.request.url
            if target.startswith("http://127.0.0.1"):
                request_route.continue_()
            else:
                out["external_requests"].append(target)
                request_route.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and out["console_errors"].append(m.text))
        page.on("pageerror", lambda e: out["console_errors"].append(str(e)))
        page.goto(url)
        page.wait_for_selector("body[data-rendered=true]")
        out["chart_drawn"] = page.evaluate(
            "() => typeof Chart !== 'undefined' && !!Chart.getChart(document.getElementById('chart-gmv'))")
        out["charts"] = page.eval_on_selector_all("[data-chart]", "els => els.map(e => e.dataset.chart)")
        out["heading"] = page.inner_text("header .meta")
        out["overflow_desktop"] = page.evaluate(OVERFLOWS)
        out["tiles_initial"] = page.evaluate(TILES)
        out["range_initial"] = page.get_attribute("body", "data-range")
        out["top_titles"] = page.eval_on_selector_all("#top td.name", "els => els.map(e => e.innerText)")
        out["channels"] = page.eval_on_selector_all("#channels td.name", "els => els.map(e => e.innerText)")
        out["cohort_cells"] = page.eval_on_selector_all("#cohorts td", "els => els.length")
        out["glyphs"] = page.evaluate(GLYPHS, ["#top td.name span", "\U0010fffd"])
        cdp = context.new_cdp_session(page)
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument")["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": "#top td.name span"})["nodeId"]
        out["platform_fonts"] = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        artifacts.mkdir(parents=True, exist_ok=True)
        shot = artifacts / f"dashboard-{time.strftime('%Y%m%dT%H%M%S')}.png"
        page.screenshot(path=str(shot), full_page=True)
        out["screenshot"] = str(shot)

        # a preset, then a custom range: the numbers reload
        page.click("[data-preset='7d']")
        page.wait_for_function(f"document.body.dataset.range !== {json.dumps(out['range_initial'])}"
                               " && !document.body.dataset.loading")
        out["range_7d"] = page.get_attribute("body", "data-range")
        out["tiles_7d"] = page.evaluate(TILES)
        out["url_7d"] = page.url
        page.click("[data-preset='custom']")
        page.fill("#from", first)
        page.fill("#to", last)
        page.click("#apply")
        page.wait_for_function(f"document.body.dataset.range !== {json.dumps(out['range_7d'])}"
                               " && !document.body.dataset.loading")
        out["range_custom"] = page.get_attribute("body", "data-range")
        out["tiles_custom"] = page.evaluate(TILES)
        out["overflow_custom"] = page.evaluate(OVERFLOWS)
        out["formats"] = page.evaluate("""() => ({
          money: new Intl.NumberFormat(document.documentElement.lang,
                   {style: "currency", currency: "CNY"}).format(1234567.5)})""")

        # a phone-sized window: panels stack, nothing spills out of them
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)
        out["overflow_mobile"] = page.evaluate(OVERFLOWS)
        browser.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]), ensure_ascii=False))
