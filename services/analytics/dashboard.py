"""The dashboard page: HTML with the data inline and a small script, served by
the service itself (no CDN: it works with no internet access)."""
from __future__ import annotations

import json
from html import escape
from pathlib import Path

SCRIPT = (Path(__file__).parent / "static" / "dashboard.js").read_text()

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Shop analytics</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,"Noto Sans CJK SC","PingFang SC","Microsoft YaHei",
sans-serif;margin:1.5rem;color:#222;background:#fafafa}}
h1{{font-size:1.4rem}} h2{{font-size:1.05rem;margin:.2rem 0 .6rem}}
.tiles{{display:flex;flex-wrap:wrap;gap:.6rem}}
.tile{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem .8rem;min-width:8rem}}
.tile b{{display:block;font-size:1.2rem}}
.grid{{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1rem;margin-top:1rem}}
section{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8rem}}
svg text{{font-size:11px;fill:#333}}
</style></head>
<body>
<h1>Shop analytics <small>{start} – {end} ({tz})</small></h1>
<div class="tiles" id="tiles"></div>
<div class="grid">
<section><h2>GMV and orders per day</h2><div id="chart-gmv"></div></section>
<section><h2>Funnel</h2><div id="chart-funnel"></div></section>
<section><h2>Top products (net units)</h2><div id="chart-top"></div></section>
<section><h2>Retention cohorts (share buying again)</h2><div id="chart-cohorts"></div></section>
<section><h2>Campaign ROI</h2><div id="chart-roi"></div></section>
<section><h2>Experiments (conversion rate per variant)</h2><div id="chart-experiments"></div></section>
</div>
<script id="dashboard-data" type="application/json">{data}</script>
<script src="/dashboard.js"></script>
</body></html>
"""


def render(data: dict) -> str:
    payload = json.dumps(data, default=str).replace("</", "<\\/")
    return PAGE.format(start=escape(data["kpis"]["start"]), end=escape(data["kpis"]["end"]),
                       tz=escape(data["kpis"]["timezone"]), data=payload)
