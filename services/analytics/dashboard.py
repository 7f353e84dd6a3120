"""The operations dashboard: what it shows for a range (with the previous period
for comparison) and the page that shows it. Served by the service itself with its
script and a vendored, pinned chart library (static/vendor/): no CDN, it works
with no internet access."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from zoneinfo import ZoneInfo

from services.analytics import domain, views
from shared.clock import to_iso

STATIC = Path(__file__).parent / "static"
SCRIPT = (STATIC / "dashboard.js").read_text()
CHART_JS = (STATIC / "vendor" / "chartjs" / "chart.umd.min.js").read_bytes()
STYLE = (STATIC / "dashboard.css").read_text()
PAGE = (STATIC / "dashboard.html").read_text()
COHORTS_SHOWN = 12


@dataclass(frozen=True)
class Options:
    currency: str
    locale: str
    attribution_window_days: int
    experiment_alpha: float
    experiment_min_exposures: int
    refresh_seconds: int


def data(db, tz: ZoneInfo, params: dict, now: datetime, options: Options) -> dict:
    """Everything the page draws for the range `params` choose (domain.dashboard_range)."""
    preset, rng = domain.dashboard_range(params, now, tz)
    previous = domain.previous_range(rng)
    days = domain.TimeRange(domain.local_day_start(rng.start, tz), rng.end + timedelta(days=1))
    window = options.attribution_window_days
    experiments = [views.experiment_results(db, key, options.experiment_alpha,
                                              options.experiment_min_exposures)
                   for key in views.experiment_keys(db)[:10]]
    return {
        "range": {"preset": preset, "start": to_iso(rng.start), "end": to_iso(rng.end),
                  "from": rng.start.astimezone(tz).date().isoformat(),
                  "to": (rng.end - timedelta(seconds=1)).astimezone(tz).date().isoformat(),
                  "previous_start": to_iso(previous.start), "previous_end": to_iso(previous.end)},
        "generated_at": to_iso(now), "timezone": tz.key, "currency": options.currency,
        "locale": options.locale, "refresh_seconds": options.refresh_seconds,
        "kpis": views.get_kpis(db, tz, rng),
        "previous": views.get_kpis(db, tz, previous),
        "series": views.daily_series(db, tz, days),
        "funnel_by_source": views.funnel_by_source(db, rng),
        "channel_roi": views.channel_roi(db, tz, rng, window)["channels"],
        "campaign_roi": views.campaign_roi(db, tz, rng, window)["campaigns"],
        "top_products": views.top_products(db, tz, rng, 10),
        "slow_products": views.slow_products(db, tz, rng, 10),
        "cohorts": cohorts(db, tz),
        "experiments": experiments,
        "slas": views.slas(db, tz, rng, now),
    }


def cohorts(db, tz: ZoneInfo) -> dict:
    """Monthly cohorts, or weekly ones while the history is too short for months to
    show any retention (fewer than three months with purchases)."""
    monthly = views.retention_cohorts(db, tz, "month", None, None)
    months = {r["cohort"] for r in monthly["cohorts"]} | {
        p["period"] for r in monthly["cohorts"] for p in r["retention"]}
    table = monthly if len(months) >= 3 else views.retention_cohorts(db, tz, "week", None, None)
    return {"period": table["period"], "rows": table["cohorts"][-COHORTS_SHOWN:]}


def render(payload: dict) -> str:
    inline = json.dumps(payload, default=str, ensure_ascii=False).replace("</", "<\\/")
    return PAGE.format(style=STYLE, data=inline, lang=escape(payload["locale"]),
                       tz=escape(payload["timezone"]))
